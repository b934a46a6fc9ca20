"""Mask machinery (Keras 3 semantics): how masks reach layers, travel with tensors, and weigh losses."""
import warnings

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import ops
from deepgpu.layers.base import Input, Layer, get_keras_mask, set_keras_mask
from deepgpu.tensor import tensor
from deepgpu.testing import run_layer_test


class _Ids(Layer):
    """Token ids -> one float feature, masking id 0 (a tiny Embedding(mask_zero=True))."""

    def call(self, x):
        return ops.expand_dims(ops.cast(x, "float32"), -1)

    def compute_mask(self, inputs, previous_mask=None):
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, s):
        return tuple(s) + (1,)


class _MaskedMean(Layer):
    """Mean over time of the unmasked steps; consumes the mask."""

    def call(self, x, mask=None):
        self.seen = mask
        if mask is None:
            return ops.mean(x, axis=1)
        m = ops.expand_dims(ops.cast(mask, x.dtype), -1)
        return ops.sum(x * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def compute_output_shape(self, s):
        return (s[0], s[2])


class _LeakyMean(_MaskedMean):
    """Wrong on purpose: takes the mask but averages every step."""

    def call(self, x, mask=None):
        return ops.mean(x, axis=1)


class _Double(Layer):
    def call(self, x):
        return x * 2.0

    def compute_output_shape(self, s):
        return s


X = np.array([[3, 1, 0, 0], [2, 0, 0, 0]])
MASK = X != 0


def test_mask_is_made_attached_and_passed_on_eagerly():
    ids, mean = _Ids(), _MaskedMean()
    h = ids(X)
    np.testing.assert_array_equal(get_keras_mask(h).data_sync(), MASK)
    y = mean(h)
    np.testing.assert_array_equal(mean.seen.data_sync(), MASK)
    np.testing.assert_allclose(y.data_sync(), [[2.0], [2.0]])
    assert get_keras_mask(y) is None  # consumed


def test_explicit_mask_argument_wins():
    mean = _MaskedMean()
    h = _Ids()(X)
    mine = tensor(np.array([[True, False, False, False], [True, False, False, False]]))
    y = mean(h, mask=mine)
    np.testing.assert_allclose(y.data_sync(), [[3.0], [2.0]])


def test_passthrough_needs_supports_masking_and_others_warn():
    h = _Ids()(X)
    d = _Double()
    assert not d.supports_masking
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = d(h)
    assert get_keras_mask(y) is None
    assert any("does not support masking" in str(m.message) and d.name in str(m.message) for m in w)
    d2 = _Double()
    d2.supports_masking = True  # default compute_mask: the input mask passes through
    y2 = d2(h)
    np.testing.assert_array_equal(get_keras_mask(y2).data_sync(), MASK)
    # Keras's own layers that pass masks on: Dense and Activation
    y3 = dg.layers.Dense(2)(h)
    np.testing.assert_array_equal(get_keras_mask(y3).data_sync(), MASK)


def test_masks_in_functional_and_sequential_models():
    inp = Input((4,), dtype="int32")
    ids, mean = _Ids(), _MaskedMean()
    h = ids(inp)
    assert h._keras_mask is not None and h._keras_mask.shape == (None, 4) and h._keras_mask.dtype == "bool"
    out = mean(h)
    assert out._keras_mask is None
    model = dg.Model(inp, out)
    np.testing.assert_allclose(model.predict(X, verbose=0), [[2.0], [2.0]])
    seq = dg.Sequential([Input((4,), dtype="int32"), _Ids(), _MaskedMean()])
    np.testing.assert_allclose(seq.predict(X, verbose=0), [[2.0], [2.0]])
    # A None time axis stays None in the symbolic mask.
    h2 = _Ids()(Input((None,), dtype="int32"))
    assert h2._keras_mask.shape == (None, None)


def test_arg_mask_convention_for_several_tensor_arguments():
    class Pair(Layer):
        supports_masking = True

        def call(self, query, value=None, query_mask=None, value_mask=None):
            self.masks = (query_mask, value_mask)
            return query + value

    q, v = _Ids()(X), _Ids()(X[:, ::-1].copy())
    p = Pair()
    p(q, value=v)
    np.testing.assert_array_equal(p.masks[0].data_sync(), MASK)
    np.testing.assert_array_equal(p.masks[1].data_sync(), MASK[:, ::-1])


def test_loss_and_metric_weigh_by_the_prediction_mask():
    # (batch, time, 1) predictions with a (batch, time) mask: one loss value per step
    y_pred = tensor(np.array([[1.0, 2.0, 9.0], [4.0, 9.0, 9.0]], np.float32)[..., None])
    y_true = np.zeros((2, 3, 1), np.float32)
    m = np.array([[True, True, False], [True, False, False]])
    set_keras_mask(y_pred, tensor(m))
    # mean over the three unmasked entries, as Keras 3 (apply_mask: total / valid)
    want = (1 + 4 + 16) / 3
    loss = dg.losses.MeanSquaredError(reduction="sum_over_batch_size")
    assert float(loss(y_true, y_pred).data_sync()) == pytest.approx(want, rel=1e-6)
    sw = np.array([1.0, 0.5], np.float32)
    want_w = (1 + 4 + 0.5 * 16) * 6 / 3 / 6
    assert float(loss(y_true, y_pred, sample_weight=sw).data_sync()) == pytest.approx(want_w, rel=1e-6)
    assert float(dg.losses.MeanSquaredError(reduction="sum")(y_true, y_pred).data_sync()) == pytest.approx(21)
    metric = dg.metrics.MeanAbsoluteError()
    metric.update_state(y_true, y_pred)
    assert float(metric.result().data_sync()) == pytest.approx((1 + 2 + 4) / 3, rel=1e-6)


def test_fit_weighs_the_loss_by_the_output_mask():
    # Output (batch, time, 1) with mask (batch, time): the loss must be the mean over unmasked steps.
    inp = Input((4,), dtype="int32")
    d = dg.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    model = dg.Model(inp, d(_Ids()(inp)))
    model.compile(optimizer="sgd", loss="mse")
    y = np.zeros((2, 4, 1), np.float32)
    got = model.evaluate(X, y, verbose=0)
    assert got == pytest.approx((9 + 1 + 4) / 3, rel=1e-6)


def test_harness_mask_check_passes_a_right_layer_and_fails_a_leaky_one():
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    report = run_layer_test(_MaskedMean, {}, input_data=x, input_mask=MASK,
                            checks=["build", "mask", "batch_of_one", "gradients"])
    assert "mask" in report.ran
    with pytest.raises(AssertionError, match="under the mask"):
        run_layer_test(_LeakyMean, {}, input_data=x, input_mask=MASK, checks=["mask"])
    with pytest.raises(AssertionError, match="expected none"):
        class Keeps(_MaskedMean):
            def compute_mask(self, inputs, previous_mask=None):
                return ops.any(previous_mask, axis=1, keepdims=True)
        run_layer_test(Keeps, {}, input_data=x, input_mask=MASK, checks=["mask"])


@pytest.mark.parametrize("make", [lambda: dg.layers.GlobalAveragePooling1D(name="pool"),
                                  lambda: dg.layers.LSTM(2, name="pool")], ids=["GlobalAveragePooling1D", "LSTM"])
def test_a_step_mask_of_the_wrong_shape_names_the_layer(make):
    x = np.random.default_rng(3).standard_normal((2, 5, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"'pool' \(\w+\): the mask must have shape \(batch, time\) = \(2, 5\) "
                                         r"for an input of shape \(2, 5, 3\); got a mask of shape \(2, 6\)"):
        make()(x, mask=np.ones((2, 6), bool))
    # A host array as mask= (bool or 0/1 ints, [batch, time] or [batch, time, 1]) skips the masked steps.
    layer = make()
    want = layer(x[:, :3]).data_sync()
    for m in (np.array([[1, 1, 1, 0, 0]] * 2, bool), np.array([[1, 1, 1, 0, 0]] * 2, np.int32)[..., None]):
        np.testing.assert_allclose(layer(x, mask=m).data_sync(), want, rtol=1e-6, atol=1e-7)


def test_concatenate_joins_masks_as_keras_3():
    # Expected masks are Keras 3.15's for the same calls (checked by hand against keras.layers.Concatenate).
    ids = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 0, 0]])
    a, b = dg.layers.Embedding(10, 3, mask_zero=True), dg.layers.Embedding(10, 3, mask_zero=True)
    along_time = dg.layers.Concatenate(axis=1)([a(ids), b(ids)])
    np.testing.assert_array_equal(get_keras_mask(along_time).data_sync(), np.concatenate([ids != 0, ids != 0], 1))
    # A masked and an unmasked input joined on features: the unmasked one is all True, so any() is True.
    plain = dg.layers.Embedding(10, 4)
    both = dg.layers.Concatenate()([a(ids), plain(ids)])
    assert get_keras_mask(both).data_sync().all()
    # Two masked inputs joined on features keep their (shared) step mask, and it reaches an LSTM.
    inp = Input((5,), dtype="int32")
    joined = dg.layers.Concatenate()([a(inp), b(inp)])
    assert get_keras_mask(joined) is not None
    lstm = dg.layers.LSTM(2)
    model = dg.Model(inp, lstm(joined))
    got = model.predict(ids, verbose=0).data_sync()
    two = Input((2,), dtype="int32")  # the same layers on the unpadded first row: the padded steps are skipped
    short = dg.Model(two, lstm(dg.layers.Concatenate()([a(two), b(two)])))
    np.testing.assert_allclose(got[0], short.predict(ids[:1, :2], verbose=0).data_sync()[0], atol=1e-6)
    assert get_keras_mask(dg.layers.Concatenate()([plain(ids), plain(ids)])) is None
