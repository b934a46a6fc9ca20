"""Run under ``mpiexec -n N python3 -m mpi4py tests/distributed/worker.py MODE OUTDIR`` by
tests/test_distributed.py. Every check raises (AssertionError), which aborts the job."""
import importlib.util
import os
import sys

import numpy as np

import deepgpu as dg
from deepgpu import layers as L
from deepgpu import zoo

MODE, OUT = sys.argv[1], sys.argv[2]
HAVE_TB = importlib.util.find_spec("tensorboard") is not None  # callbacks.TensorBoard's writer (optional)
if MODE == "nccl":
    dg.set_backend("cuda")
comm = dg.distributed.init("nccl" if MODE == "nccl" else "auto")
R, P = comm.rank, comm.size


def gather_weights(model):
    return comm.allgather_obj([w.data_sync() for w in model.weights])


def mlp(units=16):
    return dg.Sequential([L.Dense(units, activation="tanh", input_shape=(6,)), L.Dense(3, activation="softmax")])


def convnet():
    m = zoo.convnet(input_shape=(8, 8, 1), num_classes=3)
    for layer in m.layers:  # dropout draws differ by process; the comparison needs none
        if isinstance(layer, L.Dropout):
            layer.rate = 0.0
    return m


def check_same_as_one_process(make, x, y, batch, epochs, opt, ref_n=None, src=None):
    """``ref_n``: the one process trains on the first ``ref_n`` samples (the uneven tail's
    documented cut: the last global batch keeps a multiple of the world size). ``src``: a data
    source the ranks train on instead of the arrays (the one process still takes the arrays)."""
    dg.set_seed(100 + R)  # different initial weights on every rank: rank 0's must win
    model = make()
    model.compile(dg.optimizers.get(opt), "sparse_categorical_crossentropy", metrics=["accuracy"],
                  distribute=dg.distributed.DataParallel(bucket_mb=0.01))  # several buckets
    if src is None:
        hist = model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0)
    else:
        hist = model.fit(src, epochs=epochs, shuffle=False, verbose=0)
    every = gather_weights(model)
    for r in range(1, P):
        for a, b in zip(every[0], every[r]):
            assert np.array_equal(a, b), f"rank {r}'s weights differ from rank 0's"
    hs = comm.allgather_obj(hist.history)
    assert all(h == hs[0] for h in hs), f"ranks logged different epoch logs: {hs}"
    if R == 0:
        dg.set_seed(100)
        ref = make()
        ref.compile(dg.optimizers.get(opt), "sparse_categorical_crossentropy", metrics=["accuracy"])
        rh = ref.fit(x[:ref_n], y[:ref_n], batch_size=batch, epochs=epochs, shuffle=False, verbose=0)
        for a, b in zip(every[0], [w.data_sync() for w in ref.weights]):
            assert np.allclose(a, b, rtol=1e-5, atol=1e-5), f"max diff {np.abs(a - b).max()}"
        assert np.allclose(hs[0]["loss"], rh.history["loss"], rtol=1e-5, atol=1e-5), (hs[0], rh.history)


def check_sharding():
    dp = dg.distributed.DataParallel(seed=7).attach(None)
    for n, batch in ((40, 8), (37, 8), (8 * P + P - 1, 8)):
        epochs = []
        for epoch in range(2):
            mine = [list(map(int, idx)) for idx in dp.batches(n, batch, True, epoch)]
            allr = comm.allgather_obj(mine)
            assert len({len(a) for a in allr}) == 1, "ranks take different numbers of steps"
            assert len(mine) == dp.steps(n, batch), (len(mine), dp.steps(n, batch))
            seen = [i for a in allr for b in a for i in b]
            assert len(seen) == len(set(seen)), "a sample went to two ranks"
            tail = n % batch
            assert len(seen) == n - tail % P, (n, len(seen))
            assert all(len(b) == len(a[0]) or s == len(a) - 1 for a in allr for s, b in enumerate(a)), "uneven shards"
            epochs.append(seen)
        assert epochs[0] != epochs[1], "the shuffle did not change between epochs"


def sync_bn_net():
    """Conv -> BatchNormalization(synchronized=True) (4-D, channels last) -> Dense -> BN over axis 1 (no
    biases before BN: their true gradient is 0, and Adam would magnify the rounding noise in it)."""
    return dg.Sequential([L.Conv2D(4, 3, use_bias=False, input_shape=(6, 6, 2)),
                          L.BatchNormalization(synchronized=True), L.Activation("relu"), L.Flatten(),
                          L.Dense(5, use_bias=False), L.BatchNormalization(axis=1, synchronized=True, momentum=0.5),
                          L.Dense(3, activation="softmax")])


