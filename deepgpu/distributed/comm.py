"""Communicators: one object per process that knows the world and moves buffers.

``SingleCommunicator`` is the world of one process (no MPI needed);
``MPICommunicator`` reduces host buffers through mpi4py's buffer API
(``Allreduce`` / ``Iallreduce`` / ``Bcast`` on NumPy arrays, no pickling);
``NCCLCommunicator`` reduces device buffers with ``cupy.cuda.nccl``, its
unique id sent from rank 0 over MPI (the ChainerMN / Horovod pattern).
Buffers are backend arrays; an MPI communicator brings device arrays to the
host and back through the backend (``to_numpy`` / ``asarray``).
"""
from __future__ import annotations

import os
import sys

from .. import backends

INSTALL_HINT = "pip install 'deepgpu[distributed]'  (mpi4py and the mpich wheel)"

_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")


def launched_size() -> int:
    """The world size a launcher (mpiexec / srun) asked for, read from its environment; 1 outside one."""
    for var in _LAUNCHER_VARS:
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return 1


class Communicator:
    """The interface: ``rank``, ``size``, ``local_rank``, ``local_size``, ``name`` and the collectives.

    ``all_reduce(buf, op)`` sums (``op="sum"``) or averages (``"mean"``) the
    backend array ``buf`` across ranks in place and returns it;
    ``broadcast(buf, root)`` copies root's ``buf`` into every rank's in place;
    ``allgather_obj(obj)`` returns the list of every rank's small picklable
    object; ``barrier()`` waits for every rank.
    """

    name = "base"
    capturable = False  # whether its collectives on device arrays can be recorded into a CUDA graph
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1

    def all_reduce(self, buf, op="sum"):
        raise NotImplementedError

    def broadcast(self, buf, root=0):
        raise NotImplementedError

    def allgather_obj(self, obj):
        raise NotImplementedError

    def bcast_obj(self, obj, root=0):
        raise NotImplementedError

    def barrier(self):
        raise NotImplementedError

    def all_reduce_buckets(self, buf, bucket_elems, op="sum"):
        """``all_reduce`` of the 1-D ``buf`` in slices of ``bucket_elems`` elements."""
        n = buf.shape[0]
        for start in range(0, n, bucket_elems):
            self.all_reduce(buf[start:start + bucket_elems], op)
        return buf

    def start_all_reduce(self, buf, op="sum"):
        """Begin ``all_reduce(buf, op)`` of the contiguous 1-D ``buf`` and return a handle: its
        ``wait()`` finishes the reduction (``buf`` holds the result after it), ``poke()`` lets
        it progress. Every rank must start the same reductions in the same order. Here it is
        done at once; MPI (Iallreduce) and NCCL (a side stream) overlap it with what follows."""
        self.all_reduce(buf, op)
        return _Done()

    def __repr__(self):
        return f"<{type(self).__name__} rank {self.rank}/{self.size} local {self.local_rank}/{self.local_size}>"


class _Done:
    def poke(self):
        pass

    def wait(self):
        pass


class _MPIPending:
    """An Iallreduce under way on a host buffer (copied back to the device one at ``wait``)."""

    def __init__(self, req, host, buf, B, divide):
        self.req, self.host, self.buf, self.B, self.divide = req, host, buf, B, divide

    def poke(self):
        # MPICH progresses a non-blocking collective only inside MPI calls: a Test now and then
        # lets it move while the caller computes.
        if self.req is not None:
            self.req.Test()

    def wait(self):
        if self.req is None:
            return
        self.req.Wait()
        self.req = None
        if self.divide:
            self.host /= self.divide
        if self.B is not None:
            self.buf[...] = self.B.asarray(self.host)


def _check_op(op):
    if op not in ("sum", "mean"):
        raise ValueError(f"all_reduce: op must be 'sum' or 'mean', got {op!r}")


class SingleCommunicator(Communicator):
    """The world of one process: every collective returns its input."""

    name = "single"

    def all_reduce(self, buf, op="sum"):
        _check_op(op)
        return buf

    def broadcast(self, buf, root=0):
        if root != 0:
            raise ValueError(f"broadcast: root must be a rank in [0, 1), got {root!r}")
        return buf

    def allgather_obj(self, obj):
        return [obj]

    def bcast_obj(self, obj, root=0):
        return obj

    def barrier(self):
        pass


_HOOKED = []


def abort_on_failure(status=1):
    """Make this rank's failure end the whole MPI job, as ``python -m mpi4py`` does: MPI_Abort
    with ``status`` at exit instead of MPI_Finalize (which would leave the other ranks waiting in
    their next collective). For a caught failure that ends the process (the CLI's exit 2)."""
    from mpi4py import run
    run.set_abort_status(status)


