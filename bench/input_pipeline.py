"""Input pipeline alone (issue 19): Fashion-MNIST written out as PNG files in class folders;
read, decode, random horizontal flip and random 24x24 crop, batches of 128, with 2 workers:
deepgpu.data beside tf.data and a PyTorch DataLoader doing the same (its Dataset decodes with
Pillow, or with imagecodecs as deepgpu does; NumPy flip / crop), in the same run, alternated
(each round starts one peer further on). Prints images per second and CPU microseconds per
image (all threads and worker processes); --json writes them.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/input_pipeline.py \
        --dir /tmp/fmnist_png --images 70000 --rounds 3

The PNG folder is written once (Pillow) and reused. Peers are
installed by hand (torch, tensorflow); a missing one is skipped.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CROP = 24
BATCH = 128
WORKERS = 2


def write_pngs(root, limit):
    """The Fashion-MNIST images (train then test) as root/<class>/<index>.png; returns the paths."""
    from PIL import Image

    from deepgpu.data import fashion_mnist
    names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    (x, y), (xt, yt) = fashion_mnist.load_data()
    xs, ys = np.concatenate([x, xt])[:limit], np.concatenate([y, yt])[:limit]
    marker = os.path.join(root, f".complete-{len(xs)}")
    paths = [os.path.join(root, names[int(c)], f"{i:05d}.png") for i, c in enumerate(ys)]
    if not os.path.exists(marker):
        for n in names:
            os.makedirs(os.path.join(root, n), exist_ok=True)
        for p, img in zip(paths, xs):
            Image.fromarray(img).save(p)
        open(marker, "w").close()
    return paths, ys.astype(np.int32)


def _augment(img, rng):
    if rng.random() < 0.5:
        img = img[:, ::-1]
    i, j = rng.integers(0, img.shape[0] - CROP + 1), rng.integers(0, img.shape[1] - CROP + 1)
    return np.ascontiguousarray(img[i:i + CROP, j:j + CROP, None], dtype=np.float32)


def _augment_batch(x, rng):
    """_augment on every image of a batch [n, h, w, c] at once: one gather, each image its own flip and crop."""
    n, h, w = x.shape[:3]
    k = np.arange(CROP)
    rows = rng.integers(0, h - CROP + 1, n)[:, None] + k
    cols = rng.integers(0, w - CROP + 1, n)[:, None] + k
    cols = np.where(rng.random(n)[:, None] < 0.5, w - 1 - cols, cols)  # flipped, then cropped
    return x[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _decode(path):
    """Pillow, as a PyTorch Dataset without torchvision decodes."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im)


def _decode_imagecodecs(path):
    """imagecodecs' libpng, as a PyTorch Dataset would call it (the decoder deepgpu uses)."""
    import imagecodecs
    with open(path, "rb") as f:
        return imagecodecs.png_decode(f.read())


def _decode_deepgpu(path):
    """deepgpu's decoder (imagecodecs where installed, else Pillow), as tf.io.read_file + decode_png."""
    from deepgpu.data import decode_image, read_file
    return decode_image(read_file(path), channels=1)[:, :, 0]


def deepgpu_pipeline(paths, labels, use_multiprocessing=False, decode=_decode_deepgpu):
    import threading

    from deepgpu.data import Dataset
    local = threading.local()

    def load(path, label):
        rng = getattr(local, "rng", None)
        if rng is None:
            rng = local.rng = np.random.default_rng(threading.get_ident() ^ os.getpid())
        return _augment(decode(str(path)), rng), label

    ds = Dataset.from_tensor_slices((np.array(paths), labels)).shuffle(len(paths), seed=0)
    ds = ds.map(load, num_parallel_calls=WORKERS, use_multiprocessing=use_multiprocessing)
    return ds.batch(BATCH).prefetch(2)


def deepgpu_image_folder(root, use_multiprocessing=None):
    """image_dataset_from_directory (2 decode workers: by default forked processes) + a flip and
    crop drawn per image, done on each batch in one NumPy gather."""
    from deepgpu.utils import image_dataset_from_directory
    ds = image_dataset_from_directory(root, color_mode="grayscale", image_size=(28, 28), batch_size=BATCH,
                                      seed=0, verbose=False, num_parallel_calls=WORKERS,
                                      use_multiprocessing=use_multiprocessing)
    rng = np.random.default_rng(0)
    return ds.map(lambda x, y: (_augment_batch(x, rng), y)).prefetch(2)


def tf_pipeline(paths, labels):
    import tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads(WORKERS)
    tf.config.threading.set_intra_op_parallelism_threads(WORKERS)

    def load(path, label):
        img = tf.io.decode_png(tf.io.read_file(path), channels=1)
        img = tf.image.random_flip_left_right(img)
        img = tf.image.random_crop(img, (CROP, CROP, 1))
        return tf.cast(img, tf.float32), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths), seed=0)
    ds = ds.map(load, num_parallel_calls=WORKERS).batch(BATCH).prefetch(2)
    opts = tf.data.Options()
    opts.threading.private_threadpool_size = WORKERS
    return ds.with_options(opts)