def check_sync_batch_norm():
    """SyncBN: weights and moving statistics within 1e-5 of one process on the global batch, the same on
    every rank; plain BN (per rank) is not (the check would catch a no-op synchronisation)."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(32, 6, 6, 2)) * 2 + 1).astype("float32")
    y = rng.integers(0, 3, size=32).astype("int32")
    check_same_as_one_process(sync_bn_net, x, y, batch=8 * P, epochs=2, opt="adam")
    dg.set_seed(3)
    plain = sync_bn_net()
    for layer in plain.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.synchronized = False
    plain.compile("adam", "sparse_categorical_crossentropy", distribute=dg.distributed.DataParallel())
    plain.fit(x, y, batch_size=8 * P, epochs=1, shuffle=False, verbose=0)
    moving = comm.allgather_obj(plain.layers[1].moving_mean.data_sync())
    assert not np.allclose(moving[0], moving[1], atol=1e-5), "per-rank BN statistics came out equal"


def check_overlap():
    """The buckets' reductions start while backward still produces gradients (an instrumented step records
    the order), and the weights equal those of the reduction after backward (overlap=False)."""
    from deepgpu.distributed import data_parallel as dp_mod
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 3, size=16).astype("int32")
    events = []
    real_ready, real_start, real_finish = dp_mod._Step.ready, dp_mod._Step._start, dp_mod._Step.gradients

    def ready(self, k, g):
        events.append(("ready", k))
        real_ready(self, k, g)

    def start(self, b):
        events.append(("start", b))
        real_start(self, b)

    def finish(self, grads):
        events.append(("backward done",))
        return real_finish(self, grads)
    dp_mod._Step.ready, dp_mod._Step._start, dp_mod._Step.gradients = ready, start, finish
    weights = []
    try:
        for overlap in (True, False):
            events.clear()
            dg.set_seed(11)
            model = mlp()
            model.compile("sgd", "sparse_categorical_crossentropy",
                          distribute=dg.distributed.DataParallel(bucket_mb=1e-6, overlap=overlap))  # a bucket each
            model.fit(x, y, batch_size=4 * P, epochs=1, shuffle=False, verbose=0, steps_per_epoch=1)
            weights.append([w.data_sync() for w in model.weights])
            done = events.index(("backward done",))
            starts = [i for i, e in enumerate(events) if e[0] == "start"]
            assert len(starts) == 4, events
            if overlap:  # the last Dense's gradients are final first: their buckets start before the first's
                assert starts[0] < max(i for i, e in enumerate(events) if e[0] == "ready") < done, events
            else:
                assert min(starts) > done, events
    finally:
        dp_mod._Step.ready, dp_mod._Step._start, dp_mod._Step.gradients = real_ready, real_start, real_finish
    for a, b in zip(*weights):
        assert np.array_equal(a, b), "overlap changed the result"


class Batches(dg.utils.PyDataset):
    def __init__(self, x, y, per):
        super().__init__()
        self.x, self.y, self.per = x, y, per

    def __len__(self):
        return len(self.x) // self.per

    def __getitem__(self, i):
        return self.x[i * self.per:(i + 1) * self.per], self.y[i * self.per:(i + 1) * self.per]


def check_sources():
    """Data sources under DataParallel (deepgpu/distributed/sources.py) against one process on arrays."""
    from deepgpu.data.dataset import shared_shuffle_seed
    rng = np.random.default_rng(3)
    n = 32 + P + 1  # global batches of 16: 16, 16, then a tail of P + 1 cut to P
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.integers(0, 3, size=n).astype("int32")
    ds = dg.data.Dataset.from_tensor_slices((x, y)).batch(16)
    check_same_as_one_process(mlp, x, y, batch=16, epochs=2, opt="adam", ref_n=32 + P, src=ds)
    # a PyDataset of 2P + 1 per-rank batches of 4: rank r takes batches r, r + P; the last one is left out
    per_rank = Batches(x[:8 * P + 4], y[:8 * P + 4], 4)
    check_same_as_one_process(mlp, x, y, batch=4 * P, epochs=2, opt="sgd", ref_n=8 * P, src=per_rank)
    # an unseeded shuffle (each rank draws another seed): the ranks still agree, and equal one process
    dg.set_seed(50 + R)
    shuffled = dg.data.Dataset.from_tensor_slices((x[:32], y[:32])).shuffle(32).batch(16)
    dg.set_seed(7)
    model = mlp()
    model.compile("sgd", "sparse_categorical_crossentropy", distribute=dg.distributed.DataParallel())
    model.fit(shuffled, epochs=2, verbose=0)
    every = gather_weights(model)
    assert all(np.array_equal(a, b) for r in range(P) for a, b in zip(every[0], every[r])), "ranks differ"
    if R == 0:
        dg.set_seed(7)
        ref = mlp()
        ref.compile("sgd", "sparse_categorical_crossentropy")
        with shared_shuffle_seed(model._distribute.seed):
            ref.fit(dg.data.Dataset.from_tensor_slices((x[:32], y[:32])).shuffle(32).batch(16), epochs=2, verbose=0)
        for a, b in zip(every[0], [w.data_sync() for w in ref.weights]):
            assert np.allclose(a, b, rtol=1e-5, atol=1e-5), f"shuffled Dataset: max diff {np.abs(a - b).max()}"
    # ranks whose pipelines disagree are named, on every rank, before any step
    bad = dg.data.Dataset.from_tensor_slices((x + R, y)).batch(16)
    model = mlp()
    model.compile("sgd", "sparse_categorical_crossentropy", distribute=dg.distributed.DataParallel())
    try:
        model.fit(bad, epochs=1, verbose=0)
    except ValueError as e:
        assert f"ranks {list(range(1, P))} read a different first batch" in str(e), e
    else:
        raise AssertionError("ranks reading different data were not detected")
    assert not model.weights or not model._distribute.synced


def check_rank0_files():
    dg.set_seed(1)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    y = (np.arange(32) % 3).astype("int32")
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy",
                  distribute=dg.distributed.DataParallel())
    out = os.path.join(OUT, "files")
    os.makedirs(out, exist_ok=True)
    cbs = [dg.callbacks.ModelCheckpoint(os.path.join(out, f"ckpt_rank{R}.dgm")),
           dg.callbacks.CSVLogger(os.path.join(out, f"log_rank{R}.csv")),
           dg.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=10.0, factor=0.5),
           dg.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=10.0)]
    if HAVE_TB:
        cbs.append(dg.callbacks.TensorBoard(os.path.join(out, f"tb_rank{R}")))
    hist = model.fit(x, y, batch_size=8, epochs=5, callbacks=cbs, verbose=2)
    model.save(os.path.join(out, f"model_rank{R}.dgm"))
    model.save_weights(os.path.join(out, f"w_rank{R}.weights.h5"))
    dg.plotting.plot_history(hist, os.path.join(out, f"history_rank{R}.png"))
    seen = comm.allgather_obj((len(hist.history["loss"]), float(model.optimizer.learning_rate)))
    assert len(set(seen)) == 1 and seen[0][0] < 5, f"ranks stopped / set the learning rate differently: {seen}"
    assert seen[0][0] == 2 and abs(seen[0][1] - 0.0005) < 1e-9, seen  # halved at epoch 2, then stopped
    comm.barrier()
    if R == 0:
        names = sorted(os.listdir(out))
        want = ["ckpt_rank0.dgm", "history_rank0.png", "log_rank0.csv", "model_rank0.dgm"]
        assert names == want + ["tb_rank0"] * HAVE_TB + ["w_rank0.weights.h5"], names


def near_one_mlp(weights, seed, opt, x, y, epochs, tol, what):
    """On rank 0: ``weights`` within ``tol`` of one process training ``mlp()`` from ``seed`` on (x, y)
    in batches of 8."""
    if R != 0:
        return
    dg.set_seed(seed)
    ref = mlp()
    ref.compile(opt, "sparse_categorical_crossentropy")
    ref.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
    for a, b in zip(weights, [w.data_sync() for w in ref.weights]):
        assert np.allclose(a, b, rtol=tol, atol=tol), f"{what}: max diff {np.abs(a - b).max()}"


class Interrupt(dg.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("interrupted on purpose")


def check_backup_and_restore():
    """BackupAndRestore: a fit interrupted in epoch 2 of 4 leaves one backup, written by rank 0; a new
    fit (other initial weights on every rank) resumes from it on every rank, EarlyStopping's state
    included, and ends where one process training 4 epochs uninterrupted ends (within 1e-5)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, size=32).astype("int32")
    folder = os.path.join(OUT, "backup")

    def run(seed, interrupt):
        dg.set_seed(seed)
        model = mlp()
        model.compile("adam", "sparse_categorical_crossentropy", distribute=dg.distributed.DataParallel())
        model(x[:1])  # BackupAndRestore restores into a built model
        stop = dg.callbacks.EarlyStopping(monitor="loss", patience=10, min_delta=10.0)  # best: epoch 1's
        cbs = [dg.callbacks.CSVLogger(os.path.join(OUT, "backup.csv")), stop,
               dg.callbacks.BackupAndRestore(folder)] + ([Interrupt()] if interrupt else [])
        model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=cbs)
        return model, stop
    try:
        run(20 + R, True)
    except KeyboardInterrupt:
        pass
    comm.barrier()
    assert sorted(os.listdir(folder)) == ["latest.dgbackup"], os.listdir(folder)
    model, stop = run(40 + R, False)
    states = comm.allgather_obj((stop.best, stop.wait, len(model.history.history["loss"])))
    assert all(s == states[0] for s in states) and states[0][1:] == (3, 3), states  # 2 to 4 (the backup of
    # epoch 2 is written when epoch 3 begins, after every callback has seen epoch 2's end)
    every = gather_weights(model)
    assert all(np.array_equal(a, b) for r in range(P) for a, b in zip(every[0], every[r])), "ranks differ"
    comm.barrier()
    assert not os.path.exists(folder), "the backup outlived a fit that ended"
    near_one_mlp(every[0], 20, "adam", x, y, 4, 1e-5, "resumed")


