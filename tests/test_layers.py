"""Layers: forward against NumPy references on every backend, gradients in float64,
shapes, configs, parameter counts and shape errors. Every layer class also goes
through the conformance harness, one file per family, in tests/layers/."""
import math

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import activations, initializers, layers, regularizers
from deepgpu.layers.base import reset_names
from deepgpu.testing import assert_close, check_gradients

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def call(layer, x, **kw):
    """Run ``layer`` on NumPy data on the current backend; NumPy result."""
    if isinstance(x, list):
        return layer([dg.tensor(a) for a in x], **kw).data_sync()
    return layer(dg.tensor(x), **kw).data_sync()


def built(layer, shape, weights=None):
    layer(dg.tensor(np.zeros(shape, np.float32)))
    if weights is not None:
        layer.set_weights(weights)
    return layer


# ---------------------------------------------------------------- references

def ref_conv2d(x, k, s=(1, 1), padding="valid", d=(1, 1)):
    n, h, w, c = x.shape
    kh, kw, _, o = k.shape
    eh, ew = (kh - 1) * d[0] + 1, (kw - 1) * d[1] + 1
    if padding == "same":
        ho, wo = -(-h // s[0]), -(-w // s[1])
        ph = max((ho - 1) * s[0] + eh - h, 0)
        pw = max((wo - 1) * s[1] + ew - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        ho, wo = (h - eh) // s[0] + 1, (w - ew) // s[1] + 1
    out = np.zeros((n, ho, wo, o))
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    out[:, i, j, :] += x[:, i * s[0] + a * d[0], j * s[1] + b * d[1], :] @ k[a, b]
    return out


def ref_conv2d_transpose(x, k, out_hw, s, padding):
    """Scatter each input pixel through the kernel [kh, kw, out, in]."""
    n, h, w, c = x.shape
    kh, kw, o, _ = k.shape
    ho, wo = out_hw
    pads = []
    for size, out, kk, st in ((h, ho, kh, s[0]), (w, wo, kw, s[1])):
        total = max((size - 1) * st + kk - out, 0) if padding == "same" else 0
        pads.append(total // 2)
    big = np.zeros((n, ho + 2 * kh + 2 * s[0], wo + 2 * kw + 2 * s[1], o))
    for i in range(h):
        for j in range(w):
            for a in range(kh):
                for b in range(kw):
                    big[:, i * s[0] + a, j * s[1] + b, :] += x[:, i, j, :] @ k[a, b].T
    return big[:, pads[0]:pads[0] + ho, pads[1]:pads[1] + wo, :]


def ref_pool(x, p, s, padding, fn):
    n, h, w, c = x.shape
    if padding == "same":
        ho, wo = -(-h // s[0]), -(-w // s[1])
        ph = max((ho - 1) * s[0] + p[0] - h, 0)
        pw = max((wo - 1) * s[1] + p[1] - w, 0)
        top, left = ph // 2, pw // 2
    else:
        ho, wo = (h - p[0]) // s[0] + 1, (w - p[1]) // s[1] + 1
        top = left = 0
    out = np.zeros((n, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * s[0] - top, j * s[1] - left
            win = x[:, max(r0, 0):min(r0 + p[0], h), max(c0, 0):min(c0 + p[1], w), :]
            out[:, i, j, :] = fn(win, axis=(1, 2))
    return out


_erf = np.vectorize(math.erf)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


NP_ACT = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": sigmoid,
    "hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
    "tanh": np.tanh,
    "softmax": lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True),
    "log_softmax": lambda x: x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "swish": lambda x: x * sigmoid(x),
    "silu": lambda x: x * sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "exponential": np.exp,
}


# --------------------------------------------------------------- activations

@pytest.mark.parametrize("name", sorted(NP_ACT))
def test_activation_forward(backend, name):
    x = rand(4, 7) * 3
    assert_close(activations.get(name)(dg.tensor(x)), NP_ACT[name](x.astype(np.float64)), 1e-4, 1e-5)
    assert_close(layers.Activation(name)(dg.tensor(x)), NP_ACT[name](x.astype(np.float64)), 1e-4, 1e-5)


@pytest.mark.parametrize("name", sorted(NP_ACT))
def test_activation_gradients(name):
    x = RNG.standard_normal((3, 5)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences off the kinks
    x[np.abs(np.abs(x) - 3) < 1e-3] = 1.0
    check_gradients(activations.get(name), [x])


def test_gelu_approximate_and_relu_options():
    x = RNG.standard_normal((50,)) * 3
    t = dg.tensor(x, "float64")
    c = np.sqrt(2 / np.pi)
    assert_close(activations.gelu(t, approximate=True), 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3))))
    assert_close(activations.gelu(t), 0.5 * x * (1 + _erf(x / np.sqrt(2))), 1e-10, 1e-12)
    y = activations.relu(t, negative_slope=0.1, max_value=2.0, threshold=0.5)
    assert_close(y, np.where(x > 0.5, np.minimum(x, 2.0), 0.1 * (x - 0.5)))
    assert_close(activations.relu(t, alpha=0.3), np.where(x > 0, x, 0.3 * x))


def test_activation_get_names():
    assert activations.get(None) is activations.linear
    assert activations.get("hardSigmoid") is activations.hard_sigmoid
    assert activations.get("relu6") is activations.relu6
    assert activations.get("selu") is activations.selu
    assert activations.get("leakyRelu") is activations.leaky_relu
    f = lambda x: x  # noqa: E731
    assert activations.get(f) is f
    assert activations.serialize(activations.silu) in ("swish", "silu")
    assert activations.serialize(activations.get("hardSigmoid")) == "hard_sigmoid"
    with pytest.raises(ValueError, match="unknown activation 'foo'.*relu.*sigmoid"):
        activations.get("foo")
    with pytest.raises(ValueError, match="unknown activation"):
        layers.Dense(3, activation="relux")


# ------------------------------------------------------------------- Dense

@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid", "tanh", "softmax", "gelu"])
def test_dense_forward(backend, act):
    x, k, b = rand(5, 4), rand(4, 3), rand(3)
    layer = built(layers.Dense(3, activation=act), (1, 4), [k, b])
    ref = NP_ACT[act](x.astype(np.float64) @ k + b)
    assert_close(call(layer, x), ref, 1e-4, 1e-5)


def test_dense_nd_input_and_no_bias(backend):
    x, k = rand(2, 3, 4), rand(4, 5)
    layer = built(layers.Dense(5, use_bias=False, activation="relu"), (1, 3, 4), [k])
    assert_close(call(layer, x), np.maximum(x @ k, 0), 1e-4, 1e-5)
    assert layer.compute_output_shape((None, 3, 4)) == (None, 3, 5)
    assert [w.name.split("/")[-1] for w in layer.weights] == ["kernel"]


@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_dense_gradients(act):
    layer = layers.Dense(3, activation=act, dtype="float64")
    built_x = np.zeros((1, 2, 4))
    layer(dg.tensor(built_x, "float64"))

    def f(x, k, b):
        layer.kernel, layer.bias = k, b
        return layer(x)
    check_gradients(f, [RNG.standard_normal((2, 2, 4)), RNG.standard_normal((4, 3)), RNG.standard_normal(3)])


def test_dense_params_config_names():
    reset_names()
    d1, d2 = layers.Dense(7), layers.Dense(7)
    assert (d1.name, d2.name) == ("dense", "dense_1")
    c1 = layers.Conv2D(2, 3)
    assert c1.name == "conv2d"
    layer = layers.Dense(4, kernel_initializer=initializers.VarianceScaling(2.0, "fan_out", "uniform", seed=3),
                         activation="hardSigmoid")
    cfg = layer.get_config()
    assert cfg["kernel_initializer"] == {"class_name": "VarianceScaling", "config": {
        "scale": 2.0, "mode": "fan_out", "distribution": "uniform", "seed": 3}}
    assert cfg["activation"] == "hard_sigmoid"
    clone = layers.Dense.from_config(cfg)
    assert isinstance(clone.kernel_initializer, initializers.VarianceScaling)
    assert clone.get_config() == cfg


def test_dense_wrong_input_shape():
    layer = layers.Dense(3, name="head")
    layer(dg.tensor(rand(2, 4)))
    with pytest.raises(ValueError) as e:
        layer(dg.tensor(rand(2, 5)))
    msg = str(e.value)
    assert "'head'" in msg and "4" in msg and "(None, 5)" in msg
    with pytest.raises(ValueError, match=r"'head'.*min_ndim=2.*\(None,\)"):
        layer(dg.tensor(rand(3)))
    with pytest.raises(ValueError, match="units"):
        layers.Dense(0)


def test_dense_input_shape_kwarg_and_regularizer_loss():
    layer = layers.Dense(2, input_shape=(3,), kernel_regularizer="l2", bias_regularizer=regularizers.L1(0.5))
    assert layer.get_config()["batch_input_shape"] == [None, 3]
    built(layer, (1, 3))
    k, b = layer.get_weights()
    total = sum(float(t.data_sync()) for t in layer.losses)
    assert total == pytest.approx(0.01 * (k ** 2).sum() + 0.5 * np.abs(b).sum(), rel=1e-5)


# -------------------------------------------------------- simple activations

def test_relu_leaky_elu_softmax_layers(backend):
    x = rand(3, 6) * 4
    assert_close(call(layers.ReLU(), x), np.maximum(x, 0))
    assert_close(call(layers.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.5), x),
                 np.where(x > 0.5, np.minimum(x, 2.0), 0.1 * (x - 0.5)), 1e-5, 1e-6)
    assert_close(call(layers.LeakyReLU(), x), np.where(x > 0, x, 0.3 * x))
    assert_close(call(layers.LeakyReLU(alpha=0.1), x), np.where(x > 0, x, 0.1 * x))
    assert_close(call(layers.ELU(0.5), x), np.where(x > 0, x, 0.5 * np.expm1(x)), 1e-5, 1e-6)
    x3 = rand(2, 3, 4)
    e = np.exp(x3 - x3.max(1, keepdims=True))
    assert_close(call(layers.Softmax(axis=1), x3), e / e.sum(1, keepdims=True), 1e-5, 1e-6)


# ------------------------------------------------------- dropout / reshaping

def test_dropout_only_in_training(backend):
    x = np.ones((200, 50), np.float32)
    layer = layers.Dropout(0.3)
    assert_close(call(layer, x), x)
    assert_close(call(layer, x, training=False), x)
    y = call(layer, x, training=True)
    assert np.all((y == 0) | np.isclose(y, 1 / 0.7))
    assert abs((y == 0).mean() - 0.3) < 0.02
    y = call(layers.Dropout(0.5, noise_shape=(None, 1)), x, training=True)
    assert (y == y[:, :1]).all()
    with pytest.raises(ValueError, match="rate"):
        layers.Dropout(1.5)


def test_dropout_gradient_uses_mask():
    layer = layers.Dropout(0.5)
    x = dg.tensor(np.ones((10, 10), np.float32))
    y, g = dg.value_and_grad(lambda t: dg.sum(layer(t, training=True)))(x)
    assert float(y.data_sync()) == pytest.approx(g.data_sync().sum())


def test_flatten_reshape_permute_repeat(backend):
    x = rand(2, 3, 4, 5)
    assert_close(call(layers.Flatten(), x), x.reshape(2, -1))
    assert_close(call(layers.Reshape((4, -1)), x), x.reshape(2, 4, 15))
    assert_close(call(layers.Permute((3, 1, 2)), x), x.transpose(0, 3, 1, 2))
    v = rand(2, 3)
    assert_close(call(layers.RepeatVector(4), v), np.repeat(v[:, None, :], 4, axis=1))
    assert_close(call(layers.Lambda(lambda t: t * 2.0), v), v * 2)


def test_flatten_reshape_symbolic_unknown_dims_and_errors():
    inp = layers.Input(shape=(None, 4))
    assert layers.Flatten()(inp).shape == (None, None)
    assert layers.Reshape((-1, 2))(inp).shape == (None, None, 2)
    with pytest.raises(ValueError) as e:
        layers.Reshape((5, 5), name="rs")(layers.Input(shape=(3, 4)))
    assert "'rs'" in str(e.value) and "(5, 5)" in str(e.value) and "(None, 3, 4)" in str(e.value)
    with pytest.raises(ValueError, match="one -1"):
        layers.Reshape((-1, -1))


# -------------------------------------------------------------- convolution

@pytest.mark.parametrize("kw", [
    dict(kernel_size=3), dict(kernel_size=(3, 2), strides=2, padding="same"),
    dict(kernel_size=3, strides=(2, 1)), dict(kernel_size=2, dilation_rate=2, padding="same"),
    dict(kernel_size=3, dilation_rate=(2, 1)),
])
def test_conv2d_forward(backend, kw):
    x = rand(2, 7, 6, 3)
    layer = layers.Conv2D(4, activation="relu", **kw)
    built(layer, (1, 7, 6, 3))
    k, b = rand(*layer.kernel.shape), rand(4)
    layer.set_weights([k, b])
    ref = ref_conv2d(x.astype(np.float64), k, layer.strides, layer.padding, layer.dilation_rate) + b
    y = call(layer, x)
    assert_close(y, np.maximum(ref, 0), 1e-4, 1e-4)
    assert layer.compute_output_shape((None,) + x.shape[1:]) == (None,) + y.shape[1:]


def test_conv2d_gradients():
    layer = layers.Conv2D(2, 3, strides=2, padding="same", activation="tanh", dtype="float64")
    layer(dg.tensor(np.zeros((1, 5, 4, 3)), "float64"))

    def f(x, k, b):
        layer.kernel, layer.bias = k, b
        return layer(x)
    check_gradients(f, [RNG.standard_normal((2, 5, 4, 3)), RNG.standard_normal((3, 3, 3, 2)),
                        RNG.standard_normal(2)])


def test_conv2d_params_config_errors():
    with pytest.raises(ValueError, match="Conv2D.*channels_first"):
        layers.Conv2D(2, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2D(2, 3, padding="full")
    conv = layers.Conv2D(2, 3, name="c")
    with pytest.raises(ValueError, match=r"'c'.*ndim=4.*\(None, 5, 5\)"):
        conv(dg.tensor(rand(1, 5, 5)))
    with pytest.raises(ValueError) as e:
        layers.Conv2D(2, 5, name="c5")(layers.Input(shape=(3, 3, 1)))
    assert "'c5'" in str(e.value) and "(None, 3, 3, 1)" in str(e.value) and "(5, 5)" in str(e.value)
    conv(dg.tensor(rand(1, 5, 5, 3)))
    with pytest.raises(ValueError) as e:
        conv(dg.tensor(rand(1, 5, 5, 4)))
    assert "'c'" in str(e.value) and "3" in str(e.value) and "(None, 5, 5, 4)" in str(e.value)


@pytest.mark.parametrize("kw,hw", [
    (dict(kernel_size=3, strides=2, padding="same"), (4, 3)),
    (dict(kernel_size=3, strides=2, padding="valid"), (4, 3)),
    (dict(kernel_size=2, strides=3, padding="valid"), (3, 2)),
    (dict(kernel_size=3, strides=2, padding="same", output_padding=0), (3, 3)),
    (dict(kernel_size=3, strides=2, padding="valid", output_padding=1), (2, 3)),
])
def test_conv2d_transpose_forward(backend, kw, hw):
    x = rand(2, hw[0], hw[1], 3)
    layer = layers.Conv2DTranspose(4, **kw)
    built(layer, (1,) + x.shape[1:])
    assert layer.kernel.shape == (layer.kernel_size[0], layer.kernel_size[1], 4, 3)
    k, b = rand(*layer.kernel.shape), rand(4)
    layer.set_weights([k, b])
    y = call(layer, x)
    # Keras's output length.
    s, ks = layer.strides[0], layer.kernel_size[0]
    op = kw.get("output_padding")
    if op is None:
        exp_h = hw[0] * s + max(ks - s, 0) if kw["padding"] == "valid" else hw[0] * s
    else:
        exp_h = (hw[0] - 1) * s + ks - 2 * (ks // 2 if kw["padding"] == "same" else 0) + op
    assert y.shape[1] == exp_h
    ref = ref_conv2d_transpose(x.astype(np.float64), k, y.shape[1:3], layer.strides, layer.padding) + b
    assert_close(y, ref, 1e-4, 1e-4)
    assert layer.compute_output_shape((None,) + x.shape[1:]) == (None,) + y.shape[1:]


def test_conv2d_transpose_is_the_adjoint_of_conv2d():
    # <conv(u), v> == <u, conv_transpose(v)> for the same kernel and geometry.
    k = RNG.standard_normal((3, 3, 2, 4))
    u = RNG.standard_normal((1, 6, 6, 2))
    conv = layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False, dtype="float64")
    tconv = layers.Conv2DTranspose(2, 3, strides=2, padding="same", use_bias=False, dtype="float64")
    conv(dg.tensor(u, "float64"))
    conv.set_weights([k])
    cu = conv(dg.tensor(u, "float64")).data_sync()
    v = RNG.standard_normal(cu.shape)
    tconv(dg.tensor(v, "float64"))
    tconv.set_weights([k])  # Keras's [kh, kw, filters, in] is the forward conv's own kernel
    tv = tconv(dg.tensor(v, "float64")).data_sync()
    assert np.sum(cu * v) == pytest.approx(np.sum(u * tv), rel=1e-10)


def test_conv2d_transpose_gradients_params_config():
    layer = layers.Conv2DTranspose(2, 3, strides=2, padding="same", dtype="float64")
    layer(dg.tensor(np.zeros((1, 3, 2, 3)), "float64"))

    def f(x, k, b):
        layer.kernel, layer.bias = k, b
        return layer(x)
    check_gradients(f, [RNG.standard_normal((2, 3, 2, 3)), RNG.standard_normal((3, 3, 2, 3)),
                        RNG.standard_normal(2)])
    with pytest.raises(ValueError, match="output_padding"):
        layers.Conv2DTranspose(2, 3, strides=2, output_padding=2)
    assert layers.Conv2DTranspose(3, 3, strides=2)(layers.Input(shape=(None, 5, 2))).shape == (None, None, 11, 3)


# ----------------------------------------------------------------- pooling

@pytest.mark.parametrize("cls,fn", [(layers.MaxPooling2D, np.max), (layers.AveragePooling2D, np.mean)])
@pytest.mark.parametrize("kw", [dict(), dict(pool_size=3, strides=2, padding="same"),
                                dict(pool_size=(2, 3), strides=1), dict(pool_size=3, padding="same")])
def test_pooling_forward(backend, cls, fn, kw):
    x = rand(2, 7, 6, 3)
    layer = cls(**kw)
    y = call(layer, x)
    assert_close(y, ref_pool(x.astype(np.float64), layer.pool_size, layer.strides, layer.padding, fn), 1e-5, 1e-6)
    assert layer.compute_output_shape((None, 7, 6, 3)) == (None,) + y.shape[1:]


def test_global_pooling(backend):
    x = rand(2, 5, 4, 3)
    assert_close(call(layers.GlobalAveragePooling2D(), x), x.mean((1, 2)), 1e-5, 1e-6)
    assert_close(call(layers.GlobalMaxPooling2D(), x), x.max((1, 2)))
    assert_close(call(layers.GlobalAveragePooling2D(keepdims=True), x), x.mean((1, 2), keepdims=True), 1e-5, 1e-6)


def test_pooling_gradients():
    def f(x):
        return layers.MaxPooling2D(3, 2, padding="same")(x) * 1.0 + layers.AveragePooling2D(3, 2, "same")(x)
    check_gradients(f, [RNG.standard_normal((2, 5, 4, 2))])
    check_gradients(lambda x: layers.GlobalMaxPooling2D()(x) + layers.GlobalAveragePooling2D()(x),
                    [RNG.standard_normal((2, 3, 3, 2))])


def test_pooling_errors():
    with pytest.raises(ValueError) as e:
        layers.MaxPooling2D(3, name="mp")(dg.tensor(rand(1, 2, 2, 1)))
    assert "'mp'" in str(e.value) and "(None, 2, 2, 1)" in str(e.value)
    with pytest.raises(ValueError, match=r"'gap'.*ndim=4.*\(None, 3\)"):
        layers.GlobalAveragePooling2D(name="gap")(dg.tensor(rand(2, 3)))
    with pytest.raises(ValueError, match="channels_first"):
        layers.MaxPooling2D(data_format="channels_first")


# ----------------------------------------------------------- normalization

def test_batch_norm_training_inference_and_moving_stats(backend):
    x = rand(16, 3, 3, 4) * 2 + 1
    layer = layers.BatchNormalization(momentum=0.5, epsilon=1e-3)
    built(layer, (1, 3, 3, 4))
    g, b = rand(4), rand(4)
    mm, mv = rand(4), np.abs(rand(4)) + 0.5
    layer.set_weights([g, b, mm, mv])
    x64 = x.astype(np.float64)
    # inference (training None or False): moving statistics, nothing updated
    ref_inf = (x64 - mm) / np.sqrt(mv + 1e-3) * g + b
    assert_close(call(layer, x), ref_inf, 1e-4, 1e-4)
    assert_close(call(layer, x, training=False), ref_inf, 1e-4, 1e-4)
    assert_close(layer.moving_mean, mm)
    # training: batch statistics, moving statistics updated
    mean, var = x64.mean((0, 1, 2)), x64.var((0, 1, 2))
    assert_close(call(layer, x, training=True), (x64 - mean) / np.sqrt(var + 1e-3) * g + b, 1e-4, 1e-4)
    assert_close(layer.moving_mean, 0.5 * mm + 0.5 * mean, 1e-5, 1e-5)
    assert_close(layer.moving_variance, 0.5 * mv + 0.5 * var, 1e-5, 1e-5)
    # a frozen layer runs in inference mode even when training
    layer.trainable = False
    before = layer.moving_mean.data_sync()
    y = call(layer, x, training=True)
    assert_close(layer.moving_mean, before)
    assert_close(y, (x64 - before) / np.sqrt(layer.moving_variance.data_sync() + 1e-3) * g + b, 1e-4, 1e-4)


def test_batch_norm_other_axis_and_no_center_scale(backend):
    x = rand(6, 3, 5)
    layer = layers.BatchNormalization(axis=1, center=False, scale=False)
    assert_close(call(layer, x, training=True),
                 (x - x.mean((0, 2), keepdims=True)) / np.sqrt(x.var((0, 2), keepdims=True) + 1e-3), 1e-4, 1e-4)
    assert [w.name.split("/")[-1] for w in layer.weights] == ["moving_mean", "moving_variance"]


def test_batch_norm_weights_params_config():
    layer = layers.BatchNormalization()
    built(layer, (1, 5, 5, 8))
    assert [w.name.split("/")[-1] for w in layer.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert layer.count_params() == 32
    assert len(layer.trainable_weights) == 2 and len(layer.non_trainable_weights) == 2
    with pytest.raises(ValueError) as e:
        layer(dg.tensor(rand(2, 5, 5, 3)))
    assert "batch_normalization" in str(e.value) and "8" in str(e.value) and "(None, 5, 5, 3)" in str(e.value)


def test_batch_norm_gradients():
    layer = layers.BatchNormalization(dtype="float64")
    layer(dg.tensor(np.zeros((1, 2, 3)), "float64"))

    def f(x, g, b):
        layer.gamma, layer.beta = g, b
        return layer(x, training=True)
    check_gradients(f, [RNG.standard_normal((4, 2, 3)), RNG.standard_normal(3), RNG.standard_normal(3)])

    def f_inf(x, g, b):
        layer.gamma, layer.beta = g, b
        return layer(x, training=False)
    check_gradients(f_inf, [RNG.standard_normal((4, 2, 3)), RNG.standard_normal(3), RNG.standard_normal(3)])


# -------------------------------------------------------------------- merge

MERGE = [(layers.Add, lambda xs: xs[0] + xs[1] + xs[2]),
         (layers.Multiply, lambda xs: xs[0] * xs[1] * xs[2]),
         (layers.Average, lambda xs: (xs[0] + xs[1] + xs[2]) / 3),
         (layers.Maximum, lambda xs: np.maximum(np.maximum(xs[0], xs[1]), xs[2])),
         (layers.Minimum, lambda xs: np.minimum(np.minimum(xs[0], xs[1]), xs[2]))]


@pytest.mark.parametrize("cls,ref", MERGE)
def test_merge_forward(backend, cls, ref):
    xs = [rand(2, 3, 4) for _ in range(3)]
    assert_close(call(cls(), xs), ref(xs), 1e-5, 1e-6)


def test_subtract_concatenate(backend):
    a, b = rand(2, 3), rand(2, 3)
    assert_close(call(layers.Subtract(), [a, b]), a - b)
    c = rand(2, 5)
    assert_close(call(layers.Concatenate(), [a, c]), np.concatenate([a, c], -1))
    x, y = rand(2, 3, 4), rand(2, 1, 4)
    assert_close(call(layers.Concatenate(axis=1), [x, y]), np.concatenate([x, y], 1))


def test_merge_gradients():
    check_gradients(lambda a, b: layers.Maximum()([a, b]) + layers.Average()([a, b]) * layers.Multiply()([a, b]),
                    [RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))])
    check_gradients(lambda a, b: layers.Concatenate(axis=1)([a, b]),
                    [RNG.standard_normal((2, 3)), RNG.standard_normal((2, 2))])


def test_merge_errors_name_the_layer_and_shapes():
    a, b = layers.Input(shape=(3,)), layers.Input(shape=(4,))
    with pytest.raises(ValueError) as e:
        layers.Add(name="plus")([a, b])
    assert "'plus'" in str(e.value) and "(None, 3)" in str(e.value) and "(None, 4)" in str(e.value)
    with pytest.raises(ValueError) as e:
        layers.Concatenate(axis=-1, name="cat")([layers.Input(shape=(2, 3)), layers.Input(shape=(4, 3))])
    assert "'cat'" in str(e.value) and "(None, 2, 3)" in str(e.value) and "(None, 4, 3)" in str(e.value)
    with pytest.raises(ValueError, match="exactly 2"):
        layers.Subtract()([a, a, a])
    with pytest.raises(ValueError, match="list of inputs"):
        layers.Add()(a)
    with pytest.raises(ValueError, match="'plus2'.*\\(None, 3\\).*\\(None, 4\\)"):
        layers.Add(name="plus2")([dg.tensor(rand(2, 3)), dg.tensor(rand(2, 4))])
    assert layers.Add()([a, layers.Input(shape=(1,))]).shape == (None, 3)


# --------------------------------------------------------------- reshaping

def test_zero_padding_cropping_upsampling(backend):
    x = rand(2, 3, 4, 2)
    assert_close(call(layers.ZeroPadding2D(), x), np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))))
    assert_close(call(layers.ZeroPadding2D(((1, 2), (0, 3))), x), np.pad(x, ((0, 0), (1, 2), (0, 3), (0, 0))))
    assert_close(call(layers.Cropping2D(((1, 0), (1, 2))), x), x[:, 1:, 1:2, :])
    assert_close(call(layers.UpSampling2D(), x), x.repeat(2, 1).repeat(2, 2))
    assert_close(call(layers.UpSampling2D((1, 3)), x), x.repeat(3, 2))


