"""Images from files: ``image_dataset_from_directory``, ``load_img``, ``img_to_array``,
``array_to_img``, ``save_img`` (Keras's ``keras.utils`` names and arguments; reached as
``deepgpu.utils.*``).

Decoding goes through deepgpu/data/decode.py (imagecodecs where it gives
Pillow's pixels, else Pillow), resizing through Pillow (the ``data`` extra); both
release the GIL in their C code, so the reader decodes in worker threads, one
whole batch a task, straight into that batch's array. Pillow's resampling
filters antialias when they shrink an image; ``tf.image.resize`` (Keras's) does
not by default, so resized pixels differ a little from Keras's (same size, same
crop, same order, same labels).
"""
from __future__ import annotations

import functools
import math
import os
import sys

import numpy as np

from . import _workers
from .dataset import Dataset
from .decode import UnreadableImageError, _pil, decode_array, open_image, read_file

__all__ = ["image_dataset_from_directory", "load_img", "img_to_array", "array_to_img", "save_img",
           "ALLOWLIST_FORMATS", "UnreadableImageError"]

ALLOWLIST_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")

_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3), "rgba": ("RGBA", 4)}


def _resample(interpolation, where):
    Image = _pil()
    table = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX,
             "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
             "lanczos": Image.Resampling.LANCZOS, "lanczos3": Image.Resampling.LANCZOS,
             "lanczos5": Image.Resampling.LANCZOS}
    if interpolation not in table:
        raise ValueError(f"{where}: interpolation must be one of {sorted(table)}, got {interpolation!r}")
    return table[interpolation]


def _color_mode(color_mode, where):
    if color_mode not in _MODES:
        raise ValueError(f"{where}: color_mode must be one of {list(_MODES)}, got {color_mode!r}")
    return _MODES[color_mode]


