"""Attention layers (deepgpu/layers/attention.py) through the conformance harness, against
Keras 3.15 itself (where installed), and their bad-input errors."""
import os
import warnings

import numpy as np
import pytest

from deepgpu import layers as L
from deepgpu.testing import LayerCase as C

_NO_TFJS = "TF.js has no attention layer"
_U = {"tfjs": _NO_TFJS}
# The key projection's bias adds q . b to every score of a query's row, which the softmax removes:
# its gradient is zero up to rounding, so it neither moves reliably nor compares relatively.
_KEY_BIAS = "the key projection's bias has a zero gradient (the softmax is shift-invariant per row)"
QV = [(2, 5, 6), (2, 7, 4)]
CASES = [
    C(L.MultiHeadAttention, dict(num_heads=2, key_dim=3), QV, (None, 5, 6), expected_num_weights=8,
      expected_num_params=(6 * 6 + 6) + 2 * (4 * 6 + 6) + (6 * 6 + 6), unsupported=_U,
      skip={"cuda_emulated": _KEY_BIAS, "trainable": _KEY_BIAS}),
    C(L.MultiHeadAttention, dict(num_heads=3, key_dim=2, value_dim=4, output_shape=5, use_bias=False),
      [(2, 5, 6), (2, 7, 4), (2, 7, 3)], (None, 5, 5), expected_num_weights=4, unsupported=_U),
    C(L.MultiHeadAttention, dict(num_heads=2, key_dim=2, attention_axes=(1, 2), use_bias=False),
      [(2, 3, 4, 6), (2, 3, 4, 6)], (None, 3, 4, 6),
      unsupported={**_U, "onnx": "only rank-3 inputs attending over axis 1 are exported to ONNX"}),
    C(L.MultiHeadAttention, dict(num_heads=2, key_dim=3, dropout=0.3, use_bias=False), QV, (None, 5, 6),
      training="random", unsupported=_U),
    C(L.GroupedQueryAttention, dict(head_dim=3, num_query_heads=4, num_key_value_heads=2), [(2, 5, 6), (2, 7, 6)],
      (None, 5, 6), expected_num_weights=8, unsupported=_U, skip={"cuda_emulated": _KEY_BIAS, "trainable": _KEY_BIAS}),
    C(L.Attention, {}, [(2, 5, 4), (2, 7, 4)], (None, 5, 4), expected_num_weights=0, unsupported=_U),
    C(L.Attention, dict(use_scale=True, score_mode="concat"), [(2, 5, 4), (2, 7, 3), (2, 7, 4)], (None, 5, 3),
      expected_num_weights=2, unsupported=_U),
    C(L.Attention, dict(dropout=0.4), [(2, 5, 4), (2, 7, 4)], (None, 5, 4), training="random", unsupported=_U),
    C(L.AdditiveAttention, {}, [(2, 5, 4), (2, 7, 4)], (None, 5, 4), expected_num_params=4, unsupported=_U),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


RNG = np.random.default_rng(0)
Q, V, K = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 5, 6), (2, 7, 4), (2, 7, 3)))
X4 = RNG.standard_normal((2, 3, 4, 6)).astype(np.float32)
AM = RNG.integers(0, 2, (2, 5, 7)).astype(bool)
AM[:, :, 0] = True
QM = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
VM = np.array([[1, 1, 0, 0, 0, 0, 0], [1] * 7], bool)


