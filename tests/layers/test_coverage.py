"""The layer-coverage table (`deepgpu info --layers`) and the counts the README gives."""
import re
from pathlib import Path

from deepgpu import layers
from deepgpu.cli import layer_coverage, main
from deepgpu.io import tfjs

README = Path(__file__).resolve().parents[2] / "README.md"


def counts():
    table = layer_coverage()
    return {k: (sum(1 for _, o in rows if o), len(rows)) for k, (_, rows) in table.items()}


def test_the_lists_are_the_releases_lists():
    table = layer_coverage()
    assert table["tfjs"][0] == "4.22.0" and len(table["tfjs"][1]) == 66
    assert table["keras"][0] == "3.15.1" and len(table["keras"][1]) == 175
    tfjs_names = {n for n, _ in table["tfjs"][1]}
    # Every class save_tfjs writes for TF.js is one TF.js has (the models are not layers there).
    # RandomHeight is registered by tfjs-layers 4.22 (serialization.registerClass) but has no
    # tf.layers factory, so exports_layers.ts does not list it; save_tfjs refuses it anyway.
    assert tfjs._TFJS_LAYERS - {"Sequential", "Model", "Functional", "RandomHeight"} <= tfjs_names


def test_each_name_maps_to_deepgpus_object_or_missing():
    rows = dict(layer_coverage()["keras"][1])
    assert rows["Dense"] == "deepgpu.layers.Dense"
    assert rows["Convolution2D"] == "deepgpu.layers.Conv2D (as Convolution2D)"
    assert rows["concatenate"] == "deepgpu.layers.concatenate"
    assert rows["LSTM"] == "deepgpu.layers.LSTM"
    assert rows["StringLookup"] is None and getattr(layers, "StringLookup", None) is None


def test_info_layers_prints_the_table(capsys):
    assert main(["info", "--layers"]) == 0
    out = capsys.readouterr().out
    (have, total) = counts()["tfjs"]
    assert f"TF.js Layers 4.22.0: deepgpu has {have} of {total} layer classes" in out
    assert re.search(r"^  Conv2DTranspose +deepgpu\.layers\.Conv2DTranspose$", out, re.M)
    assert re.search(r"^  GRU +deepgpu\.layers\.GRU$", out, re.M)
    assert re.search(r"^  StringLookup +missing$", out, re.M)
    assert len(out.splitlines()) == 2 + 66 + 175


def test_readme_gives_the_counts():
    c = counts()
    text = " ".join(README.read_text().split())
    assert (f"deepgpu has {c['tfjs'][0]} of the {c['tfjs'][1]} layer classes of TF.js Layers 4.22 and "
            f"{c['keras'][0]} of the {c['keras'][1]} names of Keras 3.15's `keras.layers`") in text
