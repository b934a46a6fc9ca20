"""Recurrent layers (deepgpu/layers/recurrent.py) through the conformance harness, and their semantics:
masks against hand-computed steps, the cell protocol, stateful layers, bad input, gradients of the cells."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers as L
from deepgpu import ops
from deepgpu.autograd import backward, enable_grad
from deepgpu.layers.base import Input, get_keras_mask
from deepgpu.tensor import tensor
from deepgpu.testing import LayerCase as C


def _spec(cls, **config):
    return {"class_name": cls, "config": config}


_GRU_TFJS = "TF.js's GRU has only reset_after=False"
_NO_CONV_LSTM = "ONNX has no convolutional LSTM op"
MASK = np.array([[True, True, False], [False, True, True]])  # post- and pre-padding
X = (2, 3, 2)
CASES = [
    C(L.SimpleRNN, dict(units=2), X, (None, 2), expected_num_params=2 * 2 + 2 * 2 + 2),
    C(L.SimpleRNN, dict(units=3, activation="relu", return_sequences=True, go_backwards=True), X, (None, 3, 3)),
    C(L.LSTM, dict(units=2), X, (None, 2), expected_num_params=4 * (2 * 2 + 2 * 2 + 2)),
    C(L.LSTM, dict(units=2, return_sequences=True, use_bias=False, unit_forget_bias=False), X, (None, 3, 2),
      expected_num_weights=2),
    C(L.LSTM, dict(units=2, return_state=True, go_backwards=True), X, [(None, 2), (None, 2), (None, 2)]),
    C(L.LSTM, dict(units=2, dropout=0.3, recurrent_dropout=0.3), X, (None, 2), training="random"),
    C(L.GRU, dict(units=2), X, (None, 2), expected_num_params=3 * (2 * 2 + 2 * 2) + 2 * 3 * 2,
      unsupported={"tfjs": _GRU_TFJS}),
    C(L.GRU, dict(units=2, reset_after=False, return_sequences=True), X, (None, 3, 2),
      expected_num_params=3 * (2 * 2 + 2 * 2 + 2)),
    C(L.GRU, dict(units=2, reset_after=False, recurrent_activation="tfjs_hard_sigmoid", return_state=True), X,
      [(None, 2), (None, 2)], unsupported={"keras": "Keras 3 has no TF.js-style hard_sigmoid"}),
    C(L.RNN, dict(cell=_spec("LSTMCell", units=2), return_sequences=True), X, (None, 3, 2)),
    C(L.RNN, dict(cell=_spec("GRUCell", units=2, reset_after=False)), X, (None, 2)),
    C(L.RNN, dict(cell=_spec("SimpleRNNCell", units=2), go_backwards=True), X, (None, 2)),
    C(L.RNN, dict(cell=_spec("StackedRNNCells", cells=[_spec("LSTMCell", units=3), _spec("SimpleRNNCell", units=2)]),
                  return_sequences=True), X, (None, 3, 2),
      unsupported={"onnx": "one ONNX op per cell"}),
    C(L.Bidirectional, dict(layer=_spec("LSTM", units=2, return_sequences=True)), X, (None, 3, 4)),
    C(L.Bidirectional, dict(layer=_spec("GRU", units=2, reset_after=False), merge_mode="sum"), X, (None, 2)),
    C(L.Bidirectional, dict(layer=_spec("SimpleRNN", units=2, return_sequences=True), merge_mode="ave"), X,
      (None, 3, 2)),
    C(L.Bidirectional, dict(layer=_spec("LSTM", units=2), merge_mode="mul"), X, (None, 2)),
    C(L.Bidirectional, dict(layer=_spec("SimpleRNN", units=2), merge_mode=None), X, [(None, 2), (None, 2)]),
    C(L.Bidirectional, dict(layer=_spec("LSTM", units=2), backward_layer=_spec("GRU", units=2, go_backwards=True)),
      X, (None, 4), unsupported={"tfjs": "TF.js's Bidirectional takes no backward_layer",
                                 "onnx": "one ONNX op for both directions"}),
    C(L.TimeDistributed, dict(layer=_spec("Dense", units=3, activation="relu")), X, (None, 3, 3)),
    C(L.ConvLSTM2D, dict(filters=2, kernel_size=2), (2, 3, 4, 4, 2), (None, 3, 3, 2),
      expected_num_params=2 * 2 * 2 * 8 + 2 * 2 * 2 * 8 + 8, unsupported={"onnx": _NO_CONV_LSTM}),
    C(L.ConvLSTM2D, dict(filters=2, kernel_size=3, padding="same", strides=2, return_sequences=True), (1, 2, 4, 3, 1),
      (None, 2, 2, 2, 2), unsupported={"onnx": _NO_CONV_LSTM}),
    # Masks: padded steps keep the state and repeat the output (Keras's semantics), so the values
    # under the mask cannot change the outputs.
    C(L.LSTM, dict(units=2, return_sequences=True), X, (None, 3, 2), input_mask=MASK, expected_output_mask=MASK,
      id="masked-sequences"),
    C(L.GRU, dict(units=2, reset_after=False), X, (None, 2), input_mask=MASK, id="masked-last"),
    C(L.Bidirectional, dict(layer=_spec("LSTM", units=2, return_sequences=True)), X, (None, 3, 4), input_mask=MASK,
      expected_output_mask=MASK, id="masked-bidirectional"),
    C(L.TimeDistributed, dict(layer=_spec("Dense", units=2)), X, (None, 3, 2), input_mask=MASK,
      expected_output_mask=MASK, mask_hides_inputs=False, id="masked-passthrough"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


# ---------------------------------------------------------- hand-computed
def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _lstm_ref(x, k, rk, b, mask=None, backwards=False):
    n, u = x.shape[0], rk.shape[0]
    h, c, outs = np.zeros((n, u)), np.zeros((n, u)), []
    prev = np.zeros((n, u))
    steps = range(x.shape[1] - 1, -1, -1) if backwards else range(x.shape[1])
    for t in steps:
        z = x[:, t] @ k + h @ rk + b
        i, f, g, o = np.split(z, 4, axis=-1)
        c2 = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h2 = _sigmoid(o) * np.tanh(c2)
        if mask is not None:
            m = mask[:, t:t + 1]
            h2, c2, out = np.where(m, h2, h), np.where(m, c2, c), np.where(m, h2, prev)
        else:
            out = h2
        h, c, prev = h2, c2, out
        outs.append(out)
    return np.stack(outs, 1), h, c


def test_lstm_matches_the_equations_with_masks_and_go_backwards():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [0, 1, 1, 1]], bool)
    for backwards in (False, True):
        layer = L.LSTM(2, return_sequences=True, return_state=True, go_backwards=backwards)
        xt = tensor(x)
        xt._keras_mask = tensor(mask)
        seq, h, c = layer(xt)
        k, rk, b = layer.get_weights()
        want_seq, want_h, want_c = _lstm_ref(x.astype(np.float64), k, rk, b, mask, backwards)
        np.testing.assert_allclose(seq.data_sync(), want_seq, atol=1e-6)
        np.testing.assert_allclose(h.data_sync(), want_h, atol=1e-6)
        np.testing.assert_allclose(c.data_sync(), want_c, atol=1e-6)
        np.testing.assert_array_equal(get_keras_mask(seq).data_sync(), mask)
        assert get_keras_mask(h) is None


def test_unit_forget_bias_and_orthogonal_recurrent_kernel():
    layer = L.LSTM(3)
    layer(np.zeros((1, 2, 4), "float32"))
    k, rk, b = layer.get_weights()
    np.testing.assert_array_equal(b, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(rk @ rk.T, np.eye(3), atol=1e-5)  # [3, 12]: orthonormal rows
    assert L.GRU(2).cell._bias_shape() == (2, 6) and L.GRU(2, reset_after=False).cell._bias_shape() == (6,)


def test_embedding_mask_reaches_the_lstm_in_a_model_and_the_loss():
    ids = np.array([[3, 1, 0, 0], [2, 2, 4, 0]])
    inp = Input((4,), dtype="int32")
    emb = L.Embedding(5, 3, mask_zero=True)
    seq = L.LSTM(2, return_sequences=True)
    out = L.TimeDistributed(L.Dense(1))(seq(emb(inp)))
    assert out._keras_mask is not None and out._keras_mask.shape == (None, 4)
    model = dg.Model(inp, out)
    y = model(ids)
    np.testing.assert_array_equal(get_keras_mask(y).data_sync(), ids != 0)
    # the padded steps repeat the last real output
    yv = y.data_sync()
    np.testing.assert_array_equal(yv[0, 2], yv[0, 1])
    np.testing.assert_array_equal(yv[1, 3], yv[1, 2])
    # the loss is the mean over real steps only: padded targets do not count
    model.compile(optimizer="sgd", loss="mse")
    target = np.zeros((2, 4, 1), "float32")
    noisy = target.copy()
    noisy[ids == 0] = 100.0
    assert model.evaluate(ids, target, verbose=0) == pytest.approx(model.evaluate(ids, noisy, verbose=0))
    want = float(np.mean(yv[ids != 0] ** 2))
    assert model.evaluate(ids, target, verbose=0) == pytest.approx(want, rel=1e-5)


def test_sequential_text_classifier_trains():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 6, (32, 5))
    x[:, 3:] = 0
    y = (x[:, 0] > 3).astype("float32")
    model = dg.Sequential([L.Input((5,), dtype="int32"), L.Embedding(6, 4, mask_zero=True),
                           L.Bidirectional(L.GRU(4)), L.Dense(1, activation="sigmoid")])
    model.compile(optimizer=dg.optimizers.Adam(0.05), loss="binary_crossentropy")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=15, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.7 * first


# --------------------------------------------------------------- protocol
class MinimalRNNCell(L.Layer):
    """The Keras documentation's example cell: state_size and call(inputs, states)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units))
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (self.units, self.units))

    def call(self, inputs, states):
        prev = states[0]  # as Keras's example reads it: the RNN gives a list even for one state
        out = ops.matmul(inputs, self.kernel) + ops.matmul(prev, self.recurrent_kernel)
        return out, [out]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_user_written_cell_and_stacks():
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype("float32")
    layer = L.RNN(MinimalRNNCell(3), return_sequences=True)
    y = layer(x).data_sync()
    k, rk = layer.get_weights()
    h = np.zeros((2, 3))
    for t in range(3):
        h = x[:, t] @ k + h @ rk
        np.testing.assert_allclose(y[:, t], h, rtol=1e-5, atol=1e-6)
    stacked = L.RNN([MinimalRNNCell(3), L.LSTMCell(2)], return_state=True)
    out, s1, h2, c2 = stacked(x)
    assert out.shape == (2, 2) and s1.shape == (2, 3) and c2.shape == (2, 2)
    np.testing.assert_array_equal(out.data_sync(), h2.data_sync())
    dg.register_serializable()(MinimalRNNCell)
    clone = L.RNN.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).data_sync(), y)
    with pytest.raises(ValueError, match="state_size"):
        L.RNN(L.Dense(2))


