"""Helpers of the benchmark suites: random data and a timed call that records rates."""
from __future__ import annotations

import statistics
import time


def rand(B, rng, shape, dtype="float32"):
    """Random (never zero) data of ``shape`` on backend ``B``."""
    return B.asarray(rng.standard_normal(shape).astype(dtype))


def timed(benchmark, B, fn, *, flops=None, nbytes=None, rounds=None):
    """Benchmark ``fn()`` (synced on ``B``) and record the achieved rate."""
    def run():
        out = fn()
        B.sync()
        return out

    if rounds:
        out = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    else:
        out = benchmark(run)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing to report
        return out
    med = benchmark.stats.stats.median
    benchmark.extra_info["backend"] = B.name
    benchmark.extra_info["median_ms"] = round(med * 1e3, 4)
    if flops:
        benchmark.extra_info["GFLOP/s"] = round(flops / med / 1e9, 2)
    if nbytes:
        benchmark.extra_info["GB/s"] = round(nbytes / med / 1e9, 2)
    return out


def alternated(steps, rounds, reps=5, warmup=1):
    """{name: [median seconds of ``reps`` calls, one per round]} for the callables in ``steps``,
    each called ``warmup`` times first; each round starts one name further on, so every peer
    runs early and late under the machine's changing load."""
    for f in steps.values():
        for _ in range(warmup):
            f()
    names = list(steps)
    times = {k: [] for k in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                steps[name]()
                ts.append(time.perf_counter() - t)
            times[name].append(statistics.median(ts))
    return times