def _abort_on_uncaught():
    """Once per process: an exception nobody catches prints its traceback as usual and then aborts
    the job, so a script started as ``mpiexec -n N python train.py`` (without ``-m mpi4py``) fails
    as a whole instead of hanging. Under ``-m mpi4py`` mpi4py catches it first and does the same."""
    if _HOOKED:
        return
    _HOOKED.append(sys.excepthook)

    def hook(kind, value, tb):
        _HOOKED[0](kind, value, tb)
        abort_on_failure(130 if issubclass(kind, KeyboardInterrupt) else 1)
    sys.excepthook = hook


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"deepgpu.distributed needs mpi4py for more than one rank: {INSTALL_HINT}") from e
    return MPI


class MPICommunicator(Communicator):
    """Host-memory collectives over an mpi4py communicator (COMM_WORLD by default)."""

    name = "mpi"

    def __init__(self, comm=None):
        MPI = _import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        # Node-local rank: the ranks that share memory (one node) in their world order.
        self._local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = self._local.Get_rank()
        self.local_size = self._local.Get_size()
        self._bf16_sum = None
        if self.size > 1:
            _abort_on_uncaught()

    def _host(self, buf):
        """(host array, backend to copy back through or None) for a backend array ``buf``."""
        if hasattr(buf, "__cuda_array_interface__"):
            B = backends.get("cuda")
            return B.to_numpy(buf), B
        return buf, None

    def _sum(self, host):
        """(MPI buffer spec, op) summing ``host``: MPI has no bfloat16, so it travels as 16-bit words
        that a user-defined op adds as ml_dtypes' bfloat16."""
        if host.dtype.name != "bfloat16":
            return host, self._MPI.SUM
        if self._bf16_sum is None:
            import numpy as np  # MPI hands the op raw host buffers: a host boundary, no tensor math
            dt = host.dtype

            def add(inbuf, inout, datatype):
                out = np.frombuffer(inout, dt)
                out += np.frombuffer(inbuf, dt)
            self._bf16_sum = self._MPI.Op.Create(add, commute=True)
        return [host.view("uint16"), self._MPI.UINT16_T], self._bf16_sum

    def all_reduce(self, buf, op="sum"):
        _check_op(op)
        host, B = self._host(buf)
        if not host.flags.c_contiguous:
            raise ValueError("all_reduce: the buffer must be C-contiguous")
        spec, mpi_op = self._sum(host)
        self.comm.Allreduce(self._MPI.IN_PLACE, spec, op=mpi_op)
        if op == "mean":
            host /= self.size
        if B is not None:
            buf[...] = B.asarray(host)
        return buf

    def all_reduce_buckets(self, buf, bucket_elems, op="sum"):
        """Non-blocking ``Iallreduce`` of every bucket, then one wait: MPI may pipeline them."""
        _check_op(op)
        host, B = self._host(buf)
        reqs = [self.comm.Iallreduce(self._MPI.IN_PLACE, *self._sum(host[s:s + bucket_elems]))
                for s in range(0, host.shape[0], bucket_elems)]
        self._MPI.Request.Waitall(reqs)
        if op == "mean":
            host /= self.size
        if B is not None:
            buf[...] = B.asarray(host)
        return buf

    def start_all_reduce(self, buf, op="sum"):
        _check_op(op)
        host, B = self._host(buf)
        if not host.flags.c_contiguous:
            raise ValueError("all_reduce: the buffer must be C-contiguous")
        req = self.comm.Iallreduce(self._MPI.IN_PLACE, *self._sum(host))
        return _MPIPending(req, host, buf, B, self.size if op == "mean" else None)

    def broadcast(self, buf, root=0):
        if not (isinstance(root, int) and 0 <= root < self.size):
            raise ValueError(f"broadcast: root must be a rank in [0, {self.size}), got {root!r}")
        host, B = self._host(buf)
        self.comm.Bcast(host, root=root)
        if B is not None:
            buf[...] = B.asarray(host)
        return buf

    def allgather_obj(self, obj):
        return self.comm.allgather(obj)

    def bcast_obj(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def barrier(self):
        self.comm.Barrier()


_NCCL_DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
                "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8", "int8": "NCCL_INT8",
                "bfloat16": "NCCL_BFLOAT16"}


def nccl_dtype(nccl, dtype):
    """The NCCL data type constant for a dtype name; ValueError for one NCCL lacks."""
    key = _NCCL_DTYPES.get(str(dtype))
    if key is None or not hasattr(nccl, key):
        raise ValueError(f"NCCL cannot reduce dtype {dtype}; it takes {sorted(_NCCL_DTYPES)}")
    return getattr(nccl, key)


def nccl_available() -> bool:
    """True when CuPy with NCCL and at least one GPU are here."""
    try:
        from cupy.cuda import nccl  # noqa: F401
        import cupy
        return nccl.available if hasattr(nccl, "available") else cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def use_local_gpu(local_rank):
    """Make GPU ``local_rank`` (modulo the node's GPU count: ranks share GPUs over MPI) this process's
    current device; returns its index."""
    import cupy
    i = local_rank % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(i).use()
    return i


