"""Data-parallel scaling on the CPU, and the ring all-reduce cost model for GPUs (issue 21).

Measured (weak scaling, the seed convnet on 28x28x1 random data, Adam, 32 samples per rank and
step): deepgpu's DataParallel on 1, 2, 4 MPI ranks of one thread each, beside one deepgpu process
with that many threads on the same global batch, and PyTorch DDP (gloo) the same two ways. Run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/distributed_scaling.py --ranks 1 2 4

Overlap (2 ranks): ``--compare-overlap --steps 10 --repeats 5`` times DataParallel with the
reduction after backward and overlapped with it (and the wait left after backward), beside
PyTorch DDP (gloo, which always overlaps) with the same bucket size, alternated.

Modelled: ``python3 bench/distributed_scaling.py --model`` prints the predicted weak-scaling
efficiency (see ``ring_allreduce_s``) for the seed convnet and ResNet50 on 8 GPUs (NVLink) and
across nodes; the inputs are printed with it and written in bench/RESULTS.md. On a GPU,
``--measure-step --backend cuda --batches 64 128 --steps 10`` times ResNet50's step first and
models with that (bench/gpu_check.sh part "resnet50").
"""
import argparse
import json
import os
import subprocess
import sys
import time

PER_RANK = 32
HERE = os.path.abspath(__file__)


def ring_allreduce_s(nbytes, p, bw_bytes_s, latency_s):
    """Ring all-reduce time: 2(p-1) latency terms plus 2(p-1)/p of the bytes over the link."""
    if p == 1:
        return 0.0
    return 2 * (p - 1) * latency_s + 2 * (p - 1) / p * nbytes / bw_bytes_s


def weak_scaling(step_s, nbytes, p, bw, lat, bucket_bytes=25 * 2 ** 20, backward_share=2 / 3):
    """(efficiency without overlap, with bucketed overlap). With overlap the buckets are reduced
    while the backward pass (``backward_share`` of the step) goes on; what is left exposed is the
    larger of the reduction past the backward pass and the last bucket's reduction."""
    comm = ring_allreduce_s(nbytes, p, bw, lat)
    last = ring_allreduce_s(min(nbytes, bucket_bytes), p, bw, lat)
    exposed = max(comm - backward_share * step_s, last) if p > 1 else 0.0
    return step_s / (step_s + comm), step_s / (step_s + exposed)


def model_table(measured=None):
    """The cost model's rows; ``measured``: (name, parameters, step seconds, source) rows to use instead
    of the assumed ResNet50 step times (``--measure-step`` passes its own)."""
    nets = [  # name, parameters, single-GPU step seconds, where the step time comes from
        ("seed convnet, batch 128", 594_922, 1.19e-3, "measured: deepgpu graph step, H100 (bench/RESULTS.md GPU)"),
        ("seed convnet, batch 512", 594_922, 2.55e-3, "measured: deepgpu graph step, H100 (bench/RESULTS.md GPU)"),
    ]
    nets += measured or [
        ("ResNet50, 100 ms/step", 25_557_032, 100e-3, "assumed (not measured here): e.g. batch 256 fp32/TF32"),
        ("ResNet50, 30 ms/step", 25_557_032, 30e-3, "assumed (not measured here): a faster, mixed-precision step"),
    ]
    links = [("8 GPUs, NVLink ring 370 GB/s, 5 us/hop", 8, 370e9, 5e-6),
             ("4 nodes x 8 GPUs, 4x100 Gb/s per node (50 GB/s), 10 us/hop", 32, 50e9, 10e-6)]
    rows = []
    for name, params, step, src in nets:
        for lname, p, bw, lat in links:
            nbytes = 4 * params
            comm = ring_allreduce_s(nbytes, p, bw, lat)
            no, ov = weak_scaling(step, nbytes, p, bw, lat)
            rows.append({"net": name, "params": params, "step_ms": step * 1e3, "step_source": src, "link": lname,
                         "allreduce_ms": comm * 1e3, "eff_no_overlap": no, "eff_overlap": ov})
    return rows


