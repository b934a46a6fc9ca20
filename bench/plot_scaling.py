"""How the cost of a training step grows: batch 32/128/512 (seed convnet, 28x28)
and input 28/56/112 (the convnet with global average pooling, batch 128).

    python3 bench/plot_scaling.py [--compare torch,keras] [--out bench/scaling.png]

Each point is the median of ``--rounds`` x ``--steps`` training steps from
``deepgpu bench``'s workers (same environment cleaning, same threads). The
plot shows time per step against the step's arithmetic (FLOPs), both
relative to the smallest point, so a curve above the FLOPs line grows faster
than the arithmetic does. Writes the PNG and a JSON of the numbers beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from deepgpu import bench


def conv_flops(size, batch, global_pool):
    """FLOPs of one training step (3x forward, less the first layer's input gradient)."""
    c1 = (size - 2) ** 2 * 9 * 32
    c2 = (size - 4) ** 2 * 288 * 32
    p = (size - 4) // 2
    c3 = (p - 2) ** 2 * 288 * 64
    c4 = (p - 4) ** 2 * 576 * 64
    q = (p - 4) // 2
    dense_in = 64 if global_pool else 64 * q * q
    fwd = 2 * (c1 + c2 + c3 + c4 + dense_in * 512 + 512 * 10)
    return batch * (3 * fwd - 2 * c1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", default="none")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling.png"))
    a = p.parse_args(argv)
    fws = ["deepgpu"] + ([] if a.compare == "none" else a.compare.split(","))
    env, removed = bench.clean_env(a.threads)
    if removed:
        print("note: unset", ", ".join(removed), "for the workers")
    base = dict(backend="cpu", model="cnn", warmup=1, steps=a.steps, rounds=a.rounds, threads=a.threads,
                quiet_workers=True, epoch=False, data_dir=None)
    series = {"batch": [], "input": []}
    for batch in (32, 128, 512):
        ns = argparse.Namespace(**base, batch_size=batch, input_size=28, global_pool=False)
        res = bench.run_model(ns, env, fws)
        series["batch"].append({"x": batch, "flops": conv_flops(28, batch, False),
                                **{fw: r["step_ms"] for fw, r in res.items()}})
        print("batch", series["batch"][-1], flush=True)
    for size in (28, 56, 112):
        ns = argparse.Namespace(**base, batch_size=128, input_size=size, global_pool=True)
        res = bench.run_model(ns, env, fws)
        series["input"].append({"x": size, "flops": conv_flops(size, 128, True),
                                **{fw: r["step_ms"] for fw, r in res.items()}})
        print("input", series["input"][-1], flush=True)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump({"threads": a.threads, "cpu": bench.cpu_model(), "series": series}, f, indent=1)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "batch", "batch size (seed convnet, 28x28)"),
                           (axes[1], "input", "input side (convnet + global pooling, batch 128)")):
        pts = series[key]
        xs = [q["x"] for q in pts]
        ax.plot(xs, [q["flops"] / pts[0]["flops"] for q in pts], "k--", label="FLOPs (relative)")
        for fw in fws:
            ax.plot(xs, [q[fw] / pts[0][fw] for q in pts], "o-", label=f"{fw} ms/step (relative)")
            for q in pts:
                ax.annotate(f"{q[fw]:.0f} ms", (q["x"], q[fw] / pts[0][fw]), fontsize=7,
                            textcoords="offset points", xytext=(4, -10))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.set_xlabel(label)
        ax.set_ylabel("relative to the smallest")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Training step cost, {a.threads} thread(s), {bench.cpu_model()}")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
