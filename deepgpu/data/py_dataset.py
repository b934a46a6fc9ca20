"""``deepgpu.utils.PyDataset``: Keras 3's protocol for a dataset of batches written in Python."""
from __future__ import annotations

__all__ = ["PyDataset", "Sequence"]


class PyDataset:
    """Subclass it, define ``__len__`` (the number of batches) and ``__getitem__(index)`` (one
    batch: ``x``, ``(x, y)`` or ``(x, y, sample_weight)`` of NumPy arrays), and pass an instance
    to ``fit`` / ``evaluate`` / ``predict``.

    workers: batches prepared at once (threads, or processes with
    ``use_multiprocessing=True``; with processes ``__getitem__`` runs in forked
    copies of the dataset, made anew each epoch). max_queue_size: batches
    prepared ahead at most. ``on_epoch_begin`` / ``on_epoch_end`` are called
    around each epoch. ``num_batches`` may return None for an endless dataset
    (then ``__getitem__`` is called with 0, 1, 2, ... until it raises
    IndexError, and ``steps_per_epoch`` sets the epoch's length).
    """

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    # Keras 3 reads these as properties; a subclass that forgot super().__init__ gets the defaults.
    @property
    def workers(self):
        return self.__dict__.get("_workers", 1)

    @workers.setter
    def workers(self, value):
        self._workers = value

    @property
    def use_multiprocessing(self):
        return self.__dict__.get("_use_multiprocessing", False)

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        self._use_multiprocessing = value

    @property
    def max_queue_size(self):
        return self.__dict__.get("_max_queue_size", 10)

    @max_queue_size.setter
    def max_queue_size(self, value):
        self._max_queue_size = value

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(index) returning one batch")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__() (the number of batches)")

    @property
    def num_batches(self):
        """The number of batches (``len(self)``), or None when endless."""
        try:
            return len(self)
        except NotImplementedError:
            return None

    def on_epoch_begin(self):
        """Called before each epoch."""

    def on_epoch_end(self):
        """Called after each epoch (shuffle here)."""


Sequence = PyDataset  # keras.utils.Sequence, the older name
