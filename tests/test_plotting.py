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


def _segments(ax):
    """Every straight piece of every drawn edge: the lines' pieces and the arrows."""
    segs = []
    for line in ax.lines:
        xy = np.column_stack(line.get_data())
        segs += [(xy[i], xy[i + 1]) for i in range(len(xy) - 1)]
    for t in ax.texts:
        if type(t).__name__ == "Annotation":
            segs.append((np.asarray(t.xyann, float), np.asarray(t.xy, float)))
    return segs


def _crossings(ax):
    boxes = [(p.get_x(), p.get_y(), p.get_x() + p.get_width(), p.get_y() + p.get_height()) for p in ax.patches]
    hits = 0
    for a, b in _segments(ax):
        pts = a + np.linspace(0, 1, 200)[:, None] * (b - a)
        for x0, y0, x1, y1 in boxes:
            inside = (pts[:, 0] > x0 + 1e-3) & (pts[:, 0] < x1 - 1e-3) & (pts[:, 1] > y0 + 1e-3) & \
                (pts[:, 1] < y1 - 1e-3)
            hits += bool(inside.any())
    return hits


def skip_model():
    # "in" feeds every later layer: edges that skip one, two and three ranks past boxes in their way.
    return FakeModel([Dense("in", (None, 4)), Dense("a", (None, 4), ["in"]), Dense("b", (None, 4), ["a", "in"]),
                      Dense("c", (None, 4), ["b", "in"]), Dense("d", (None, 4), ["c", "in", "a"])])


@pytest.mark.parametrize("rankdir", ["TB", "LR", "BT", "RL"])
def test_edges_never_cross_a_box(rankdir):
    for model in (branching_model(), skip_model()):
        fig = plot_model(model, None, rankdir=rankdir)
        ax = fig.get_axes()[0]
        assert _crossings(ax) == 0
        arrows = [t for t in ax.texts if type(t).__name__ == "Annotation"]
        assert len(arrows) == sum(len(g[3]) for g in _graph(model))  # one arrowhead per connection


def test_rankdir_and_show_layer_names(tmp_path):
    fig = plot_model(skip_model(), None, rankdir="LR", show_layer_names=False)
    ax = fig.get_axes()[0]
    centres = {t.get_text(): t.get_position() for t in ax.texts if t.get_text()}
    assert "Dense\n(None, 4)" in centres and not any(k.startswith("in\n") for k in centres)
    chain = FakeModel([Dense(n, (None, 4), [p] if p else []) for n, p in zip("pqr", ["", "p", "q"])])
    patches = plot_model(chain, None, rankdir="LR").get_axes()[0].patches
    xs = [p.get_x() for p in patches]
    assert xs == sorted(xs) and len(set(np.round(xs, 6))) == 3  # three ranks left to right,
    assert len({round(p.get_y(), 6) for p in patches}) == 1     # in one lane
    with pytest.raises(ValueError, match="rankdir must be one of TB, LR, BT, RL, got 'XY'"):
        plot_model(skip_model(), None, rankdir="XY")
    dg.utils.plot_model(branching_model(), to_file=str(tmp_path / "k.png"), show_shapes=True,
                        show_layer_names=True, rankdir="LR", expand_nested=True, dpi=60)
    img = read_png(tmp_path / "k.png")
    assert img.shape[1] > img.shape[0]  # left to right: wider than tall


def test_expand_nested(tmp_path):
    L = dg.layers
    inner = dg.Sequential([L.Input((4,)), L.Dense(3, name="i1"), L.Dense(2, name="i2")], name="inner")
    fi = dg.Input((2,))
    fm = dg.Model(fi, L.Add(name="fadd")([L.Dense(2, name="fa")(fi), L.Dense(2, name="fb")(fi)]), name="fm")
    x = dg.Input((4,))
    out = L.Dense(1, name="post")(fm(inner(L.Dense(4, name="pre")(x))))
    m = dg.Model(x, out)
    assert [g[0] for g in _graph(m)][1:] == ["pre", "inner", "fm", "post"]
    g = {n: ins for n, _, _, ins in _graph(m, expand_nested=True)}
    assert g["inner/i1"] == ["pre"] and g["inner/i2"] == ["inner/i1"]
    assert g["fm/fa"] == g["fm/fb"] == ["inner/i2"] and sorted(g["fm/fadd"]) == ["fm/fa", "fm/fb"]
    assert g["post"] == ["fm/fadd"] and "inner" not in g and "fm" not in g
    fig = dg.utils.plot_model(m, to_file=str(tmp_path / "n.png"), expand_nested=True)
    assert "fm/fadd\nAdd" in [t.get_text() for t in fig.get_axes()[0].texts]
    assert _crossings(fig.get_axes()[0]) == 0
