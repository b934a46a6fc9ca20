"""Data on the device: ``Dataset.cache("device")`` and the one-batch-ahead upload used by
``fit`` on data sources (issue 19).

``cache("device")`` uploads every element once, during the first complete
pass, as deepgpu Tensors on the current backend; later passes yield those
Tensors, so an epoch does no host work and no host-to-device copy. Use it for
a dataset that fits in device memory (``nbytes`` says how much it holds).
Arrays already on the device are batched there too when passed to ``fit`` as
Tensors (the array path).

``staged(...)`` is how ``fit`` moves host batches: batch k+1 is handed to the
backend's ``stage_to_device`` before step k is enqueued; on the CUDA backend
that is an upload from pinned buffers on a second stream
(backends/staging.py), so it overlaps step k; ``wait_staged`` orders the step
after its batch's upload on the device.
"""
from __future__ import annotations

import threading

import numpy as np

from .. import backends
from ..tensor import Tensor
from .dataset import Dataset, _closing, map_structure

__all__ = ["DeviceCachedDataset", "staged", "stage_batch"]


def _upload(a, B):
    if isinstance(a, Tensor):
        return a if a._backend is B else Tensor(B.asarray(a.data_sync()), B)
    host = np.asarray(a)
    if host.dtype.kind not in "biuf":
        return host  # text stays on the host
    return Tensor(B.asarray(host), B)


class DeviceCachedDataset(Dataset):
    """The elements of ``source``, held on the device after the first complete pass
    (on the backend current during that pass). A pass stopped early keeps nothing."""

    def __init__(self, source):
        self._source = source
        self._store = None  # (backend, [elements])
        self._lock = threading.Lock()
        super().__init__(self._iterate, source.cardinality(), "DeviceCacheDataset")

    def _iterate(self):
        B = backends.current()
        store = self._store
        if store is not None and store[0] is B:
            yield from store[1]
            return
        got = []
        with _closing(iter(self._source)) as it:
            for el in it:
                dev = map_structure(lambda a: _upload(a, B), el)
                got.append(dev)
                yield dev
        with self._lock:
            self._store = (B, got)

    @property
    def nbytes(self) -> int:
        """Device bytes held (0 before the first complete pass)."""
        if self._store is None:
            return 0
        from .dataset import flatten
        return sum(int(leaf.data.nbytes) for el in self._store[1] for leaf in flatten(el)
                   if isinstance(leaf, Tensor))

    def release(self):
        """Drop the device copies (the next pass reads the source again)."""
        with self._lock:
            self._store = None


def stage_batch(B, xs, ys, sw):
    """Start the upload of one prepared batch: (xs, ys, sw) as Tensors (text arrays stay on
    the host) and the backend's ticket. Tensors already on ``B`` are used as they are."""
    parts = list(xs) + (list(ys) if ys is not None else []) + ([sw] if sw is not None else [])
    host_at = [i for i, a in enumerate(parts) if not isinstance(a, Tensor)]
    out = list(parts)
    ticket = None
    if host_at:
        arrays, ticket = B.stage_to_device([parts[i] for i in host_at])
        for i, a in zip(host_at, arrays):
            out[i] = Tensor(a, B) if np.asarray(parts[i]).dtype.kind in "biuf" else a
    for i, a in enumerate(out):
        if isinstance(a, Tensor) and a._backend is not B:
            out[i] = _upload(a, B)
    nx, ny = len(xs), (len(ys) if ys is not None else 0)
    return (out[:nx], out[nx:nx + ny] if ys is not None else None,
            out[nx + ny] if sw is not None else None), ticket


def staged(batches, B=None):
    """``(step, (xs, ys, sw))`` host batches -> ``(step, host batch, device batch, ticket)``,
    one ahead: the next batch's upload is started before the current one is handed out."""
    B = B or backends.current()
    pending = None
    try:
        for step, batch in batches:
            nxt = (step, batch) + stage_batch(B, *batch)
            if pending is not None:
                yield pending
            pending = nxt
        if pending is not None:
            yield pending
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