def test_initial_state_and_its_errors():
    x = np.ones((2, 3, 2), "float32")
    layer = L.LSTM(2, name="enc")
    h0, c0 = np.full((2, 2), 0.5, "float32"), np.full((2, 2), -0.5, "float32")
    a = layer(x, initial_state=[h0, c0]).data_sync()
    b = layer(x).data_sync()
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match=r"'enc'.*initial_state must be 2 tensor\(s\) of shape\(s\) \[\(2, 2\), "
                                         r"\(2, 2\)\].*got 1"):
        layer(x, initial_state=[h0])
    with pytest.raises(ValueError, match=r"'enc'.*got 2 of shape\(s\) \[\(2, 3\), \(2, 2\)\]"):
        layer(x, initial_state=[np.zeros((2, 3), "float32"), c0])


def test_stateful_layer_carries_state_and_refuses_another_batch_size():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 3)).astype("float32")
    whole = L.GRU(2, reset_after=False)
    whole(x)
    part = L.GRU(2, reset_after=False, stateful=True, name="carry")
    part(x[:, :3])
    part.set_weights(whole.get_weights())
    part.reset_states()
    part(x[:, :3])
    np.testing.assert_allclose(part(x[:, 3:]).data_sync(), whole(x).data_sync(), rtol=1e-5, atol=1e-6)
    before = [v.data_sync().copy() for v in part.states]
    with pytest.raises(ValueError, match=r"'carry'.*stateful.*batches of 2.*a batch of 3"):
        part(rng.standard_normal((3, 3, 3)).astype("float32"))
    for v, b in zip(part.states, before):
        np.testing.assert_array_equal(v.data_sync(), b)
    part.reset_states()
    assert not part.states[0].data_sync().any()
    part(x[:, :3])
    with pytest.raises(AttributeError, match="not stateful"):
        whole.reset_states()


