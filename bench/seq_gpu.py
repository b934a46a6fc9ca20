"""The sequence and attention kernels on a lent GPU, beside PyTorch (issues 16 and 18).

    python3 bench/seq_gpu.py [--out FILE.json] [--reps 20] [--nets lstm gru transformer] [--emulate]

1. kernels: kernels/attention.cu (forward; forward + backward) beside
   ``torch.nn.functional.scaled_dot_product_attention`` on the same [B, H, T, D] data (no mask,
   a key padding mask, causal; forward + backward with dropout 0.1), kernels/layernorm.cu beside ``F.layer_norm``, and the fused
   cells of kernels/rnn.cu (LSTM and GRU, one step each way) beside PyTorch's fused cells
   (``torch._thnn_fused_lstm_cell`` / ``_thnn_fused_gru_cell``, autograd for the backward).
   Each row also gives the largest difference of the outputs (relative to the peer's max |x|).
2. steps: one training step of rnn_peers.py's LSTM / GRU classifiers (Embedding(20000, 128),
   length 200, batch 64) and transformer_peers.py's encoder (batch 32) on the CUDA backend,
   recorded into a CUDA graph (compile's default) and eager (``cuda_graph=False``), with the
   bytes the memory pool holds after the steps (plus the recording's); beside nn.LSTM / nn.GRU
   (cuDNN; torch.cuda.max_memory_allocated) for the recurrent nets.
Times: wall time of one call with a device sync after it, median of ``--reps`` after 3 warm-ups
(bench/gpu_step.py's ``_time_steps``).
``--emulate`` runs part 1 on tiny shapes under the CPU emulation of our kernels (PyTorch on the
CPU): a check of this script and the kernels' agreement, not a timing.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _median_ms(fn, sync, reps):
    """Median ms of one call with a sync after it, after 3 warm-ups (bench/gpu_step.py's loop)."""
    from gpu_step import _time_steps
    return _time_steps(fn, sync, 3, reps)["median_ms"]


def _err(ours, peer, host):
    a, b = host(ours).astype(np.float64), peer.detach().cpu().numpy().astype(np.float64)
    return float(np.abs(a.reshape(b.shape) - b).max() / max(np.abs(b).max(), 1e-12))


def _fused_or(torch, name, dev, make, composite, probe, rows):
    """PyTorch's fused cell ``name`` (CUDA only) where it runs forward and backward, else the
    composite cell in PyTorch ops; which one is noted in ``rows``."""
    f = getattr(torch, name, None)
    if dev == "cuda" and f is not None:
        try:
            fused = make(f)
            out = fused(probe.clone().requires_grad_(True))
            (out[0] if isinstance(out, tuple) else out).sum().backward()
            rows[f"{name} peer"] = "fused"
            return fused
        except Exception as e:  # noqa: BLE001 - any failure: time the composite cell instead
            rows[f"{name} peer"] = f"composite ({type(e).__name__}: {e})"[:200]
    return composite


def kernels(xp, torch, dev, sync, reps, small):
    from deepgpu import kernels as K
    F = torch.nn.functional
    host = (lambda a: a.get()) if hasattr(xp, "asnumpy") else np.asarray
    to_xp = (lambda t: xp.from_dlpack(t.detach())) if dev == "cuda" else (lambda t: t.detach().numpy())
    g = torch.Generator(device=dev).manual_seed(0)
    rand = (lambda *s: torch.randn(*s, device=dev, generator=g))
    rows = {}

    def row(name, ours, peer, err):
        r = {"ours_ms": _median_ms(ours, sync, reps), "torch_ms": _median_ms(peer, sync, reps), "max_rel_err": err}
        r["torch / ours"] = round(r["torch_ms"] / r["ours_ms"], 3)
        rows[name] = r
        print(f"{name:46s} ours {r['ours_ms']:9.4f} ms  torch {r['torch_ms']:9.4f} ms  "
              f"x{r['torch / ours']:6.3f}  err {err:.1e}", flush=True)

    shapes = [(2, 2, 9, 8)] if small else [(32, 4, 200, 32), (8, 8, 1024, 64)]
    for b, h, t, d in shapes:
        q, k, v, dout = (rand(b, h, t, d) for _ in range(4))
        keep = torch.ones(b, t, dtype=torch.bool, device=dev)
        keep[0, t // 2:] = False  # the first sequence padded over its second half
        for kind in ("none", "keys", "causal"):
            mask = keep[:, None, None, :] if kind == "keys" else None
            m32 = None if mask is None else to_xp(mask.to(torch.int32).contiguous())
            causal = kind == "causal"
            qx, kx, vx, dx = (to_xp(a.reshape(b * h, t, d).contiguous()) for a in (q, k, v, dout))
            scale = 1.0 / d ** 0.5
            ours = lambda: K.attention(qx, kx, vx, m32, h, scale, causal)  # noqa: E731
            peer = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # noqa: E731
            out, lse = ours()
            row(f"attention fwd {b}x{h}x{t}x{d} mask={kind}", ours, peer, _err(out, peer(), host))
            qg, kg, vg = (a.clone().requires_grad_(True) for a in (q, k, v))

            def peer_fb():
                F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, is_causal=causal).backward(dout)

            def ours_fb():
                o, s = K.attention(qx, kx, vx, m32, h, scale, causal)
                return K.attention_grad(dx, qx, kx, vx, o, s, m32, h, scale, causal)
            dq = ours_fb()[0]
            qg.grad = None
            peer_fb()
            row(f"attention fwd+bwd {b}x{h}x{t}x{d} mask={kind}", ours_fb, peer_fb, _err(dq, qg.grad, host))

        # Training dropout (0.1, as the Transformer recipe): the masks are drawn by different generators,
        # so the rows compare time only (err NaN); tests/test_kernels_attention.py checks the values.
        qg, kg, vg = (a.clone().requires_grad_(True) for a in (q, k, v))
        qx, kx, vx, dx = (to_xp(a.reshape(b * h, t, d).contiguous()) for a in (q, k, v, dout))
        scale = 1.0 / d ** 0.5

        def drop_ours_fb():
            o, s = K.attention(qx, kx, vx, None, h, scale, False, 0.1, 12345)
            return K.attention_grad(dx, qx, kx, vx, o, s, None, h, scale, False, 0.1, 12345)

        def drop_peer_fb():
            F.scaled_dot_product_attention(qg, kg, vg, dropout_p=0.1).backward(dout)
        row(f"attention fwd+bwd {b}x{h}x{t}x{d} dropout=0.1", drop_ours_fb, drop_peer_fb, float("nan"))

    n, c = (6, 10) if small else (32 * 200, 128)
    x, gamma, beta, dy = rand(n, c), rand(c), rand(c), rand(n, c)
    xx, gx, bx, dyx = (to_xp(a.contiguous()) for a in (x, gamma, beta, dy))
    y = K.layer_norm(xx, gx, bx, 1e-6)
    row(f"layer_norm fwd [{n}, {c}]", lambda: K.layer_norm(xx, gx, bx, 1e-6),
        lambda: F.layer_norm(x, (c,), gamma, beta, 1e-6), _err(y[0], F.layer_norm(x, (c,), gamma, beta, 1e-6), host))
    xg = x.clone().requires_grad_(True)
    ln_ours = lambda: K.layer_norm_grad(dyx, xx, *K.layer_norm(xx, gx, bx, 1e-6)[1:3], gx)  # noqa: E731
    ln_peer = lambda: F.layer_norm(xg, (c,), gamma, beta, 1e-6).backward(dy)  # noqa: E731
    ln_peer()
    row(f"layer_norm fwd+bwd [{n}, {c}]", ln_ours, ln_peer, _err(ln_ours()[0], xg.grad, host))

    n, u = (3, 5) if small else (64, 128)
    gates, hg, cprev, dh = rand(n, 4 * u), rand(n, 4 * u), rand(n, u), rand(n, u)
    zx, hzx, cx, dhx = (to_xp(a.contiguous()) for a in (gates + hg, hg, cprev, dh))
    def lstm_peer(gi):
        i, f, gg, o = (gi + hg).chunk(4, 1)
        cn = torch.sigmoid(f) * cprev + torch.sigmoid(i) * torch.tanh(gg)
        return torch.sigmoid(o) * torch.tanh(cn), cn
    lstm_peer = _fused_or(torch, "_thnn_fused_lstm_cell", dev, lambda f: (lambda gi: f(gi, hg, cprev)), lstm_peer,
                          gates, rows)
    h_ours = K.lstm_step(zx, cx)[0]
    row(f"lstm cell fwd [{n}, {u}]", lambda: K.lstm_step(zx, cx), lambda: lstm_peer(gates), _err(h_ours, lstm_peer(gates)[0], host))
    gg = gates.clone().requires_grad_(True)

    def lstm_peer_fb():
        hh, cc = lstm_peer(gg)[:2]
        torch.autograd.backward([hh, cc], [dh, torch.zeros_like(cc)])

    def lstm_ours_fb():
        hh, cc, act = K.lstm_step(zx, cx)
        return K.lstm_step_grad(dhx, None, act, cx, cc)
    lstm_peer_fb()
    row(f"lstm cell fwd+bwd [{n}, {u}]", lstm_ours_fb, lstm_peer_fb, _err(lstm_ours_fb()[0], gg.grad, host))

    xz, hz3, hprev = rand(n, 3 * u), rand(n, 3 * u), rand(n, u)
    xzx, hzx3, hpx = (to_xp(a.contiguous()) for a in (xz, hz3, hprev))
    # Ours take Keras's gate order z, r, h; PyTorch's r, z, n (the same reset-after form).
    rzn = (lambda a: torch.cat([a[:, u:2 * u], a[:, :u], a[:, 2 * u:]], 1).contiguous())  # noqa: E731
    xz_t, hz_t = rzn(xz), rzn(hz3)
    def gru_peer(a):
        r_, z_, n_ = a.chunk(3, 1)
        hr, hzz, hn = hz_t.chunk(3, 1)
        r, z = torch.sigmoid(r_ + hr), torch.sigmoid(z_ + hzz)
        return (1 - z) * torch.tanh(n_ + r * hn) + z * hprev
    gru_peer = _fused_or(torch, "_thnn_fused_gru_cell", dev, lambda f: (lambda a: f(a, hz_t, hprev)[0]), gru_peer,
                         xz_t, rows)
    row(f"gru cell fwd [{n}, {u}]", lambda: K.gru_step(xzx, hzx3, hpx), lambda: gru_peer(xz_t),
        _err(K.gru_step(xzx, hzx3, hpx)[0], gru_peer(xz_t), host))
    xg3 = xz_t.clone().requires_grad_(True)

    def gru_ours_fb():
        hh, act = K.gru_step(xzx, hzx3, hpx)
        return K.gru_step_grad(dhx, act, hzx3, hpx)
    gru_peer_fb = lambda: gru_peer(xg3).backward(dh)  # noqa: E731
    gru_peer_fb()
    row(f"gru cell fwd+bwd [{n}, {u}]", gru_ours_fb, gru_peer_fb, _err(gru_ours_fb()[0], rzn(xg3.grad), host))
    return rows


def steps(nets, reps):
    import torch
    import deepgpu as dg
    import rnn_peers
    import transformer_peers
    from deepgpu import backends, optimizers
    from deepgpu.tensor import Tensor

    dg.set_backend("cuda")
    B = backends.current()
    out = {}
    for net in nets:
        mod = transformer_peers if net == "transformer" else rnn_peers
        xs, ys = mod._data()
        for mode in (True, False):
            name = f"{net} deepgpu {'graph' if mode else 'eager'}"
            try:
                dg.set_seed(0)
                if net == "transformer":
                    from deepgpu import layers as L
                    from deepgpu.models import Model
                    model = transformer_peers._build(L, L.Input, Model)
                else:
                    model = rnn_peers._deepgpu_model(net)
                model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                              cuda_graph=mode)
                x, y = Tensor(B.asarray(xs), B), Tensor(B.asarray(ys), B)
                B.xp.get_default_memory_pool().free_all_blocks()
                ms = _median_ms(lambda: model.train_on_batch(x, y), B.sync, reps)
                gt = getattr(model, "_graph_trainer", None)  # as bench/gpu_step.py counts a recording's pool
                held = B.memory_info()["pool_total_bytes"] + (gt.graph_bytes if gt is not None else 0)
                out[name] = {"ms": ms, "pool_MiB": round(held / 2**20, 1),
                             "recorded": bool(gt is not None and gt.steps), "failed": str(getattr(gt, "failed", ""))}
            except Exception as e:  # one failing path must not cost the others
                out[name] = {"error": f"{type(e).__name__}: {e}"[:400]}
            print(name, out[name], flush=True)
        if net in ("lstm", "gru"):
            torch.manual_seed(0)
            kind = torch.nn.LSTM if net == "lstm" else torch.nn.GRU
            emb = torch.nn.Embedding(rnn_peers.VOCAB, rnn_peers.EMBED).cuda()
            rnn = kind(rnn_peers.EMBED, rnn_peers.UNITS, batch_first=True).cuda()
            lin = torch.nn.Linear(rnn_peers.UNITS, rnn_peers.CLASSES).cuda()
            params = [*emb.parameters(), *rnn.parameters(), *lin.parameters()]
            opt = torch.optim.Adam(params, 1e-3)
            xt, yt = torch.as_tensor(xs).long().cuda(), torch.as_tensor(ys).long().cuda()

            def step():
                opt.zero_grad()
                h = rnn(emb(xt))[1]
                loss = torch.nn.functional.cross_entropy(lin((h[0] if net == "lstm" else h)[-1]), yt)
                loss.backward()
                opt.step()
            torch.cuda.reset_peak_memory_stats()
            ms = _median_ms(step, torch.cuda.synchronize, reps)
            out[f"{net} torch cuDNN"] = {"ms": ms, "peak_MiB": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
            print(f"{net} torch cuDNN", out[f"{net} torch cuDNN"], flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--nets", nargs="*", default=["lstm", "gru", "transformer"])
    ap.add_argument("--emulate", action="store_true")
    a = ap.parse_args()
    import torch
    res = {"torch": torch.__version__}
    if a.emulate:
        from deepgpu import kernels as K
        from deepgpu.testing.emulation import emulator
        K._emulator = emulator()
        res["kernels"] = kernels(np, torch, "cpu", lambda: None, 2, True)
    else:
        import cupy
        res["device"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        sync = lambda: (cupy.cuda.Device().synchronize(), torch.cuda.synchronize())  # noqa: E731
        try:
            res["kernels"] = kernels(cupy, torch, "cuda", sync, a.reps, False)
        except Exception:
            res["kernels_error"] = traceback.format_exc()[-2000:]
            print(res["kernels_error"])
        res["steps"] = steps(a.nets, max(3, a.reps // 4))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
