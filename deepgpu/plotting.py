"""Pictures: training curves and model graphs, drawn with matplotlib.

matplotlib is an optional extra (``pip install "deepgpu[plot]"``), imported
only when a function here is called. With a ``path`` the figure is drawn
with the non-interactive Agg canvas (no display needed) and saved there.

``plot_model`` reads a model through a small interface: ``model.layers``
(a list in topological order), and on each layer ``name``, its class name,
``output_shape`` (a tuple with None for the batch, or a list of tuples) and
``inbound_layer_names`` (the names of the layers whose outputs it takes; the
model side must provide it, [] or absent for input layers).
"""
from __future__ import annotations

import os

__all__ = ["plot_history", "plot_model"]


def _pyplot_free():
    """matplotlib's Figure and Agg canvas, without touching pyplot's global state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "deepgpu's plots need matplotlib; install the optional extra with: "
            "pip install \"deepgpu[plot]\" (or pip install matplotlib)") from None
    return Figure, FigureCanvasAgg


def _new_figure(path, figsize):
    """A Figure: Agg-backed when saving to ``path``, else a pyplot figure (so it can show)."""
    Figure, Canvas = _pyplot_free()
    if path is not None:
        fig = Figure(figsize=figsize)
        Canvas(fig)
        return fig
    import matplotlib.pyplot as plt
    return plt.figure(figsize=figsize)


def _save(fig, path, dpi=100):
    if path is None or not _main_rank():
        return
    path = os.fspath(path)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext or '.png'}"
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)


def _main_rank():
    """False on the ranks other than 0 of a ``deepgpu.distributed`` job: rank 0 alone writes the image
    (as it alone saves models and checkpoints)."""
    from . import distributed
    return distributed._COMM is None or distributed._COMM.rank == 0


# ------------------------------------------------------------------ history


def _history_dict(history):
    h = getattr(history, "history", history)
    if not isinstance(h, dict):
        raise TypeError(f"plot_history: expected a History (with .history) or a dict of lists, "
                        f"got {type(history).__name__}")
    return {k: [float(v) for v in vals] for k, vals in h.items()}


def plot_history(history, path=None, metrics=None):
    """Plot loss and metrics per epoch, training and validation, one subplot each.

    history: the History that ``fit`` returns (its ``.history`` dict) or a
    dict ``{"loss": [...], "val_loss": [...], "accuracy": [...], ...}``.
    metrics: names to plot (default: every key without the ``val_`` prefix,
    loss first); each subplot shows the training curve and, when present,
    its ``val_`` curve. path: where to save the image (PNG, SVG, PDF by its
    extension; in a ``deepgpu.distributed`` job rank 0 alone writes it); None
    to only return the figure. Returns the matplotlib Figure.
    """
    h = _history_dict(history)
    if metrics is None:
        names = [k for k in h if not k.startswith("val_")]
        names += [k[4:] for k in h if k.startswith("val_") and k[4:] not in h]
        names.sort(key=lambda k: (k != "loss", list(h).index(k) if k in h else len(h)))
    else:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [m for m in names if m not in h and "val_" + m not in h]
        if unknown:
            raise KeyError(f"plot_history: no {unknown} in the history; it has {sorted(h)}")
    if not names:
        raise ValueError("plot_history: the history is empty")
    fig = _new_figure(path, (5 * min(len(names), 3), 3.6 * ((len(names) + 2) // 3)))
    cols = min(len(names), 3)
    rows = (len(names) + cols - 1) // cols
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        for key, label, style in ((name, "training", "-o"), ("val_" + name, "validation", "-s")):
            if key in h and h[key]:
                epochs = range(1, len(h[key]) + 1)
                ax.plot(epochs, h[key], style, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend()
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    _save(fig, path)
    return fig


# -------------------------------------------------------------------- model


def _shape_text(shape):
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _graph(model, expand_nested=False):
    """[(name, type, output_shape, [inbound layer names])] for each layer of ``model``; with
    ``expand_nested`` a nested model's layers take its place, named ``"outer/inner"``."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"plot_model: {type(model).__name__} has no .layers")
    out, alias = [], {}
    for layer in layers:
        try:
            shape = layer.output_shape
        except Exception:  # a layer not yet built
            shape = None
        inbound = [alias.get(n, n) for n in getattr(layer, "inbound_layer_names", None) or []]
        inner = getattr(layer, "layers", None) if expand_nested else None
        if not inner:
            out.append((layer.name, type(layer).__name__, shape, inbound))
            continue
        sub = [g for g in _graph(layer, True) if g[1] != "InputLayer"]
        names = {g[0] for g in sub}
        if all(not any(i in names for i in g[3]) for g in sub[1:]):  # no connections inside: a chain
            sub = _chain(sub)
        for name, kind, shp, ins in sub:
            inner_ins = [f"{layer.name}/{i}" for i in ins if i in names]
            out.append((f"{layer.name}/{name}", kind, shp, inner_ins or inbound))
        alias[layer.name] = f"{layer.name}/{sub[-1][0]}"
    return out


def _chain(graph):
    """``graph`` with each layer's inbound set to the layer before it (drawn as a chain)."""
    return [g if k == 0 else (*g[:3], [graph[k - 1][0]]) for k, g in enumerate(graph)]


def _layout(graph):
    """{name: (depth, column)}: depth is the longest path from an input, and the
    layers of one depth sit side by side."""
    depth = {}
    for name, _, _, inbound in graph:       # layers come in topological order
        depth[name] = 1 + max((depth[i] for i in inbound if i in depth), default=-1)
    rows: dict[int, list] = {}
    for name, *_ in graph:
        rows.setdefault(depth[name], []).append(name)
    return {n: (d, j, len(row)) for d, row in rows.items() for j, n in enumerate(row)}