class NCCLCommunicator(Communicator):
    """Device collectives with NCCL (``cupy.cuda.nccl``) between one GPU per rank.

    MPI carries the world (ranks, node-local ranks) and NCCL's unique id from
    rank 0; each rank uses GPU ``local_rank``. Raises RuntimeError with no
    GPU / no NCCL, or when a node runs more ranks than it has GPUs (NCCL
    refuses two ranks on one GPU).
    """

    name = "nccl"

    def __init__(self, comm=None):
        self.mpi = MPICommunicator(comm)
        self.rank, self.size = self.mpi.rank, self.mpi.size
        self.local_rank, self.local_size = self.mpi.local_rank, self.mpi.local_size
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as e:
            raise RuntimeError("NCCL was asked for but CuPy (with cupy.cuda.nccl) is not installed: "
                               "pip install 'deepgpu[cuda]'") from e
        try:
            ngpu = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # no driver
            raise RuntimeError(f"NCCL was asked for but no GPU is usable: {e}") from e
        if ngpu == 0:
            raise RuntimeError("NCCL was asked for but this node has no GPU")
        if self.local_size > ngpu:
            raise RuntimeError(f"NCCL needs one GPU per rank: this node runs {self.local_size} ranks on "
                               f"{ngpu} GPU(s); launch at most {ngpu} rank(s) per node, or use backend='mpi'")
        self._cupy, self._nccl = cupy, nccl
        use_local_gpu(self.local_rank)
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.mpi.bcast_obj(uid, 0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._side = None  # the stream overlapped reductions run on (made at first use)
        # NCCL calls can be recorded into a CUDA graph from 2.9.6 on (the version reads as 2 * 10000 + 9 * 100 + 6)
        try:
            self.capturable = int(nccl.get_version()) >= 20906
        except Exception:  # noqa: BLE001  (an NCCL without get_version: too old to tell)
            self.capturable = False

    def _stream(self):
        return self._cupy.cuda.get_current_stream().ptr

    def all_reduce(self, buf, op="sum"):
        _check_op(op)
        if not hasattr(buf, "__cuda_array_interface__"):  # host values (epoch logs) go over MPI
            return self.mpi.all_reduce(buf, op)
        n = int(buf.size)
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, n, nccl_dtype(self._nccl, buf.dtype),
                            self._nccl.NCCL_SUM, self._stream())
        if op == "mean":
            buf /= self.size
        return buf

    def start_all_reduce(self, buf, op="sum"):
        """The reduction on a side stream that first waits for what the current stream has queued
        (the gradients copied into ``buf``); ``wait()`` makes the current stream wait for it (no
        host synchronisation), so the optimizer's kernels queued after it see the sums."""
        _check_op(op)
        if not hasattr(buf, "__cuda_array_interface__"):
            return self.mpi.start_all_reduce(buf, op)
        cuda = self._cupy.cuda
        if self._side is None:
            self._side = cuda.Stream(non_blocking=True)
        ready = cuda.Event(disable_timing=True)
        ready.record(cuda.get_current_stream())
        self._side.wait_event(ready)
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, int(buf.size), nccl_dtype(self._nccl, buf.dtype),
                            self._nccl.NCCL_SUM, self._side.ptr)
        done = cuda.Event(disable_timing=True)
        done.record(self._side)
        return _NCCLPending(cuda, buf, done, self.size if op == "mean" else None)

    def broadcast(self, buf, root=0):
        if not (isinstance(root, int) and 0 <= root < self.size):
            raise ValueError(f"broadcast: root must be a rank in [0, {self.size}), got {root!r}")
        if not hasattr(buf, "__cuda_array_interface__"):
            return self.mpi.broadcast(buf, root)
        self.comm.bcast(buf.data.ptr, int(buf.size), nccl_dtype(self._nccl, buf.dtype), root, self._stream())
        return buf

    def allgather_obj(self, obj):
        return self.mpi.allgather_obj(obj)

    def bcast_obj(self, obj, root=0):
        return self.mpi.bcast_obj(obj, root)

    def barrier(self):
        self._cupy.cuda.get_current_stream().synchronize()
        self.mpi.barrier()


class _NCCLPending:
    """A reduction queued on the side stream; ``wait`` orders the current stream after it."""

    def __init__(self, cuda, buf, done, divide):
        self.cuda, self.buf, self.done, self.divide = cuda, buf, done, divide

    def poke(self):
        pass

    def wait(self):
        if self.done is None:
            return
        self.cuda.get_current_stream().wait_event(self.done)
        self.done = None
        if self.divide:
            self.buf /= self.divide
