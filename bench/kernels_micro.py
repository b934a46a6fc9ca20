"""Tile and split-K choices of our GEMM and convolution kernels, timed against cuBLAS / cuDNN.

    python3 bench/kernels_micro.py [--out results.json] [--quick]

For each shape of the issue's targets and of the seed convnet (batch 128 and
512) it times the launchers' own choice and the forced alternatives
(``tile=``, ``splits=``), and the peer through CuPy (cuBLAS) or PyTorch
(cuDNN, as shipped with TF32 allowed and in strict float32). Three times per
row, in microseconds: "call", CUDA events around one call (median of 20
after 3 warm-ups: what bench/gpu_step.py --micro reports, launch overhead
included); "gpu", events around 50 calls back to back, divided by 50 (the
kernels' own time once it exceeds the launch overhead); "cpu", the host time
of one call. "x peer" is peer call time / our call time (above 1: ours faster). Also prints each
kernel's registers and local memory (spills) and checks every timed result
against the peer (max error relative to max |peer|).

``--variant NAME`` additionally compiles the sources with one of VARIANTS'
text substitutions and times the same rows with it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time

import numpy as np

# Text substitutions on the inlined sources, tried side by side with the shipped code.
VARIANTS = {
    # The narrow tiles with k-steps of 8 (shipped: 16).
    "bk8_narrow": [("typedef DgTile<128, 32, 16, 8, 4> DgTile128x32;", "typedef DgTile<128, 32, 8, 8, 4> DgTile128x32;"),
                   ("typedef DgTile<128, 64, 16, 8, 4> DgTile128x64;", "typedef DgTile<128, 64, 8, 8, 4> DgTile128x64;")],
    # 8x8 outputs per thread in the narrow tiles too (half the threads): fewer shared loads per FMA.
    "narrow8x8": [("typedef DgTile<128, 32, 16, 8, 4> DgTile128x32;", "typedef DgTile<128, 32, 16, 8, 8> DgTile128x32;"),
                  ("typedef DgTile<128, 64, 16, 8, 4> DgTile128x64;", "typedef DgTile<128, 64, 16, 8, 8> DgTile128x64;")],
    "bk8_mid": [("typedef DgTile<64, 64, 16, 8, 4> DgTile64x64;", "typedef DgTile<64, 64, 8, 8, 4> DgTile64x64;"),
                ("typedef DgTile<32, 32, 16, 4, 4> DgTile32x32;", "typedef DgTile<32, 32, 8, 4, 4> DgTile32x32;")],
}


# Python-side tile tables of the variants whose typedefs change the thread count.
VARIANT_TILES = {"narrow8x8": {"128x32": (128, 32, 16, 8, 8), "128x64": (128, 64, 16, 8, 8)},
                 "bk8_narrow": {"128x32": (128, 32, 8, 8, 4), "128x64": (128, 64, 8, 8, 4)},
                 "bk8_mid": {"64x64": (64, 64, 8, 8, 4), "32x32": (32, 32, 8, 4, 4)}}


def pipelined_us(cupy, fn, reps=50):
    """(gpu, cpu): events around reps calls back to back / reps, and host time per call."""
    fn()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    cupy.cuda.get_current_stream().synchronize()
    start.record()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    cpu = (time.perf_counter() - t0) / reps * 1e6
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) * 1e3 / reps, cpu


def events_us(cupy, fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    ts = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        ts.append(cupy.cuda.get_elapsed_time(start, end) * 1e3)
    return statistics.median(ts)


def torch_us(torch, fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        s.record()
        fn()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1e3)
    return statistics.median(ts)


def rel_err(cupy, a, ref):
    return float(cupy.abs(a - ref).max() / max(float(cupy.abs(ref).max()), 1e-30))


@contextlib.contextmanager
def variant(K, cupy, name):
    """Our launchers on sources compiled with VARIANTS[name]'s substitutions."""
    if name is None:
        yield
        return
    dev = cupy.cuda.runtime.getDevice()
    saved_m, saved_f, saved_t = dict(K._modules), dict(K._functions), dict(K.GEMM_TILES)
    K.GEMM_TILES.update(VARIANT_TILES.get(name, {}))
    for file in ("matmul.cu", "conv2d.cu"):
        src = K.source(file)
        for old, new in VARIANTS[name]:
            src = src.replace(old, new)
        mod = cupy.RawModule(code=src, options=K.OPTIONS)
        mod.compile()
        K._modules[(dev, file)] = mod
    K._functions.clear()
    try:
        yield
    finally:
        K._modules.clear(), K._modules.update(saved_m)
        K._functions.clear(), K._functions.update(saved_f)
        K.GEMM_TILES.clear(), K.GEMM_TILES.update(saved_t)


