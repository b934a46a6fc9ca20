"""deepgpu.distributed: communicators, DataParallel's sharding and checks in one process, and
real MPI jobs (``mpiexec -n N python3 -m mpi4py tests/distributed/worker.py MODE``) checked
from here; those skip when mpiexec or mpi4py is missing."""
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import deepgpu as dg
from deepgpu.distributed import DataParallel, comm as comm_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed", "worker.py")


class FakeComm(comm_mod.SingleCommunicator):
    """A rank of a pretend world, for the checks that need no messages."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def _dp(rank, size, **kw):
    dp = DataParallel(seed=3, **kw)
    dp.comm = FakeComm(rank, size)
    return dp


def test_single_communicator_collectives():
    c = comm_mod.SingleCommunicator()
    a = np.arange(5, dtype="float32")
    assert c.all_reduce(a, "mean") is a and c.broadcast(a) is a
    assert c.allgather_obj({"x": 1}) == [{"x": 1}]
    with pytest.raises(ValueError, match="op must be 'sum' or 'mean'"):
        c.all_reduce(a, "max")
    with pytest.raises(ValueError, match="root must be a rank"):
        c.broadcast(a, root=1)


def test_shards_cover_every_sample_once_per_epoch():
    for size in (2, 3, 4):
        for n, batch in ((48, 12), (50, 12), (12 * 4 + 2, 12)):
            per_rank = [list(_dp(r, size).batches(n, batch, True, 0)) for r in range(size)]
            steps = _dp(0, size).steps(n, batch)
            assert all(len(p) == steps for p in per_rank)
            seen = np.concatenate([b for p in per_rank for b in p])
            assert len(seen) == len(set(seen.tolist())) == n - (n % batch) % size
            # every rank's share of a global batch is the same size
            for s in range(steps):
                assert len({len(p[s]) for p in per_rank}) == 1
    e0 = np.concatenate(list(_dp(0, 2).batches(40, 8, True, 0)))
    e1 = np.concatenate(list(_dp(0, 2).batches(40, 8, True, 1)))
    assert not np.array_equal(e0, e1)  # a new shuffle each epoch
    assert np.array_equal(np.concatenate(list(_dp(1, 2).batches(8, 8, False, 0))), np.arange(4, 8))


def test_prepare_fit_checks_and_rank0_callbacks():
    dp = _dp(1, 3)
    with pytest.raises(ValueError, match="batch_size=16 is the global batch.*divisible by the number of ranks \\(3\\)"):
        dp.prepare_fit(100, 16, None, 1, [])
    with pytest.raises(ValueError, match="2 training samples cannot be shared by 3 ranks"):
        dp.prepare_fit(2, 3, None, 1, [])
    cbs = [dg.callbacks.CSVLogger("x.csv"), dg.callbacks.EarlyStopping(), dg.callbacks.ModelCheckpoint("m.dgm")]
    steps, verbose, kept = dp.prepare_fit(100, 12, None, 1, cbs)  # 8 full global batches + a tail of 4 >= 3
    assert (steps, verbose) == (9, 0) and [type(c).__name__ for c in kept] == ["EarlyStopping"]
    steps, verbose, kept = _dp(0, 3).prepare_fit(100, 12, 5, 1, cbs)
    assert (steps, verbose, len(kept)) == (5, 1, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bucket_mb must be a number > 0"):
        DataParallel(bucket_mb=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        DataParallel(seed="x")
    with pytest.raises(ValueError, match="reduce_dtype must be None, 'float16' or 'bfloat16'"):
        DataParallel(reduce_dtype="int8")
    m = dg.Sequential([dg.layers.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="distribute must be a deepgpu.distributed.DataParallel"):
        m.compile("sgd", "mse", distribute="mirrored")
    with pytest.raises(ValueError, match="backend must be"):
        dg.distributed.init("gloo")


def test_nccl_dtype_names_and_refusals():
    fake = types.SimpleNamespace(NCCL_FLOAT32=7, NCCL_FLOAT16=6)
    assert comm_mod.nccl_dtype(fake, "float32") == 7
    with pytest.raises(ValueError, match="NCCL cannot reduce dtype complex64"):
        comm_mod.nccl_dtype(fake, "complex64")
    with pytest.raises(ValueError, match="NCCL cannot reduce dtype bfloat16"):  # not in this NCCL
        comm_mod.nccl_dtype(fake, "bfloat16")


def _python(code, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=e,
                          cwd=ROOT)


def test_init_outside_mpiexec_is_one_rank():
    r = _python("import numpy as np, deepgpu as dg; c = dg.distributed.init(); "
                "t = dg.distributed.all_reduce(dg.tensor(np.ones(3, 'float32')), 'mean'); "
                "print(dg.distributed.rank(), dg.distributed.size(), dg.distributed.is_main(), t.data_sync().tolist())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "0 1 True [1.0, 1.0, 1.0]"


def test_without_mpi4py_one_rank_works_and_more_ranks_say_how_to_install():
    block = "import sys; sys.modules['mpi4py'] = None; import deepgpu as dg; "
    r = _python(block + "print(dg.distributed.init().name, dg.distributed.size())")
    assert r.returncode == 0 and r.stdout.strip() == "single 1", r.stderr
    r = _python(block + "dg.distributed.init()", env={"PMI_SIZE": "2"})
    assert r.returncode != 0 and "pip install 'deepgpu[distributed]'" in r.stderr


def test_nccl_without_gpu_is_a_clear_error():
    pytest.importorskip("mpi4py")
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is here: the NCCL path is tested by tests/distributed/worker.py nccl")
    except Exception:
        pass
    r = _python("import deepgpu as dg; dg.distributed.init('nccl')")
    assert r.returncode != 0 and "NCCL was asked for but" in r.stderr, r.stderr


def _mpiexec(n, mode, tmp_path, timeout=120, argv=None):
    """``mpiexec -n n python -m mpi4py worker.py mode tmp_path`` (or ``python`` + ``argv``): (result, seconds)."""
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec not found (pip install 'deepgpu[distributed]')")
    pytest.importorskip("mpi4py")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = ["-m", "mpi4py", WORKER, mode, str(tmp_path)] if argv is None else argv
    start = time.monotonic()
    r = subprocess.run(["mpiexec", "-n", str(n), sys.executable] + argv,
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    return r, time.monotonic() - start


@pytest.mark.parametrize("ranks", [2, 4])
def test_data_parallel_matches_one_process(ranks, tmp_path):
    """MLP (Adam) and the seed convnet (SGD): weights equal on every rank and within 1e-5 of one process
    on the global batch; sharding; rank-0-only files; EarlyStopping on averaged logs (worker.py main)."""
    r, _ = _mpiexec(ranks, "main", tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert all(f"rank {k}/{ranks}: main ok" in r.stdout for k in range(ranks))


def test_resume_from_a_checkpoint_under_another_number_of_ranks(tmp_path):
    r, _ = _mpiexec(2, "save", tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert sorted(os.listdir(tmp_path)) == ["resume.dgm"]
    r, _ = _mpiexec(3, "resume", tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


@pytest.mark.parametrize("via_mpi4py", [True, False])
def test_a_rank_that_raises_ends_the_job(tmp_path, via_mpi4py):
    """With ``python -m mpi4py`` and without it (plain ``mpiexec -n 2 python worker.py``, where MPI alone
    would leave the other rank waiting in its barrier: distributed.init's excepthook aborts the job)."""
    argv = None if via_mpi4py else [WORKER, "raise", str(tmp_path)]
    r, took = _mpiexec(2, "raise", tmp_path, timeout=90, argv=argv)
    assert r.returncode != 0 and "rank failed on purpose" in r.stderr
    assert took < 60  # a hang would run to the timeout


def test_a_rank_killed_by_a_signal_ends_the_job(tmp_path):
    """A rank killed outright (SIGKILL, as by the OOM killer): mpiexec ends the others, non-zero."""
    if sys.platform == "win32":
        pytest.skip("no SIGKILL")
    r, took = _mpiexec(2, "killed", tmp_path, timeout=90, argv=[WORKER, "killed", str(tmp_path)])
    assert r.returncode != 0 and took < 60, r.stderr[-2000:]


def test_cli_distributed_trains_and_rank_0_speaks_and_saves(tmp_path):
    """``mpiexec -n 2 python -m mpi4py -m deepgpu.cli train --distributed``: one epoch of the dense net on
    digits; rank 0 alone prints, and the model and the plot are saved (rank 0 writes them)."""
    pytest.importorskip("sklearn")
    out = tmp_path / "out"
    r, _ = _mpiexec(2, None, tmp_path, timeout=240, argv=[
        "-m", "mpi4py", "-m", "deepgpu.cli", "train", "--distributed", "--model", "dnn", "--epochs", "1",
        "--batch-size", "256", "--verbose", "2", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("Epoch 1/1") == 1 and r.stdout.count("Saved the model to") == 1, r.stdout
    assert "5/5 - " in r.stdout  # 1212 images after the 0.1 split: 4 global batches of 256 and 188 more
    back = dg.models.load_model(str(out / "digits-dnn.dgm"))
    assert back.count_params() == 301_066
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "digits-dnn-history.png").exists()


def test_cli_distributed_refuses_a_batch_the_ranks_do_not_divide(tmp_path):
    """``deepgpu train --distributed`` under mpiexec (without ``-m mpi4py``): one line, exit 2 on every
    rank, before any data is read, and nothing written."""
    out = tmp_path / "out"
    r, took = _mpiexec(2, None, tmp_path, timeout=90, argv=["-m", "deepgpu.cli", "train", "--distributed",
                                                            "--batch-size", "63", "--out", str(out)])
    assert r.returncode == 2, r.stderr[-3000:]
    assert "deepgpu: error: --batch-size 63 is the global batch and must be divisible by the number of " \
           "ranks (2)" in r.stderr and "Traceback" not in r.stderr
    assert not (out.exists() and any(out.iterdir())) and took < 60  # (--out's check may make the folder)


def test_ranks_disagreeing_on_the_model_are_named(tmp_path):
    r, _ = _mpiexec(2, "mismatch", tmp_path, timeout=90)
    assert r.returncode != 0
    assert "ranks disagree on model 'sequential' at weight 0: rank 0 has 'dense/kernel' (6, 16)" in r.stderr
    assert os.listdir(tmp_path) == []  # found before CSVLogger / TensorBoard / ModelCheckpoint open anything


class _FakeNccl:
    """Stands in for cupy.cuda.nccl: records the calls NCCLCommunicator makes."""
    NCCL_FLOAT32, NCCL_SUM = 7, 0

    def __init__(self):
        self.calls = []
        fake = self

        class Comm:
            def __init__(self, size, uid, rank):
                fake.calls.append(("init", size, uid, rank))

            def allReduce(self, send, recv, count, dtype, op, stream):
                fake.calls.append(("allReduce", send, recv, count, dtype, op, stream))

            def bcast(self, ptr, count, dtype, root, stream):
                fake.calls.append(("bcast", ptr, count, dtype, root, stream))
        self.NcclCommunicator = Comm

    def get_unique_id(self):
        return b"uid-from-rank-0"


class _FakeDeviceArray:
    __cuda_array_interface__ = {}
    dtype, size = np.dtype("float32"), 6
    data = types.SimpleNamespace(ptr=1234)

    def __itruediv__(self, k):
        self.divided_by = k
        return self


def _fake_cupy(monkeypatch, n_gpus, local_size):
    nccl = _FakeNccl()
    used = []
    current = types.SimpleNamespace(ptr=99, synchronize=lambda: None,
                                    wait_event=lambda e: nccl.calls.append(("current waits", e.name)))

    class Event:
        made = 0

        def __init__(self, disable_timing=False):
            Event.made += 1
            self.name = f"event{Event.made}"

        def record(self, stream):
            nccl.calls.append(("record", self.name, stream.ptr))

    class Stream:
        def __init__(self, non_blocking=False):
            self.ptr = 55

        def wait_event(self, e):
            nccl.calls.append(("side waits", e.name))
    cuda = types.SimpleNamespace(
        nccl=nccl, runtime=types.SimpleNamespace(getDeviceCount=lambda: n_gpus),
        Device=lambda i: types.SimpleNamespace(use=lambda: used.append(i)),
        get_current_stream=lambda: current, Stream=Stream, Event=Event)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)

    class Mpi(FakeComm):
        def __init__(self, comm=None):
            super().__init__(1, 2)
            self.local_rank, self.local_size = 1, local_size
            self.sent = []

        def bcast_obj(self, obj, root=0):  # rank 1 receives rank 0's id
            return b"uid-from-rank-0"

        def all_reduce(self, buf, op="sum"):
            self.sent.append(("mpi", op))
            return buf
    monkeypatch.setattr(comm_mod, "MPICommunicator", Mpi)
    return nccl, used


def test_nccl_communicator_wiring_with_a_stand_in_for_cupy(monkeypatch):
    """No GPU here: the calls into cupy.cuda.nccl are checked against a recording stand-in; the real
    path runs by ``mpiexec -n 1 python3 -m mpi4py tests/distributed/worker.py nccl OUT`` on a GPU."""
    nccl, used = _fake_cupy(monkeypatch, n_gpus=2, local_size=2)
    c = comm_mod.NCCLCommunicator()
    assert (c.rank, c.size, used) == (1, 2, [1])  # GPU by node-local rank
    assert nccl.calls[0] == ("init", 2, b"uid-from-rank-0", 1)
    buf = _FakeDeviceArray()
    c.all_reduce(buf, "mean")
    assert nccl.calls[1] == ("allReduce", 1234, 1234, 6, 7, 0, 99) and buf.divided_by == 2
    c.broadcast(buf, 0)
    assert nccl.calls[2] == ("bcast", 1234, 6, 7, 0, 99)
    c.all_reduce(np.zeros(3, "float64"), "mean")  # host values (the epoch logs) go over MPI
    assert c.mpi.sent == [("mpi", "mean")] and len(nccl.calls) == 3


def test_nccl_overlapped_reduction_runs_on_a_side_stream_ordered_by_events(monkeypatch):
    """start_all_reduce: the side stream waits for the gradients queued on the current stream, NCCL
    reduces there, and wait() makes the current stream wait for it (no host synchronisation)."""
    nccl, _ = _fake_cupy(monkeypatch, n_gpus=2, local_size=2)
    assert comm_mod.NCCLCommunicator().capturable is False  # no get_version: too old to tell
    nccl.get_version = lambda: 20906  # 2.9.6, the first NCCL whose calls a CUDA graph records
    c = comm_mod.NCCLCommunicator()
    assert c.capturable is True
    del nccl.calls[:]
    buf = _FakeDeviceArray()
    h = c.start_all_reduce(buf, "mean")
    assert nccl.calls == [("record", "event1", 99), ("side waits", "event1"),
                          ("allReduce", 1234, 1234, 6, 7, 0, 55), ("record", "event2", 55)]
    assert not hasattr(buf, "divided_by")  # the mean is taken after the wait, on the current stream
    h.wait()
    assert nccl.calls[-1] == ("current waits", "event2") and buf.divided_by == 2
    h.wait()  # a second wait does nothing
    assert len(nccl.calls) == 5


class _RecordingComm(FakeComm):
    """Two pretend ranks whose other rank holds the same gradients: sums are twice this rank's."""

    def __init__(self):
        super().__init__(0, 2)
        self.started, self.dtypes = [], []

    def start_all_reduce(self, buf, op="sum"):
        self.started.append(int(buf.shape[0]))
        self.dtypes.append(str(buf.dtype))
        buf *= 2
        if op == "mean":
            buf /= 2
        return comm_mod._Done()


def test_bucketed_reduction_layout_and_missing_gradients():
    """Buckets in reverse variable order, split at bucket_mb; a variable without a gradient gets zeros in
    the buffer (the others' sums stay right) and None back."""
    from deepgpu.distributed import data_parallel as dp_mod
    B = dg.backends.get("cpu")
    vs = [dg.Variable(dg.tensor(np.zeros(s, "float32"))) for s in ((3, 4), (4,), (4, 2), (2,))]
    dp = DataParallel(bucket_mb=40 / 2 ** 20)  # 40 bytes: 10 float32 per bucket at least
    dp.comm = _RecordingComm()
    slots, buckets, bufs = dp._buckets(vs)
    assert [b[3] for b in buckets] == [(3, 2), (1, 0)] and bufs["float32"].shape == (26,)
    gs = [B.asarray(np.full(v.shape, k + 1, "float32")) for k, v in enumerate(vs)]
    gs[1] = None
    st = dp_mod._Step(dp, vs)
    st.ready(3, gs[3])
    assert dp.comm.started == []
    st.ready(2, gs[2])
    assert dp.comm.started == [10]  # bucket 0 is complete; bucket 1 waits for variable 1, which never comes
    out = st.gradients(gs)
    assert dp.comm.started == [10, 16] and out[1] is None
    for k in (0, 2, 3):
        np.testing.assert_array_equal(out[k], np.full(vs[k].shape, k + 1))
    assert float(np.abs(bufs["float32"][slots[1][1]:slots[1][1] + 4]).max()) == 0.0
    with pytest.raises(ValueError, match="overlap must be True or False"):
        DataParallel(overlap="yes")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduce_dtype_sends_16_bit_gradients(dtype):
    """reduce_dtype: the buckets travel in 16 bits (each term divided by the world size first) and come
    back as float32 gradients rounded to that dtype."""
    from deepgpu.distributed import data_parallel as dp_mod
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
    B = dg.backends.get("cpu")
    vs = [dg.Variable(dg.tensor(np.zeros(s, "float32"))) for s in ((3, 4), (4,))]
    dp = DataParallel(reduce_dtype=dtype)
    dp.comm = _RecordingComm()
    gs = [B.asarray(np.linspace(-1, 1, v.size, dtype="float32").reshape(v.shape) / 3) for v in vs]
    out = dp_mod._Step(dp, vs).gradients(gs)
    assert dp.comm.dtypes == [dtype]
    for g, o in zip(gs, out):
        assert str(o.dtype) == "float32"
        np.testing.assert_array_equal(o, B.cast(B.cast(g, dtype), "float32"))


@pytest.mark.parametrize("axis,shape", [(-1, (6, 4)), (1, (3, 5, 2, 2))])
def test_sync_batch_norm_op_in_a_world_of_one_is_batch_norm(axis, shape):
    """The SyncBN op's values and gradients (through the statistics) equal ops.batch_norm's; 16-bit
    input is normalized in float32 and comes back in its own dtype."""
    from deepgpu import ops
    from deepgpu.autograd import backward, enable_grad
    from deepgpu.distributed.sync_bn import sync_batch_norm
    rng = np.random.default_rng(0)
    xs = (rng.normal(size=shape) * 3 + 1).astype("float32")
    c = shape[axis]
    weight = dg.tensor(rng.uniform(0, 2, size=shape).astype("float32"))
    results = []
    for fn in (lambda x, g, b: ops.batch_norm(x, g, b, axis, 1e-3),
               lambda x, g, b: sync_batch_norm(x, g, b, axis, 1e-3, comm_mod.SingleCommunicator())):
        x = dg.Variable(dg.tensor(xs))
        g = dg.Variable(dg.tensor(np.linspace(0.5, 2, c).astype("float32")))
        b = dg.Variable(dg.tensor(np.linspace(-1, 1, c).astype("float32")))
        with enable_grad():
            y, m, v = fn(x, g, b)
            loss = ops.sum(y * y * weight)
        grads = backward(loss, [x, g, b])
        results.append([y.data_sync(), m.data_sync(), v.data_sync()] + [np.asarray(a) for a in grads])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
    half = ops.cast(dg.tensor(xs), "float16")
    y, m, v = sync_batch_norm(half, None, None, axis, 1e-3, comm_mod.SingleCommunicator())
    assert (str(y.dtype), str(m.dtype)) == ("float16", "float32")


def test_synchronized_batch_norm_in_one_process_is_plain_and_saved(tmp_path):
    """synchronized=True (Keras's name) survives save / load in both formats and, outside a DataParallel
    step of several ranks, trains exactly as plain BatchNormalization."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    weights = []
    for sync in (False, True):
        dg.set_seed(2)
        m = dg.Sequential([dg.layers.Dense(4, input_shape=(5,)), dg.layers.BatchNormalization(synchronized=sync),
                           dg.layers.Dense(2)])
        m.compile("adam", "mse", distribute=DataParallel(backend="single") if sync else None)
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        weights.append([w.data_sync() for w in m.weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    for ext in ("dgm", "keras"):
        m.save(str(tmp_path / f"m.{ext}"))
        back = dg.models.load_model(str(tmp_path / f"m.{ext}"))
        assert back.layers[1].synchronized is True and back.layers[1].get_config()["synchronized"] is True


def test_nccl_refuses_two_ranks_on_one_gpu(monkeypatch):
    _fake_cupy(monkeypatch, n_gpus=1, local_size=2)
    with pytest.raises(RuntimeError, match="NCCL needs one GPU per rank: this node runs 2 ranks on 1 GPU"):
        comm_mod.NCCLCommunicator()
    _fake_cupy(monkeypatch, n_gpus=0, local_size=1)
    with pytest.raises(RuntimeError, match="this node has no GPU"):
        comm_mod.NCCLCommunicator()


def test_mpi_on_the_cuda_backend_takes_the_gpu_of_its_local_rank(monkeypatch):
    """init("auto") on the cuda backend without NCCL: MPI, and rank k of a node uses GPU k (modulo the GPUs,
    which ranks may share over MPI), not all GPU 0."""
    import deepgpu.distributed as D
    _, used = _fake_cupy(monkeypatch, n_gpus=2, local_size=3)

    class Mpi(FakeComm):
        name = "mpi"

        def __init__(self):
            super().__init__(5, 6)
            self.local_rank, self.local_size = 2, 3
    monkeypatch.setattr(D, "MPICommunicator", Mpi)
    monkeypatch.setattr(D, "nccl_available", lambda: False)
    monkeypatch.setattr(D, "_COMM", None)
    monkeypatch.setattr(D.backends, "current", lambda: types.SimpleNamespace(name="cuda", xp=np))
    assert D.init().name == "mpi" and used == []  # the CPU emulation of the cuda backend: no GPU to pick
    monkeypatch.setattr(D, "_COMM", None)
    monkeypatch.setattr(D.backends, "current", lambda: types.SimpleNamespace(name="cuda", xp=sys.modules["cupy"]))
    assert D.init().name == "mpi" and used == [0]  # local rank 2 of 2 GPUs
    assert comm_mod.use_local_gpu(3) == 1 and used == [0, 1]


def test_one_rank_data_parallel_trains_as_plain_fit_and_refuses_data_sources():
    """A world of one (no MPI needed): the hooks run and change nothing."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 5)).astype("float32")
    y = rng.normal(size=(24, 2)).astype("float32")
    results = []
    for distribute in (None, DataParallel(backend="single")):
        dg.set_seed(4)
        m = dg.Sequential([dg.layers.Dense(3, activation="tanh", input_shape=(5,)), dg.layers.Dense(2)])
        m.compile("adam", "mse", distribute=distribute)
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        results.append([w.data_sync() for w in m.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="under DataParallel a generator cannot be shared by rank.*"
                                         "Dataset.from_generator"):
        m.fit(((x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="endless"):
        class Endless(dg.utils.PyDataset):
            num_batches = None

            def __getitem__(self, i):
                return x[:8], y[:8]
        m.fit(Endless(), epochs=1, steps_per_epoch=2, verbose=0)


def test_dataset_shard_is_tf_datas():
    ds = dg.data.Dataset.range(10)
    assert [int(v) for v in ds.shard(3, 1)] == [1, 4, 7]
    assert [ds.shard(3, i).cardinality() for i in range(3)] == [4, 3, 3]
    assert sorted(int(v) for i in range(4) for v in ds.shard(4, i)) == list(range(10))
    with pytest.raises(ValueError, match="0 <= index < num_shards"):
        ds.shard(2, 2)


@pytest.mark.cuda
def test_nccl_one_rank_on_the_gpu(tmp_path):
    """On a GPU machine: NCCL collectives on device arrays and DataParallel on the cuda backend
    matching one process (tests/distributed/worker.py nccl), one rank as the lent machine has one GPU."""
    pytest.importorskip("cupy.cuda.nccl")
    r, _ = _mpiexec(1, "nccl", tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "rank 0/1: nccl ok" in r.stdout
