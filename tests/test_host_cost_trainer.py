"""The trainer's per-step shortcuts (issue 22 section 2): each cache is dropped when what it
was built from changes, and the host label check agrees with the full one."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers, losses, optimizers
from deepgpu.models import Sequential


def _int_mse(y_true, y_pred):
    """A loss that takes integer labels without checking their range."""
    return dg.ops.mean(dg.ops.square(y_pred - dg.ops.cast(dg.ops.expand_dims(y_true, -1), "float32")), axis=-1)


def _model(classes=3):
    return Sequential([layers.Input(shape=(4,)), layers.Dense(classes, activation="softmax")])


X = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
BAD = np.array([0, 1, 2, 5], np.int32)


def test_label_check_plan_follows_a_recompile_with_a_sparse_loss():
    m = _model()
    m.compile(optimizer=optimizers.SGD(0.0), loss=_int_mse)
    m.train_on_batch(X, BAD)  # nothing checks the range: the plan is empty
    m.compile(optimizer=optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"train_on_batch\(\): y: class label 5 .*\[0, 3\)"):
        m.train_on_batch(X, BAD)


def test_label_check_plan_follows_a_recompile_with_a_sparse_metric():
    m = _model()
    m.compile(optimizer=optimizers.SGD(0.0), loss=_int_mse)
    m.train_on_batch(X, BAD)
    m.compile(optimizer=optimizers.SGD(0.0), loss=_int_mse, metrics=["sparse_categorical_accuracy"])
    with pytest.raises(ValueError, match=r"class label 5"):
        m.train_on_batch(X, BAD)


def test_label_check_plan_follows_the_output_shape():
    m = _model(classes=6)
    m.compile(optimizer=optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    m.train_on_batch(X, BAD)  # 5 < 6 classes
    m.pop()
    m.add(layers.Dense(3, activation="softmax"))
    with pytest.raises(ValueError, match=r"class label 5 .*\[0, 3\)"):
        m.test_on_batch(X, BAD)


@pytest.mark.parametrize("values", [
    [0, 9, 3], [0, 10], [-1, 2], [], np.array([0.0, 9.5]), np.array([0.0, 9.99999999], np.float64),
    np.array([np.nan, 1.0], np.float32), np.array([3, 2 ** 32 + 11], np.int64), [True, False],
])
@pytest.mark.parametrize("ignore", [None, -1])
def test_check_host_labels_agrees_with_check_labels(values, ignore):
    def outcome(fn, arg):
        try:
            fn(arg, 10, ignore, "who")
        except (ValueError, TypeError) as e:
            return type(e), str(e)
        return None

    full = outcome(losses.check_labels, dg.tensor(values, backend="cpu"))
    assert outcome(losses.check_host_labels, values) == full
    if isinstance(values, list) and values and not isinstance(values[0], bool):
        assert (full is None) == all(0 <= v < 10 or v == ignore for v in values)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mean_update_on_arrays_keeps_keras_values(dtype):
    # The host-count branch of Mean.update_state runs backend primitives on the arrays: unweighted,
    # a number as the weight, rank > 1 values, int values, and a state dtype other than the values'.
    m = dg.metrics.Mean(dtype=dtype)
    m.update_state(dg.tensor(np.float32(2.5)), sample_weight=3)
    m.update_state(np.array([[1.0, 3.0], [5.0, 7.0]], np.float32))      # per-sample means 2 and 6
    m.update_state(dg.tensor(np.array([1, 2], np.int32)), sample_weight=0.5)
    m.update_state(dg.tensor(np.float32(4.0)))
    want = (2.5 * 3 + 2 + 6 + 0.5 * (1 + 2) + 4.0) / (3 + 2 + 0.5 * 2 + 1)
    assert m.result().item() == pytest.approx(want, rel=1e-3 if dtype == "float16" else 1e-6)
    assert m.variables[0].dtype == dtype and m._host_count == 7.0
    v = dg.Variable(np.float32(2.0))  # a value that requires a gradient records no link
    with dg.autograd.GradientTape():
        m.update_state(v * 3.0)
    assert not m.variables[0].requires_grad and m.variables[0]._node is None


def test_target_shape_check_remembers_only_what_passed():
    m = _model()
    m.compile(optimizer=optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    y = np.array([0, 1, 2, 1], np.int32)
    m.train_on_batch(X, y)
    m.train_on_batch(X, y)  # the remembered pass
    onehot = np.eye(3, dtype=np.float32)[y]
    for _ in range(2):  # a failure is not remembered
        with pytest.raises(ValueError, match="one-hot targets need categorical_crossentropy"):
            m.train_on_batch(X, onehot)
    m.compile(optimizer=optimizers.SGD(0.0), loss="categorical_crossentropy")
    m.train_on_batch(X, onehot)
    with pytest.raises(ValueError, match="integer class labels need sparse_categorical_crossentropy"):
        m.train_on_batch(X, y[:, None])


def test_labels_checked_block_restores_the_setting_and_refuses_a_second_entry():
    """labels_checked() is a small class (not a contextlib generator): one instance entered again before it
    exits would make the outer exit restore the inner's setting (checks off for good), so it refuses."""
    assert not getattr(losses._labels, "checked", False)
    cm = losses.labels_checked()
    with cm:
        assert losses._labels.checked
        with pytest.raises(RuntimeError, match="already entered"):
            with cm:
                pass
        with losses.labels_checked():  # a new one nests
            assert losses._labels.checked
        assert losses._labels.checked
    assert not losses._labels.checked
    with cm:  # one after the other is fine
        assert losses._labels.checked
    assert not losses._labels.checked
