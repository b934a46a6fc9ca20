"""The folded convolution / Dense gradients against the generic ones, in one process, without a GPU.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/grad_fold_ab.py [--steps 100] [--rounds 20]

bench/host_overhead.py's seed-convnet train step (CUDA backend over NumPy, our launches no-ops,
batch 2) timed with ``CupyBackend.conv2d_bias_act_grad`` and ``dense_grad`` (relu mask in the
convolution-gradient loads, bias gradient as a row of ones in the filter gradient) and with the
base class's generic versions in their place (relu_grad, the two gradient kernels or GEMMs, a
column sum), rounds alternated in the same process, so that both see the same load. Prints
process CPU microseconds per step (median of the rounds, min-max) and our launches per step.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import host_overhead as H  # noqa: E402

FOLDED = ("conv2d_bias_act_grad", "dense_grad")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="steps timed per round")
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # no-op launches leave outputs unset
    np.seterr(all="ignore")
    from deepgpu.backends.base import Backend
    from deepgpu.backends.cupy_backend import CupyBackend

    folded = {n: CupyBackend.__dict__[n] for n in FOLDED}
    case = H._deepgpu_case("convnet", 2)
    times, launches = {"folded": [], "generic": []}, {}
    try:
        for r in range(a.rounds):
            for mode in ("folded", "generic") if r % 2 == 0 else ("generic", "folded"):
                for n, f in folded.items():
                    setattr(CupyBackend, n, f if mode == "folded" else getattr(Backend, n))
                for _ in range(3):  # plans of this mode's launches
                    case["train"]()
                times[mode].append(H._mean_us(case["train"], a.steps))
                launches[mode] = case["counts"](case["train"])[0]
    finally:
        for n, f in folded.items():
            setattr(CupyBackend, n, f)
    print(f"seed convnet train_on_batch, batch 2, {a.rounds} rounds x {a.steps} steps, "
          f"load at the end {os.getloadavg()[0]:.1f}")
    for mode, v in times.items():
        print(f"  {mode:8s} {statistics.median(v):6.0f} us ({min(v):.0f}-{max(v):.0f}), "
              f"{launches[mode]:.0f} of our launches per step")


if __name__ == "__main__":
    main()
