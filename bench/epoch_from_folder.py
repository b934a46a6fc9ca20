"""One epoch of the seed convnet trained from a folder of PNGs (issue 19): deepgpu's
``image_dataset_from_directory`` + ``fit`` beside Keras's (TensorFlow backend), same folder,
same batch (128), same model (Rescaling(1/255) + the seed convnet, 594,922 params), Adam 1e-3.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/epoch_from_folder.py \\
        --dir /tmp/fmnist_png_10k --images 10000 --rounds 2 --json bench/epoch_from_folder.json

Each framework runs in its own worker process (2 threads for its math and 2 decoding workers:
deepgpu's default, forked processes, or with ``--frameworks deepgpu-threads`` threads),
started once and warmed up; the parent alternates them round by round. Each round, each
framework trains one epoch from the folder and one epoch from the same images held in memory
as arrays (``fit(x, y, batch_size=128)``), so ``1 - memory / folder`` is the share of the folder
epoch that went to the input pipeline, measured the same way for both. For deepgpu the time
``fit`` spent blocked on the next batch is also timed directly. Peak resident memory
(ru_maxrss) is read after the first folder epoch, before the arrays are loaded.

The PNG folder is written once (bench/input_pipeline.py's ``write_pngs``: Fashion-MNIST, train
then test, the first ``--images``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BATCH = 128
THREADS = 2


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm_arrays(model, batches, n):
    """fit from arrays on a full batch and one of the epoch's last size, so no epoch timed below
    pays a first-time cost (tracing, kernel tuning) for either batch shape."""
    import numpy as np
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    k = BATCH + (n % BATCH or BATCH)
    model.fit(x[:k], y[:k], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _deepgpu(root, use_multiprocessing=None):
    import deepgpu as dg
    from deepgpu import layers as L
    from deepgpu import zoo
    from deepgpu.data import Dataset, image_dataset_from_directory

    dg.set_backend("cpu")
    dg.set_seed(0)
    ds = image_dataset_from_directory(root, color_mode="grayscale", image_size=(28, 28), batch_size=BATCH,
                                      seed=0, verbose=False, num_parallel_calls=THREADS,
                                      use_multiprocessing=use_multiprocessing)
    model = dg.models.Sequential([L.Rescaling(1 / 255, input_shape=(28, 28, 1))] + zoo.convnet().layers)
    model.compile(optimizer=dg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    waited = [0.0]

    def timed():  # the time fit spends blocked on the next batch
        it = iter(ds)
        try:
            while True:
                t = time.perf_counter()
                try:
                    b = next(it)
                except StopIteration:
                    return
                finally:
                    waited[0] += time.perf_counter() - t
                yield b
        finally:
            close = getattr(it, "close", None)
            if close:
                close()
    timed_ds = Dataset(timed, ds.cardinality(), "Timed")
    model.fit(ds.take(3), epochs=1, verbose=0)  # warm-up: builds the model and the kernels
    _warm_arrays(model, [b for b in ds.take(2)], len(ds.file_paths))
    arrays = []

    def folder():
        waited[0] = 0.0
        t = time.perf_counter()
        h = model.fit(timed_ds, epochs=1, verbose=0)
        return time.perf_counter() - t, waited[0], float(h.history["loss"][-1])

    def memory():
        if not arrays:
            import numpy as np
            xs, ys = zip(*ds)
            arrays.extend([np.concatenate(xs), np.concatenate(ys)])
        t = time.perf_counter()
        h = model.fit(arrays[0], arrays[1], batch_size=BATCH, epochs=1, shuffle=True, verbose=0)
        return time.perf_counter() - t, None, float(h.history["loss"][-1])
    return folder, memory, len(ds.file_paths), dg.__version__


def _keras(root):
    import tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    ds = keras.utils.image_dataset_from_directory(root, color_mode="grayscale", image_size=(28, 28),
                                                  batch_size=BATCH, seed=0, verbose=False)
    n = len(ds.file_paths)
    opts = tf.data.Options()
    opts.threading.private_threadpool_size = THREADS
    ds = ds.with_options(opts).prefetch(tf.data.AUTOTUNE)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), L.Rescaling(1 / 255),
        L.Conv2D(32, 3, activation="relu"), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dropout(0.25), L.Dense(512, activation="relu"), L.Dropout(0.5),
        L.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(ds.take(3), epochs=1, verbose=0)
    _warm_arrays(model, [(x.numpy(), y.numpy()) for x, y in ds.take(2)], n)
    arrays = []

    def folder():
        t = time.perf_counter()
        h = model.fit(ds, epochs=1, verbose=0)
        return time.perf_counter() - t, None, float(h.history["loss"][-1])

    def memory():
        if not arrays:
            import numpy as np
            xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
            arrays.extend([np.concatenate(xs), np.concatenate(ys)])
        t = time.perf_counter()
        h = model.fit(arrays[0], arrays[1], batch_size=BATCH, epochs=1, shuffle=True, verbose=0)
        return time.perf_counter() - t, None, float(h.history["loss"][-1])
    return folder, memory, n, keras.__version__ + " (TensorFlow " + tf.__version__ + ")"


def worker(framework, root):
    folder, memory, n, version = {"deepgpu": _deepgpu, "keras": _keras,
                                  "deepgpu-threads": lambda r: _deepgpu(r, False)}[framework](root)
    print(json.dumps({"ready": True, "images": n, "version": version}), flush=True)
    rss = None
    for line in sys.stdin:
        what = line.strip()
        s, waited, loss = folder() if what == "folder" else memory()
        if rss is None:
            rss = _rss_mb()  # after the first folder epoch, before the in-memory arrays exist
        print(json.dumps({"what": what, "s": s, "waited": waited, "loss": loss, "rss_mb": rss}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/fmnist_png_10k")
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--frameworks", default="deepgpu,keras")
    ap.add_argument("--json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.dir)
        return
    sys.path.insert(0, HERE)
    from input_pipeline import write_pngs
    write_pngs(args.dir, args.images)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    t = str(THREADS)
    env.update(OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, DEEPGPU_NUM_THREADS=t, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    workers, meta = {}, {}
    for fw in args.frameworks.split(","):
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", fw, "--dir", args.dir],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        line = p.stdout.readline()  # one at a time: each builds and warms up alone
        if not line:
            print(f"{fw}: the worker died while starting (not installed?), skipped")
            p.wait()
            continue
        workers[fw], meta[fw] = p, json.loads(line)
    res = {fw: {"folder": [], "memory": [], "waited": [], "rss_mb": None, "loss": []} for fw in workers}
    order = list(workers)
    for r in range(args.rounds):
        k = r % len(order)
        for fw in order[k:] + order[:k]:
            for what in ("folder", "memory"):
                p = workers[fw]
                p.stdin.write(what + "\n")
                p.stdin.flush()
                got = json.loads(p.stdout.readline())
                res[fw][what].append(got["s"])
                if what == "folder":
                    res[fw]["loss"].append(got["loss"])
                    if got["waited"] is not None:
                        res[fw]["waited"].append(got["waited"])
                res[fw]["rss_mb"] = got["rss_mb"]
                print(f"round {r + 1}: {fw} {what}: {got['s']:.1f} s", flush=True)
    for p in workers.values():
        p.stdin.close()
        p.wait()
    import statistics as st
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"{when}; {THREADS} threads; " + ", ".join(f"{fw} {m['version']}" for fw, m in meta.items()))
    print(f"{'framework':10s} {'images':>7s} {'folder s':>9s} {'images/s':>9s} {'memory s':>9s} "
          f"{'pipeline share':>15s} {'waited':>7s} {'peak MiB':>9s}")
    for fw, v in res.items():
        n = meta[fw]["images"]
        f, m = st.median(v["folder"]), st.median(v["memory"])
        share = 1 - m / f
        waited = f"{100 * st.median(w / s for w, s in zip(v['waited'], v['folder'])):.1f}%" if v["waited"] else "-"
        v.update(images=n, median_folder_s=f, median_memory_s=m, images_per_s=n / f, pipeline_share=share)
        print(f"{fw:10s} {n:7d} {f:9.1f} {n / f:9.0f} {m:9.1f} {100 * share:14.1f}% {waited:>7s} "
              f"{v['rss_mb']:9.0f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": when, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                       "threads": THREADS, "batch": BATCH, "rounds": args.rounds, "versions": {
                           fw: m["version"] for fw, m in meta.items()}, "results": res}, fh, indent=1)


if __name__ == "__main__":
    main()
