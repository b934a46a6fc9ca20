"""Data-parallel training across processes on MPI (host buffers) and NCCL (GPUs).

Launch with ``mpiexec -n 4 python -m mpi4py train.py`` (``-m mpi4py`` makes a
rank that raises or calls ``sys.exit(n)`` abort the whole job instead of
leaving the others waiting). Plain ``mpiexec -n 4 python train.py`` also ends
the job on an exception nobody catches (``init`` hooks ``sys.excepthook``), but
not on ``sys.exit(n)`` from one rank alone: that rank should call
``deepgpu.distributed.comm.abort_on_failure(n)`` first (the CLI does).
Outside ``mpiexec`` everything works as a world of one rank.

    import deepgpu as dg
    dg.distributed.init()
    model.compile("adam", "sparse_categorical_crossentropy",
                  distribute=dg.distributed.DataParallel())
    model.fit(x, y, batch_size=256)   # 256 = the global batch, split across ranks

See ``DataParallel`` for what changes in ``fit``.
"""
from __future__ import annotations

from .. import backends
from ..tensor import Tensor
from .comm import (INSTALL_HINT, Communicator, MPICommunicator, NCCLCommunicator,  # noqa: F401
                   SingleCommunicator, launched_size, nccl_available, use_local_gpu)
from .data_parallel import DataParallel  # noqa: F401

_COMM = None

__all__ = ["init", "communicator", "rank", "size", "local_rank", "is_main", "barrier", "all_reduce",
           "broadcast", "DataParallel", "Communicator", "SingleCommunicator", "MPICommunicator",
           "NCCLCommunicator", "shutdown"]


def _have_mpi4py() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def init(backend: str = "auto") -> Communicator:
    """Join the MPI world once and return its communicator (later calls return the same one).

    backend: "auto" (NCCL when deepgpu's current backend is "cuda" and NCCL
    and a GPU are there, else MPI; one process outside a launcher without
    mpi4py is a world of one), "mpi", "nccl", or "single". On the cuda
    backend each rank takes GPU ``local_rank`` (with MPI, modulo the GPUs
    of its node). Raises
    ImportError with the install command when mpi4py is missing and the
    launcher asked for more than one rank (or "mpi" / "nccl" was asked for);
    RuntimeError when "nccl" cannot be honoured (no CuPy / GPU, more ranks
    than GPUs on a node); ValueError for another name.
    """
    global _COMM
    if backend not in ("auto", "mpi", "nccl", "single"):
        raise ValueError(f"distributed.init: backend must be 'auto', 'mpi', 'nccl' or 'single', got {backend!r}")
    if _COMM is not None:
        if backend not in ("auto", _COMM.name):
            raise RuntimeError(f"distributed.init: already initialised with backend {_COMM.name!r}, "
                               f"cannot switch to {backend!r}")
        return _COMM
    if backend == "single":
        if launched_size() > 1:
            raise RuntimeError(f"distributed.init: backend 'single' under a launcher of {launched_size()} ranks")
        _COMM = SingleCommunicator()
    elif backend == "nccl":
        _COMM = NCCLCommunicator()
    elif backend == "mpi":
        _COMM = MPICommunicator()
    elif not _have_mpi4py():
        if launched_size() > 1:
            raise ImportError(f"deepgpu.distributed: {launched_size()} ranks were launched but mpi4py is not "
                              f"installed: {INSTALL_HINT}")
        _COMM = SingleCommunicator()
    elif backends.current().name == "cuda" and nccl_available():
        _COMM = NCCLCommunicator()
    else:
        _COMM = MPICommunicator()
    B = backends.current()
    # NCCL picks its GPU itself; the CPU emulation of the CUDA backend (xp NumPy, no .cuda) has none to pick
    if _COMM.name == "mpi" and B.name == "cuda" and getattr(getattr(B, "xp", None), "cuda", None) is not None:
        use_local_gpu(_COMM.local_rank)
    return _COMM


def communicator() -> Communicator:
    """The communicator of ``init()`` (initialising with "auto" on first use)."""
    return _COMM if _COMM is not None else init()


def shutdown() -> None:
    """Forget the communicator (MPI itself is finalised by mpi4py at exit)."""
    global _COMM
    _COMM = None


def rank() -> int:
    """This process's rank in [0, size())."""
    return communicator().rank


def size() -> int:
    """The number of ranks."""
    return communicator().size


def local_rank() -> int:
    """This process's rank among those on its node (picks its GPU)."""
    return communicator().local_rank


def is_main() -> bool:
    """True on rank 0, the one that prints and writes files."""
    return communicator().rank == 0


def barrier() -> None:
    """Wait until every rank gets here."""
    communicator().barrier()


def _reduce_copy(x, fn):
    if isinstance(x, Tensor):
        B = x._backend
        out = B.copy(x.data)
        fn(out)
        return Tensor(out, B)
    if hasattr(x, "__cuda_array_interface__"):
        B = backends.get("cuda")
    elif hasattr(x, "shape") and hasattr(x, "dtype"):
        B = backends.get("cpu")
    else:
        raise TypeError(f"distributed: expected a Tensor or an array, got {type(x).__name__}")
    out = B.copy(x)
    fn(out)
    return out


def all_reduce(x, op: str = "sum"):
    """``x`` (Tensor or NumPy / CuPy array) summed or averaged (op "sum" / "mean") over every
    rank, as a new Tensor / array of the same kind; every rank must call it with the same
    shape and dtype. ValueError for another op."""
    if op not in ("sum", "mean"):
        raise ValueError(f"all_reduce: op must be 'sum' or 'mean', got {op!r}")
    comm = communicator()
    return _reduce_copy(x, lambda buf: comm.all_reduce(buf.reshape(-1) if buf.ndim != 1 else buf, op))


def broadcast(x, root: int = 0):
    """Rank ``root``'s ``x`` (Tensor or array) on every rank, as a new Tensor / array."""
    comm = communicator()
    return _reduce_copy(x, lambda buf: comm.broadcast(buf.reshape(-1) if buf.ndim != 1 else buf, root))