def measure_resnet50_step(backend, batch, steps, image, repeats=3):
    """(trainable parameters, median seconds a step) of deepgpu's ResNet50 training step (SGD, random
    ``image`` x ``image`` x 3 data, 1000 classes, compile's cuda_graph "auto": recorded on the GPU)
    on ``backend``: a warm-up fit of 3 steps, then ``repeats`` fits of ``steps`` steps, each ended by
    reading its loss (which waits for the device)."""
    import numpy as np
    import deepgpu as dg
    dg.set_backend(backend)
    dg.set_seed(0)
    from deepgpu.applications import ResNet50
    model = ResNet50(weights=None, input_shape=(image, image, 3), classes=1000)
    model.compile("sgd", "sparse_categorical_crossentropy", cuda_graph="auto")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, image, image, 3)).astype("float32")
    y = rng.integers(0, 1000, size=batch * steps).astype("int32")
    model.fit(x[:3 * batch], y[:3 * batch], batch_size=batch, epochs=1, shuffle=False, verbose=0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)  # the loss is read at its end
        times.append((time.perf_counter() - t0) / steps)
    grads = sum(int(np.prod(w.shape)) for w in model.trainable_weights)  # what is all-reduced
    return grads, sorted(times)[len(times) // 2]


def print_model(measured=None):
    print("| network | params | step ms | link | all-reduce ms | efficiency, no overlap | with overlap |")
    print("|---|---|---|---|---|---|---|")
    rows = model_table(measured)
    for r in rows:
        print(f"| {r['net']} | {r['params']:,} | {r['step_ms']:.2f} | {r['link']} | {r['allreduce_ms']:.2f} | "
              f"{r['eff_no_overlap']:.2f} | {r['eff_overlap']:.2f} |")
    print("\nstep times: " + "; ".join(sorted({f"{r['net']}: {r['step_source']}" for r in rows})))


def convnet_torch():
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 4 * 4, 512), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(512, 10))


def _time_exposed_reduction(box):
    """Wrap DataParallel's end-of-step wait (what the reduction leaves exposed after backward)."""
    from deepgpu.distributed import data_parallel as dp_mod
    real = dp_mod._Step.gradients

    def timed(self, grads):
        t0 = time.perf_counter()
        out = real(self, grads)
        box[0] += time.perf_counter() - t0
        return out
    dp_mod._Step.gradients = timed


def run_deepgpu(batch, steps, distributed, overlap=True, bucket_mb=25.0, exposed=None):
    import numpy as np
    import deepgpu as dg
    from deepgpu import zoo
    comm = dg.distributed.init() if distributed else None
    p = comm.size if comm else 1
    rng = np.random.default_rng(0)
    n = batch * steps
    x = rng.normal(size=(n, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=n).astype("int32")
    model = zoo.convnet()
    model.compile("adam", "sparse_categorical_crossentropy",
                  distribute=dg.distributed.DataParallel(bucket_mb=bucket_mb, overlap=overlap) if comm else None)
    model.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, epochs=1, shuffle=False, verbose=0)  # warm-up
    if comm:
        comm.barrier()
    if exposed is not None:
        exposed[0] = 0.0
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    if comm:
        comm.barrier()
    return time.perf_counter() - t0, p, (comm.rank if comm else 0)


def run_torch(batch, steps, distributed, port, bucket_mb=25.0):
    import torch
    import torch.distributed as tdist
    torch.manual_seed(0)
    rank, p = 0, 1
    model = convnet_torch()
    if distributed:
        from mpi4py import MPI
        rank, p = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=p)
        model = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=bucket_mb)
    per = batch // p
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(per, 1, 28, 28)
    y = torch.randint(0, 10, (per,))
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        lossf(model(x), y).backward()
        opt.step()
    for _ in range(2):
        step()
    if distributed:
        tdist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if distributed:
        tdist.barrier()
    took = time.perf_counter() - t0
    if distributed:
        tdist.destroy_process_group()
    return took, p, rank


def worker(args):
    batch = PER_RANK * args.world
    if args.overlap == "ddp":  # --compare-overlap's peer: PyTorch DDP (gloo; it always overlaps)
        import torch
        torch.set_num_threads(1)
        took, p, rank = run_torch(batch, args.steps, True, args.port, args.bucket_mb)
        if rank == 0:
            print(json.dumps({"overlap": "ddp", "bucket_mb": args.bucket_mb, "world": p,
                              "step_ms": took / args.steps * 1e3, "exposed_ms": float("nan")}))
        return
    if args.overlap is not None:  # --compare-overlap: DataParallel with / without overlap, one bucket size
        exposed = [0.0]
        _time_exposed_reduction(exposed)
        took, p, rank = run_deepgpu(batch, args.steps, True, args.overlap == "on", args.bucket_mb, exposed)
        if rank == 0:
            print(json.dumps({"overlap": args.overlap, "bucket_mb": args.bucket_mb, "world": p,
                              "step_ms": took / args.steps * 1e3, "exposed_ms": exposed[0] / args.steps * 1e3}))
        return
    if args.lib == "deepgpu":
        took, p, rank = run_deepgpu(batch, args.steps, args.world > 1 and args.mode == "ranks")
    else:
        import torch
        torch.set_num_threads(args.threads)
        took, p, rank = run_torch(batch, args.steps, args.world > 1 and args.mode == "ranks", args.port)
    if rank == 0:
        print(json.dumps({"lib": args.lib, "mode": args.mode, "world": args.world, "threads": args.threads,
                          "samples_per_s": batch * args.steps / took, "step_ms": took / args.steps * 1e3}))


