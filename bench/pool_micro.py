"""Bandwidth of the pooling kernels and of the per-layer elementwise kernels, on a GPU.

    python3 bench/pool_micro.py [--baseline DIR] [--out FILE.json]

Times (CUDA events, warm-up, median of --reps) max/avg pooling 2x2 stride 2
forward and backward on 512x112x112x64 and on the seed convnet's shapes
(128x24x24x32, 128x10x10x64), and bias_act / relu_grad / col_sum on
128x26x26x32. Each figure is bytes read + written per second, beside a
device-to-device copy of the same traffic timed in the same run (``ratio``
= ours / copy). Small shapes run --inner launches between two events, so that
the figure is the kernel's and not one launch's latency: those launches are
captured once in a CUDA graph (so that Python's launch cost stays out of the
timing) and the graph is replayed between the events.

--baseline DIR: a directory with earlier pool.cu, elementwise.cu and
common.cuh (e.g. from ``git show``); their kernels, launched as those
sources expect, are timed beside ours and their outputs compared with ours.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np


def _events_ms(cp, fn, reps, inner, warmup=3):
    """Median ms of one fn() over reps timings of ``inner`` calls, on the current (non-default) stream.

    With inner > 1 the calls are captured in a CUDA graph and the graph is
    replayed, so that the host's launch cost does not pace the GPU.
    """
    stream = cp.cuda.get_current_stream()
    for _ in range(warmup):
        fn()
    run = fn
    if inner > 1:
        try:
            stream.begin_capture()
            try:
                for _ in range(inner):
                    fn()
            finally:
                graph = stream.end_capture()
            run = lambda: graph.launch(stream)
            run()
        except Exception as e:  # capture refused: plain launches (then the host may pace them)
            print(f"graph capture failed ({type(e).__name__}: {e}); timing plain launches", flush=True)
            run = lambda: [fn() for _ in range(inner)]
    start, end = cp.cuda.Event(), cp.cuda.Event()
    out = []
    for _ in range(reps):
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        out.append(cp.cuda.get_elapsed_time(start, end) / inner)
    return statistics.median(out)


class Baseline:
    """Earlier kernel sources, compiled apart from deepgpu's and launched with their own arguments."""

    def __init__(self, cp, root):
        root = Path(root)
        common = root.joinpath("common.cuh").read_text().replace("#pragma once", "")

        def module(name):
            src = re.sub(r'^#include "common.cuh".*$', lambda m: common, root.joinpath(name).read_text(), flags=re.M)
            return cp.RawModule(code=src, options=("--std=c++17",))

        self.pool, self.ew = module("pool.cu"), module("elementwise.cu")
        self.cp = cp

    def _grid(self, n):
        return (max(1, min(-(-int(n) // 256), 65536)),)

    def pool_call(self, name, arrays, geom, n_out):
        fn = self.pool.get_function(name)
        return lambda: fn(self._grid(n_out), (256,), tuple(arrays) + geom)

    def bias_act(self, x, b, y, cols):
        fn = self.ew.get_function("dg_bias_act")
        return lambda: fn(self._grid(x.size), (256,), (x, b, y, np.int64(x.size // cols), np.int32(cols), np.int32(1)))

    def relu_grad(self, dy, x, dx):
        fn = self.ew.get_function("dg_relu_grad")
        return lambda: fn(self._grid(x.size), (256,), (dy, x, dx, np.int64(x.size)))

    def col_sum(self, x, out, sms):
        cp = self.cp
        rows, cols = x.shape
        gx = -(-cols // 32)
        splits = max(1, min(2 * sms // gx, rows // 256, 65535))
        rows_per = -(-rows // splits)
        splits = -(-rows // rows_per)
        parts = cp.empty((splits, cols), cp.float32)
        f1, f2 = self.ew.get_function("dg_col_sum"), self.ew.get_function("dg_sum_splits")

        def run():
            f1((gx, splits), (32, 8), (x, parts, np.int64(rows), np.int32(cols), np.int64(rows_per)))
            f2(self._grid(cols), (256,), (parts, out, np.int32(splits), np.int64(cols)))
        return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="directory with earlier pool.cu, elementwise.cu, common.cuh")
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--inner", type=int, default=20, help="launches per event pair below 64 MB of traffic")
    ap.add_argument("--out", help="write the results here as JSON")
    args = ap.parse_args(argv)

    import cupy as cp

    from deepgpu import kernels as K
    from deepgpu.backends.base import conv_output_size

    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    sms = props["multiProcessorCount"]
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    print(f"device: {name}, {sms} SMs; CuPy {cp.__version__}", flush=True)
    K.precompile(["pool.cu", "elementwise.cu"])
    base = Baseline(cp, args.baseline) if args.baseline else None
    with cp.cuda.Stream(non_blocking=True):
        rows = _run(cp, K, conv_output_size, base, args, sms)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, "rows": rows}, indent=1))
    print("\n%-40s %-18s %8s %9s %9s %6s %8s %7s" % ("op", "shape", "ms", "GB/s", "copy", "ratio", "base_ms", "speedup"))
    for r in rows:
        print("%-40s %-18s %8.4f %9.1f %9.1f %6.3f %8s %7s" % (
            r["op"], "x".join(map(str, r["shape"])), r["ms"], r["GB/s"], r["copy_GB/s"], r["ratio"],
            r.get("baseline_ms", ""), r.get("speedup", "")))
    return 0


def _run(cp, K, conv_output_size, base, args, sms):
    rng = cp.random.default_rng(0)
    f32 = cp.float32
    rows = []

    def timed(fn, traffic):
        inner = 1 if traffic >= 64e6 else args.inner
        return _events_ms(cp, fn, args.reps, inner)

    copy_cache = {}

    def copy_ms(traffic):
        # A copy of traffic/2 bytes reads and writes `traffic` bytes.
        n = int(traffic // 2) // 4 * 4
        if n not in copy_cache:
            a, b = cp.empty(n // 4, f32), cp.empty(n // 4, f32)
            a.fill(1.0)
            copy_cache[n] = timed(lambda: cp.cuda.runtime.memcpyAsync(
                b.data.ptr, a.data.ptr, n, cp.cuda.runtime.memcpyDeviceToDevice,
                cp.cuda.get_current_stream().ptr), traffic)
        return copy_cache[n]

    def record(what, shape, traffic, ms, base_ms=None, same=None):
        t_copy = copy_ms(traffic)
        r = {"op": what, "shape": list(shape), "MB": round(traffic / 1e6, 1), "ms": round(ms, 4),
             "GB/s": round(traffic / ms / 1e6, 1), "copy_GB/s": round(traffic / t_copy / 1e6, 1),
             "ratio": round(t_copy / ms, 3)}
        if base_ms is not None:
            r.update({"baseline_ms": round(base_ms, 4), "baseline_ratio": round(t_copy / base_ms, 3),
                      "speedup": round(base_ms / ms, 2)})
        if same is not None:
            r["matches_baseline"] = same
        rows.append(r)
        print(json.dumps(r), flush=True)

    def compare(a, b, exact=True):
        if exact:
            return bool(cp.array_equal(a, b, equal_nan=True))
        return float(cp.abs(a - b).max() / max(float(cp.abs(b).max()), 1e-30))

    for shape in ((512, 112, 112, 64), (128, 24, 24, 32), (128, 10, 10, 64)):
        n, h, w, c = shape
        x = rng.standard_normal(shape, dtype=f32)
        ho, _ = conv_output_size(h, 2, 2, 1, "valid")
        wo, _ = conv_output_size(w, 2, 2, 1, "valid")
        y, dy = cp.empty((n, ho, wo, c), f32), rng.standard_normal((n, ho, wo, c), dtype=f32)
        dx = cp.empty(shape, f32)
        geom = tuple(np.int32(v) for v in (n, h, w, c, ho, wo, 2, 2, 2, 2, 0, 0))
        xb, yb = x.nbytes, y.nbytes
        cases = [
            ("max_pool2d 2x2/2", xb + yb, lambda: K.max_pool2d(x, 2, out=y), y,
             base and base.pool_call("dg_max_pool_fwd", (x, y), geom, y.size)),
            ("max_pool2d_grad 2x2/2", 2 * xb + yb, lambda: K.max_pool2d_grad(dy, x, 2, out=dx), dx,
             base and base.pool_call("dg_max_pool_bwd", (x, dy, dx), geom, dx.size)),
            ("avg_pool2d 2x2/2", xb + yb, lambda: K.avg_pool2d(x, 2, out=y), y,
             base and base.pool_call("dg_avg_pool_fwd", (x, y), geom, y.size)),
            ("avg_pool2d_grad 2x2/2", xb + yb, lambda: K.avg_pool2d_grad(dy, shape, 2, out=dx), dx,
             base and base.pool_call("dg_avg_pool_bwd", (dy, dx), geom, dx.size)),
        ]
        for what, traffic, ours, out, theirs in cases:
            same = base_ms = None
            if theirs:
                theirs()
                ref = out.copy()
                ours()
                same = compare(out, ref)
                base_ms = timed(theirs, traffic)
            record(what, shape, traffic, timed(ours, traffic), base_ms, same)
        # A strided (overlapping) case on the big shape: the gather backward, vectorized.
        if shape[0] == 512:
            ho3, _ = conv_output_size(h, 3, 2, 1, "same")
            wo3, _ = conv_output_size(w, 3, 2, 1, "same")
            y3, dy3 = cp.empty((n, ho3, wo3, c), f32), rng.standard_normal((n, ho3, wo3, c), dtype=f32)
            record("max_pool2d 3x3/2 same", shape, xb + y3.nbytes,
                   timed(lambda: K.max_pool2d(x, 3, 2, "same", out=y3), xb + y3.nbytes))
            record("max_pool2d_grad 3x3/2 same", shape, 2 * xb + y3.nbytes,
                   timed(lambda: K.max_pool2d_grad(dy3, x, 3, 2, "same", out=dx), 2 * xb + y3.nbytes))
            del y3, dy3
        if shape[0] == 512:  # PyTorch for scale (big shape only: timed without a graph)
            try:
                import torch
                xt = torch.as_tensor(x, device="cuda").permute(0, 3, 1, 2)  # NHWC memory: channels_last
                ts = torch.cuda.ExternalStream(cp.cuda.get_current_stream().ptr)
                with torch.cuda.stream(ts):
                    record("torch max_pool2d 2x2/2 (channels_last)", shape, xb + yb,
                           timed(lambda: torch.nn.functional.max_pool2d(xt, 2), xb + yb))
                del xt
            except Exception as e:  # no PyTorch here: ours alone
                print(f"torch: {type(e).__name__}: {e}", flush=True)
        del x, y, dy, dx
        cp.get_default_memory_pool().free_all_blocks()

    shape = (128, 26, 26, 32)
    x = rng.standard_normal(shape, dtype=f32)
    b, g = rng.standard_normal((32,), dtype=f32), rng.standard_normal(shape, dtype=f32)
    y = cp.empty(shape, f32)
    x2 = x.reshape(-1, 32)
    cs = cp.empty((32,), f32)
    cases = [
        ("bias_act relu", 2 * x.nbytes, lambda: K.bias_act(x, b, "relu", out=y), y, True,
         base and base.bias_act(x, b, y, 32)),
        ("relu_grad", 3 * x.nbytes, lambda: K.relu_grad(g, x, out=y), y, True,
         base and base.relu_grad(g, x, y)),
        ("col_sum [86528, 32]", x.nbytes, lambda: K.col_sum(x2, out=cs), cs, False,
         base and base.col_sum(x2, cs, sms)),
    ]
    for what, traffic, ours, out, exact, theirs in cases:
        same = base_ms = None
        if theirs:
            theirs()
            ref = out.copy()
            ours()
            same = compare(out, ref, exact)
            base_ms = timed(theirs, traffic)
        record(what, shape, traffic, timed(ours, traffic), base_ms, same)

    return rows


if __name__ == "__main__":
    sys.exit(main())
