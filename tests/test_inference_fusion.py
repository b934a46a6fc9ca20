"""Inference folding of Conv2D / DepthwiseConv2D -> BatchNormalization [-> ReLU] (deepgpu/models/fusion.py)."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers as L
from deepgpu.autograd import enable_grad, no_grad
from deepgpu.models import fusion


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 2.0, c).astype("float32"))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0, 0.3, c).astype("float32"))


def _both(model, x):
    """(folded inference output, unfolded inference output), each a list of arrays."""
    def arrays(out):
        return [np.asarray(o.numpy()) for o in (out if isinstance(out, list) else [out])]
    with no_grad():
        folded = arrays(model(x, training=False))
    with enable_grad():  # a recorded call never folds
        plain = arrays(model(x, training=False))
    return folded, plain


def _net():
    inp = L.Input((12, 12, 8))
    a = L.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    a = L.BatchNormalization()(a)
    a = L.ReLU(6.0)(a)
    b = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(a)
    b = L.BatchNormalization(center=False)(b)
    b = L.Activation("relu")(b)
    c = L.Conv2D(8, 1, use_bias=True)(b)
    c = L.BatchNormalization(scale=False)(c)          # no ReLU after: bias only
    d = L.Conv2D(8, 1)(c)
    e = L.BatchNormalization()(d)
    f = L.Add()([d, e])                               # d feeds two layers: not folded
    g = L.DepthwiseConv2D(3, padding="valid")(f)
    g = L.BatchNormalization()(g)
    g = L.ReLU(negative_slope=0.1)(g)                 # leaky: BN folds, the ReLU runs as it is
    return dg.Model(inp, [g, c])


def test_fold_plan_matches_the_foldable_chains():
    model = _net()
    kinds = {i: (type(model._nodes[i].layer).__name__, cap) for i, (_, k, cap) in fusion.plan(model).items()}
    names = sorted(kinds.values(), key=str)
    assert names == sorted([("Conv2D", 6.0), ("DepthwiseConv2D", None), ("Conv2D", False),
                            ("DepthwiseConv2D", False)], key=str)


def test_folded_inference_equals_the_layers_one_by_one():
    rng = np.random.default_rng(0)
    model = _net()
    _randomize_bn(model, rng)
    x = rng.normal(0, 1, (3, 12, 12, 8)).astype("float32")
    folded, plain = _both(model, x)
    assert len(folded) == 2
    for f, p in zip(folded, plain):
        np.testing.assert_allclose(f, p, rtol=1e-5, atol=1e-5)
        assert np.abs(p).max() > 0.1


def test_folded_weights_follow_training_between_calls():
    rng = np.random.default_rng(1)
    inp = L.Input((6, 6, 4))
    out = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(16, 3)(inp)))
    model = dg.Model(inp, out)
    x = rng.normal(0, 1, (2, 6, 6, 4)).astype("float32")
    before = np.asarray(model.predict(x, verbose=0))
    _randomize_bn(model, rng)
    (after,), (plain,) = _both(model, x)
    np.testing.assert_allclose(after, plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.predict(x, verbose=0)), plain, rtol=1e-5, atol=1e-5)
    assert not np.allclose(before, after)


@pytest.mark.parametrize("cap_layer", [lambda: L.ReLU(6.0), lambda: L.Activation("relu6"), lambda: L.ReLU(4.0)])
def test_mobilenet_block_with_capped_relus_equals_the_layers_one_by_one(cap_layer):
    """1x1 expand -> BN -> ReLU6, depthwise (32 + 8 + tail channels) -> BN -> ReLU6, 1x1 project -> BN:
    relu6 in the convolutions' epilogues (a cap other than 6 is one more pass); the caps are reached."""
    rng = np.random.default_rng(3)
    inp = L.Input((9, 9, 6))
    a = cap_layer()(L.BatchNormalization()(L.Conv2D(45, 1, use_bias=False)(inp)))
    b = cap_layer()(L.BatchNormalization()(L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(a)))
    model = dg.Model(inp, L.BatchNormalization()(L.Conv2D(7, 1, use_bias=False)(b)))
    assert len(fusion.plan(model)) == 3
    _randomize_bn(model, rng)
    for layer in model.layers:  # a wide spread after each BN, so the caps are reached
        if isinstance(layer, L.BatchNormalization):
            layer.gamma.assign(np.asarray(layer.gamma.numpy()) * 8)
    x = rng.normal(0, 3, (2, 9, 9, 6)).astype("float32")
    (folded,), (plain,) = _both(model, x)
    np.testing.assert_allclose(folded, plain, rtol=1e-5, atol=1e-5)
    sub = dg.Model(inp, b)
    (fb,), (pb,) = _both(sub, x)
    np.testing.assert_allclose(fb, pb, rtol=1e-5, atol=1e-5)
    cap = float(pb.max())
    assert cap in (4.0, 6.0) and (pb == cap).mean() > 0.05 and (fb == cap).mean() > 0.05


def test_training_mode_is_not_folded():
    rng = np.random.default_rng(2)
    inp = L.Input((6, 6, 4))
    out = L.BatchNormalization()(L.Conv2D(16, 3)(inp))
    model = dg.Model(inp, out)
    x = rng.normal(0, 1, (4, 6, 6, 4)).astype("float32")
    with no_grad():
        y = np.asarray(model(x, training=True).numpy())
    # Batch statistics: every channel has mean ~0 over the batch.
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-4)


@pytest.mark.parametrize("layer", [L.Conv2D(16, 3, activation="relu"), L.Conv2D(16, 3, groups=2)])
def test_conv_with_activation_or_groups_is_not_folded(layer):
    inp = L.Input((6, 6, 4))
    model = dg.Model(inp, L.BatchNormalization()(layer(inp)))
    assert fusion.plan(model) == {}


def test_mixed_policy_layers_are_not_folded():
    """Under mixed_float16 the layers compute in float16: the float32 fold would change the output dtype."""
    dg.mixed_precision.set_global_policy("mixed_float16")
    try:
        inp = L.Input((6, 6, 3))
        model = dg.Model(inp, L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, use_bias=False)(inp))))
    finally:
        dg.mixed_precision.set_global_policy(None)
    assert fusion.plan(model) == {}
    y = model.predict(np.random.default_rng(0).random((2, 6, 6, 3), dtype=np.float32))
    assert y.dtype == "float16"
