"""GPU training-step benchmark: deepgpu (CuPy routines, custom kernels) vs PyTorch (eager, CUDA graph).

    python3 bench/gpu_step.py                       # batches 128 and 512, everything
    python3 bench/gpu_step.py --batches 128 --steps 30 --only deepgpu-custom
    python3 bench/gpu_step.py --micro               # also the issue's kernel targets

Times one training step of the seed convnet (594,922 parameters, 28x28x1,
Adam, float32) per framework and path, in one process on one GPU:

* ``deepgpu-cupy``: the CuPy backend on CuPy's routines (``kernels = "cupy"``).
* ``deepgpu-custom``: the same on our kernels (``kernels = "custom"``, the default).
* ``deepgpu-fitstep``: our kernels, the step as ``fit`` runs it for each
  batch (forward, loss, backward, update, metric sums on the device): no
  per-step reset and host read of the loss, as PyTorch's step has none.
* ``deepgpu-graph``: our kernels with ``compile(cuda_graph=True)``: the step
  recorded once as a CUDA graph and replayed.
* ``torch-eager`` and ``torch-graph`` (the whole step captured once, replayed),
  as PyTorch ships: cuDNN may use TF32 for convolutions
  (``torch.backends.cudnn.allow_tf32`` is True by default), while deepgpu
  computes in strict float32.
* ``torch-eager-fp32`` and ``torch-graph-fp32``: the same with TF32 off
  (``cudnn.allow_tf32 = cuda.matmul.allow_tf32 = False``), arithmetic like ours.

Tensor cores (issue 22 section 3; kernels/tensorcore.cu):

* ``deepgpu-tf32`` / ``deepgpu-graph-tf32``: our kernels with
  ``deepgpu.config.enable_tensor_float_32_execution(True)``, eager / recorded;
  beside ``torch-eager-tf32`` / ``torch-graph-tf32`` (``allow_tf32`` on for
  cuDNN and matmul, as our switch covers both).
* ``deepgpu-fp16`` / ``deepgpu-graph-fp16``: the ``mixed_float16`` policy
  (layers compute in float16 on the 16-bit tensor-core kernels, variables
  float32); beside ``torch-eager-amp`` (``torch.autocast`` float16 with a
  GradScaler, the documented recipe) and ``torch-graph-amp`` (autocast with
  ``cache_enabled=False`` captured whole, no GradScaler: its inf check reads
  the host). ``--micro`` also times our TF32 and float16 matmul 4096^3 and the
  seed's second convolution forward + both gradients against cuBLAS / cuDNN
  at the same precision, with each one's error against float32.

Every path times ``train_on_batch``-equivalent steps on one fixed batch;
deepgpu's ``train_on_batch`` also resets and reads its loss metric (a host
read per step, as Keras's), which the PyTorch steps do not do.

Each path runs ``--warmup`` steps, then ``--steps`` steps each timed on the
wall clock up to a device sync (median, p10, p90 reported), then the same
number back to back with one sync at the end (pipelined mean). ``--micro``
adds the issue's kernel targets (matmul 4096^3 vs cuBLAS, fused Dense vs
cuBLAS + bias + relu, the seed's second convolution forward + both
gradients vs cuDNN, max pooling bandwidth), timed with CUDA events.

Writes ``--out`` (JSON, default bench/gpu_step.json) and a markdown table
beside it (.md). A path that fails records its error and the rest go on.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

PATHS = ("deepgpu-cupy", "deepgpu-custom", "deepgpu-fitstep", "deepgpu-graph", "torch-eager", "torch-graph",
         "torch-eager-fp32", "torch-graph-fp32", "deepgpu-tf32", "deepgpu-graph-tf32", "torch-eager-tf32",
         "torch-graph-tf32", "deepgpu-fp16", "deepgpu-graph-fp16", "torch-eager-amp", "torch-graph-amp")


def _stats(ms):
    ms = sorted(ms)
    q = lambda f: ms[min(len(ms) - 1, int(f * len(ms)))]
    return {"median_ms": round(statistics.median(ms), 4), "p10_ms": round(q(0.1), 4),
            "p90_ms": round(q(0.9), 4), "n": len(ms)}


def _time_steps(step, sync, warmup, steps):
    for _ in range(warmup):
        step()
    sync()
    per = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        per.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    res = _stats(per)
    res["pipelined_mean_ms"] = round((time.perf_counter() - t0) * 1e3 / steps, 4)
    return res


# ------------------------------------------------------------------ deepgpu
def bench_deepgpu(kernels, batch, warmup, steps, graph=False, fitstep=False, tf32=False, policy=None):
    """One deepgpu path; ``tf32`` turns TF32 on, ``policy`` sets a mixed-precision policy, both
    only for this path."""
    import deepgpu as dg

    dg.config.enable_tensor_float_32_execution(tf32)
    if policy:
        from deepgpu import mixed_precision
        mixed_precision.set_global_policy(policy)
    try:
        res = _bench_deepgpu(kernels, batch, warmup, steps, graph, fitstep, tf32 or bool(policy))
    finally:
        dg.config.enable_tensor_float_32_execution(False)
        if policy:
            mixed_precision.set_global_policy("float32")
    res["tf32"], res["policy"] = tf32, policy or "float32"
    return res


def _bench_deepgpu(kernels, batch, warmup, steps, graph, fitstep, tensor_cores):
    import deepgpu as dg
    from deepgpu import backends, optimizers, zoo
    from deepgpu import kernels as kernels_mod
    from deepgpu.tensor import Tensor

    dg.set_backend("cuda")
    B = backends.current()
    B.kernels = kernels
    if kernels == "custom":
        t0 = time.perf_counter()
        # tensorcore.cu only where it runs: a compile failure there must not cost the strict paths.
        kernels_mod.precompile([f for f in kernels_mod.KERNELS if tensor_cores or f != "tensorcore.cu"])
        compile_s = time.perf_counter() - t0
    dg.set_seed(0)
    model = zoo.convnet()
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", cuda_graph=graph)
    rng = np.random.default_rng(0)
    x = Tensor(B.asarray(rng.uniform(0, 1, (batch, 28, 28, 1)).astype(np.float32)), B)
    y = Tensor(B.asarray(rng.integers(0, 10, batch).astype(np.int32)), B)
    B.xp.get_default_memory_pool().free_all_blocks()
    step = (lambda: model._train_batch([x], [y], None)) if fitstep else (lambda: model.train_on_batch(x, y))
    res = _time_steps(step, B.sync, warmup, steps)
    res["pool_total_bytes"] = int(B.memory_info()["pool_total_bytes"])
    if graph:
        gt = model._graph_trainer
        res["graph_pool_bytes"] = gt.graph_bytes
        res["graphs"] = len(gt.steps)
        res["graph_failed"] = dict((str(k), v) for k, v in gt.failed.items())
        res["pool_total_bytes"] += gt.graph_bytes
    res["params"] = int(model.count_params())
    if kernels == "custom":
        res["precompile_s"] = round(compile_s, 3)
    return res


# ------------------------------------------------------------------ PyTorch
def _torch_convnet(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(512, 10))


def bench_torch(graph, batch, warmup, steps, tf32=True, matmul_tf32=False, amp=False):
    """One PyTorch path: ``tf32`` for cuDNN (PyTorch's default True), ``matmul_tf32`` for matmul
    (default False), ``amp``: torch.autocast float16 (eager with a GradScaler; captured without)."""
    import torch

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = _torch_convnet(torch).to(dev)
    # capturable=True keeps Adam's step count on the device, as graph capture needs.
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, capturable=graph)
    lossf = torch.nn.CrossEntropyLoss()
    x = torch.rand(batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)

    scaler = torch.amp.GradScaler("cuda") if amp and not graph else None

    def forward():
        # Autocast's weight cache must be off inside a graph capture (PyTorch's CUDA graph notes).
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp, cache_enabled=not graph):
            return lossf(model(x), y)

    def eager():
        opt.zero_grad(set_to_none=True)
        loss = forward()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss

    torch.cuda.reset_peak_memory_stats()
    if not graph:
        res = _time_steps(eager, torch.cuda.synchronize, warmup, steps)
    else:
        # Warm up on a side stream (the documented capture recipe), then capture one step.
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                eager()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            loss = forward()
            loss.backward()
            opt.step()
        res = _time_steps(g.replay, torch.cuda.synchronize, warmup, steps)
    res["max_memory_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    res["max_memory_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = False
    res["params"] = sum(p.numel() for p in model.parameters())
    return res


# -------------------------------------------------------------------- micro
def _events_ms(cupy, fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    out = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(out)


def bench_micro():
    import cupy

    from deepgpu import kernels as K

    K.precompile([f for f in K.KERNELS if f != "tensorcore.cu"])  # compiled at first use, guarded below
    r = {}
    rs = cupy.random.default_rng(0)
    f32 = cupy.float32

    n = 4096
    a, b = rs.standard_normal((n, n), dtype=f32), rs.standard_normal((n, n), dtype=f32)
    c = cupy.empty((n, n), f32)
    t_cublas = _events_ms(cupy, lambda: cupy.matmul(a, b, out=c))
    t_ours = _events_ms(cupy, lambda: K.matmul(a, b, out=c))
    r["matmul_4096"] = {"cublas_ms": t_cublas, "custom_ms": t_ours,
                        "cublas_tflops": 2 * n**3 / t_cublas / 1e9, "custom_tflops": 2 * n**3 / t_ours / 1e9,
                        "custom_vs_cublas": t_cublas / t_ours, "target": ">= 0.70"}
    ref = cupy.matmul(a[:256], b)
    r["matmul_4096"]["max_rel_err_256_rows"] = float(cupy.abs(K.matmul(a[:256], b) - ref).max() / cupy.abs(ref).max())

    # Tensor cores (kernels/tensorcore.py; the launchers take float32 as TF32 without the switch).
    # A failure here (tensorcore.cu not compiling, say) is recorded and the strict targets go on.
    f16 = cupy.float16
    try:
        a16, b16, c16 = a.astype(f16), b.astype(f16), cupy.empty((n, n), f16)
        t_tf32 = _events_ms(cupy, lambda: K.tensorcore.matmul(a, b, out=c))
        t_f16 = _events_ms(cupy, lambda: K.tensorcore.matmul(a16, b16, out=c16))
        t_cublas16 = _events_ms(cupy, lambda: cupy.matmul(a16, b16, out=c16))
        scale = float(cupy.abs(ref).max())
        r["matmul_4096_tensor_cores"] = {
            "custom_tf32_ms": t_tf32, "custom_tf32_tflops": 2 * n**3 / t_tf32 / 1e9,
            "custom_f16_ms": t_f16, "custom_f16_tflops": 2 * n**3 / t_f16 / 1e9,
            "cublas_f16_ms": t_cublas16, "cublas_f16_tflops": 2 * n**3 / t_cublas16 / 1e9,
            "tf32_max_rel_err_256_rows": float(cupy.abs(K.tensorcore.matmul(a[:256], b) - ref).max()) / scale,
            "f16_max_rel_err_256_rows": float(cupy.abs(K.tensorcore.matmul(a16[:256], b16).astype(f32) - ref).max())
            / scale,
            "target": "custom_f16 >= 0.5 x cuBLAS f16; tf32 error ~3e-4"}
    except Exception:
        r["matmul_4096_tensor_cores"] = {"error": traceback.format_exc()}

    x, w, bias = (rs.standard_normal(s, dtype=f32) for s in ((128, 1024), (1024, 512), (512,)))
    t_sep = _events_ms(cupy, lambda: cupy.maximum(cupy.matmul(x, w) + bias, 0))
    t_fused = _events_ms(cupy, lambda: K.dense(x, w, bias, "relu"))
    r["dense_128x1024x512_relu"] = {"cublas_bias_relu_ms": t_sep, "custom_fused_ms": t_fused,
                                    "target": "custom faster"}

    xs, ks = (128, 26, 26, 32), (3, 3, 32, 32)
    xc, kc = rs.standard_normal(xs, dtype=f32), rs.standard_normal(ks, dtype=f32)
    dy = rs.standard_normal((128, 24, 24, 32), dtype=f32)
    t_conv = _events_ms(cupy, lambda: (K.conv2d(xc, kc), K.conv2d_grad_input(dy, kc, xs),
                                       K.conv2d_grad_filter(xc, dy, ks)))
    r["conv2_seed_fwd_bwd"] = {"custom_ms": t_conv, "target": "<= cuDNN via PyTorch"}
    TC = K.tensorcore
    xc16, kc16, dy16 = xc.astype(f16), kc.astype(f16), dy.astype(f16)
    try:
        r["conv2_seed_fwd_bwd"]["custom_tf32_ms"] = _events_ms(cupy, lambda: (
            TC.conv2d(xc, kc), TC.conv2d_grad_input(dy, kc, xs), TC.conv2d_grad_filter(xc, dy, ks)))
        r["conv2_seed_fwd_bwd"]["custom_f16_ms"] = _events_ms(cupy, lambda: (
            TC.conv2d(xc16, kc16), TC.conv2d_grad_input(dy16, kc16, xs), TC.conv2d_grad_filter(xc16, dy16, ks)))
    except Exception:
        r["conv2_seed_fwd_bwd"]["custom_tensor_core_error"] = traceback.format_exc()
    try:
        import torch
        torch.backends.cudnn.benchmark = True
        xt = torch.randn(128, 32, 26, 26, device="cuda", requires_grad=True)
        conv = torch.nn.Conv2d(32, 32, 3, bias=False).cuda()
        gt = torch.randn(128, 32, 24, 24, device="cuda")

        def tstep():
            xt.grad = None
            conv.weight.grad = None
            conv(xt).backward(gt)

        def timed():
            for _ in range(5):
                tstep()
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            ts = []
            for _ in range(20):
                s.record()
                tstep()
                e.record()
                e.synchronize()
                ts.append(s.elapsed_time(e))
            return statistics.median(ts)
        # As PyTorch ships (cuDNN may use TF32), then strict float32 as ours.
        r["conv2_seed_fwd_bwd"]["cudnn_torch_ms"] = timed()
        torch.backends.cudnn.allow_tf32 = False
        r["conv2_seed_fwd_bwd"]["cudnn_torch_fp32_ms"] = timed()
        torch.backends.cudnn.allow_tf32 = True
        # float16 inputs as autocast runs them (cuDNN on tensor cores, float32 accumulation).
        conv.half()  # tstep reads xt and gt from here at each call
        xt = torch.randn(128, 32, 26, 26, device="cuda", dtype=torch.float16, requires_grad=True)
        gt = gt.half()
        r["conv2_seed_fwd_bwd"]["cudnn_torch_f16_ms"] = timed()
        at, bt = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        s_, e_ = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ts = []
        for i in range(23):
            s_.record()
            torch.matmul(at, bt)
            e_.record()
            e_.synchronize()
            if i >= 3:
                ts.append(s_.elapsed_time(e_))
        torch.backends.cuda.matmul.allow_tf32 = False
        r["matmul_4096_tensor_cores"]["cublas_tf32_torch_ms"] = statistics.median(ts)
    except Exception as ex:  # PyTorch missing: the custom time still stands
        r["conv2_seed_fwd_bwd"]["cudnn_torch_error"] = repr(ex)

    xp_ = rs.standard_normal((512, 112, 112, 64), dtype=f32)
    yp = cupy.empty((512, 56, 56, 64), f32)
    t_pool = _events_ms(cupy, lambda: K.max_pool2d(xp_, 2, None, "valid", out=yp))
    dst = cupy.empty_like(xp_)
    t_copy = _events_ms(cupy, lambda: cupy.copyto(dst, xp_))
    pool_bytes, copy_bytes = xp_.nbytes + yp.nbytes, 2 * xp_.nbytes
    r["max_pool_512x112x112x64"] = {"custom_ms": t_pool, "GB_s": pool_bytes / t_pool / 1e6,
                                    "copy_GB_s": copy_bytes / t_copy / 1e6,
                                    "fraction_of_copy": (pool_bytes / t_pool) / (copy_bytes / t_copy),
                                    "target": ">= 0.70"}
    try:
        r["image_transform"] = _micro_image_transform(cupy, copy_bytes / t_copy / 1e6)
    except Exception:
        r["image_transform"] = {"error": traceback.format_exc()}
    return r


def _micro_image_transform(cupy, copy_gb_s, shapes=((128, 32, 32, 3), (32, 224, 224, 3))):
    """kernels/image.cu (issue 17): a rotation + zoom batch, bilinear with reflect fill, and its image
    gradient, beside the generic CuPy version it replaces and PyTorch's affine_grid + grid_sample
    (bilinear, reflection padding: the same work, not the same arithmetic)."""
    from deepgpu import backends, kernels as K
    from deepgpu.backends.base import Backend

    B = backends.get("cuda")
    out = {}
    for n, h, w, c in shapes:
        rs = cupy.random.default_rng(1)
        x = rs.random((n, h, w, c), dtype=cupy.float32)
        a = rs.uniform(-0.3, 0.3, n).astype(cupy.float32)
        z = rs.uniform(0.8, 1.2, n).astype(cupy.float32)
        cx, cy = 0.5 * (w - 1), 0.5 * (h - 1)
        ca, sa = cupy.cos(a) * z, cupy.sin(a) * z
        t = cupy.ascontiguousarray(cupy.stack([ca, -sa, cx - cx * ca + cy * sa, sa, ca, cy - cx * sa - cy * ca,
                                               0 * a, 0 * a], 1))
        dy = rs.random((n, h, w, c), dtype=cupy.float32)
        fwd = _events_ms(cupy, lambda: K.image_transform(x, t, h, w, "bilinear", "reflect"))
        grad = _events_ms(cupy, lambda: K.image_transform_grad(dy, x.shape, t, "bilinear", "reflect"))
        gen = _events_ms(cupy, lambda: Backend.image_transform(B, x, t, h, w, "bilinear", "reflect"))
        gen_grad = _events_ms(cupy, lambda: Backend.image_transform_grad(B, dy, x.shape, t, "bilinear", "reflect"))
        err = float(cupy.abs(K.image_transform(x, t, h, w, "bilinear", "reflect")
                             - Backend.image_transform(B, x, t, h, w, "bilinear", "reflect")).max())
        row = {"custom_ms": fwd, "custom_grad_ms": grad, "generic_cupy_ms": gen, "generic_cupy_grad_ms": gen_grad,
               "GB_s": 2 * x.nbytes / fwd / 1e6, "copy_GB_s": copy_gb_s, "max_abs_diff_vs_generic": err,
               "target": "custom faster than the generic path and than grid_sample"}
        try:
            import torch
            xt = torch.as_tensor(x.transpose(0, 3, 1, 2).copy(), device="cuda")
            theta = torch.as_tensor(cupy.stack([cupy.stack([ca, -sa, 0 * a], 1), cupy.stack([sa, ca, 0 * a], 1)], 1),
                                    device="cuda")
            grid = torch.nn.functional.affine_grid(theta, list(xt.shape), align_corners=True)

            def peer():
                torch.nn.functional.grid_sample(xt, grid, "bilinear", "reflection", align_corners=True)
            row["torch_grid_sample_ms"] = _events_ms(cupy, peer)
        except Exception as ex:  # PyTorch missing: our times still stand
            row["torch_error"] = repr(ex)
        out[f"{n}x{h}x{w}x{c}"] = row
    return out


# ---------------------------------------------------------------------- run
def _versions():
    v = {"python": platform.python_version()}
    for mod in ("deepgpu", "cupy", "torch", "numpy"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:
            v[mod] = None
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        v["device"] = props["name"].decode()
        v["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        v["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
    except Exception as e:
        v["device"] = f"unavailable: {e}"
    return v


def _markdown(result):
    lines = [f"# Seed convnet training step, {result['versions'].get('device')}, {result['date']}", "",
             "| batch | path | median ms | p10 | p90 | pipelined mean ms | device memory held (bytes) |",
             "|---|---|---|---|---|---|---|"]
    for batch, paths in result["step"].items():
        for path, r in paths.items():
            if "error" in r:
                lines.append(f"| {batch} | {path} | error: {r['error'].splitlines()[-1][:80]} | | | | |")
                continue
            mem = r.get("pool_total_bytes", r.get("max_memory_reserved_bytes", ""))
            lines.append(f"| {batch} | {path} | {r['median_ms']} | {r['p10_ms']} | {r['p90_ms']} | "
                         f"{r['pipelined_mean_ms']} | {mem} |")
    if result.get("micro"):
        lines += ["", "## Kernel targets", "", "```", json.dumps(result["micro"], indent=1), "```"]
    lines += ["", "Versions: " + json.dumps(result["versions"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--only", nargs="+", choices=PATHS, default=list(PATHS))
    ap.add_argument("--micro", action="store_true", help="also the issue's per-kernel targets")
    ap.add_argument("--out", default=str(Path(__file__).with_name("gpu_step.json")))
    args = ap.parse_args(argv)

    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "versions": _versions(),
              "args": vars(args), "step": {}}
    runners = {"deepgpu-cupy": lambda b: bench_deepgpu("cupy", b, args.warmup, args.steps),
               "deepgpu-custom": lambda b: bench_deepgpu("custom", b, args.warmup, args.steps),
               "deepgpu-fitstep": lambda b: bench_deepgpu("custom", b, args.warmup, args.steps, fitstep=True),
               "deepgpu-graph": lambda b: bench_deepgpu("custom", b, args.warmup, args.steps, graph=True),
               "torch-eager": lambda b: bench_torch(False, b, args.warmup, args.steps),
               "torch-graph": lambda b: bench_torch(True, b, args.warmup, args.steps),
               "torch-eager-fp32": lambda b: bench_torch(False, b, args.warmup, args.steps, tf32=False),
               "torch-graph-fp32": lambda b: bench_torch(True, b, args.warmup, args.steps, tf32=False),
               "deepgpu-tf32": lambda b: bench_deepgpu("custom", b, args.warmup, args.steps, tf32=True),
               "deepgpu-graph-tf32": lambda b: bench_deepgpu("custom", b, args.warmup, args.steps, graph=True,
                                                             tf32=True),
               "torch-eager-tf32": lambda b: bench_torch(False, b, args.warmup, args.steps, matmul_tf32=True),
               "torch-graph-tf32": lambda b: bench_torch(True, b, args.warmup, args.steps, matmul_tf32=True),
               "deepgpu-fp16": lambda b: bench_deepgpu("custom", b, args.warmup, args.steps,
                                                       policy="mixed_float16"),
               "deepgpu-graph-fp16": lambda b: bench_deepgpu("custom", b, args.warmup, args.steps, graph=True,
                                                             policy="mixed_float16"),
               "torch-eager-amp": lambda b: bench_torch(False, b, args.warmup, args.steps, amp=True),
               "torch-graph-amp": lambda b: bench_torch(True, b, args.warmup, args.steps, amp=True)}
    for batch in args.batches:
        result["step"][batch] = {}
        for path in args.only:
            try:
                r = runners[path](batch)
            except Exception:
                r = {"error": traceback.format_exc()}
            result["step"][batch][path] = r
            print(f"batch {batch:4d} {path:18s} " + (
                f"median {r['median_ms']:.3f} ms, pipelined {r['pipelined_mean_ms']:.3f} ms"
                if "error" not in r else "ERROR " + r["error"].strip().splitlines()[-1]), flush=True)
    if args.micro:
        try:
            result["micro"] = bench_micro()
        except Exception:
            result["micro"] = {"error": traceback.format_exc()}
        print(json.dumps(result["micro"], indent=1), flush=True)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(_markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
