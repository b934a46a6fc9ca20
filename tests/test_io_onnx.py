"""ONNX export: files run in onnxruntime and predict as deepgpu does; unsupported layers are named."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import deepgpu as dg  # noqa: E402
from deepgpu import Input, Model, Sequential, zoo  # noqa: E402
from deepgpu import layers as L  # noqa: E402
from deepgpu.io import export_onnx  # noqa: E402


def _randomize(model, seed=0):
    """Weights away from their initial values (BatchNormalization variances kept positive)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        else:
            w.assign(rng.normal(0.0, 0.4, w.shape).astype("float32"))
    return model


def _run(path, xs):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the CI machine's cores are shared
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
    return sess, sess.run(None, feeds)


def _predict(model, x):
    y = model.predict(x, verbose=0)
    return [t.data_sync() for t in y] if isinstance(y, list) else [y.data_sync()]


def _dense_net():
    return Sequential([L.Dense(32, activation="relu", input_shape=(20,)), L.Dropout(0.5),
                       L.Dense(16, activation="tanh"), L.Dense(5, activation="softmax")], name="dense_net")


def _bn_functional():
    inp = Input((9, 9, 3))
    x = L.Conv2D(6, 3, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    short = L.Conv2D(6, 1)(inp)
    x = L.Add()([x, short])
    x = L.Concatenate()([x, inp])
    x = L.MaxPooling2D(2, padding="same")(x)
    x = L.Flatten()(x)
    x = L.BatchNormalization()(L.Dense(8)(x))
    out = L.Dense(3)(L.Concatenate()([x, L.Dense(4, activation="sigmoid")(x)]))
    return Model(inp, out, name="bn_add_concat")


@pytest.mark.parametrize("name", ["dense", "convnet", "functional"])
def test_onnxruntime_predicts_as_deepgpu(tmp_path, backend, name):
    build, shape = {"dense": (_dense_net, (20,)), "convnet": (zoo.convnet, (28, 28, 1)),
                    "functional": (_bn_functional, (9, 9, 3))}[name]
    model = build()
    if name != "convnet":  # the seed convnet keeps its initial weights, as users export it
        _randomize(model)
    x = np.random.default_rng(1).normal(size=(4,) + shape).astype("float32")
    export_onnx(model, tmp_path / "m.onnx")
    _, (got,) = _run(tmp_path / "m.onnx", [x])
    want = _predict(model, x)[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


def test_flatten_keeps_nhwc_order(tmp_path):
    # A Dense after Flatten only agrees if the exported Flatten orders elements as deepgpu (H, W, C).
    model = _randomize(Sequential([L.Conv2D(3, 2, input_shape=(5, 4, 2)), L.Flatten(), L.Dense(1)]))
    x = np.random.default_rng(2).normal(size=(2, 5, 4, 2)).astype("float32")
    export_onnx(model, tmp_path / "f.onnx")
    _, (got,) = _run(tmp_path / "f.onnx", [x])
    assert np.abs(got - _predict(model, x)[0]).max() < 1e-5


def _many_layers():
    inp, aux = Input((10, 10, 3), name="image"), Input((7,), name="aux")
    a = L.Conv2D(4, 3, padding="same", activation="relu", strides=2)(inp)
    b = L.MaxPooling2D(2, strides=1, padding="same")(L.Conv2DTranspose(4, 3, strides=2, padding="same")(a))
    b2 = L.Cropping2D(((0, 1), (0, 5)))(L.Conv2DTranspose(4, (3, 2), strides=(2, 3))(a))
    b3 = L.Cropping2D(1)(L.Conv2DTranspose(4, 3, strides=2, output_padding=1)(a))
    c = L.Concatenate()([b, b2, b3, inp])
    c = L.Conv2D(5, 3, dilation_rate=2, padding="same", activation="elu")(L.ZeroPadding2D(((1, 0), (2, 1)))(c))
    c = L.AveragePooling2D(3, strides=2, padding="same")(L.UpSampling2D((2, 3), interpolation="bilinear")(c))
    c = L.UpSampling2D(2)(c)
    d = L.BatchNormalization(axis=1)(L.ReLU(threshold=0.1, negative_slope=0.2, max_value=2.0)(c))
    d = L.ELU(0.5)(L.LeakyReLU(0.1)(L.ReLU(max_value=1.5)(d)))
    e, f = L.GlobalMaxPooling2D()(d), L.GlobalAveragePooling2D(keepdims=True)(d)
    f = L.Flatten()(f)
    g = L.Average()([L.Maximum()([e, f]), L.Minimum()([e, f]), L.Multiply()([e, f, f]), L.Subtract()([e, f])])
    k = L.Permute((2, 1))(L.Reshape((5, -1))(g))
    k = L.Dense(6, activation="gelu")(k)
    k = L.Flatten()(L.RepeatVector(2)(L.Flatten()(k)))
    for act in ("swish", "mish", "hard_silu", "gelu_new", "relu6", "selu", "softsign", "hard_sigmoid"):
        k = L.Activation(act)(k)
    k = L.Dense(4, activation="softplus")(L.Dropout(0.3)(k))
    side = L.Dense(3, activation="log_softmax")(aux)
    out = L.Softmax()(L.Dense(5)(L.Concatenate()([k, side])))
    return Model([inp, aux], [out, c, side], name="many")


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_many_layers_and_opsets(tmp_path, opset):
    model = _randomize(_many_layers())
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(2, 10, 10, 3)).astype("float32"), rng.normal(size=(2, 7)).astype("float32")]
    export_onnx(model, tmp_path / "m.onnx", opset=opset)
    sess, got = _run(tmp_path / "m.onnx", xs)
    assert [i.name for i in sess.get_inputs()] == ["image", "aux"]
    for g, w in zip(got, _predict(model, xs)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_graph_shape_names_and_batch(tmp_path):
    model = _randomize(_dense_net())
    proto = export_onnx(model, tmp_path / "d.onnx")
    assert proto.opset_import[0].version == 17
    out = proto.graph.output[0]
    assert out.name == model.layers[-1].name
    assert out.type.tensor_type.shape.dim[0].dim_param == "batch"
    onnx.checker.check_model(onnx.load(str(tmp_path / "d.onnx")))
    for n in (1, 7):
        x = np.random.default_rng(n).normal(size=(n, 20)).astype("float32")
        _, (got,) = _run(tmp_path / "d.onnx", [x])
        assert np.abs(got - _predict(model, x)[0]).max() < 1e-5


def test_unsupported_layers_and_models_are_named(tmp_path):
    inp = Input((4,))
    model = Model(inp, L.Dense(2)(L.Lambda(lambda t: t * 2.0, name="doubler")(inp)))
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match="'doubler' \\(Lambda\\) has no ONNX export"):
        export_onnx(model, target)
    assert target.read_bytes() == b"previous"
    with pytest.raises(ValueError, match="opset"):
        export_onnx(_dense_net(), target, opset=9)
    with pytest.raises(ValueError, match="not built"):
        export_onnx(Sequential([L.Dense(2)]), target)

    def my_act(x):
        return x * 3.0
    with pytest.raises(ValueError, match="custom activation 'my_act'"):
        export_onnx(Sequential([L.Dense(2, activation=my_act, input_shape=(3,))]), target)

    class Sub(Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x, training=None):
            return self.d(x)
    sub = Sub()
    sub(np.ones((1, 3), "float32"))
    with pytest.raises(NotImplementedError, match="subclassed"):
        export_onnx(sub, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_nested_model(tmp_path):
    inner = Sequential([L.Conv2D(4, 3, input_shape=(8, 8, 2)), L.BatchNormalization(), L.Flatten()], name="inner")
    inp = Input((8, 8, 2))
    model = _randomize(Model(inp, L.Dense(3)(inner(inp))))
    x = np.random.default_rng(5).normal(size=(3, 8, 8, 2)).astype("float32")
    export_onnx(model, tmp_path / "n.onnx")
    _, (got,) = _run(tmp_path / "n.onnx", [x])
    assert np.abs(got - _predict(model, x)[0]).max() < 1e-5


def test_model_trained_on_each_backend_exports(tmp_path, backend):
    dg.set_seed(0)
    model = Sequential([L.Dense(8, activation="relu", input_shape=(4,)), L.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")
    model.fit(x, y, epochs=2, verbose=0)
    export_onnx(model, tmp_path / "t.onnx")
    _, (got,) = _run(tmp_path / "t.onnx", [x])
    assert np.abs(got - _predict(model, x)[0]).max() < 1e-5


def test_padding_masks_reach_the_exported_attention(tmp_path):
    """Keras's Transformer recipe on padded ids (Embedding(mask_zero) -> MultiHeadAttention -> Add ->
    LayerNormalization -> GlobalAveragePooling1D), attention scores, and cross-attention with a
    masked key: the padding masks are exported, and onnxruntime predicts as deepgpu."""
    rng = np.random.default_rng(18)
    ids = rng.integers(1, 30, (3, 6)).astype(np.int32)
    ids[0, 4:] = 0
    ids[1, :2] = 0  # padding in front too, and a row with none
    other = rng.integers(1, 30, (3, 5)).astype(np.int32)
    other[2, 3:] = 0
    a, b = Input((6,), dtype="int32"), Input((5,), dtype="int32")
    emb = L.Embedding(30, 8, mask_zero=True)
    x = emb(a)
    att, scores = L.MultiHeadAttention(2, 4)(x, x, return_attention_scores=True)
    block = L.GlobalAveragePooling1D()(L.LayerNormalization()(L.Add()([x, att])))
    cross = L.MultiHeadAttention(2, 4)(x, emb(b), L.Embedding(30, 8, mask_zero=True)(b), use_causal_mask=False)
    model = _randomize(Model([a, b], [L.Dense(2)(block), scores, cross]))
    export_onnx(model, tmp_path / "m.onnx")
    _, got = _run(tmp_path / "m.onnx", [ids, other])
    for g, want in zip(got, _predict(model, [ids, other])):
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)