def test_bad_masks_and_ragged_sequences_are_refused_naming_the_layer():
    layer = L.SimpleRNN(2, name="rnn_a")
    x = np.ones((2, 3, 2), "float32")
    with pytest.raises(ValueError, match=r"'rnn_a'.*mask must have shape \(batch, time\) = \(2, 3\).*\(2, 4\)"):
        layer(x, mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"'rnn_a'.*ragged.*lengths 1, 2"):
        layer([[[1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]]])
    with pytest.raises(ValueError, match="'rnn_a'.*min_ndim=3"):
        layer(np.ones((2, 3), "float32"))


def test_gru_reset_after_mismatch_is_named_and_changes_nothing():
    keras_style = L.GRU(2, name="g")  # reset_after=True: bias [2, 6]
    keras_style(np.ones((1, 2, 3), "float32"))
    tfjs_style = L.GRU(2, reset_after=False)
    tfjs_style(np.ones((1, 2, 3), "float32"))
    before = keras_style.get_weights()
    with pytest.raises(ValueError, match=r"'g'.*reset_after=True.*\(2, 6\).*\(6,\).*reset_after=False"):
        keras_style.set_weights(tfjs_style.get_weights())
    for a, b in zip(keras_style.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_symbolic_initial_state_in_a_functional_encoder_decoder():
    enc_in, dec_in = Input((3, 2)), Input((4, 2))
    _, h, c = L.LSTM(3, return_state=True)(enc_in)
    dec = L.LSTM(3, return_sequences=True)
    y = dec(dec_in, initial_state=[h, c])
    model = dg.Model([enc_in, dec_in], y)
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 3, 2)).astype("float32"), rng.standard_normal((2, 4, 2)).astype("float32")
    out = model.predict([a, b], verbose=0)
    assert out.shape == (2, 4, 3)
    enc = model.layers[2] if isinstance(model.layers[2], L.LSTM) and not model.layers[2].return_sequences \
        else [l for l in model.layers if isinstance(l, L.LSTM) and l.return_state][0]
    _, h1, c1 = enc(a)
    np.testing.assert_allclose(out, dec(b, initial_state=[h1, c1]).data_sync(), rtol=1e-5, atol=1e-6)