_RANKDIRS = ("TB", "LR", "BT", "RL")


def _routes(graph, depth):
    """Rows of slots, and each edge's route: an edge that skips rows gets a slot of its own in
    every row it passes, so it is drawn through free slots and never across a box.

    Returns ``(rows, edges)``: ``rows[d]`` lists the slots of depth ``d`` (a layer name, or
    ``(src, dst, d)`` for a passing edge); ``edges`` lists ``(src, dst, [slots in between])``.
    """
    rows: dict[int, list] = {}
    for name, *_ in graph:
        rows.setdefault(depth[name], []).append(name)
    edges = []
    for name, _, _, inbound in graph:
        for src in inbound:
            if src not in depth:
                continue
            via = [(src, name, d) for d in range(depth[src] + 1, depth[name])]
            for v in via:
                rows[v[2]].append(v)
            edges.append((src, name, via))
    return rows, edges


def plot_model(model, path=None, show_shapes=True, dpi=100, show_layer_names=True, rankdir="TB",
               expand_nested=False):
    """Draw the layer graph of ``model``: a box per layer (name, class, and
    output shape when ``show_shapes``), an arrow per inbound connection,
    layers placed by depth so that branches sit side by side. An arrow that
    skips ranks is routed through free space, never across a box.

    path: where to save the image (PNG by default; SVG/PDF by extension), or
    None to only return it. show_layer_names: the name on each box.
    rankdir: "TB" (top to bottom, default), "LR", "BT" or "RL", as Keras's.
    expand_nested: draw a nested model's layers (named "outer/inner") instead of one box.
    Returns the matplotlib Figure. Layers need ``inbound_layer_names`` (see
    the module docstring); a Sequential model without it is drawn as a chain.
    """
    rankdir = str(rankdir).upper()
    if rankdir not in _RANKDIRS:
        raise ValueError(f"plot_model: rankdir must be one of {', '.join(_RANKDIRS)}, got {rankdir!r}")
    graph = _graph(model, expand_nested)
    if not graph:
        raise ValueError("plot_model: the model has no layers")
    if all(not g[3] for g in graph[1:]) and len(graph) > 1:
        graph = _chain(graph)  # no connection information at all
    depth = {n: d for n, (d, _, _) in _layout(graph).items()}
    rows, edges = _routes(graph, depth)
    box_w, box_h = 3.2, (1.0 if show_shapes else 0.7) - (0 if show_layer_names else 0.25)
    vertical = rankdir in ("TB", "BT")
    # Extents along the rank axis (R) and across it (C), and the gaps between them.
    R, C = (box_h, box_w) if vertical else (box_w, box_h)
    gap_r, gap_c, lane = (0.6, 0.5, 0.4) if vertical else (0.9, 0.35, 0.3)
    span = {}
    for d, row in rows.items():
        widths = [C if isinstance(n, str) else lane for n in row]
        total = sum(widths) + gap_c * len(row)
        c = -total / 2
        for n, w in zip(row, widths):
            span[n] = c + gap_c / 2 + w / 2
            c += w + gap_c
    half_c = max(abs(v) for v in span.values()) + C / 2 + gap_c / 2
    n_rows = 1 + max(rows)

    def at(r, c):  # rank / cross coordinates to the figure's x, y
        return {"TB": (c, -r), "BT": (c, r), "LR": (r, -c), "RL": (-r, -c)}[rankdir]

    def rank_of(d):
        return d * (R + gap_r) + gap_r / 2 + R / 2

    extent_r, extent_c = n_rows * (R + gap_r), 2 * half_c
    size = (extent_c, extent_r) if vertical else (extent_r, extent_c)
    fig = _new_figure(path, (max(3.0, size[0] * 0.9), max(2.0, size[1] * 0.9)))
    ax = fig.add_axes([0, 0, 1, 1])
    xs = sorted((at(0, -half_c)[0], at(extent_r, half_c)[0]))
    ys = sorted((at(0, -half_c)[1], at(extent_r, half_c)[1]))
    ax.set_xlim(*xs)
    ax.set_ylim(*ys)
    ax.axis("off")

    from matplotlib.patches import FancyBboxPatch

    for name, kind, shape, _ in graph:
        x, y = at(rank_of(depth[name]), span[name])
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor="#dbe9f6", edgecolor="#2c5d8a", linewidth=1.2))
        text = f"{name}\n{kind}" if show_layer_names else kind
        if show_shapes:
            text += f"\n{_shape_text(shape)}"
        ax.text(x, y, text, ha="center", va="center", fontsize=8, family="monospace")
    for src, dst, via in edges:
        # Leave the source's far side, cross each passed rank in its own slot, enter the target.
        pts = [(rank_of(depth[src]) + R / 2, span[src])]
        for v in via:
            pts += [(rank_of(v[2]) - R / 2, span[v]), (rank_of(v[2]) + R / 2, span[v])]
        pts.append((rank_of(depth[dst]) - R / 2, span[dst]))
        pts = [at(r, c) for r, c in pts]
        if len(pts) > 2:
            ax.plot([p[0] for p in pts[:-1]], [p[1] for p in pts[:-1]], color="#333333", linewidth=1.0)
        ax.annotate("", xy=pts[-1], xytext=pts[-2],
                    arrowprops=dict(arrowstyle="->", color="#333333", linewidth=1.0, shrinkA=0, shrinkB=1))
    _save(fig, path, dpi)
    return fig
