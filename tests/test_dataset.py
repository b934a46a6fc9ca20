"""deepgpu.data.Dataset: the verbs, their order and cardinality, parallel workers, cleanup."""
import multiprocessing
import threading
import time
import traceback

import numpy as np
import pytest

import deepgpu as dg
from deepgpu.data import AUTOTUNE, INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset, TensorSpec

D = Dataset


def values(ds):
    return [np.asarray(e).tolist() for e in ds]


def _threads():
    return {t for t in threading.enumerate() if t.name.startswith("deepgpu")}


@pytest.fixture
def no_leftover_workers():
    before, kids = _threads(), set(multiprocessing.active_children())
    yield
    deadline = time.time() + 5
    while time.time() < deadline and (_threads() - before or set(multiprocessing.active_children()) - kids):
        time.sleep(0.02)
    assert not (_threads() - before), f"threads left running: {_threads() - before}"
    assert not set(multiprocessing.active_children()) - kids, "worker processes left running"


def test_from_tensor_slices_tuple_and_dict():
    x = np.arange(12, dtype="float32").reshape(6, 2)
    y = np.arange(6)
    ds = D.from_tensor_slices((x, y))
    assert len(ds) == 6 and ds.cardinality() == 6
    el = next(iter(ds))
    np.testing.assert_array_equal(el[0], x[0])
    assert el[1] == 0
    d = list(D.from_tensor_slices({"a": x, "b": y}).batch(4))
    assert d[0]["a"].shape == (4, 2) and d[1]["b"].tolist() == [4, 5]


def test_from_tensor_slices_mismatched_lengths_named():
    with pytest.raises(ValueError, match=r"different first dimensions \[3, 4\]"):
        D.from_tensor_slices((np.zeros(3), np.zeros(4)))


def test_range_map_filter_take_skip_repeat():
    assert values(D.range(5)) == [0, 1, 2, 3, 4]
    assert values(D.range(2, 10, 3)) == [2, 5, 8]
    assert values(D.range(10).map(lambda v: v * 2).filter(lambda v: v % 4 == 0)) == [0, 4, 8, 12, 16]
    assert values(D.range(10).skip(3).take(4)) == [3, 4, 5, 6]
    assert values(D.range(3).repeat(2)) == [0, 1, 2, 0, 1, 2]
    assert D.range(3).repeat().cardinality() == INFINITE_CARDINALITY
    assert values(D.range(3).repeat().take(7)) == [0, 1, 2, 0, 1, 2, 0]
    assert D.range(10).filter(lambda v: v > 2).cardinality() == UNKNOWN_CARDINALITY
    assert D.range(10).skip(-1).cardinality() == 0 and values(D.range(10).take(-1)) == list(range(10))
    with pytest.raises(TypeError, match="infinite"):
        len(D.range(3).repeat())
    with pytest.raises(TypeError, match="unknown"):
        len(D.range(3).filter(lambda v: True))


def test_map_unpacks_tuples():
    ds = D.from_tensor_slices((np.arange(3), np.arange(3) * 10)).map(lambda a, b: a + b)
    assert values(ds) == [0, 11, 22]


