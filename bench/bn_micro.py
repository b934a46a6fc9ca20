"""BatchNormalization's training forward + backward on the CPU: time per call and backend calls.

    python3 bench/bn_micro.py [--shape 128 32 32 16] [--repeat 20]

Times ``ops.batch_norm`` (gamma and beta given) and its gradient rule with a
fixed output gradient (median of ``--repeat`` runs after two warm-ups), and
counts the backend method calls one forward and one backward make (a call
made inside another backend method is not counted again). ``chain`` is the
rule before the fused primitives (a chain of generic backend ops, copied
here from deepgpu/ops.py as of 3f28074); both run in turn, A B A B, as the
machine may be shared.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs="+", default=[128, 32, 32, 16])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)

    import numpy as np

    import deepgpu
    from deepgpu import backends, ops
    from deepgpu.autograd import GRADIENTS
    from deepgpu.tensor import Tensor

    B = backends.get("cpu")
    backends.set_backend("cpu")
    rng = np.random.default_rng(0)
    shape = tuple(args.shape)
    c = shape[-1]
    x = Tensor(B.asarray(rng.standard_normal(shape).astype(np.float32) * 2 + 1), B)
    g = Tensor(B.asarray(rng.uniform(0.5, 1.5, c).astype(np.float32)), B)
    b = Tensor(B.asarray(rng.uniform(-0.5, 0.5, c).astype(np.float32)), B)
    for t in (x, g, b):
        t.requires_grad = True
    dy = B.asarray(rng.standard_normal(shape).astype(np.float32))
    grad_rule = GRADIENTS["batch_norm"]

    def fused_forward():
        return ops.batch_norm(x, g, b, -1, 1e-3)[0]

    def fused_backward(y):
        return grad_rule(y._node, dy)

    red = tuple(range(len(shape) - 1))
    kshape = (1,) * len(red) + (c,)

    def chain_forward():
        m = B.mean(x.data, axis=red, keepdims=True)
        xc = B.subtract(x.data, m)
        var = B.mean(B.square(xc), axis=red, keepdims=True)
        inv = B.divide(1.0, B.sqrt(B.add(var, 1e-3)))
        xhat = B.multiply(xc, inv)
        y = B.add(B.multiply(xhat, B.reshape(g.data, kshape)), B.reshape(b.data, kshape))
        return y, xhat, inv, B.reshape(m, (c,)), B.reshape(var, (c,))

    def chain_backward(saved):
        _, xhat, inv = saved[:3]
        gg = B.multiply(dy, B.reshape(g.data, kshape))
        mg = B.mean(gg, axis=red, keepdims=True)
        mgx = B.mean(B.multiply(gg, xhat), axis=red, keepdims=True)
        gx = B.multiply(inv, B.subtract(B.subtract(gg, mg), B.multiply(xhat, mgx)))
        return gx, B.sum(B.multiply(dy, xhat), axis=red), B.sum(dy, axis=red)

    paths = {"fused": (fused_forward, fused_backward), "chain": (chain_forward, chain_backward)}

    # Backend calls: wrap the public methods on the instance for one forward and one backward.
    names = [n for n in dir(type(B)) if not n.startswith("_") and callable(getattr(type(B), n))]

    def count(forward, backward):
        counts = {"forward": {}, "backward": {}}
        phase, depth = ["forward"], [0]

        def wrap(name, fn):
            def inner(*a, **k):
                if depth[0]:
                    return fn(*a, **k)
                depth[0] += 1
                try:
                    return fn(*a, **k)
                finally:
                    depth[0] -= 1
                    d = counts[phase[0]]
                    d[name] = d.get(name, 0) + 1
            return inner

        for n in names:
            setattr(B, n, wrap(n, getattr(B, n)))
        try:
            y = forward()
            phase[0] = "backward"
            backward(y)
        finally:
            for n in names:
                B.__dict__.pop(n, None)
        return counts

    def timed(fn):
        fn()
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    print(f"batch_norm {shape} float32, {B.threads} threads, deepgpu {deepgpu.__version__}")
    times = {p: {"forward": [], "backward": [], "both": []} for p in paths}
    saved = {p: f() for p, (f, _) in paths.items()}
    for _ in range(args.repeat):  # the two paths in turn
        for p, (fwd, bwd) in paths.items():
            times[p]["forward"].append(timed(fwd))
            times[p]["backward"].append(timed(lambda: bwd(saved[p])))
            times[p]["both"].append(timed(lambda: bwd(fwd())))
    for p, (fwd, bwd) in paths.items():
        counts = count(fwd, bwd)
        med = {k: statistics.median(v) * 1e3 for k, v in times[p].items()}
        print(f"{p}:")
        for ph in ("forward", "backward"):
            d = counts[ph]
            print(f"  {ph}: {sum(d.values())} backend calls: " + ", ".join(f"{k} {v}" for k, v in sorted(d.items())))
        print(f"  forward {med['forward']:.2f} ms, backward {med['backward']:.2f} ms, "
              f"forward + backward {med['both']:.2f} ms (median of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