class _TorchImages:
    def __init__(self, paths, labels, decode=_decode):
        self.paths, self.labels, self.decode = paths, labels, decode
        self.rng = None

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import torch
        if self.rng is None:
            self.rng = np.random.default_rng(os.getpid())
        img = _augment(self.decode(self.paths[i]), self.rng)
        return torch.from_numpy(img), int(self.labels[i])


def torch_pipeline(paths, labels, decode=_decode):
    import torch
    from torch.utils.data import DataLoader
    torch.set_num_threads(WORKERS)
    return DataLoader(_TorchImages(paths, labels, decode), batch_size=BATCH, shuffle=True, num_workers=WORKERS,
                      persistent_workers=False)


def _cpu_seconds():
    import resource
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_pass(make, n_images, cpu=None):
    """Images per second over one full pass (the pipeline built and torn down inside). With a
    list ``cpu``, also appends the CPU time per image in microseconds (this process's threads
    and its worker processes, which are joined by the end of the pass): a figure a loaded
    machine disturbs far less than the wall clock."""
    c0 = _cpu_seconds()
    t0 = time.perf_counter()
    seen = 0
    for xb, _ in make():
        seen += int(xb.shape[0])
    dt = time.perf_counter() - t0
    assert seen == n_images, (seen, n_images)
    if cpu is not None:
        cpu.append(1e6 * (_cpu_seconds() - c0) / seen)
    return seen / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/fmnist_png")
    ap.add_argument("--images", type=int, default=70000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--pillow", action="store_true", help="also deepgpu's Dataset.map with Pillow's decode")
    ap.add_argument("--only", default=None, help="comma-separated substrings: run only the pipelines named so")
    args = ap.parse_args()
    t = time.perf_counter()
    paths, labels = write_pngs(args.dir, args.images)
    print(f"{len(paths)} PNG files under {args.dir} ({time.perf_counter() - t:.1f}s to list or write)")
    n = len(paths)
    peers = {
        "deepgpu Dataset.map, 2 threads": lambda: deepgpu_pipeline(paths, labels),
        "deepgpu Dataset.map, 2 processes": lambda: deepgpu_pipeline(paths, labels, use_multiprocessing=True),
        "deepgpu image_dataset_from_directory, 2 processes": lambda: deepgpu_image_folder(args.dir),
        "deepgpu image_dataset_from_directory, 2 threads": lambda: deepgpu_image_folder(args.dir, False),
    }
    if args.pillow:
        peers["deepgpu Dataset.map, Pillow decode, 2 threads"] = lambda: deepgpu_pipeline(paths, labels,
                                                                                           decode=_decode)
    try:
        import tensorflow  # noqa: F401
        peers["tf.data, 2 parallel calls"] = lambda: tf_pipeline(paths, labels)
    except ImportError:
        print("tensorflow not installed: skipped")
    try:
        import torch  # noqa: F401
        peers["PyTorch DataLoader, 2 workers"] = lambda: torch_pipeline(paths, labels)
        if importlib.util.find_spec("imagecodecs"):
            peers["PyTorch DataLoader, imagecodecs decode, 2 workers"] = lambda: torch_pipeline(
                paths, labels, _decode_imagecodecs)
        else:
            print("imagecodecs not installed: the PyTorch DataLoader with imagecodecs skipped")
    except ImportError:
        print("torch not installed: skipped")
    if args.only:
        peers = {k: v for k, v in peers.items() if any(w.strip() in k for w in args.only.split(","))}
    results = {k: [] for k in peers}
    cpu = {k: [] for k in peers}
    names = list(peers)
    for r in range(args.rounds):
        k = r % len(names)  # each round starts one peer further on, so no peer always runs last
        for name in names[k:] + names[:k]:
            ips = timed_pass(peers[name], n, cpu[name])
            results[name].append(ips)
            print(f"round {r + 1}: {name}: {ips:,.0f} images/s, {cpu[name][-1]:.0f} us CPU per image", flush=True)
    print("\nmedian over", args.rounds, "rounds: images/s (wall clock), CPU us per image:")
    for name, v in results.items():
        print(f"  {name:50s} {np.median(v):8,.0f} /s {np.median(cpu[name]):6.0f} us   "
              f"(rounds: {', '.join(f'{x:,.0f}' for x in v)})")
    if args.json:
        import PIL
        try:
            import imagecodecs
            codecs = imagecodecs.__version__
        except ImportError:
            codecs = None
        meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                "python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__,
                "imagecodecs": codecs, "load_average_at_end": os.getloadavg(),
                "images": n, "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "images_per_s": results, "cpu_us_per_image": cpu}, f, indent=1)


if __name__ == "__main__":
    main()
