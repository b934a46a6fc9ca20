"""Worker pools and the bounded prefetch queue behind ``Dataset.map`` / ``prefetch`` and PyDataset.

The pools are the standard library's ``concurrent.futures`` executors: they
carry a worker's exception (and, from a process, its formatted traceback as
``__cause__``) to ``Future.result()``, and ``shutdown(wait=True,
cancel_futures=True)`` joins every thread or process. Threads are ``map``'s
default: a thread costs no pickling and takes lambdas and closures, and the
image decoders (deepgpu/data/decode.py) and NumPy math release the GIL. Processes
(``use_multiprocessing=True``) are for work whose Python holds the GIL: on
28x28 PNGs, where the per-file Python outweighs the decode, they give 2.3x the
threads' images/s (bench/input_pipeline.py, bench/RESULTS.md), which is why
``image_dataset_from_directory`` forks by default. They take 16 items a task.

Everything here is a generator or an object with ``close()``: closing (or
garbage-collecting) it cancels what is queued and joins the workers, so a
stopped ``fit`` (an exception, EarlyStopping, Ctrl-C) leaves nothing running.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import itertools
import multiprocessing
import queue
import signal
import sys
import threading

AUTOTUNE = -1

_WORKER_FN = {}  # token -> callable, set in a worker process by _init_worker
_TOKENS = itertools.count()


def close_quietly(it):
    close = getattr(it, "close", None)
    if close is not None:
        close()


def default_workers() -> int:
    import os
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, n)


def resolve_calls(n, where):
    """``num_parallel_calls`` as a worker count (None -> 0, meaning in the caller's thread)."""
    if n is None:
        return 0
    if n == AUTOTUNE:
        return default_workers()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{where}: num_parallel_calls must be a positive int, AUTOTUNE or None, got {n!r}")
    return n


def _init_worker(token, fn):
    # Ctrl-C goes to the whole process group: the parent handles it and shuts the pool
    # down; a worker that also raised KeyboardInterrupt would break the pool mid-result.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_FN[token] = fn


def _call_in_worker(token, arg):
    return _WORKER_FN[token](arg)


def _call_chunk_in_worker(token, args):
    fn = _WORKER_FN[token]
    return [fn(a) for a in args]


def can_fork() -> bool:
    """Whether worker processes start by fork (Linux and the like; macOS forks unsafely)."""
    return "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin"


def _mp_context():
    # fork shares the function (and a PyDataset) with the workers without pickling it,
    # so lambdas and closures work; elsewhere spawn, which needs picklable ones.
    return multiprocessing.get_context("fork" if can_fork() else "spawn")


class Pool:
    """``fn`` run by ``workers`` threads (or processes): ``submit(arg) -> Future``; ``close()``."""

    def __init__(self, fn, workers, use_multiprocessing=False, name="deepgpu-data"):
        self.processes = bool(use_multiprocessing)
        if self.processes:
            token = next(_TOKENS)
            import warnings
            with warnings.catch_warnings():
                # Python 3.12 warns on fork() from a threaded process; the workers only
                # call ``fn``, they never touch the parent's locks.
                warnings.simplefilter("ignore", DeprecationWarning)
                self._ex = cf.ProcessPoolExecutor(workers, mp_context=_mp_context(),
                                                  initializer=_init_worker, initargs=(token, fn))
            self._call = lambda arg: self._ex.submit(_call_in_worker, token, arg)
            self._token = token
        else:
            self._ex = cf.ThreadPoolExecutor(workers, thread_name_prefix=name)
            self._call = lambda arg: self._ex.submit(fn, arg)
        self._fn = fn

    def submit(self, arg):
        return self._call(arg)

    def submit_chunk(self, args):
        """One task for several arguments (a process worker: one round trip for all of them)."""
        if self.processes:
            return self._ex.submit(_call_chunk_in_worker, self._token, args)
        return self._ex.submit(lambda: [self._fn(a) for a in args])

    def close(self):
        self._ex.shutdown(wait=True, cancel_futures=True)


def parallel_map(items, fn, workers, ordered=True, use_multiprocessing=False, in_flight=None, chunk=None):
    """Yield ``fn(item)`` for each of ``items``, ``workers`` calls at a time.

    At most ``in_flight`` (2 x workers) tasks are queued, so memory stays
    bounded. ordered=False yields results as they finish. A worker's exception
    is raised here, with its traceback, after the pool is shut down. chunk:
    items per task (default 1 for threads, 16 for processes, where each task
    is a pickled round trip: one per item cost 6x the throughput on small
    images, bench/input_pipeline.py).
    """
    pool = Pool(fn, workers, use_multiprocessing)
    limit = in_flight or 2 * workers
    size = chunk or (16 if use_multiprocessing else 1)
    pending = collections.deque()
    it = iter(items)
    try:
        if size == 1:
            for item in it:
                pending.append(pool.submit(item))
                if len(pending) >= limit:
                    yield _next_done(pending, ordered)
            while pending:
                yield _next_done(pending, ordered)
        else:
            limit = max(2, -(-limit // size))
            for group in _groups(it, size):
                pending.append(pool.submit_chunk(group))
                if len(pending) >= limit:
                    yield from _next_done(pending, ordered)
            while pending:
                yield from _next_done(pending, ordered)
    finally:
        for f in pending:
            f.cancel()
        pool.close()
        close_quietly(it)


def _groups(it, size):
    group = []
    for item in it:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _next_done(pending, ordered):
    if ordered:
        return pending.popleft().result()
    done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
    f = next(f for f in pending if f in done)
    pending.remove(f)
    return f.result()


class Prefetcher:
    """Runs ``make_iter()`` in a background thread, ``size`` items ahead (a bounded queue).

    Iterate it for the items; an exception in the thread is raised here with
    its traceback. ``close()`` stops the thread (closing the upstream iterator
    in it) and joins it.
    """

    _ITEM, _END, _ERROR = 0, 1, 2

    def __init__(self, make_iter, size, name="deepgpu-prefetch"):
        self._q = queue.Queue(max(1, size))
        self._stop = threading.Event()
        self._make_iter = make_iter
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self):
        it = None
        try:
            it = iter(self._make_iter())
            for item in it:
                if not self._put((self._ITEM, item)):
                    return
            self._put((self._END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((self._ERROR, e))
        finally:
            if it is not None:
                close_quietly(it)

    def _put(self, msg):
        while not self._stop.is_set():
            try:
                self._q.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        while True:
            try:
                kind, value = self._q.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._q.empty():
                    self._done = True
                    raise StopIteration from None
        if kind == self._ITEM:
            return value
        self.close()
        if kind == self._END:
            raise StopIteration
        raise value

    def close(self):
        self._done = True
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