def test_batch_drop_remainder_and_tfjs_small_last_batch():
    assert [b.tolist() for b in D.range(7).batch(3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert D.range(7).batch(3).cardinality() == 3
    assert D.range(7).batch(3, drop_remainder=True).cardinality() == 2
    assert [b.tolist() for b in D.range(7).batch(3, small_last_batch=False)] == [[0, 1, 2], [3, 4, 5]]
    assert [b.tolist() for b in D.range(5).batch(2).unbatch()] == [0, 1, 2, 3, 4]


def test_batch_of_unequal_shapes_names_element():
    ds = D.from_generator(lambda: iter([np.zeros(3), np.zeros(3), np.zeros(4)])).batch(3)
    with pytest.raises(ValueError, match=r"element 2 of a batch has shape \(4,\), element 0 has \(3,\)"):
        list(ds)


def test_padded_batch():
    ds = D.from_generator(lambda: (np.arange(1, n + 1) for n in (1, 3, 2)))
    (b,) = list(ds.padded_batch(3))
    assert b.tolist() == [[1, 0, 0], [1, 2, 3], [1, 2, 0]]
    (b,) = list(ds.padded_batch(3, padded_shapes=(5,), padding_values=-1))
    assert b.tolist() == [[1, -1, -1, -1, -1], [1, 2, 3, -1, -1], [1, 2, -1, -1, -1]]
    with pytest.raises(ValueError, match="larger than the padded shape"):
        list(ds.padded_batch(3, padded_shapes=(2,)))
    pairs = D.from_generator(lambda: ((np.ones(n), np.int64(n)) for n in (2, 1)))
    (xb, yb), = list(pairs.padded_batch(2))
    assert xb.tolist() == [[1, 1], [1, 0]] and yb.tolist() == [2, 1]


def test_shuffle_is_a_permutation_seeded_and_reshuffled():
    ds = D.range(50).shuffle(50, seed=3)
    a, b = values(ds), values(ds)
    assert sorted(a) == list(range(50)) and a != list(range(50))
    assert a != b  # a new order each pass
    assert values(D.range(50).shuffle(50, seed=3)) == a  # the seed fixes the sequence of orders
    fixed = D.range(50).shuffle(50, seed=3, reshuffle_each_iteration=False)
    assert values(fixed) == values(fixed)
    small = values(D.range(100).shuffle(4, seed=0))
    assert sorted(small) == list(range(100))
    # a small buffer only moves an element a little earlier than buffer_size allows
    assert all(small.index(v) >= v - 4 for v in range(100))
    dg.set_seed(7)
    s1 = values(D.range(20).shuffle(20))
    dg.set_seed(7)
    assert values(D.range(20).shuffle(20)) == s1


def test_zip_cardinality_and_dict():
    z = D.zip((D.range(3), D.range(10, 15)))
    assert z.cardinality() == 3 and [(int(a), int(b)) for a, b in z] == [(0, 10), (1, 11), (2, 12)]
    assert D.zip(D.range(2), D.range(2)).cardinality() == 2
    d = list(dg.data.zip({"x": D.range(2), "y": D.range(2).map(lambda v: -v)}))
    assert d[1]["y"] == -1


def test_concatenate_enumerate_reduce():
    assert values(D.range(2).concatenate(D.range(5, 7))) == [0, 1, 5, 6]
    assert [(int(i), int(v)) for i, v in D.range(5, 7).enumerate()] == [(0, 5), (1, 6)]
    assert int(D.range(5).reduce(np.int64(0), lambda s, v: s + v)) == 10


def test_interleave_order_matches_tf_data():
    ds = D.range(1, 4).interleave(lambda v: D.from_tensors(v).repeat(int(v)), cycle_length=2, block_length=1)
    # tf.data.Dataset.range(1, 4).interleave(lambda x: tf.data.Dataset.from_tensors(x).repeat(x), 2)
    assert values(ds) == [1, 2, 2, 3, 3, 3]
    par = D.range(1, 4).interleave(lambda v: D.from_tensors(v).repeat(int(v)), cycle_length=2,
                                   num_parallel_calls=2)
    assert values(par) == [1, 2, 2, 3, 3, 3]
    blocks = D.range(1, 6).interleave(lambda v: D.from_tensors(v).repeat(6), cycle_length=2, block_length=4)
    # the same call in tf.data 2.21 gives this sequence
    assert values(blocks) == [1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 3, 3, 4, 4,
                              5, 5, 5, 5, 5, 5]


def test_parallel_map_keeps_order_and_runs_concurrently(no_leftover_workers):
    seen = set()

    def slow(v):
        seen.add(threading.current_thread().name)
        time.sleep(0.002 * (5 - int(v) % 5))
        return v * 3

    assert values(D.range(20).map(slow, num_parallel_calls=4)) == [3 * i for i in range(20)]
    assert len(seen) > 1 and all(n.startswith("deepgpu") for n in seen)
    unordered = values(D.range(20).map(slow, num_parallel_calls=AUTOTUNE, deterministic=False))
    assert sorted(unordered) == [3 * i for i in range(20)]


def test_parallel_map_then_batch_is_fused_and_equal(no_leftover_workers):
    for drop in (False, True):
        fused = D.range(10).map(lambda v: (v, -v), num_parallel_calls=2).batch(3, drop_remainder=drop)
        plain = D.range(10).map(lambda v: (v, -v)).batch(3, drop_remainder=drop)
        assert fused.cardinality() == plain.cardinality()
        got, want = list(fused), list(plain)
        assert len(got) == len(want) == (3 if drop else 4)
        for (a, b), (c, d) in zip(got, want):
            assert a.tolist() == c.tolist() and b.tolist() == d.tolist()
    with pytest.raises(KeyError, match="bad element 5") as info:
        list(D.range(12).map(_boom, num_parallel_calls=2).batch(4))
    assert "_boom" in "".join(traceback.format_tb(info.value.__traceback__))
    procs = D.range(10).map(lambda v: v * 2, num_parallel_calls=2, use_multiprocessing=True).batch(4)
    assert [b.tolist() for b in procs] == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]


def _boom(v):
    if int(v) == 5:
        raise KeyError(f"bad element {int(v)}")
    return v


def test_worker_exception_reaches_caller_with_traceback(no_leftover_workers):
    ds = D.range(20).map(_boom, num_parallel_calls=3).prefetch(2)
    with pytest.raises(KeyError, match="bad element 5") as info:
        list(ds)
    tb = "".join(traceback.format_tb(info.value.__traceback__))
    assert "_boom" in tb  # the worker's frame is in the traceback


def test_process_workers_and_their_traceback(no_leftover_workers):
    ds = D.range(12).map(lambda v: v + 1, num_parallel_calls=2, use_multiprocessing=True)
    assert values(ds) == list(range(1, 13))
    with pytest.raises(KeyError, match="bad element 5") as info:
        list(D.range(12).map(_boom, num_parallel_calls=2, use_multiprocessing=True))
    # concurrent.futures hands the worker's formatted traceback over as __cause__
    assert "_boom" in str(info.value.__cause__)


def test_stopping_early_joins_every_worker(no_leftover_workers):
    ds = D.range(10 ** 6).map(lambda v: v, num_parallel_calls=2).prefetch(4) \
        .interleave(lambda v: D.range(3), cycle_length=2, num_parallel_calls=2).prefetch(2)
    it = iter(ds)
    for _ in range(5):
        next(it)
    assert _threads()
    it.close()
    for el in ds:  # a for loop left by break
        break
    del el


def test_exception_in_consumer_stops_workers(no_leftover_workers):
    with pytest.raises(RuntimeError, match="stop here"):
        for i, _ in enumerate(D.range(1000).map(lambda v: v, num_parallel_calls=2).prefetch(3)):
            if i == 3:
                raise RuntimeError("stop here")


def test_prefetch_runs_ahead_in_a_thread(no_leftover_workers):
    made = []

    def gen():
        for i in range(6):
            made.append(i)
            yield i

    it = iter(D.from_generator(gen).prefetch(3))
    assert next(it) == 0
    deadline = time.time() + 2
    while len(made) < 4 and time.time() < deadline:
        time.sleep(0.01)
    assert len(made) >= 4  # produced ahead of the consumer, bounded by the buffer
    assert len(made) <= 6
    it.close()


def test_cache_memory_and_file(tmp_path):
    calls = []
    ds = D.range(4).map(lambda v: (calls.append(1), v)[1]).cache()
    assert values(ds) == values(ds) == [0, 1, 2, 3]
    assert len(calls) == 4
    path = tmp_path / "c.cache"
    calls.clear()
    fds = D.range(4).map(lambda v: (calls.append(1), v * 2)[1]).cache(str(path))
    it = iter(fds)
    next(it)
    it.close()  # an interrupted pass leaves no cache file
    assert not path.exists() and not list(tmp_path.iterdir())
    assert values(fds) == [0, 2, 4, 6] and path.exists()
    calls.clear()
    assert values(fds) == [0, 2, 4, 6] and not calls
    # another Dataset (another process) reads the same file
    assert values(D.range(99).cache(str(path))) == [0, 2, 4, 6]


def test_from_generator_signature_and_errors():
    sig = (TensorSpec((None,), "float32"), TensorSpec((), "int64"))
    ds = D.from_generator(lambda: ((np.ones(n), n) for n in (2, 3)), output_signature=sig)
    els = list(ds)
    assert els[1][0].dtype == np.float32 and els[1][1].dtype == np.int64
    bad = D.from_generator(lambda: iter([(np.ones((2, 2)), 1)]), output_signature=sig)
    with pytest.raises(ValueError, match=r"element 0, component 0: expected shape \(None,\), got \(2, 2\)"):
        list(bad)
    with pytest.raises(ValueError, match=r"element 0 is ·, the output_signature expects \(·, ·\)"):
        list(D.from_generator(lambda: iter([np.ones(2)]), output_signature=sig))
    with pytest.raises(ValueError, match="expected dtype int64, got <U1|expected dtype int64, got str"):
        list(D.from_generator(lambda: iter([(np.ones(2), "a")]), output_signature=sig))
    with pytest.raises(TypeError, match="callable"):
        D.from_generator(iter([1, 2]))
    assert D.from_generator(lambda: iter([])).batch(2).to_array() == []


def test_tfjs_spellings():
    ds = dg.data.array([1, 2, 3, 4, 5]).batch(2)
    assert [b.tolist() for b in ds.toArray()] == [[1, 2], [3, 4], [5]]

    def gen():
        yield from ({"xs": np.ones(2) * i, "ys": np.int64(i)} for i in range(3))

    got = []
    dg.data.generator(gen).forEachAsync(lambda e: got.append(int(e["ys"])))
    assert got == [0, 1, 2]
    assert dg.data.Dataset is Dataset


def test_bad_arguments_named():
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        D.range(3).batch(0)
    with pytest.raises(ValueError, match="buffer_size"):
        D.range(3).shuffle(0)
    with pytest.raises(ValueError, match="num_parallel_calls"):
        D.range(3).map(lambda v: v, num_parallel_calls=0)
    with pytest.raises(TypeError, match="must return a Dataset"):
        list(D.range(3).interleave(lambda v: [v]))