def test_symbolic_initial_state_of_the_wrong_size_names_the_layer():
    """In a functional graph the state sizes are checked when the node is made, not at predict."""
    x = Input((3, 2))
    with pytest.raises(ValueError, match=r"'dec' \(LSTM\): initial_state must be 2 .*\(None, 3\), \(None, 3\).*"
                                         r"got 2 of shape\(s\) \(None, 3\), \(None, 4\)"):
        L.LSTM(3, name="dec")(x, initial_state=[Input((3,)), Input((4,))])
    with pytest.raises(ValueError, match=r"'g' \(GRU\): initial_state must be 1 .*got 2"):
        L.GRU(3, name="g")(x, initial_state=[Input((3,)), Input((3,))])
    with pytest.raises(ValueError, match=r"'bi' \(Bidirectional\): layer 'backward_.*got 1 of shape\(s\) \(None, 5\)"):
        L.Bidirectional(L.GRU(3), name="bi")(x, initial_state=[Input((3,)), Input((5,))])
    with pytest.raises(ValueError, match=r"'bi2' \(Bidirectional\): initial_state must hold 2 tensors.*got 3"):
        L.Bidirectional(L.GRU(3), name="bi2")(x, initial_state=[Input((3,))] * 3)


# --------------------------------------------------------------- gradients
@pytest.mark.parametrize("cell", [L.SimpleRNNCell(2), L.LSTMCell(2), L.GRUCell(2), L.GRUCell(2, reset_after=False)],
                         ids=["simple", "lstm", "gru", "gru_reset_before"])
