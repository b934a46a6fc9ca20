"""Helpers of the benchmark suites: random data and a timed call that records rates."""
from __future__ import annotations



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
