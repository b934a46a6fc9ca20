"""Data onto the device: the pinned-buffer / second-stream Stager (host stand-ins), the CUDA
backend's stage_to_device over NumPy, fit's one-batch-ahead upload, and cache("device")."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import backends, layers
from deepgpu.backends.staging import Stager
from deepgpu.data import Dataset
from deepgpu.data.device import DeviceCachedDataset, staged
from deepgpu.tensor import Tensor


def settle(h):
    return h.astype(np.float32) if h.dtype == np.float64 else h


def test_stager_copies_casts_and_keeps_text_on_host():
    s = Stager(np, settle)
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    y = np.array([1, 2, 3], np.int32)
    t = np.array(["a", "bb", "c"])
    (dx, dy, dt), ticket = s.stage([x, y, t])
    assert dx.dtype == np.float32 and np.array_equal(dx, x) and np.array_equal(dy, y)
    assert dt is t
    s.wait(ticket)
    assert s.log == ["stream-wait"]
    _, none = s.stage([t])
    assert none.event is None


def test_stager_reuses_a_pinned_slot_only_after_its_upload():
    s = Stager(np, settle, slots=3)
    outs = []
    for i in range(7):
        (d,), _ = s.stage([np.full((2, 2), i, np.float32)])
        outs.append(d)
    # a device array is its own copy: refilling the pinned buffer later does not change it
    assert [int(d[0, 0]) for d in outs] == list(range(7))
    # slots 0..2 were fresh; stagings 4..7 each waited for their slot's previous upload
    assert s.log.count("host-wait") == 4
    assert len(s._buffers[0]) == 1  # the same buffer, reused


def test_cuda_backend_stage_to_device_over_numpy():
    from deepgpu.testing.emulation import custom_backend
    B = custom_backend(np)
    arrays, ticket = B.stage_to_device([np.ones((2, 3)), np.array([0, 1])])
    assert arrays[0].dtype == np.float32 and arrays[1].dtype.kind == "i"
    B.wait_staged(ticket)
    assert B._stager.log == ["stream-wait"]


class _Recorder:
    """A backend stand-in that records uploads and the consumer's progress."""

    def __init__(self):
        self.events = []
        self.cpu = backends.get("cpu")

    def stage_to_device(self, arrays):
        self.events.append(("stage", int(arrays[0][0, 0])))
        return [self.cpu.asarray(a) for a in arrays], len(self.events)

    def wait_staged(self, ticket):
        pass

    def __getattr__(self, name):
        return getattr(self.cpu, name)


def test_staged_uploads_the_next_batch_before_the_current_step():
    B = _Recorder()
    host = [(i, ([np.full((1, 2), i, np.float32)], None, None)) for i in range(3)]
    for step, _host, (xb, _, _), ticket in staged(iter(host), B):
        assert isinstance(xb[0], Tensor)
        B.events.append(("step", step))
    assert B.events == [("stage", 0), ("stage", 1), ("step", 0), ("stage", 2), ("step", 1), ("step", 2)]


def _model():
    dg.set_seed(3)
    m = dg.Sequential([layers.Dense(5, activation="relu", input_shape=(3,)), layers.Dense(2, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def test_cache_device_holds_tensors_and_trains_the_same():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    calls = []
    src = Dataset.from_tensor_slices((x, y)).batch(8).map(lambda a, b: (calls.append(1), (a, b))[1])
    dev = src.cache("device")
    assert isinstance(dev, DeviceCachedDataset) and dev.nbytes == 0 and len(dev) == 5
    first = list(dev)
    assert isinstance(first[0][0], Tensor) and dev.nbytes == x.nbytes + y.nbytes
    second = list(dev)
    assert second[0][0] is first[0][0] and len(calls) == 5  # no second pass over the source
    a, b = _model(), _model()
    ha = a.fit(dev, epochs=2, verbose=0)
    hb = b.fit(Dataset.from_tensor_slices((x, y)).batch(8), epochs=2, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-6)
    with pytest.raises(ValueError, match="out of range|must be"):
        a.fit(Dataset.from_tensor_slices((x, y + 5)).batch(8).cache("device"), verbose=0)
    dev.release()
    assert dev.nbytes == 0


@pytest.mark.cuda
def test_stage_to_device_on_the_gpu():
    cp = pytest.importorskip("cupy")
    if "cuda" not in backends.available_backends():
        pytest.skip("no usable CUDA device")
    B = backends.get("cuda")
    xs = [np.random.default_rng(i).normal(size=(128, 28, 28, 1)) for i in range(5)]
    got = []
    for x in xs:
        (d,), t = B.stage_to_device([x])
        B.wait_staged(t)
        got.append(d)
    cp.cuda.get_current_stream().synchronize()
    for x, d in zip(xs, got):
        assert isinstance(d, cp.ndarray) and d.dtype == cp.float32
        np.testing.assert_array_equal(cp.asnumpy(d), x.astype(np.float32))


def test_fit_on_sources_on_the_cuda_backend_trains_as_on_the_cpu(xp):
    """A Dataset, its cache("device"), a generator and a PyDataset with process workers, fed to
    fit on the CUDA backend (custom kernels; under the emulation where there is no GPU): the same
    losses as on the CPU; host batches go through stage_to_device, cached ones never do."""
    from deepgpu.testing.emulation import current_custom
    from deepgpu.utils import PyDataset
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    class Batches(PyDataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return x[8 * i:8 * i + 8], y[8 * i:8 * i + 8]

    def gen():
        for i in range(5):
            yield x[8 * i:8 * i + 8], y[8 * i:8 * i + 8]
    ref = _model().fit(Dataset.from_tensor_slices((x, y)).batch(8), epochs=2, verbose=0).history["loss"]
    sources = {"dataset": (lambda: Dataset.from_tensor_slices((x, y)).batch(8), 2, 10),
               "cache-device": (lambda: Dataset.from_tensor_slices((x, y)).batch(8).cache("device"), 2, 0),
               "generator": (gen, 1, 5),
               "pydataset": (lambda: Batches(workers=2, use_multiprocessing=True), 2, 10)}
    with current_custom(xp) as B:
        stage = B.stage_to_device
        for name, (make, epochs, uploads) in sources.items():
            calls = []
            B.stage_to_device = lambda arrays: (calls.append(1), stage(arrays))[1]
            try:
                m = _model()
                hist = m.fit(make(), epochs=epochs, shuffle=False, verbose=0).history["loss"]
            finally:
                del B.stage_to_device
            assert all(isinstance(v.data, xp.ndarray) for v in m.weights), name
            np.testing.assert_allclose(hist, ref[:epochs], rtol=2e-5, err_msg=name)
            assert len(calls) == uploads, (name, len(calls))