def test_cell_gradients_by_finite_differences(cell):
    """One step of each cell, float64 on the NumPy backend: input, states and every weight."""
    cell = type(cell).from_config({**cell.get_config(), "dtype": "float64"})
    rng = np.random.default_rng(5)
    x = tensor(rng.standard_normal((2, 3)), "float64")
    sizes = cell.state_size if isinstance(cell.state_size, list) else [cell.state_size]
    states = [tensor(rng.standard_normal((2, s)), "float64") for s in sizes]
    cell.build((None, 3))
    for w in cell.weights:
        w.assign(rng.uniform(-0.5, 0.5, w.shape))
    srcs = [x] + states
    for s in srcs:
        s.requires_grad = True
    r = rng.standard_normal((2, cell.units))
    rs = [rng.standard_normal((2, s)) for s in sizes]

    def f():
        out, new = cell.call(x, states if len(states) > 1 else states[0])
        new = new if isinstance(new, list) else [new]
        total = ops.sum(out * tensor(r, "float64"))
        for n, rr in zip(new, rs):
            total = total + ops.sum(n * tensor(rr, "float64"))
        return total

    with enable_grad():
        total = f()
    params = srcs + cell.trainable_weights
    grads = backward(total, params)
    eps = 1e-6
    for p, g in zip(params, grads):
        flat = p.data.reshape(-1)
        num = np.empty(flat.size)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            plus = float(f().data_sync())
            flat[i] = old - eps
            minus = float(f().data_sync())
            flat[i] = old
            num[i] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(np.asarray(g).reshape(-1), num, rtol=1e-6, atol=1e-8)


def test_encoder_decoder_states_survive_native_and_tfjs_files(tmp_path):
    from deepgpu.io import load_model, load_tfjs, save_model, save_tfjs
    enc_in, dec_in = Input((3, 2)), Input((4, 2))
    _, h, c = L.LSTM(3, return_state=True)(enc_in)
    model = dg.Model([enc_in, dec_in], L.LSTM(3, return_sequences=True)(dec_in, initial_state=[h, c]))
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((2, 3, 2)).astype("float32"), rng.standard_normal((2, 4, 2)).astype("float32")]
    want = model.predict(xs, verbose=0).data_sync()
    save_model(model, str(tmp_path / "m.zip"))
    np.testing.assert_allclose(load_model(str(tmp_path / "m.zip")).predict(xs, verbose=0).data_sync(), want)
    save_tfjs(model, str(tmp_path / "tfjs"))
    np.testing.assert_allclose(load_tfjs(str(tmp_path / "tfjs")).predict(xs, verbose=0).data_sync(), want)


def test_conv_lstm2d_matches_the_equations_with_a_mask():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 4, 1)).astype("float32")
    mask = np.array([[True, True, False], [False, True, True]])
    layer = L.ConvLSTM2D(2, 3, padding="same", return_sequences=True)
    xt = tensor(x)
    xt._keras_mask = tensor(mask)
    y = layer(xt).data_sync()
    k, rk, b = layer.get_weights()

    def conv_same(a, w):  # a [N, H, W, C], w [3, 3, C, O], stride 1, 'same'
        p = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return sum(np.einsum("nhwc,co->nhwo", p[:, i:i + a.shape[1], j:j + a.shape[2]], w[i, j])
                   for i in range(3) for j in range(3))

    h = c = prev = np.zeros((2, 4, 4, 2))
    for t in range(3):
        z = conv_same(x[:, t].astype(np.float64), k) + conv_same(h, rk) + b
        i, f, g, o = np.split(z, 4, axis=-1)
        c2 = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h2 = _sigmoid(o) * np.tanh(c2)
        m = mask[:, t, None, None, None]
        h, c, prev = np.where(m, h2, h), np.where(m, c2, c), np.where(m, h2, prev)
        np.testing.assert_allclose(y[:, t], prev, atol=1e-5)


def test_gru_reset_after_mismatch_in_files_names_the_fix(tmp_path):
    import json

    from deepgpu.io import load_tfjs, save_tfjs
    tfjs_style = dg.Sequential([Input((3, 2)), L.GRU(2, reset_after=False, name="gru")])
    keras_style = dg.Sequential([Input((3, 2)), L.GRU(2, name="gru")])
    before = keras_style.get_weights()
    pytest.importorskip("h5py")
    tfjs_style.save_weights(str(tmp_path / "w.weights.h5"))
    with pytest.raises(ValueError, match=r"\(6,\).*'gru/bias'.*build the layer with reset_after=False"):
        keras_style.load_weights(str(tmp_path / "w.weights.h5"))
    for a, b in zip(keras_style.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    save_tfjs(tfjs_style, str(tmp_path / "t"))
    path = tmp_path / "t" / "model.json"
    doc = json.loads(path.read_text())
    doc["modelTopology"]["model_config"]["config"]["layers"][1]["config"]["reset_after"] = True
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"'gru/bias' has shape \(6,\).*build the layer with reset_after=False"):
        load_tfjs(str(tmp_path / "t"))