def check_16_bit_reduction(dtype):
    """reduce_dtype="float16" / "bfloat16": MPI sums such buffers (bfloat16 through a user-defined op),
    and training keeps the ranks equal and near (not within 1e-5 of) one process."""
    B = dg.backends.get("cpu")
    buf = B.cast(np.array([R + 1, 0.5 * (R + 1), -2.0 * R, 256.0], "float32"), dtype)
    comm.all_reduce(buf, "sum")
    s = P * (P + 1) / 2
    assert str(buf.dtype) == dtype and np.array_equal(B.cast(buf, "float32"), [s, s / 2, -P * (P - 1), 256 * P]), buf
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, size=32).astype("int32")
    dg.set_seed(9 + R)
    model = mlp()
    model.compile("sgd", "sparse_categorical_crossentropy",
                  distribute=dg.distributed.DataParallel(reduce_dtype=dtype))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    every = gather_weights(model)
    assert all(np.array_equal(a, b) for r in range(P) for a, b in zip(every[0], every[r]))
    near_one_mlp(every[0], 9, "sgd", x, y, 1, 1e-3, f"{dtype} reduction")


def resume_data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(48, 6)).astype("float32"), rng.integers(0, 3, size=48).astype("int32")


def check_resume(stage):
    """save: train 1 epoch under P ranks and checkpoint (rank 0 writes); load: every rank of another
    world size loads it, trains 1 more epoch; the weights must match one process doing the same."""
    x, y = resume_data()
    path = os.path.join(OUT, "resume.dgm")
    if stage == "save":
        dg.set_seed(5 + R)
        model = mlp()
        model.compile("adam", "sparse_categorical_crossentropy", distribute=dg.distributed.DataParallel())
        model.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0)
        model.save(path)
        return
    model = dg.models.load_model(path)
    assert model.optimizer.built, "the checkpoint has no optimizer state"
    model.compile(model.optimizer, "sparse_categorical_crossentropy", distribute=dg.distributed.DataParallel())
    model.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0)
    every = gather_weights(model)
    if R == 0:
        ref = dg.models.load_model(path)
        ref.compile(ref.optimizer, "sparse_categorical_crossentropy")
        ref.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0)
        for r in range(P):
            for a, b in zip(every[r], [w.data_sync() for w in ref.weights]):
                assert np.allclose(a, b, rtol=1e-5, atol=1e-5), f"rank {r}: max diff {np.abs(a - b).max()}"


