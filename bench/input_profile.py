"""Where an image pipeline's time goes (issue 19), stage by stage, on the PNG folder of
bench/input_pipeline.py: CPU microseconds per image in one thread (thread_time, best of 3, so
other tenants' load disturbs it little), then decode throughput with 1 and 2 threads and 2
processes (wall clock: the GIL shows there).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/input_profile.py --dir /tmp/fmnist_png
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import glob
import io
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CROP, BATCH = 24, 128


def cpu_us(fn, items, reps=3):
    best = float("inf")
    for _ in range(reps):
        t = time.thread_time()
        for it in items:
            fn(it)
        best = min(best, time.thread_time() - t)
    return 1e6 * best / len(items)


def _pillow_file(p):
    from PIL import Image
    with Image.open(p) as im:
        return np.asarray(im)


def _codecs_file(p):
    from deepgpu.data import decode_image, read_file
    return decode_image(read_file(p), channels=1)


def _chunk(args):
    fn, paths = args
    return [fn(p) for p in paths]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/fmnist_png")
    ap.add_argument("--images", type=int, default=5000)
    args = ap.parse_args()
    from PIL import Image

    from deepgpu.data import Dataset, decode, decode_image, read_file
    every = sorted(glob.glob(os.path.join(args.dir, "*", "*.png")))
    if not every:
        sys.exit(f"no PNG files under {args.dir}: run bench/input_pipeline.py first")
    paths = every[:: max(1, len(every) // args.images)][: args.images]
    datas = [read_file(p) for p in paths]
    ims = []
    for d in datas:
        im = Image.open(io.BytesIO(d))
        im.load()
        ims.append(im)
    arrs = [np.asarray(im) for im in ims]
    rng = np.random.default_rng(0)

    def augment(img):
        if rng.random() < 0.5:
            img = img[:, ::-1]
        i, j = rng.integers(0, img.shape[0] - CROP + 1), rng.integers(0, img.shape[1] - CROP + 1)
        return np.ascontiguousarray(img[i:i + CROP, j:j + CROP, None], dtype=np.float32)

    f32 = [augment(a) for a in arrs]
    out = np.empty((BATCH, CROP, CROP, 1), np.float32)

    def fill(i):
        out[i % BATCH] = f32[i]

    rows = [
        ("file read (read_file)", cpu_us(read_file, paths)),
        ("Pillow Image.open from bytes (header only)", cpu_us(lambda d: Image.open(io.BytesIO(d)).size, datas)),
        ("Pillow open + load (decode)", cpu_us(lambda d: Image.open(io.BytesIO(d)).load(), datas)),
        ("Pillow convert('L') on an L image", cpu_us(lambda im: im.convert("L"), ims)),
        ("Pillow np.asarray(image) (a tobytes copy)", cpu_us(np.asarray, ims)),
        ("Pillow resize 28x28 -> 32x32 bilinear (skipped when equal)",
         cpu_us(lambda im: im.resize((32, 32), Image.Resampling.BILINEAR), ims)),
        ("Pillow file -> array, all of the above", cpu_us(_pillow_file, paths)),
    ]
    if decode._FAST:
        import imagecodecs
        rows.append((f"imagecodecs {imagecodecs.__version__} png_decode", cpu_us(imagecodecs.png_decode, datas)))
    rows += [
        ("deepgpu decode_image(bytes, channels=1)", cpu_us(lambda d: decode_image(d, channels=1), datas)),
        ("deepgpu read_file + decode_image", cpu_us(_codecs_file, paths)),
        ("random flip + crop + float32, per image (NumPy)", cpu_us(augment, arrs)),
        ("batching: np.stack of 128, per image",
         cpu_us(lambda i: np.stack(f32[i:i + BATCH]), range(0, len(f32) - BATCH, BATCH)) / BATCH),
        ("batching: copy into a preallocated batch, per image", cpu_us(fill, range(len(f32)))),
    ]
    n = 20000
    for label, make in (
            ("pipeline: from_tensor_slices + shuffle + batch, per element",
             lambda: Dataset.from_tensor_slices(np.arange(n)).shuffle(n, seed=0).batch(BATCH)),
            ("pipeline: + map(identity, 2 threads) fused with batch, per element",
             lambda: Dataset.from_tensor_slices(np.arange(n)).shuffle(n, seed=0)
             .map(lambda v: v, num_parallel_calls=2).batch(BATCH)),
            ("pipeline: + prefetch(2) hand-off between threads, per element",
             lambda: Dataset.from_tensor_slices(np.arange(n)).shuffle(n, seed=0)
             .map(lambda v: v, num_parallel_calls=2).batch(BATCH).prefetch(2))):
        import resource
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in make():
            pass
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        rows.append((label + " (all threads)", 1e6 * (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n))
    print(f"{len(paths)} PNGs from {args.dir}; load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'stage':70s} CPU us/image")
    for label, us in rows:
        print(f"{label:70s} {us:8.1f}")
    print("\ndecode throughput (file -> uint8 array), wall clock, chunks of 128:")
    chunks = [paths[i:i + BATCH] for i in range(0, len(paths), BATCH)]
    for name, fn in (("Pillow", _pillow_file), ("deepgpu decode_image", _codecs_file)):
        for kind, ex_cls, w in (("thread", cf.ThreadPoolExecutor, 1), ("threads", cf.ThreadPoolExecutor, 2),
                                ("processes", cf.ProcessPoolExecutor, 2)):
            with ex_cls(w) as ex:
                list(ex.map(_chunk, [(fn, c) for c in chunks[:w]]))  # start the workers
                t = time.perf_counter()
                list(ex.map(_chunk, [(fn, c) for c in chunks]))
                dt = time.perf_counter() - t
            print(f"  {name:22s} {w} {kind:9s} {len(paths) / dt:8,.0f} images/s")


if __name__ == "__main__":
    main()