def _pair(ours, theirs, call):
    call(ours)
    call(theirs)
    rng = np.random.default_rng(1)
    assert len(ours.weights) == len(theirs.weights)
    for a, b in zip(ours.weights, theirs.weights):
        assert tuple(a.shape) == tuple(b.shape), (a.name, b.path)
        v = (rng.standard_normal(b.shape) * 0.5).astype(np.float32)
        a.assign(v)
        b.assign(v)
    got, want = call(ours), call(theirs)
    got = got if isinstance(got, (list, tuple)) else [got]
    want = want if isinstance(want, (list, tuple)) else [want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.data_sync(), np.asarray(w), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("name,kwargs,call", [
    ("MultiHeadAttention", dict(num_heads=2, key_dim=3), lambda l: l(Q, V)),
    ("MultiHeadAttention", dict(num_heads=3, key_dim=2, value_dim=4, output_shape=5, use_bias=False),
     lambda l: l(Q, V, K)),
    ("MultiHeadAttention", dict(num_heads=2, key_dim=3),
     lambda l: l(Q, V, attention_mask=AM, return_attention_scores=True)),
    ("MultiHeadAttention", dict(num_heads=2, key_dim=3), lambda l: l(Q, Q, use_causal_mask=True)),
    ("MultiHeadAttention", dict(num_heads=2, key_dim=3), lambda l: l(Q, V, value_mask=VM)),
    ("MultiHeadAttention", dict(num_heads=2, key_dim=3, attention_axes=(1, 2)), lambda l: l(X4, X4)),
    ("MultiHeadAttention", dict(num_heads=2, key_dim=3, attention_axes=2), lambda l: l(X4, X4)),
    ("MultiHeadAttention", dict(num_heads=2, key_dim=3, use_gate=True), lambda l: l(Q, V)),
    ("MultiHeadAttention", dict(num_heads=2, key_dim=3, sliding_window=2), lambda l: l(Q, Q, use_causal_mask=True)),
    ("GroupQueryAttention", dict(head_dim=3, num_query_heads=4, num_key_value_heads=2), lambda l: l(Q, V)),
    ("GroupQueryAttention", dict(head_dim=3, num_query_heads=4, num_key_value_heads=2),
     lambda l: l(Q, Q, use_causal_mask=True, return_attention_scores=True)),
    ("Attention", {}, lambda l: l([Q[..., :4], V])),
    ("Attention", dict(use_scale=True, score_mode="concat"), lambda l: l([Q[..., :4], V, V])),
    ("Attention", dict(use_scale=True),
     lambda l: l([Q[..., :4], V], mask=[QM, VM], use_causal_mask=True, return_attention_scores=True)),
    ("AdditiveAttention", {}, lambda l: l([Q[..., :4], V, V])),
])
def test_matches_keras(name, kwargs, call):
    keras = pytest.importorskip("keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _pair(getattr(L, name)(**kwargs), getattr(keras.layers, name)(**kwargs), call)


def test_grouped_query_attention_names():
    assert L.GroupQueryAttention is L.GroupedQueryAttention


def test_output_mask_is_the_query_mask():
    from deepgpu.layers.base import get_keras_mask
    from deepgpu.tensor import tensor

    q = tensor(Q)
    q._keras_mask = tensor(QM)
    out = L.MultiHeadAttention(2, 3)(q, V)
    np.testing.assert_array_equal(get_keras_mask(out).data_sync(), QM)


def test_embedding_masks_reach_the_attention():
    """Embedding(mask_zero=True) -> MultiHeadAttention: padded keys get no weight, as in Keras."""
    if not hasattr(L, "Embedding"):
        pytest.skip("Embedding is not in this checkout")
    from deepgpu.models import Model

    ids = np.array([[3, 1, 2, 0, 0], [4, 2, 0, 0, 0]], np.int32)
    inp = L.Input((5,), dtype="int32")
    x = L.Embedding(6, 4, mask_zero=True)(inp)
    out, scores = L.MultiHeadAttention(2, 2)(x, x, return_attention_scores=True)
    model = Model(inp, [out, scores])
    _, s = model.predict(ids, verbose=0)
    s = s.data_sync() if hasattr(s, "data_sync") else np.asarray(s)
    keys = ids != 0
    valid = np.broadcast_to(keys[:, None, :, None] & ~keys[:, None, None, :], s.shape)  # real query, padded key
    assert np.all(s[valid] == 0)
    rows = np.broadcast_to(keys[:, None, :], s.shape[:3])
    np.testing.assert_allclose(s.sum(-1)[rows], 1.0, rtol=1e-5)
    # A padded query's row is masked everywhere: all zeros, as Keras 3's masked softmax gives.
    assert np.all(s.sum(-1)[~rows] == 0)


@pytest.mark.parametrize("make,args,kwargs,match", [
    (lambda: L.MultiHeadAttention(2, 3), (Q, V, K[:, :6]), {}, r"value and key must agree.*\(None, 7, 4\).*\(None, 6, 3\)"),
    (lambda: L.MultiHeadAttention(2, 3), (Q, X4), {}, r"same rank"),
    (lambda: L.MultiHeadAttention(2, 3, attention_axes=3), (Q, V), {}, r"attention_axes \(3,\) is out of range"),
    (lambda: L.MultiHeadAttention(2, 3), (Q, V), dict(attention_mask=np.ones((2, 5, 6), bool)),
     r"attention_mask must have shape \(2, 5, 7\).*\(2, 5, 6\)"),
    (lambda: L.MultiHeadAttention(2, 3), (Q, V), dict(attention_mask=np.ones((2, 5, 7), np.float32)),
     "must be bool"),
    (lambda: L.MultiHeadAttention(2, 3), (Q, V), dict(value_mask=np.ones((2, 5), bool)),
     r"value_mask must have shape \(2, 7\)"),
    (lambda: L.MultiHeadAttention(2, 3), (Q, V[:1]), {}, r"same batch size.*query \(2, 5, \d+\), value \(1, 7, \d+\)"),
    (lambda: L.GroupedQueryAttention(3, 4, 2), (Q, V, K[:1]), {}, r"same batch size.*key \(1, 7, \d+\)"),
    (lambda: L.Attention(), ([Q, V],), {}, r"query and key must have the same feature size"),
    (lambda: L.Attention(), ([Q[..., :4], V],), dict(mask=[QM, VM[:, :3]]), r"value_mask must have shape"),
])
def test_bad_input_names_the_layer(make, args, kwargs, match):
    layer = make()
    with pytest.raises(ValueError, match=match) as e:
        layer(*args, **kwargs)
    assert layer.name in str(e.value)


@pytest.mark.parametrize("make,match", [
    (lambda: L.GroupedQueryAttention(4, 6, 4), r"num_query_heads \(6\) must be a multiple of num_key_value_heads \(4\)"),
    (lambda: L.MultiHeadAttention(0, 3), "num_heads must be a positive int"),
    (lambda: L.MultiHeadAttention(2, 3, dropout=1.5), "dropout"),
    (lambda: L.Attention(score_mode="add"), "score_mode"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_attention_ops_gradients():
    from deepgpu import ops
    from deepgpu.testing import check_gradients

    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 3))
    mask = rng.integers(0, 2, (2, 3, 5)).astype(bool)
    mask[..., 0] = True
    check_gradients(lambda q, k, v: ops.dot_product_attention(q, k, v, mask), [q, k, v])
    check_gradients(lambda q, k, v: ops.dot_product_attention(q, k, v, None, is_causal=True, scale=0.7),
                    [q, k[:, :3], v[:, :3]])
    check_gradients(lambda a, b: ops.einsum("abc,cde->abde", a, b), [q, rng.standard_normal((4, 2, 3))])
    check_gradients(lambda a, b: ops.einsum("...b,bc->...c", a, b), [q, rng.standard_normal((4, 2))])


FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "keras")


def test_keras_trained_transformer_loads_and_predicts_as_keras(tmp_path):
    """tests/fixtures/keras/make_transformer_fixture.py: a Transformer classifier trained by Keras 3.15
    (Embedding with mask_zero, MultiHeadAttention, GroupQueryAttention, LayerNormalization,
    RMSNormalization); deepgpu predicts as Keras did, and Keras reads deepgpu's copy back."""
    from deepgpu.io.keras import load_keras, save_keras

    with np.load(os.path.join(FIXTURE, "transformer.npz")) as z:
        x, want = z["x"], z["y"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RMSNormalization drops the mask, with Keras's warning
        model = load_keras(os.path.join(FIXTURE, "transformer.keras"))
        got = model.predict(x, verbose=0)
    got = got.data_sync() if hasattr(got, "data_sync") else np.asarray(got)
    assert np.abs(got - want).max() < 1e-5
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"MultiHeadAttention", "GroupedQueryAttention", "LayerNormalization", "RMSNormalization"} <= kinds
    keras = pytest.importorskip("keras")
    path = str(tmp_path / "again.keras")
    save_keras(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = keras.saving.load_model(path)
        assert np.abs(np.asarray(again.predict(x, verbose=0)) - want).max() < 1e-5


def test_onnx_attention_is_matmul_and_softmax(tmp_path):
    """MultiHeadAttention (causal, with its scores) exports as MatMul / Softmax, run by onnxruntime."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from deepgpu.io.onnx import export_onnx
    from deepgpu.models import Model

    inp = L.Input((5, 6))
    out, scores = L.MultiHeadAttention(2, 3)(inp, inp, use_causal_mask=True, return_attention_scores=True)
    model = Model(inp, [out, scores])
    path = str(tmp_path / "mha.onnx")
    export_onnx(model, path)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"MatMul", "Softmax", "Einsum"} <= ops, ops
    want = [w.data_sync() for w in model.predict(Q, verbose=0)]
    sess = ort.InferenceSession(path)
    got = sess.run(None, {sess.get_inputs()[0].name: Q})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert np.all(np.triu(got[1][0, 0], 1) == 0)  # causal: no weight on later positions


def test_onnx_refuses_masked_grouped_query_attention(tmp_path):
    """MultiHeadAttention's padding masks are exported (tests/test_io_onnx.py); GroupedQueryAttention's
    are refused, naming the layer."""
    from deepgpu.io.onnx import export_onnx
    from deepgpu.models import Model

    if not hasattr(L, "Embedding"):
        pytest.skip("Embedding is not in this checkout")
    pytest.importorskip("onnx")
    inp = L.Input((5,), dtype="int32")
    x = L.Embedding(6, 4, mask_zero=True)(inp)
    model = Model(inp, L.GroupedQueryAttention(2, 2, 1, name="gqa")(x, x))
    with pytest.raises(ValueError, match="'gqa'.*masks"):
        export_onnx(model, str(tmp_path / "m.onnx"))


@pytest.mark.parametrize("sa,sb,ta,tb", [((2, 3, 5, 4), (2, 3, 4, 6), False, False), ((4, 5, 3), (4, 6, 3), False, True),
                                         ((2, 1, 4, 5), (3, 4, 6), True, False), ((6, 5, 4), (4, 7), False, False)])
def test_cpu_stacked_matmul(sa, sb, ta, tb):
    """The CPU backend's stacks of small GEMMs (one BLAS thread each, split over its threads) equal NumPy's."""
    from deepgpu import backends

    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
    want = np.matmul(np.swapaxes(a, -1, -2) if ta else a, np.swapaxes(b, -1, -2) if tb else b)
    got = backends.get("cpu").matmul(a, b, ta, tb)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_call_options_survive_saving(tmp_path):
    """use_causal_mask / return_attention_scores given at the call are part of the saved model
    (native and Keras files), so a reloaded model computes the same."""
    from deepgpu.io.keras import load_keras, save_keras
    from deepgpu.models import Model, load_model

    inp = L.Input((5, 6))
    out, scores = L.MultiHeadAttention(2, 3)(inp, inp, use_causal_mask=True, return_attention_scores=True)
    model = Model(inp, [L.Dense(2)(out), scores])
    want = [w.data_sync() for w in model.predict(Q, verbose=0)]
    assert np.all(np.triu(want[1][0, 0], 1) == 0)
    model.save(str(tmp_path / "m.dgm"))
    save_keras(model, str(tmp_path / "m.keras"))
    for again in (load_model(str(tmp_path / "m.dgm")), load_keras(str(tmp_path / "m.keras"))):
        for g, w in zip(again.predict(Q, verbose=0), want):
            np.testing.assert_allclose(g.data_sync(), w, rtol=1e-6, atol=1e-7)