def check_nccl():
    """On a GPU (one rank per GPU): NCCL collectives on device arrays, DataParallel training on the
    cuda backend matching one process, and NCCL recorded into CUDA graphs. Run by hand on a GPU machine:
    ``mpiexec -n 1 python3 -m mpi4py tests/distributed/worker.py nccl OUT``."""
    assert comm.name == "nccl", comm
    B = dg.backends.get("cuda")
    a = B.asarray(np.arange(10, dtype="float32") + R)
    comm.all_reduce_buckets(a, 3, "mean")
    assert np.allclose(B.to_numpy(a), np.arange(10) + (P - 1) / 2)
    for dt in ("float16", "bfloat16"):  # DataParallel(reduce_dtype=...) sends these through NCCL
        h = B.cast(B.asarray(np.arange(4, dtype="float32") + R), dt)
        comm.all_reduce(h, "sum")
        assert np.array_equal(B.to_numpy(B.cast(h, "float32")), P * np.arange(4) + P * (P - 1) / 2), (dt, h)
    t = dg.distributed.broadcast(dg.tensor(np.full(4, R, "float32"), backend="cuda"), root=0)
    assert np.array_equal(t.data_sync(), np.zeros(4, "float32"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64).astype("int32")
    check_same_as_one_process(mlp, x, y, batch=16, epochs=2, opt="adam")
    check_nccl_in_a_graph(B)


def check_nccl_in_a_graph(B):
    """NCCL >= 2.9.6: an overlapped reduction (side stream, events) records into a CUDA graph and
    replays on new values; then DataParallel + SyncBN training records (cuda_graph=True insists)."""
    if not comm.capturable:
        print(f"rank {R}: this NCCL cannot be captured; recording not checked", flush=True)
        return
    a = B.asarray(np.arange(8, dtype="float32"))

    def body():
        b = a * 1.0
        comm.start_all_reduce(b, "mean").wait()
        return b + 1.0
    graph, out = B.capture_graph(body)
    a[...] = B.asarray(np.full(8, 3.0 + R, "float32"))
    graph.replay()
    want = np.full(8, 3.0 + (P - 1) / 2 + 1.0, "float32")
    assert np.allclose(B.to_numpy(out), want), (B.to_numpy(out), want)
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(32, 6, 6, 2)) * 2 + 1).astype("float32")
    y = rng.integers(0, 3, size=32).astype("int32")
    dg.set_seed(3)
    model = sync_bn_net()
    model.compile("adam", "sparse_categorical_crossentropy", cuda_graph=True,
                  distribute=dg.distributed.DataParallel(bucket_mb=0.01))
    model.fit(x, y, batch_size=8 * P, epochs=2, shuffle=False, verbose=0)
    assert model._graph_trainer.steps, "the DataParallel step was not recorded"
    every = gather_weights(model)
    assert all(np.array_equal(a, b) for r in range(P) for a, b in zip(every[0], every[r]))