def test_upsampling_bilinear_matches_tf_half_pixel(backend):
    x = np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1)
    y = call(layers.UpSampling2D((1, 2), interpolation="bilinear"), x)
    assert_close(y.reshape(-1), [0.0, 0.25, 0.75, 1.0])
    x = rand(1, 3, 3, 2)
    y = call(layers.UpSampling2D(2, interpolation="bilinear"), x)
    assert y.shape == (1, 6, 6, 2)
    # corners copy the input corners; interior points are convex combinations
    assert_close(y[:, 0, 0], x[:, 0, 0])
    assert_close(y[:, -1, -1], x[:, -1, -1])
    assert_close(y[:, 1, 0], 0.75 * x[:, 0, 0] + 0.25 * x[:, 1, 0], 1e-5, 1e-6)


def test_spatial_reshaping_gradients_and_errors():
    check_gradients(lambda x: layers.UpSampling2D(2, interpolation="bilinear")(x), [RNG.standard_normal((1, 2, 3, 2))])
    check_gradients(lambda x: layers.Cropping2D(1)(layers.ZeroPadding2D(2)(x)), [RNG.standard_normal((1, 2, 2, 1))])
    with pytest.raises(ValueError, match="padding"):
        layers.ZeroPadding2D(-1)
    with pytest.raises(ValueError, match=r"'crop'.*\(None, 2, 4, 2\)"):
        layers.Cropping2D(1, name="crop")(layers.Input(shape=(2, 4, 2)))


# ------------------------------------------------------ functional & models

def test_layers_compose_in_a_model_and_round_trip_config():
    reset_names()
    inp = layers.Input(shape=(8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    y = layers.Conv2D(4, 1)(inp)
    x = layers.Add()([x, y])
    x = layers.MaxPooling2D()(x)
    x = layers.Concatenate()([x, layers.AveragePooling2D()(y)])
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(2, activation="softmax")(x)
    model = dg.Model(inp, out)
    assert model.count_params() == (3 * 3 * 3 * 4 + 4) + 16 + (3 * 4 + 4) + (8 * 2 + 2)
    data = rand(2, 8, 8, 3)
    y1 = model(dg.tensor(data)).data_sync()
    assert y1.shape == (2, 2)
    clone = dg.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert_close(clone(dg.tensor(data)), y1, 1e-5, 1e-6)
