"""What the CPU peer benchmarks (rnn_peers.py, transformer_peers.py) share: each framework in its own
worker process, started once and warmed up; the parent alternates them round by round (the starting
worker rotated each round) and reports the median per-step time, parameter counts, each worker's
peak resident memory (ru_maxrss), versions and the machine.

``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` are removed from the workers' environment; the thread
count goes to the BLAS, ``DEEPGPU_NUM_THREADS`` and the frameworks' own pools. A peer that is not
installed is skipped with a line saying so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def worker(maker, nets):
    """Reads ``NET STEPS`` lines; answers each with a JSON line {net, seconds per step, params, peak RSS}.

    maker(net) -> (step, params): one training step as a callable, and the network's parameter count.
    """
    steps = {}
    for net in nets:
        step, params = maker(net)
        step()  # warm-up: builds, compiles, allocates
        step()
        steps[net] = (step, params)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        net, n = line.split()
        step, params = steps[net]
        t = time.perf_counter()
        for _ in range(int(n)):
            step()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
        print(json.dumps({"net": net, "s": (time.perf_counter() - t) / int(n), "params": params, "rss_mb": rss}),
              flush=True)


# ------------------------------------------------------------------- parent
def _installed(framework):
    mod = {"deepgpu": "deepgpu", "torch": "torch", "keras": "keras"}[framework]
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, cwd=REPO)
    return r.returncode == 0


def main(doc, script, default_nets, makers):
    """The command line of a peer benchmark ``script`` (its ``doc`` the help); ``makers[framework](net,
    threads) -> (step, params)`` builds a framework's networks inside its worker process."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--nets", default=default_nets)
    ap.add_argument("--frameworks", default="deepgpu,torch,keras")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    nets = args.nets.split(",")
    if args.worker:
        if args.worker == "deepgpu":
            import deepgpu  # noqa: F401  (before NumPy, as a user's script)
        worker(lambda net: makers[args.worker](net, args.threads), nets)
        return
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    t = str(args.threads)
    env.update(OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t, DEEPGPU_NUM_THREADS=t,
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    workers = {}
    for fw in args.frameworks.split(","):
        if not _installed(fw):
            print(f"{fw}: not installed, skipped")
            continue
        p = subprocess.Popen([sys.executable, script, "--worker", fw, "--nets", args.nets, "--threads", t],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        workers[fw] = p
    for fw, p in workers.items():  # started one at a time above; wait for each to be warm
        line = p.stdout.readline()
        if not line:
            sys.exit(f"{fw}: the worker died while building its models")
    times = {(fw, net): [] for fw in workers for net in nets}
    params, rss = {}, {}
    order = list(workers)
    for r in range(args.rounds):
        k = r % len(order)
        for fw in order[k:] + order[:k]:
            p = workers[fw]
            for net in nets:
                p.stdin.write(f"{net} {args.steps}\n")
                p.stdin.flush()
                got = json.loads(p.stdout.readline())
                times[(fw, net)].append(got["s"])
                params[(fw, net)] = got["params"]
                rss[fw] = got["rss_mb"]
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    for p in workers.values():
        p.stdin.close()
        p.wait()
    versions = {}
    for fw, mod in (("torch", "torch"), ("keras", "keras"), ("deepgpu", "deepgpu")):
        if fw in workers:
            r = subprocess.run([sys.executable, "-c", f"import {mod}; print({mod}.__version__)"], capture_output=True,
                               text=True, env=env, cwd=REPO)
            versions[fw] = r.stdout.strip()
    print(f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; threads {t}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("peak resident memory (MiB): " + ", ".join(f"{fw} {rss[fw]:.0f}" for fw in workers))
    width = max(8, *(len(net) + 1 for net in nets))
    print(f"{'net':{width}} " + " ".join(f"{fw + ' ms/step':>18}" for fw in workers) + "   params")
    result = {"rounds": args.rounds, "steps": args.steps, "threads": args.threads, "versions": versions,
              "peak_rss_mb": rss, "nets": {}}
    for net in nets:
        med = {fw: statistics.median(times[(fw, net)]) * 1e3 for fw in workers}
        print(f"{net:{width}} " + " ".join(f"{med[fw]:18.0f}" for fw in workers) + "   " +
              ", ".join(f"{fw} {params[(fw, net)]:,}" for fw in workers))
        result["nets"][net] = {"median_ms": med, "all_ms": {fw: [s * 1e3 for s in times[(fw, net)]] for fw in workers},
                               "params": {fw: params[(fw, net)] for fw in workers}}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