if MODE == "nccl":
    check_nccl()
elif MODE in ("save", "resume"):
    check_resume("save" if MODE == "save" else "load")
elif MODE == "main":
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64).astype("int32")
    check_same_as_one_process(mlp, x, y, batch=16, epochs=2, opt="adam")
    # an uneven tail: 16 + P + 1 samples in global batches of 8 -> 8, 8, then P of the last P + 1
    check_same_as_one_process(mlp, x[:16 + P + 1], y[:16 + P + 1], batch=8, epochs=1, opt="sgd", ref_n=16 + P)
    xi = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    yi = rng.integers(0, 3, size=16).astype("int32")
    check_same_as_one_process(convnet, xi, yi, batch=8, epochs=1, opt="sgd")
    check_sharding()
    check_sources()
    check_sync_batch_norm()
    check_overlap()
    check_rank0_files()
    check_backup_and_restore()
    check_16_bit_reduction("float16")
    check_16_bit_reduction("bfloat16")
elif MODE == "raise":
    comm.barrier()
    if R == P - 1:
        raise RuntimeError("rank failed on purpose")
    comm.barrier()  # the others wait here until the job is aborted
elif MODE == "killed":  # as the kernel's OOM killer would: no Python exception, no excepthook
    comm.barrier()
    if R == P - 1:
        os.kill(os.getpid(), 9)
    comm.barrier()
elif MODE == "mismatch":
    model = mlp(units=16 if R == 0 else 17)
    model.compile("sgd", "sparse_categorical_crossentropy", distribute=dg.distributed.DataParallel())
    files = [dg.callbacks.CSVLogger(os.path.join(OUT, "log.csv")),
             dg.callbacks.ModelCheckpoint(os.path.join(OUT, "ckpt.dgm"))]  # none may write: the job fails first
    files += [dg.callbacks.TensorBoard(os.path.join(OUT, "tb"))] * HAVE_TB
    model.fit(np.zeros((8, 6), "float32"), np.zeros(8, "int32"), batch_size=4 * P, verbose=0, callbacks=files)
else:
    raise SystemExit(f"unknown mode {MODE}")
print(f"rank {R}/{P}: {MODE} ok", flush=True)