def _crop_box(w, h, tw, th):
    """The centred (left, top, right, bottom) box of aspect tw:th, as large as fits in w x h,
    its sides rounded down as Keras rounds them (so the same pixels are kept)."""
    cw = max(1, min(w, h * tw // th))
    ch = max(1, min(h, w * th // tw))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def _load_array(path, mode, channels, size, resample, crop, pad):
    """One image as a uint8 [H, W, C] array, resized to ``size`` = (h, w) (or as is)."""
    try:
        data = read_file(path)
    except OSError as e:  # a dangling link, no permission, a file gone since the listing: unreadable too
        raise UnreadableImageError(f"cannot read image file {os.fspath(path)!r}: {e.strerror or e}") from e
    a = decode_array(data, channels, os.fspath(path))
    if size is None or a.shape[:2] == tuple(size):
        return a  # already the asked size: no resize, no copy
    Image = _pil()
    im = Image.fromarray(a[:, :, 0] if channels == 1 else a, mode)
    th, tw = size
    if crop:
        im = im.resize((tw, th), resample, box=_crop_box(im.width, im.height, tw, th))
    elif pad:
        scale = min(tw / im.width, th / im.height)
        nw, nh = max(1, round(im.width * scale)), max(1, round(im.height * scale))
        canvas = Image.new(mode, (tw, th))
        canvas.paste(im.resize((nw, nh), resample), ((tw - nw) // 2, (th - nh) // 2))
        im = canvas
    else:
        im = im.resize((tw, th), resample)
    a = np.asarray(im)
    return a[:, :, None] if a.ndim == 2 else a


def _processes(use_multiprocessing, batch_size, where):
    """True / False (processes or threads), or "auto" (processes for passes of _PROCESS_MIN_FILES files)."""
    if use_multiprocessing not in (None, True, False):
        raise ValueError(f"{where}: use_multiprocessing must be None, True or False, got {use_multiprocessing!r}")
    if use_multiprocessing and batch_size is None:
        raise ValueError(f"{where}: use_multiprocessing=True decodes whole batches into shared memory; with "
                         f"batch_size=None (single images of any size) leave it None (threads)")
    if use_multiprocessing is False or batch_size is None:
        return False
    if not _workers.can_fork():
        if use_multiprocessing:
            raise ValueError(f"{where}: use_multiprocessing=True needs the fork start method, which "
                             f"{sys.platform} does not have; leave it None (threads)")
        return False
    return use_multiprocessing or "auto"


# Starting and joining two forked workers costs 15-25 ms a pass, what two threads take to
# decode a few hundred 28x28 PNGs: smaller passes stay on threads under use_multiprocessing=None.
_PROCESS_MIN_FILES = 1024


def files_in_keras_order(root, follow_links, suffixes):
    """The files under ``root`` ending in ``suffixes`` (any case), in Keras's order (its
    iter_valid_files): folders by path, then each folder's files by name. A seed then splits and
    shuffles the same files as Keras, and a labels list labels the files Keras's would."""
    return [os.path.join(dirpath, fn)
            for dirpath, _, filenames in sorted(os.walk(root, followlinks=follow_links), key=lambda w: w[0])
            for fn in sorted(filenames) if fn.lower().endswith(suffixes)]


def _list_files(directory, class_names_dirs, follow_links):
    """(path, label) of the image files, class by class, each in Keras's order."""
    out = []
    for label, sub in enumerate(class_names_dirs):
        root = os.path.join(directory, sub) if sub is not None else directory
        out.extend((p, label) for p in files_in_keras_order(root, follow_links, ALLOWLIST_FORMATS))
    return out


def image_dataset_from_directory(directory, labels="inferred", label_mode="int", class_names=None,
                                 color_mode="rgb", batch_size=32, image_size=(256, 256), shuffle=True, seed=None,
                                 validation_split=None, subset=None, interpolation="bilinear",
                                 follow_links=False, crop_to_aspect_ratio=False, pad_to_aspect_ratio=False,
                                 data_format=None, verbose=True, skip_unreadable=False, num_parallel_calls=None,
                                 use_multiprocessing=None):
    """A Dataset of ``(images, labels)`` batches from image files in class subfolders (Keras's).

    directory/<class>/.../*.{bmp,gif,jpeg,jpg,png}. labels: "inferred" (the
    subfolder, classes in alphanumeric order, or only the subfolders in
    ``class_names``, in its order), None
    (images only, from every file under ``directory``), or a list of ints, one
    per file in Keras's order (folders by path, each folder's files by name).
    label_mode: "int" (int32 [batch]), "categorical" (float32 one-hot [batch,
    classes]), "binary" (float32 [batch, 1], two classes), None (as labels=None).
    color_mode: "grayscale", "rgb", "rgba" (1, 3, 4 channels). Images are float32 [batch, h, w, c] in 0..255, resized
    to ``image_size`` with ``interpolation`` (through Pillow), after a centred
    crop to the target aspect ratio with ``crop_to_aspect_ratio`` (or padding
    with ``pad_to_aspect_ratio``). batch_size None gives single images.

    shuffle / seed: the file order is shuffled with ``seed`` (a new order each
    epoch; the split is made once, on the seeded order). validation_split with
    subset "training", "validation" or "both" (a tuple of two datasets) needs
    shuffle=False or a seed, as in Keras. Decoding runs in ``num_parallel_calls``
    workers (default: one per core), one batch a task: with
    ``use_multiprocessing=None``, forked processes writing into shared memory when
    batched, fork exists and a pass has at least 1,024 files (per-file Python
    holds the GIL, so threads contend with each other and with training), else
    threads; True / False force either. An unreadable file raises
    UnreadableImageError naming it; ``skip_unreadable=True`` drops such files
    (with a warning naming each). The returned dataset has ``class_names`` and
    ``file_paths`` attributes.
    """
    where = "image_dataset_from_directory()"
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{where}: no directory {os.fspath(directory)!r}")
    if label_mode not in ("int", "categorical", "binary", None):
        raise ValueError(f"{where}: label_mode must be 'int', 'categorical', 'binary' or None, got {label_mode!r}")
    if data_format not in (None, "channels_last"):
        raise ValueError(f"{where}: only data_format='channels_last' (NHWC) is supported, got {data_format!r}")
    mode, channels = _color_mode(color_mode, where)
    resample = _resample(interpolation, where)
    size = tuple(int(s) for s in image_size) if image_size is not None else None
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"{where}: image_size must be (height, width), got {image_size!r}")
    if crop_to_aspect_ratio and pad_to_aspect_ratio:
        raise ValueError(f"{where}: crop_to_aspect_ratio and pad_to_aspect_ratio cannot both be True")
    if size is None and batch_size is not None:
        raise ValueError(f"{where}: image_size=None (images as they are) needs batch_size=None")
    if subset not in (None, "training", "validation", "both"):
        raise ValueError(f"{where}: subset must be 'training', 'validation', 'both' or None, got {subset!r}")
    if validation_split is not None and not 0 < validation_split < 1:
        raise ValueError(f"{where}: validation_split must be in (0, 1), got {validation_split!r}")
    if (subset is None) != (validation_split is None):
        raise ValueError(f"{where}: validation_split and subset go together; got validation_split="
                         f"{validation_split!r}, subset={subset!r}")
    if validation_split and shuffle and seed is None:
        raise ValueError(f"{where}: with validation_split and shuffle=True give a seed, so the training and "
                         f"validation subsets do not overlap")
    if label_mode is None:  # Keras's: no labels, so every image under the folder, no class_names
        labels = None
    if labels == "inferred":
        subdirs = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
        if class_names is not None:  # Keras 3's: these subfolders (a subset), labelled in this order
            missing = [c for c in class_names if c not in subdirs]
            if missing or not class_names or len(set(class_names)) != len(class_names):
                raise ValueError(f"{where}: class_names {list(class_names)} must name distinct subfolders of "
                                 f"{os.fspath(directory)!r}: {subdirs}" + (f"; no {missing}" if missing else ""))
            subdirs = list(class_names)
        files = _list_files(directory, subdirs, follow_links)
        names = list(subdirs)
    else:
        files = _list_files(directory, [None], follow_links)
        names = None
        if labels is not None:
            if isinstance(labels, str) or not hasattr(labels, "__len__"):
                raise ValueError(f"{where}: labels must be 'inferred', None or a list of one integer label per "
                                 f"image file; got {labels!r:.60}")
            labels = list(labels)
            if len(labels) != len(files):
                raise ValueError(f"{where}: {len(labels)} labels for {len(files)} image files in "
                                 f"{os.fspath(directory)!r}")
            bad = next(((p, lab) for (p, _), lab in zip(files, labels)
                        if isinstance(lab, bool) or not isinstance(lab, (int, np.integer)) or lab < 0), None)
            if bad is not None:  # a negative label would index one-hot rows from the end
                raise ValueError(f"{where}: labels must be integers >= 0, got {bad[1]!r} for {bad[0]!r}")
            files = [(p, int(lab)) for (p, _), lab in zip(files, labels)]
            names = [str(i) for i in range(max(labels) + 1)] if labels else []
        else:
            label_mode = None
    if label_mode == "binary" and names is not None and len(names) != 2:
        raise ValueError(f"{where}: label_mode='binary' needs exactly 2 classes, found {len(names)}: {names}")
    if not files:
        raise ValueError(f"{where}: no image files ({', '.join(ALLOWLIST_FORMATS)}) in {os.fspath(directory)!r}")
    if verbose:
        cls = f" belonging to {len(names)} classes" if names is not None else ""
        print(f"Found {len(files)} files{cls}.")
    if shuffle:
        if seed is None:
            from ..backends.base import Backend
            seed = int(Backend._rng.integers(2 ** 31))
        # Keras's own draw (RandomState(seed).shuffle), so a seed splits the files as Keras does
        order = np.random.RandomState(seed).permutation(len(files))
        files = [files[i] for i in order]
    num_classes = len(names) if names is not None else 0
    opts = dict(mode=mode, channels=channels, size=size, resample=resample, crop=crop_to_aspect_ratio,
                pad=pad_to_aspect_ratio, label_mode=label_mode, num_classes=num_classes, batch_size=batch_size,
                shuffle=shuffle, seed=seed, skip=skip_unreadable,
                workers=_workers.resolve_calls(num_parallel_calls, where) or _workers.default_workers(),
                processes=_processes(use_multiprocessing, batch_size, where))

    def build(part, what):
        if verbose and what:
            print(f"Using {len(part)} files for {what}.")
        ds = _FileImages(part, opts)
        ds.class_names = names
        ds.file_paths = [p for p, _ in part]
        return ds

    if validation_split:
        cut = len(files) - int(validation_split * len(files))
        train, val = files[:cut], files[cut:]
        if subset == "both":
            return build(train, "training"), build(val, "validation")
        return build(train, "training") if subset == "training" else build(val, "validation")
    return build(files, None)


class _FileImages(Dataset):
    """The decoded (and batched) images of a fixed list of (path, label) files."""

    def __init__(self, files, opts):
        self._files = files
        self._opts = opts
        self._passes = 0
        n, bs = len(files), opts["batch_size"]
        card = n if bs is None else -(-n // bs)
        super().__init__(self._iterate, -2 if opts["skip"] else card, "ImageFolderDataset")

    def _decode(self, item):
        """One file as (uint8 [h, w, c], None), or (None, why) when it is unreadable and skipped.

        Skips are reported, not warned, here: a worker process's warning would
        never reach the caller's filters; the caller warns."""
        o = self._opts
        try:
            return _load_array(item[0], o["mode"], o["channels"], o["size"], o["resample"], o["crop"], o["pad"]), None
        except UnreadableImageError as e:
            if not o["skip"]:
                raise
            return None, str(e)

    def _decode_one(self, item):
        img, why = self._decode(item)
        return (None, why) if img is None else ((img.astype(np.float32), item[1]), None)

    def _fill(self, x, items):
        """Decode ``items`` into the rows of ``x`` (skipped files leave no gap): (labels, skip reasons)."""
        labels, skipped = [], []
        for item in items:
            img, why = self._decode(item)
            if img is None:
                skipped.append(why)
            else:
                x[len(labels)] = img
                labels.append(item[1])
        return labels, skipped

    def _decode_batch(self, items):
        """A thread's task: one batch's files decoded straight into a float32 [n, h, w, c]
        array (the uint8 -> float32 cast happens in that copy)."""
        o = self._opts
        x = np.empty((len(items),) + o["size"] + (o["channels"],), np.float32)
        labels, skipped = self._fill(x, items)
        return x[:len(labels)], labels, skipped

    def _decode_slot(self, arena, task):
        """A process's task: one batch's files decoded into slot ``task[0]`` of the shared uint8
        arena; only the labels and skip reasons travel back through the pipe."""
        slot, items = task
        return (slot,) + self._fill(arena[slot], items)

    @staticmethod
    def _warn_skipped(skipped):
        import warnings
        for why in skipped:
            warnings.warn(f"image_dataset_from_directory: skipped an unreadable file: {why}", RuntimeWarning,
                          stacklevel=3)

    def _batches(self, groups, workers, files):
        """(float32 batch, labels) per group of files, decoded by ``workers`` threads or processes."""
        o = self._opts
        buf = arena = None
        if o["processes"] is True or (o["processes"] == "auto" and len(files) >= _PROCESS_MIN_FILES):
            # Forked workers write pixels into an anonymous shared mapping (inherited across
            # fork, freed with the last process holding it): nothing is pickled but labels, and
            # the parent's only work per batch is the uint8 -> float32 cast it owes anyway.
            import mmap
            in_flight = 2 * workers
            shape = (in_flight + 1, o["batch_size"]) + o["size"] + (o["channels"],)
            buf = mmap.mmap(-1, math.prod(shape))
            arena = np.frombuffer(buf, np.uint8).reshape(shape)
            tasks = ((i % shape[0], g) for i, g in enumerate(groups))
            decoded = _workers.parallel_map(tasks, functools.partial(self._decode_slot, arena), workers,
                                            use_multiprocessing=True, in_flight=in_flight, chunk=1)
        else:
            decoded = _workers.parallel_map(groups, self._decode_batch, workers, in_flight=2 * workers, chunk=1)
        try:
            for x, labs, skipped in decoded:  # x: a float32 batch, or a process's arena slot
                self._warn_skipped(skipped)
                # a slot is cast (a copy) before the next task can reuse it: parallel_map submits
                # that task only when asked for the next result
                yield (x if arena is None else arena[x, :len(labs)].astype(np.float32)), labs
        finally:
            decoded.close()
            if buf is not None:
                del arena
                try:
                    buf.close()
                except BufferError:  # a view still held by a traceback: the mapping goes with it
                    pass

    def _label(self, labels):
        o = self._opts
        y = np.asarray(labels, dtype=np.int32)
        if o["label_mode"] == "categorical":
            return np.eye(o["num_classes"], dtype=np.float32)[y]
        if o["label_mode"] == "binary":
            return y.astype(np.float32)[..., None]
        return y

    def _iterate(self):
        o = self._opts
        files = self._files
        if o["shuffle"] and self._passes:
            # each later epoch a new order, still decided by the seed
            order = np.random.default_rng([o["seed"], self._passes]).permutation(len(files))
            files = [files[i] for i in order]
        self._passes += 1
        bs, workers = o["batch_size"], o["workers"]
        if bs is None:
            # 16 files a task: one future per 16 decodes keeps the caller's thread (and the GIL) free
            decoded = _workers.parallel_map(files, self._decode_one, workers, in_flight=4 * workers * 16, chunk=16)
            try:
                for got, why in decoded:
                    if got is None:
                        self._warn_skipped([why])
                    else:
                        yield self._element(*got)
            finally:
                decoded.close()
            return
        # one task a batch: no per-image future, list or np.stack in the caller's thread
        groups = (files[i:i + bs] for i in range(0, len(files), bs))
        decoded = self._batches(groups, workers, files)
        try:
            xs, ys, held = [], [], 0  # batches left short by skipped files, refilled from the next ones
            for x, labs in decoded:
                if not held and len(labs) == bs:
                    yield self._element(x, labs)
                    continue
                xs.append(x)
                ys.extend(labs)
                held += len(labs)
                if held >= bs:
                    x = np.concatenate(xs)
                    yield self._element(x[:bs], ys[:bs])
                    xs, ys, held = [x[bs:]], ys[bs:], held - bs
            if held:
                yield self._element(np.concatenate(xs), ys)
        finally:
            decoded.close()

    def _element(self, x, labs):
        if self._opts["label_mode"] is None:
            return x
        return x, self._label(labs)


# ------------------------------------------------------------------ single images
def load_img(path, color_mode="rgb", target_size=None, interpolation="nearest", keep_aspect_ratio=False):
    """A PIL Image from ``path`` in ``color_mode`` ("grayscale", "rgb", "rgba"), resized to
    ``target_size`` = (height, width) if given (``keep_aspect_ratio``: centre-crop to the target's
    aspect first). A 16-bit gray PNG stays 16-bit in grayscale (as in Keras) and keeps its high
    byte in "rgb" / "rgba". Raises UnreadableImageError naming the file when Pillow cannot decode it."""
    mode, _ = _color_mode(color_mode, "load_img()")
    im = open_image(os.fspath(path), mode, os.fspath(path), wide_gray=True)
    if target_size is not None:
        th, tw = (int(s) for s in target_size)
        if (im.width, im.height) != (tw, th):
            box = _crop_box(im.width, im.height, tw, th) if keep_aspect_ratio else None
            im = im.resize((tw, th), _resample(interpolation, "load_img()"), box=box)
    return im


def img_to_array(img, data_format=None, dtype="float32"):
    """A PIL Image as a NumPy array [H, W, C] (channels_last) or [C, H, W] (channels_first)."""
    if data_format not in (None, "channels_last", "channels_first"):
        raise ValueError(f"img_to_array(): data_format must be 'channels_last' or 'channels_first', "
                         f"got {data_format!r}")
    a = np.asarray(img, dtype=dtype)
    if a.ndim == 2:
        a = a[:, :, None]
    elif a.ndim != 3:
        raise ValueError(f"img_to_array(): expected an image of rank 2 or 3, got shape {a.shape}")
    return np.ascontiguousarray(a.transpose(2, 0, 1)) if data_format == "channels_first" else a


def array_to_img(x, data_format=None, scale=True, dtype=None):
    """A PIL Image from an array [H, W, C] with 1, 3 or 4 channels (or [C, H, W] with
    channels_first). scale: map the array's range to 0..255 (min to 0, max to 255), as Keras does."""
    Image = _pil()
    a = np.asarray(x.data_sync() if hasattr(x, "data_sync") else x, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"array_to_img(): expected an image array of rank 3, got shape {a.shape}")
    if data_format == "channels_first":
        a = a.transpose(1, 2, 0)
    if scale:
        a = a - a.min()
        top = a.max()
        if top != 0:
            a = a / top
        a = a * 255
    c = a.shape[2]
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    if c not in modes:
        raise ValueError(f"array_to_img(): an image needs 1, 3 or 4 channels, got shape {a.shape}")
    a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(a[:, :, 0] if c == 1 else a, modes[c])


def save_img(path, x, data_format=None, file_format=None, scale=True, **kwargs):
    """Write the image array ``x`` to ``path`` (the format from ``file_format`` or the extension);
    ``kwargs`` go to Pillow's ``Image.save``. An RGBA image saved as JPEG is written as RGB."""
    img = array_to_img(x, data_format=data_format, scale=scale)
    fmt = file_format or os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    if img.mode == "RGBA" and fmt in ("jpg", "jpeg"):
        img = img.convert("RGB")
    img.save(path, format={"jpg": "jpeg"}.get(fmt, fmt) or None, **kwargs)
