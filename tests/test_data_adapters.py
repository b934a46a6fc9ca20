"""fit / evaluate / predict on data sources: Datasets, generators, PyDataset, torch / tf loaders;
steps, running out of data, bad batches, and cleanup of every worker."""
import multiprocessing
import threading
import time
import traceback

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import callbacks, layers
from deepgpu.data import Dataset
from deepgpu.utils import PyDataset

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 4)).astype("float32")
Y = (X.sum(1) > 0).astype("int32")


def make_model(seed=0):
    dg.set_seed(seed)
    m = dg.Sequential([layers.Dense(6, activation="relu", input_shape=(4,)), layers.Dense(2, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def weights(m):
    return [w.data_sync().copy() for w in m.weights]


def same(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a, b))


def gen(n_batches=3, bs=16):
    for i in range(n_batches):
        yield X[i * bs:(i + 1) * bs], Y[i * bs:(i + 1) * bs]


def _threads():
    return {t for t in threading.enumerate() if t.name.startswith("deepgpu")}


@pytest.fixture
def clean():
    before, kids = _threads(), set(multiprocessing.active_children())
    yield
    deadline = time.time() + 5
    while time.time() < deadline and (_threads() - before or set(multiprocessing.active_children()) - kids):
        time.sleep(0.02)
    assert not (_threads() - before), f"threads left running: {_threads() - before}"
    assert not set(multiprocessing.active_children()) - kids, "worker processes left running"


class Batches(PyDataset):
    def __init__(self, n=3, lie=0, **kw):
        super().__init__(**kw)
        self.n, self.lie, self.ends = n, lie, 0

    def __len__(self):
        return self.n + self.lie

    def __getitem__(self, i):
        if i >= self.n:
            raise IndexError(f"batch {i} out of range")
        return X[i * 16:(i + 1) * 16], Y[i * 16:(i + 1) * 16]

    def on_epoch_end(self):
        self.ends += 1


def test_dataset_matches_arrays_without_shuffle(clean):
    a, b = make_model(), make_model()
    ha = a.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    hb = b.fit(Dataset.from_tensor_slices((X, Y)).batch(16), epochs=2, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)
    assert same(weights(a), weights(b))
    ev = b.evaluate(Dataset.from_tensor_slices((X, Y)).batch(10), return_dict=True)
    np.testing.assert_allclose(ev["loss"], b.evaluate(X, Y, return_dict=True)["loss"], rtol=1e-5)
    p = b.predict(Dataset.from_tensor_slices(X).batch(20))
    np.testing.assert_allclose(p.data_sync(), b.predict(X).data_sync(), rtol=1e-5)
    p2 = b.predict(Dataset.from_tensor_slices((X, Y)).batch(20))  # targets ignored, as in Keras
    assert p2.shape == (48, 2)


def test_generator_iterable_dicts_and_sample_weights(clean):
    m = make_model()
    h = m.fit(gen(), epochs=1, verbose=0)
    assert len(h.history["loss"]) == 1
    m.fit([(X[:16], Y[:16]), (X[16:32], Y[16:32])].__iter__(), verbose=0)

    class Reiterable:
        def __iter__(self):
            return gen(2)

    h = m.fit(Reiterable(), epochs=3, verbose=0)
    assert len(h.history["loss"]) == 3
    inp = dg.Input((4,), name="feats")
    out = layers.Dense(2, activation="softmax", name="cls")(inp)
    fm = dg.Model(inp, out)
    fm.compile("adam", "sparse_categorical_crossentropy")
    fm.fit(Dataset.from_tensor_slices(({"feats": X}, {"cls": Y}, np.ones(48, "float32"))).batch(16), verbose=0)


def test_steps_per_epoch_continues_and_runs_out(clean):
    m = make_model()
    seen = []
    cb = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    m.fit(Dataset.from_tensor_slices((X, Y)).batch(8).repeat(), steps_per_epoch=2, epochs=3, verbose=0,
          callbacks=[cb])
    assert seen == [0, 1] * 3
    # a finite source with more steps asked than it has: warn, end the epoch, never hang
    with pytest.warns(UserWarning, match="ran out of data"):
        h = m.fit(Dataset.from_tensor_slices((X, Y)).batch(16), steps_per_epoch=5, epochs=2, verbose=0)
    assert len(h.history["loss"]) == 2
    # a one-shot generator: the second epoch continues it, the third finds nothing and stops training
    with pytest.warns(UserWarning, match="ran out of data"):
        h = m.fit(gen(3), steps_per_epoch=2, epochs=4, verbose=0)
    assert len(h.history["loss"]) == 2 and m.stop_training
    # arrays: the same warning's sense, and every batch each epoch
    seen.clear()
    with pytest.warns(UserWarning, match=r"steps_per_epoch=9 but the 48 samples make 3 batches of 16"):
        make_model().fit(X, Y, batch_size=16, steps_per_epoch=9, epochs=2, verbose=0, callbacks=[cb])
    assert seen == [0, 1, 2] * 2


def test_infinite_without_steps_refused():
    m = make_model()
    w0 = weights(m)
    with pytest.raises(ValueError, match="infinite.*steps_per_epoch"):
        m.fit(Dataset.from_tensor_slices((X, Y)).batch(8).repeat(), verbose=0)
    assert same(w0, weights(m))


def test_validation_data_as_sources(clean):
    m = make_model()
    val = Dataset.from_tensor_slices((X, Y)).batch(24)
    h = m.fit(X, Y, batch_size=16, validation_data=val, verbose=0, epochs=2)
    assert len(h.history["val_loss"]) == 2
    h = m.fit(gen(), validation_data=gen(3), validation_steps=2, verbose=0)
    assert "val_accuracy" in h.history
    h = m.fit(X, Y, batch_size=16, validation_data=(X, Y), validation_steps=1, verbose=0)
    assert "val_loss" in h.history
    seen = []
    cb = callbacks.LambdaCallback(on_test_batch_end=lambda b, logs: seen.append(b))
    h = m.fit(X, Y, batch_size=4, validation_split=0.25, validation_steps=2, verbose=0, callbacks=[cb])
    assert "val_loss" in h.history and seen == [0, 1]


def test_pydataset_workers_threads_and_processes_and_epoch_end(clean):
    for kw in ({}, {"workers": 2}, {"workers": 2, "use_multiprocessing": True}):
        m = make_model()
        ds = Batches(**kw)
        h = m.fit(ds, epochs=2, verbose=0, shuffle=False)
        assert len(h.history["loss"]) == 2 and ds.ends == 2
    ref = make_model().fit(X, Y, batch_size=16, shuffle=False, verbose=0).history["loss"]
    got = make_model().fit(Batches(workers=2, use_multiprocessing=True), shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(ref, got, rtol=1e-5)


def test_pydataset_whose_len_lies(clean):
    m = make_model()
    with pytest.raises(ValueError, match=r"__len__\(\) returned 4 but __getitem__\(3\) raised IndexError"):
        m.fit(Batches(lie=1), verbose=0, shuffle=False)
    w0 = weights(m)  # the error at the first batch changes nothing

    with pytest.raises(ValueError, match=r"__getitem__\(0\) returned an empty batch"):
        m.fit(_Shifted(), verbose=0)
    assert same(w0, weights(m))


class _Shifted(Batches):
    """A PyDataset whose first batch is past the data (len says 1)."""

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return X[100:116], Y[100:116]


def test_generator_changing_shape_or_dtype_mid_epoch(clean):
    m = make_model()

    def bad_shape():
        yield X[:16], Y[:16]
        yield X[:16, :3], Y[:16]

    with pytest.raises(ValueError, match=r"^fit\(\): epoch 1, step 2: x does not fit input 0 .*expected shape "
                                         r"\(None, 4\), got \(16, 3\)$"):
        m.fit(bad_shape(), verbose=0)

    def bad_label():
        yield X[:16], Y[:16]
        yield X[:16], Y[:16] + 7

    with pytest.raises(ValueError, match=r"^fit\(\): epoch 1, step 2: y: class label (7|8) "):
        make_model().fit(bad_label(), verbose=0)

    def bad_dtype():
        yield X[:16], Y[:16]
        yield (X[:16] * 10).astype("int64"), Y[:16]

    with pytest.raises(ValueError, match=r"step 2: x\[0\] has shape \(16, 4\) and dtype int64; the first batch had "
                                         r"shape \(16, 4\) and dtype float32"):
        make_model().fit(bad_dtype(), verbose=0)

    def uneven():
        yield X[:16], Y[:15]

    with pytest.raises(ValueError, match=r"step 1: the batch's arrays need one common first"):
        make_model().fit(uneven(), verbose=0)


def test_a_bad_validation_batch_names_the_epoch_and_validation_data(clean):
    def val():  # validation_steps=1: epoch 1 validates on the good batch, epoch 2 on the bad one
        yield X[:16], Y[:16]
        yield X[:16, :3], Y[:16]

    with pytest.raises(ValueError, match=r"^fit\(\): epoch 2, validation_data, step 1: x does not fit input 0 "):
        make_model().fit(X, Y, batch_size=16, validation_data=val(), validation_steps=1, epochs=2, verbose=0)
    with pytest.raises(ValueError, match=r"^fit\(\): validation_data \(a list_iterator\) yielded no batches"):
        make_model().fit(X, Y, batch_size=16, validation_data=iter([]), verbose=0)
    # evaluate and predict have no epochs
    with pytest.raises(ValueError, match=r"^evaluate\(\): step 1: x does not fit input 0 "):
        make_model().evaluate(iter([(X[:16, :3], Y[:16])]), verbose=0)
    with pytest.raises(ValueError, match=r"^predict\(\): step 2: x does not fit input 0 "):
        make_model().predict(iter([X[:16], X[:16, :3]]), verbose=0)


def test_empty_source_and_bad_first_batch_leave_model_unchanged(clean):
    m = make_model()
    m.fit(X[:16], Y[:16], verbose=0)  # built and trained once
    w0 = weights(m)
    with pytest.raises(ValueError, match="yielded no batches"):
        m.fit(iter([]), verbose=0)
    with pytest.raises(ValueError, match="yielded no batches"):
        m.fit(Dataset.range(0).batch(2), verbose=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        m.fit(iter([(np.full((4, 4), np.nan, "float32"), Y[:4])]), verbose=0)
    with pytest.raises(ValueError, match="without targets"):
        m.fit(Dataset.from_tensor_slices(X).batch(8), verbose=0)
    with pytest.raises(ValueError, match="y must not be given"):
        m.fit(gen(), Y, verbose=0)
    with pytest.raises(ValueError, match="validation_split is only supported for arrays"):
        m.fit(gen(), validation_split=0.2, verbose=0)
    assert same(w0, weights(m))


def _bad_batch(i):
    if i == 2:
        raise RuntimeError("decoder failed on batch 2")
    return i


def test_worker_exception_in_fit_has_traceback_and_stops_workers(clean):
    m = make_model()
    ds = Dataset.range(6).map(_bad_batch, num_parallel_calls=2).map(
        lambda i: (X[int(i) * 8:(int(i) + 1) * 8], Y[int(i) * 8:(int(i) + 1) * 8])).prefetch(2)
    with pytest.raises(RuntimeError, match="decoder failed on batch 2") as info:
        m.fit(ds, verbose=0)
    assert "_bad_batch" in "".join(traceback.format_tb(info.value.__traceback__))

    class Failing(Batches):
        def __getitem__(self, i):
            if i == 1:
                raise KeyError("missing file for batch 1")
            return super().__getitem__(i)

    with pytest.raises(KeyError, match="missing file"):
        m.fit(Failing(workers=2, use_multiprocessing=True), verbose=0, shuffle=False)


def test_early_stopping_and_interrupt_leave_no_worker(clean):
    m = make_model()
    ds = Dataset.from_tensor_slices((X, Y)).repeat().map(lambda a, b: (a, b), num_parallel_calls=2) \
        .batch(8).prefetch(3)
    stop = callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    h = m.fit(ds, steps_per_epoch=2, epochs=20, verbose=0, callbacks=[stop])
    assert len(h.history["loss"]) < 20

    class Interrupt(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.fit(Batches(n=3, workers=2, use_multiprocessing=True), epochs=5, verbose=0, callbacks=[Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        m.fit(ds, steps_per_epoch=5, verbose=0, callbacks=[Interrupt()])


def test_workers_run_a_bounded_distance_ahead(clean):
    """The parallel map, the fused map + batch, prefetch and a PyDataset's max_queue_size bound
    how far the workers run ahead of the consumer, even over an endless source."""
    from deepgpu.data.adapters import _PyDatasetAdapter
    calls = []

    def settle():
        time.sleep(0.3)  # an unbounded pipeline would have run thousands of calls ahead by now
        return len(calls)

    def count(v):
        calls.append(1)
        return v
    for ds, at_most in ((Dataset.range(10 ** 9).map(count, num_parallel_calls=2).prefetch(3), 12),
                        (Dataset.range(10 ** 9).map(count, num_parallel_calls=2).batch(4).prefetch(2), 4 * 9)):
        calls.clear()
        it = iter(ds)
        next(it)
        assert 1 <= settle() <= at_most
        it.close()

    class Endless(PyDataset):
        def __len__(self):
            return 10 ** 6

        def __getitem__(self, i):
            calls.append(i)
            return X[:4], Y[:4]
    calls.clear()
    it = _PyDatasetAdapter(Endless(workers=2, max_queue_size=3), False).iterator()
    next(it)
    assert settle() <= 4
    it.close()


_CTRL_C_CHILD = """
import multiprocessing, sys, time
import numpy as np
import deepgpu as dg
from deepgpu import callbacks, layers
from deepgpu.data import Dataset
from deepgpu.utils import PyDataset
x = np.ones((64, 4), np.float32); y = np.zeros(64, np.int32)

class Slow(PyDataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        time.sleep(0.05)
        return x[8 * i:8 * i + 8], y[8 * i:8 * i + 8]

def slow(a, b):
    time.sleep(0.005)
    return a, b

class Ready(callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            print("READY", *[p.pid for p in multiprocessing.active_children()], flush=True)

m = dg.Sequential([layers.Dense(2, activation="softmax", input_shape=(4,))])
m.compile("adam", "sparse_categorical_crossentropy")
if sys.argv[1] == "pydataset":
    src = Slow(workers=2, use_multiprocessing=True)
elif sys.argv[1] == "imagefolder":  # decoded by forked processes into shared memory
    import os
    from PIL import Image
    from deepgpu.utils import image_dataset_from_directory
    for c in ("a", "b"):
        os.makedirs(os.path.join(sys.argv[2], c))
        for i in range(32):
            Image.fromarray(np.full((2, 2), i, np.uint8)).save(os.path.join(sys.argv[2], c, f"{i}.png"))
    m = dg.Sequential([layers.Flatten(input_shape=(2, 2, 1)), layers.Dense(2, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy")
    src = image_dataset_from_directory(sys.argv[2], color_mode="grayscale", image_size=(2, 2), batch_size=8,
                                       seed=0, verbose=False, use_multiprocessing=True).repeat()
else:
    src = Dataset.from_tensor_slices((x, y)).repeat().map(slow, num_parallel_calls=2, use_multiprocessing=True).batch(8)
try:
    m.fit(src, steps_per_epoch=8, epochs=10000, verbose=0, callbacks=[Ready()])
except KeyboardInterrupt:
    print("INTERRUPTED", len(multiprocessing.active_children()), flush=True)
"""


@pytest.mark.parametrize("source", ["dataset", "pydataset", "imagefolder"])
def test_ctrl_c_during_fit_ends_every_worker_process(source, tmp_path):
    """A real SIGINT sent to the process group (as a terminal's Ctrl-C is), arriving wherever
    fit happens to be: KeyboardInterrupt reaches the caller and no worker process outlives it."""
    import os
    import signal
    import subprocess
    import sys
    script = tmp_path / "child.py"
    script.write_text(_CTRL_C_CHILD)
    p = subprocess.Popen([sys.executable, str(script), source, str(tmp_path / "imgs")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("READY"), (line, p.stderr.read() if p.poll() is not None else "")
        workers = [int(w) for w in line.split()[1:]]
        assert workers
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert "INTERRUPTED 0" in out, (out, err[-2000:])
    deadline = time.time() + 5
    while time.time() < deadline and any(os.path.exists(f"/proc/{w}") for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")], "a worker process outlived fit"


def test_progress_bar_steps_known_and_unknown(capsys):
    m = make_model()
    m.fit(Dataset.from_tensor_slices((X, Y)).batch(16), verbose=2)
    assert "3/3" in capsys.readouterr().out
    from deepgpu.models.progbar import Progbar
    import io
    s = io.StringIO()
    Progbar(None, verbose=2, stream=s).update(5, final=True)
    assert s.getvalue().startswith("5/Unknown")

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    t = Terminal()
    bar = Progbar(None, verbose=1, stream=t, interval=0)
    bar.update(3, lambda: [("loss", 0.5)])
    assert t.getvalue().startswith("\r3/Unknown - ") and "ETA" not in t.getvalue() and "/step" in t.getvalue()


def test_used_up_validation_generator_warns_and_training_goes_on(clean):
    """Keras 3 trains on when a one-shot validation_data runs dry in a later epoch; a source that
    yields nothing at its first validation is still an error."""
    m = make_model()
    with pytest.warns(UserWarning, match=r"validation_data \(a generator\) is used up") as record:
        h = m.fit(X, Y, epochs=3, validation_data=gen(), verbose=0)
    assert len(h.history["loss"]) == 3 and len(h.history["val_loss"]) == 1
    assert sum("used up" in str(w.message) for w in record) == 2
    h = make_model().fit(X, Y, epochs=3, validation_data=gen(), validation_steps=1, verbose=0)
    assert len(h.history["val_loss"]) == 3  # three batches, one an epoch
    with pytest.raises(ValueError, match="yielded no batches to evaluate on"):
        make_model().fit(X, Y, epochs=2, validation_data=iter([]), verbose=0)


def test_evaluate_and_predict_steps_on_sources(clean):
    m = make_model()
    ds = Dataset.from_tensor_slices((X, Y)).batch(8)
    full = m.evaluate(ds.take(2), return_dict=True)
    assert m.evaluate(ds.repeat(), steps=2, return_dict=True) == full
    assert m.predict(gen(3), steps=2).shape == (32, 2)
    with pytest.raises(ValueError, match="infinite; give steps"):
        m.predict(ds.repeat())


def test_tfjs_fit_dataset():
    m = make_model()
    ds = dg.data.array([{"xs": X[i:i + 16], "ys": Y[i:i + 16]} for i in range(0, 48, 16)])
    h = m.fitDataset(ds, {"epochs": 2, "batchesPerEpoch": 3, "verbose": 0})
    assert len(h.history["loss"]) == 2
    assert isinstance(m.evaluateDataset(ds, {"batches": 2}), list)
    m.fitDataset(ds, {"epochs": 1, "steps_per_epoch": 3, "verbose": 0})  # fit's own keywords too
    w0 = weights(m)
    with pytest.raises(ValueError, match=r"^fitDataset\(\): unknown config key 'batchPerEpoch'; TF.js's are "):
        m.fitDataset(ds, {"epochs": 1, "batchPerEpoch": 3})
    assert same(w0, weights(m))


def test_torch_dataloader_by_duck_typing(clean):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y.astype("int64"))), batch_size=16)
    m = make_model()
    h = m.fit(loader, epochs=2, verbose=0, validation_data=loader)
    assert len(h.history["val_loss"]) == 2
    assert m.predict(loader).shape == (48, 2)


def test_tf_data_by_duck_typing(clean):
    tf = pytest.importorskip("tensorflow")
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)
    a, b = make_model(), make_model()
    ha = a.fit(ds, epochs=1, verbose=0)
    hb = b.fit(X, Y, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)
    assert np.isfinite(a.evaluate(ds)).all()