def test_bidirectional_takes_symbolic_initial_states():
    enc_in, dec_in = Input((3, 2)), Input((4, 2))
    outs = L.Bidirectional(L.GRU(3, reset_after=False, return_state=True))(enc_in)
    assert len(outs) == 3  # merged output, forward state, backward state
    bi = L.Bidirectional(L.GRU(3, reset_after=False, return_sequences=True))
    model = dg.Model([enc_in, dec_in], bi(dec_in, initial_state=outs[1:]))
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 3, 2)).astype("float32"), rng.standard_normal((2, 4, 2)).astype("float32")
    got = model.predict([a, b], verbose=0).data_sync()
    enc = [layer for layer in model.layers if isinstance(layer, L.Bidirectional) and layer.return_state][0]
    _, hf, hb = enc(a)
    np.testing.assert_allclose(got, bi(b, initial_state=[hf, hb]).data_sync(), rtol=1e-5, atol=1e-6)
    assert got.shape == (2, 4, 6)


@pytest.mark.parametrize("cls,step", [(L.LSTM, "lstm_step"), (L.GRU, "gru_step")], ids=["LSTM", "GRU"])
def test_one_gemm_projects_every_step_and_each_step_is_a_gemm_and_one_fused_cell(monkeypatch, cls, step):
    """Issue 16's speed promise, counted at the backend: forward, one dense over [batch * time, in]
    and per step one [batch, units] GEMM and one fused cell; backward, one fused cell gradient and
    the recurrent GEMMs per step, and two GEMMs for the projection's input and kernel gradients."""
    from deepgpu import backends
    B = backends.current()
    calls = []
    for name in ("dense", "matmul", step, step + "_grad"):
        def spy(*a, _f=getattr(B, name), _n=name, **k):
            calls.append((_n, a[0].shape[0] if a[0] is not None else None))
            return _f(*a, **k)
        monkeypatch.setattr(B, name, spy)
    n, t = 3, 5
    x = dg.Variable(np.random.default_rng(5).standard_normal((n, t, 2)).astype("float32"))
    layer = cls(4)
    layer(x)
    calls.clear()
    y = layer(x)
    assert sorted(calls) == sorted([("dense", n * t)] + [("matmul", n), (step, n)] * t)
    calls.clear()
    backward(ops.sum(y * y), layer.trainable_weights + [x])
    grads = [c for c in calls if c[0] == step + "_grad"]
    big = [c for c in calls if c[0] == "matmul" and c[1] == n * t]
    # Per step the recurrent kernel's gradient and the previous state's, except at the first
    # step, whose zero initial state asks for no gradient.
    assert len(grads) == t and len(big) == 2 and len(calls) == t + (2 * t - 1) + 2


def test_a_recurrent_training_step_reads_nothing_back():
    """What a CUDA graph recording needs (tests/test_graph_step.py's guard, on the CPU): Embedding with
    masks, LSTM with dropout and Bidirectional GRU train without a host read."""
    from deepgpu import backends, losses
    from deepgpu.tensor import Tensor
    model = dg.Sequential([L.Input((5,), dtype="int32"), L.Embedding(7, 4, mask_zero=True),
                           L.LSTM(3, return_sequences=True, dropout=0.2, recurrent_dropout=0.2),
                           L.Bidirectional(L.GRU(2)), L.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(9)
    x = rng.integers(0, 7, (4, 5)).astype("int32")
    y = rng.integers(0, 2, (4,)).astype("int32")
    B = backends.current()
    xb, yb = [Tensor(B.asarray(x), B)], [Tensor(B.asarray(y), B)]
    model._train_batch(xb, yb, None)
    B.capturing = True
    try:
        with losses.labels_checked():
            model._train_batch(xb, yb, None)
    finally:
        B.capturing = False
    assert model.optimizer.iterations == 2