def driver(args):
    rows = []
    for p in args.ranks:
        for lib in ("deepgpu", "torch"):  # peers alternated
            for mode in ("ranks", "threads"):
                threads = 1 if mode == "ranks" else p
                env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                           MKL_NUM_THREADS=str(threads))
                cmd = [sys.executable, HERE, "--worker", lib, "--mode", mode, "--world", str(p),
                       "--threads", str(threads), "--steps", str(args.steps), "--port", str(29500 + p)]
                if mode == "ranks" and p > 1:
                    cmd = ["mpiexec", "-n", str(p), sys.executable, "-m", "mpi4py"] + cmd[1:]
                elif mode == "ranks":
                    continue  # one rank is the one-thread process below
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
                line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
                if r.returncode or not line:
                    print(f"FAILED {' '.join(cmd)}\n{r.stderr[-2000:]}", file=sys.stderr)
                    continue
                rows.append(json.loads(line[-1]))
                print(line[-1], flush=True)
    base = {r["lib"]: r["samples_per_s"] for r in rows if r["world"] == 1}
    print("\n| library | world | how | samples/s | ms/step | scaling efficiency vs 1 thread |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        eff = r["samples_per_s"] / (r["world"] * base[r["lib"]]) if r["lib"] in base else float("nan")
        how = f"{r['world']} ranks x 1 thread" if r["mode"] == "ranks" and r["world"] > 1 else \
            f"1 process x {r['threads']} threads"
        print(f"| {r['lib']} | {r['world']} | {how} | {r['samples_per_s']:.0f} | {r['step_ms']:.1f} | {eff:.2f} |")


def compare_overlap(args):
    """deepgpu at 2 ranks: reduction after backward vs overlapped, 25 MB (one bucket for the convnet)
    and 0.5 MB buckets, alternated, ``--repeats`` rounds; medians of step and exposed-wait times."""
    import statistics
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    runs = {}
    for _ in range(args.repeats):
        for bucket in (25.0, 0.5):
            for ov in ("off", "on", "ddp"):  # PyTorch DDP alternated with deepgpu as the peer
                cmd = ["mpiexec", "-n", "2", sys.executable, "-m", "mpi4py", HERE, "--worker",
                       "torch" if ov == "ddp" else "deepgpu", "--overlap", ov, "--bucket-mb", str(bucket),
                       "--world", "2", "--steps", str(args.steps), "--port", "29611"]
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
                line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
                if r.returncode or not line:
                    print(f"FAILED {' '.join(cmd)}\n{r.stderr[-2000:]}", file=sys.stderr)
                    continue
                print(line[-1], flush=True)
                row = json.loads(line[-1])
                runs.setdefault((bucket, ov), []).append(row)
    print("\n| buckets | overlap (ddp: PyTorch DDP) | step ms (median) | exposed reduction ms/step (median) | runs |")
    print("|---|---|---|---|---|")
    for (bucket, ov), rows in runs.items():
        print(f"| {bucket:g} MB | {ov} | {statistics.median(r['step_ms'] for r in rows):.1f} | "
              f"{statistics.median(r['exposed_ms'] for r in rows):.2f} | {len(rows)} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--model", action="store_true", help="print the cost model's table and exit")
    ap.add_argument("--compare-overlap", action="store_true",
                    help="2 ranks: DataParallel with and without overlap (25 MB and 0.5 MB buckets)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--measure-step", action="store_true",
                    help="time deepgpu's ResNet50 step (one process; --backend cuda on the GPU, with --batches, "
                         "--steps, --image) and print the cost model with it in place of the assumed times")
    ap.add_argument("--backend", default="cuda", help="for --measure-step (default: cuda)")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--overlap", choices=["on", "off", "ddp"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bucket-mb", type=float, default=25.0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", dest="lib", choices=["deepgpu", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["ranks", "threads"], default="ranks", help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=29500, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model:
        print_model()
        return
    if args.measure_step:
        measured = []
        for batch in args.batches:
            params, step = measure_resnet50_step(args.backend, batch, args.steps, args.image)
            print(f"ResNet50 ({params:,} trainable params), {args.backend}, batch {batch} of {args.image}x{args.image}x3: "
                  f"{step * 1e3:.1f} ms a step (median of 3 fits of {args.steps} steps)", flush=True)
            measured.append((f"ResNet50, batch {batch}", params, step,
                             f"measured: deepgpu {args.backend} step, batch {batch}, {args.image}px"))
        print_model(measured)
        return
    if args.compare_overlap and not args.lib:
        compare_overlap(args)
    elif args.lib:
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
