"""``model.summary()``: the Keras layer table and parameter totals."""
from __future__ import annotations

from ..layers.base import InputLayer, fmt_shape


def _count(ws):
    return sum(w.size for w in ws)


def _layer_rows(model, expand_nested=False, show_trainable=False):
    from .sequential import Sequential

    rows = []
    functional = not isinstance(model, Sequential) and model._functional

    def add(layer, level, owner):
        try:
            shape = fmt_shape(layer.output_shape)
        except (AttributeError, NotImplementedError, ValueError):
            shape = "?"
        params = _count(layer.weights) if layer.built or isinstance(layer, InputLayer) else "?"
        prefix = "   " * level + "└ " if level else ""  # Keras 3's marks for a nested model's layers
        row = [f"{prefix}{layer.name} ({type(layer).__name__})", shape, f"{params:,}" if params != "?" else params]
        if functional:
            conn = []
            nodes = getattr(owner, "_nodes", None) or []
            for node in layer._inbound_nodes:
                if not any(node is n for n in nodes):
                    continue
                for t in node.inputs:
                    conn.append(f"{t.node.layer.name}[0][{t.index}]")
            row.append(", ".join(conn) if level == 0 or conn else "")
        if show_trainable:
            row.append(("Y" if layer.trainable else "N") if layer.weights else "-")
        rows.append(row)
        inner = getattr(layer, "layers", None) if expand_nested else None
        if inner and layer is not model:
            for sub in inner:
                add(sub, level + 1, layer)

    for layer in model.layers:
        add(layer, 0, model)
    return rows, functional


def _fit(text, width):
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def print_summary(model, line_length=None, positions=None, print_fn=None, return_string=False,
                  expand_nested=False, show_trainable=False):
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built yet: give its first layer an input_shape, "
            f"add an Input, or call the model on data before summary()")
    rows, functional = _layer_rows(model, expand_nested, show_trainable)
    headers = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if functional else [])
    default_length = 98 if functional else 65
    default_positions = positions is None
    line_length = line_length or default_length
    positions = positions or ([0.33, 0.55, 0.67, 1.0] if functional else [0.45, 0.85, 1.0])
    if show_trainable:  # as Keras 3: 12 more characters, for a "Trainable" column at the end
        if len(positions) == len(headers):
            if default_positions:
                scale = line_length / (line_length + 12)  # the other columns keep their widths
                line_length += 12
            else:
                scale = 0.90
            positions = [p * scale if p <= 1 else p for p in positions] + [1.0 if positions[-1] <= 1 else line_length]
        headers.append("Trainable")
    if len(positions) != len(headers):
        raise ValueError(f"positions must have {len(headers)} entries, got {len(positions)}")
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    lines = []

    def row(fields):
        out = ""
        for i, f in enumerate(fields):
            start = 0 if i == 0 else positions[i - 1]
            width = positions[i] - start
            out += " " + _fit(str(f), width - 2).ljust(max(width - 1, 0))
        lines.append(out[:line_length].rstrip())

    lines.append(f'Model: "{model.name}"')
    lines.append("_" * line_length)
    row(headers)
    lines.append("=" * line_length)
    for i, r in enumerate(rows):
        row(r)
        lines.append(("=" if i == len(rows) - 1 else "_") * line_length)
    weights = model.weights
    total = _count(weights)
    trainable = _count([w for w in weights if w.trainable])
    lines.append(f"Total params: {total:,}")
    lines.append(f"Trainable params: {trainable:,}")
    lines.append(f"Non-trainable params: {total - trainable:,}")
    lines.append("_" * line_length)
    text = "\n".join(lines)
    if return_string:
        return text
    fn = print_fn or print
    for line in lines:
        fn(line)
    return None
