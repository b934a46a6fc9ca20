"""deepgpu.plotting: training curves and model graphs as images."""
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import deepgpu as dg  # noqa: E402
from deepgpu.plotting import _graph, _layout, plot_history, plot_model  # noqa: E402

HISTORY = {"loss": [1.0, 0.6, 0.4], "accuracy": [0.5, 0.7, 0.8],
           "val_loss": [1.1, 0.8, 0.7], "val_accuracy": [0.45, 0.6, 0.7]}


def read_png(path):
    import matplotlib.image as mpimg
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


class History:
    def __init__(self, h):
        self.history = h


def test_plot_history_writes_png(tmp_path):
    p = tmp_path / "history.png"
    fig = plot_history(History(HISTORY), p)
    img = read_png(p)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05                       # something was drawn
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["loss", "accuracy"]
    assert [line.get_label() for line in axes[0].get_lines()] == ["training", "validation"]
    np.testing.assert_allclose(axes[1].get_lines()[1].get_ydata(), HISTORY["val_accuracy"])
    assert list(tmp_path.iterdir()) == [p]                 # no temporary file left over


def test_plot_history_options(tmp_path):
    fig = plot_history(HISTORY, metrics="accuracy")
    assert [a.get_title() for a in fig.get_axes()] == ["accuracy"]
    fig = plot_history({"loss": [3, 2, 1]}, tmp_path / "h.svg")
    assert len(fig.get_axes()[0].get_lines()) == 1
    assert (tmp_path / "h.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(KeyError, match="no \\['mae'\\] in the history"):
        plot_history(HISTORY, metrics=["mae"])
    with pytest.raises(TypeError, match="History"):
        plot_history([1, 2])


class FakeLayer:
    def __init__(self, name, shape, inbound=()):
        self.name, self.output_shape, self.inbound_layer_names = name, shape, list(inbound)


class InputLayer(FakeLayer):
    pass


class Conv2D(FakeLayer):
    pass


class Add(FakeLayer):
    pass


class Dense(FakeLayer):
    pass


class FakeModel:
    def __init__(self, layers):
        self.layers = layers


def branching_model():
    return FakeModel([
        InputLayer("in", (None, 8, 8, 1)),
        Conv2D("left", (None, 8, 8, 4), ["in"]),
        Conv2D("right", (None, 8, 8, 4), ["in"]),
        Conv2D("right2", (None, 8, 8, 4), ["right"]),
        Add("add", (None, 8, 8, 4), ["left", "right2"]),
        Dense("out", (None, 10), ["add"]),
    ])


def test_graph_and_layout():
    m = branching_model()
    g = _graph(m)
    assert g[0] == ("in", "InputLayer", (None, 8, 8, 1), [])
    assert g[4] == ("add", "Add", (None, 8, 8, 4), ["left", "right2"])
    pos = _layout(g)
    depth = {n: d for n, (d, _, _) in pos.items()}
    assert depth == {"in": 0, "left": 1, "right": 1, "right2": 2, "add": 3, "out": 4}
    assert pos["left"][1] != pos["right"][1] and pos["left"][2] == 2   # side by side


def test_plot_model_writes_png(tmp_path):
    p = tmp_path / "model.png"
    fig = plot_model(branching_model(), p)
    img = read_png(p)
    assert img.shape[0] > img.shape[1] * 0.8               # taller than wide: 5 rows, 2 columns
    texts = [t.get_text() for t in fig.get_axes()[0].texts if t.get_text()]
    assert "add\nAdd\n(None, 8, 8, 4)" in texts and len(texts) == 6
    # One arrow per inbound connection.
    arrows = [t for t in fig.get_axes()[0].texts if type(t).__name__ == "Annotation"]
    assert len(arrows) == 6
    fig = plot_model(branching_model(), None, show_shapes=False)
    assert "add\nAdd" in [t.get_text() for t in fig.get_axes()[0].texts]


def test_plot_model_chain_without_connections(tmp_path):
    # A model whose layers give no inbound names is drawn as a chain.
    m = FakeModel([Dense("a", (None, 4)), Dense("b", [(None, 2), (None, 3)])])
    fig = plot_model(m, tmp_path / "chain.png")
    texts = [t.get_text() for t in fig.get_axes()[0].texts]
    assert "b\nDense\n(None, 2), (None, 3)" in texts
    read_png(tmp_path / "chain.png")


def test_plot_model_real_functional_model(tmp_path):
    layers = pytest.importorskip("deepgpu.layers")
    inp = dg.Input(shape=(6,))
    a = layers.Dense(4)(inp)
    b = layers.Dense(4)(inp)
    out = layers.Add()([a, b])
    model = dg.Model(inp, out)
    g = _graph(model)
    assert sorted(g[-1][3]) == sorted([model.layers[1].name, model.layers[2].name])
    plot_model(model, tmp_path / "m.png")
    read_png(tmp_path / "m.png")


def test_top_level_names(tmp_path):
    assert dg.plot_history is plot_history and dg.plot_model is plot_model


def test_without_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "deepgpu\[plot\]"'):
        plot_history(HISTORY, "x.png")