def overhead(K, cupy, x, w, bias):
    """Where the host time of one dense call goes (cProfile), and a bare RawKernel launch."""
    import cProfile
    import io
    import pstats
    out = cupy.empty((x.shape[0], w.shape[1]), cupy.float32)
    for _ in range(10):
        K.dense(x, w, bias, "relu", out=out)
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(300):
        K.dense(x, w, bias, "relu", out=out)
    pr.disable()
    cupy.cuda.get_current_stream().synchronize()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(14)
    print("\n".join(line[:150] for line in buf.getvalue().splitlines()[4:30]))
    m, k = x.shape
    n = w.shape[1]
    fn = K.function("dg_matmul_nn_32x32")
    i32, i64 = np.int32, np.int64
    null = np.uint64(0)
    a = (x, w, out, bias, null, null, i32(m), i32(n), i32(k), i32(k), i32(n), i32(n), i64(0), i64(0),
         i64(m * n), i32(1), i32(1), i32(k), i32(7))
    grid = (-(-m // 32), -(-n // 32), 1)
    for _ in range(10):
        fn(grid, (64,), a)
    cupy.cuda.get_current_stream().synchronize()
    t0 = time.perf_counter()
    for _ in range(300):
        fn(grid, (64,), a)
    t1 = time.perf_counter()
    cupy.cuda.get_current_stream().synchronize()
    t2 = time.perf_counter()
    for _ in range(300):
        cupy.empty((1, 4, m, n), cupy.float32)
    t3 = time.perf_counter()
    print(f"bare RawKernel launch (19 args): {(t1 - t0) / 300 * 1e6:.1f} us host; "
          f"cupy.empty: {(t3 - t2) / 300 * 1e6:.1f} us host")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--variant", action="append", default=[], choices=sorted(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="only the issue's three targets")
    args = ap.parse_args(argv)

    import cupy
    from deepgpu import kernels as K
    try:
        import torch
    except Exception:  # the cuDNN columns stay empty
        torch = None

    t0 = time.perf_counter()
    K.precompile(["matmul.cu", "conv2d.cu"])
    print(f"compile {time.perf_counter() - t0:.1f} s", flush=True)
    for file in ("matmul.cu", "conv2d.cu"):
        for name in K.KERNELS[file]:
            fn = K.function(name)
            print(f"  {name:34s} regs {fn.num_regs:3d} local {fn.local_size_bytes:3d} B "
                  f"smem {fn.shared_size_bytes:5d} B")
    rs = cupy.random.default_rng(0)
    rows = []

    def row(what, ours_fn, peer_us, check=None, **extra):
        us = events_us(cupy, ours_fn)
        gpu, cpu = pipelined_us(cupy, ours_fn)
        err = check() if check else None
        rows.append(dict(what=what, ours_us=us, gpu_us=gpu, cpu_us=cpu, peer_us=peer_us, err=err, **extra))
        ratio = f"{peer_us / us:5.2f}" if peer_us else "  -  "
        print(f"{what:60s} call {us:7.1f} gpu {gpu:7.1f} cpu {cpu:5.1f} | peer {peer_us or 0:7.1f} x {ratio}"
              + (f" err {err:.0e}" if err is not None else ""), flush=True)

    vnames = [None] + args.variant
    # ------------------------------------------------------------- matmul
    n = 4096
    a, b = rs.standard_normal((n, n), dtype=cupy.float32), rs.standard_normal((n, n), dtype=cupy.float32)
    c = cupy.empty((n, n), cupy.float32)
    cub = events_us(cupy, lambda: cupy.matmul(a, b, out=c))
    ref = cupy.matmul(a, b)
    for v in vnames:
        with variant(K, cupy, v):
            row(f"matmul 4096^3 nn [{v or 'shipped'}]", lambda: K.matmul(a, b, out=c), cub,
                lambda: rel_err(cupy, c, ref))
    if not args.quick:
        for ta, tb in ((False, True), (True, False)):
            aa, bb = (a.T.copy() if ta else a), (b.T.copy() if tb else b)
            row(f"matmul 4096^3 {'t' if ta else 'n'}{'t' if tb else 'n'}",
                lambda: K.matmul(aa, bb, ta, tb, out=c), cub, lambda: rel_err(cupy, c, ref))
        m2 = 2048
        a2, b2 = a[:m2, :m2].copy(), b[:m2, :m2].copy()
        c2 = cupy.empty((m2, m2), cupy.float32)
        row("matmul 2048^3 nn", lambda: K.matmul(a2, b2, out=c2), events_us(cupy, lambda: cupy.matmul(a2, b2, out=c2)))
    del a, b, c, ref

    # Dense layers of the seed convnet (forward, input and weight gradients), batch 128 and 512.
    for bsz in ((128,) if args.quick else (128, 512)):
        x = rs.standard_normal((bsz, 1024), dtype=cupy.float32)
        w = rs.standard_normal((1024, 512), dtype=cupy.float32)
        bias = rs.standard_normal((512,), dtype=cupy.float32)
        dy = rs.standard_normal((bsz, 512), dtype=cupy.float32)
        peer = events_us(cupy, lambda: cupy.maximum(cupy.matmul(x, w) + bias, 0))
        ref = cupy.maximum(cupy.matmul(x, w) + bias, 0)
        pg, pc = pipelined_us(cupy, lambda: cupy.maximum(cupy.matmul(x, w) + bias, 0))
        print(f"peer cuBLAS+bias+relu {bsz}: call {peer:.1f} gpu {pg:.1f} cpu {pc:.1f}")
        plans = [dict()] + [dict(tile="64x64", splits=s) for s in (1, 2, 4, 8)] \
            + [dict(tile="32x32", splits=s) for s in (1, 2, 4)]
        for v in vnames[:1]:
            with variant(K, cupy, v):
                for plan in plans:
                    out = cupy.empty((bsz, 512), cupy.float32)
                    row(f"dense {bsz}x1024x512+relu {plan or 'auto'} [{v or 'shipped'}]",
                        lambda: K.dense(x, w, bias, "relu", out=out, **plan), peer,
                        lambda: rel_err(cupy, out, ref))
        if args.quick:
            break
        if bsz == 128:
            overhead(K, cupy, x, w, bias)
        gx_peer = events_us(cupy, lambda: cupy.matmul(dy, w.T))
        gw_peer = events_us(cupy, lambda: cupy.matmul(x.T, dy))
        for plan in [dict(), dict(tile="64x64", splits=2), dict(tile="64x64", splits=4), dict(tile="32x32", splits=2)]:
            row(f"dense dx {bsz}x512x1024 (nt) {plan or 'auto'}", lambda: K.matmul(dy, w, False, True, **plan), gx_peer)
        for plan in [dict(), dict(tile="64x64", splits=2), dict(tile="128x128"), dict(tile="32x32")]:
            row(f"dense dw 1024x{bsz}x512 (tn) {plan or 'auto'}", lambda: K.matmul(x, dy, True, False, **plan), gw_peer)
        # 512 -> 10
        x2, w2 = dy, rs.standard_normal((512, 10), dtype=cupy.float32)
        row(f"dense {bsz}x512x10", lambda: K.dense(x2, w2), events_us(cupy, lambda: cupy.matmul(x2, w2)))

    # -------------------------------------------------------------- conv
    def conv_layer(bsz, hw, cin, cout, grad_input=True, tiles=(None,), gf_plans=(dict(),), vn=None):
        xs, ks = (bsz, hw, hw, cin), (3, 3, cin, cout)
        xc = rs.standard_normal(xs, dtype=cupy.float32)
        kc = rs.standard_normal(ks, dtype=cupy.float32)
        dy = rs.standard_normal((bsz, hw - 2, hw - 2, cout), dtype=cupy.float32)
        peer = peer32 = None
        refs = None
        if torch is not None:
            torch.backends.cudnn.benchmark = True
            xt = torch.as_tensor(xc, device="cuda").permute(0, 3, 1, 2).contiguous().requires_grad_(grad_input)
            conv = torch.nn.Conv2d(cin, cout, 3, bias=False).cuda()
            with torch.no_grad():
                conv.weight.copy_(torch.as_tensor(kc, device="cuda").permute(3, 2, 0, 1))
            gt = torch.as_tensor(dy, device="cuda").permute(0, 3, 1, 2).contiguous()

            def tstep():
                xt.grad = None
                conv.weight.grad = None
                conv(xt).backward(gt)
            peer = torch_us(torch, tstep)
            torch.backends.cudnn.allow_tf32 = False
            peer32 = torch_us(torch, tstep)
            tstep()
            y_ref = cupy.asarray(conv(xt).detach().permute(0, 2, 3, 1).contiguous())
            gw_ref = cupy.asarray(conv.weight.grad.permute(2, 3, 1, 0).contiguous())
            gx_ref = cupy.asarray(xt.grad.permute(0, 2, 3, 1).contiguous()) if grad_input else None
            torch.backends.cudnn.allow_tf32 = True
            refs = (y_ref, gx_ref, gw_ref)
        label = f"conv {bsz}x{hw}x{hw}x{cin}->{cout}"
        tag = f" [{vn}]" if vn else ""

        def whole():
            K.conv2d(xc, kc)
            if grad_input:
                K.conv2d_grad_input(dy, kc, xs)
            K.conv2d_grad_filter(xc, dy, ks)

        def check_all():
            if refs is None:
                return None
            errs = [rel_err(cupy, K.conv2d(xc, kc), refs[0]),
                    rel_err(cupy, K.conv2d_grad_filter(xc, dy, ks), refs[2])]
            if grad_input:
                errs.append(rel_err(cupy, K.conv2d_grad_input(dy, kc, xs), refs[1]))
            return max(errs)
        row(f"{label} fwd+{'gi+' if grad_input else ''}gf auto{tag} (peer TF32)", whole, peer, check_all)
        if peer32:
            rows[-1]["peer_fp32_us"] = peer32
            print(f"{'':58s} strict-fp32 cuDNN {peer32:9.1f} us  x peer {peer32 / rows[-1]['ours_us']:5.2f}")
        for t in tiles:
            row(f"  {label} fwd {t or 'auto'}{tag}", lambda: K.conv2d(xc, kc, tile=t), None)
            if grad_input:
                row(f"  {label} grad_input {t or 'auto'}{tag}", lambda: K.conv2d_grad_input(dy, kc, xs, tile=t), None)
        for plan in gf_plans:
            row(f"  {label} grad_filter {plan or 'auto'}{tag}", lambda: K.conv2d_grad_filter(xc, dy, ks, **plan), None)

    narrow = (None, "64x64", "32x32")
    gf = (dict(), dict(tile="128x32", splits=66), dict(tile="128x32", splits=264), dict(tile="128x32", splits=528),
          dict(tile="64x64", splits=132), dict(tile="32x32", splits=264))
    for v in vnames:
        with variant(K, cupy, v):
            conv_layer(128, 26, 32, 32, tiles=narrow if v is None else (None,), gf_plans=gf if v is None else gf[:3], vn=v)
    if not args.quick:
        for bsz in (128, 512):
            conv_layer(bsz, 28, 1, 32, grad_input=False, tiles=(None,),
                       gf_plans=(dict(), dict(tile="32x32", splits=528)))
            if bsz == 512:
                conv_layer(bsz, 26, 32, 32, tiles=(None,), gf_plans=(dict(), dict(tile="128x32", splits=528)))
            conv_layer(bsz, 12, 32, 64, tiles=(None, "128x64", "64x64", "32x32"),
                       gf_plans=(dict(), dict(tile="64x64", splits=264), dict(tile="32x32", splits=264)))
            conv_layer(bsz, 10, 64, 64, tiles=(None, "128x64", "64x64", "32x32"),
                       gf_plans=(dict(), dict(tile="64x64", splits=264), dict(tile="32x32", splits=264)))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
