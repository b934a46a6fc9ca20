"""No layer escapes the harness: every registered layer class has sample cases in its family's file.

The family files are tests/layers/test_<family>.py, one per module of
deepgpu/layers/, each with a CASES list of deepgpu.testing.LayerCase.
"""
import importlib.util
from pathlib import Path

import pytest

import deepgpu.layers
from deepgpu.layers.base import InputLayer, Layer
from deepgpu.testing import FORMATS, LayerCase

HERE = Path(__file__).resolve().parent
# Registered classes that are not layers of a family; each with its reason.
EXEMPT = {
    Layer: "the abstract base class (call() is the subclass's)",
    InputLayer: "a functional graph's entry point, not called on data; tests/test_models.py covers it",
}
# Recurrent cells compute one step, called with states (cell.call(x, states)): their cases run
# inside RNN (tests/layers/test_recurrent.py has RNN cases of each).
EXEMPT.update({getattr(deepgpu.layers, n): "a recurrent cell; run through RNN's cases in test_recurrent.py"
               for n in ("SimpleRNNCell", "LSTMCell", "GRUCell", "StackedRNNCells", "ConvLSTM2DCell")
               if hasattr(deepgpu.layers, n)})


def registered_layer_classes():
    """Every Layer class that the registry finds by name: deepgpu.layers is its namespace
    (deepgpu.registry.register_namespace), aliases such as MaxPool2D counted once."""
    out = []
    for name in dir(deepgpu.layers):
        obj = getattr(deepgpu.layers, name)
        if isinstance(obj, type) and issubclass(obj, Layer) and obj not in out:
            out.append(obj)
    return out


def family_cases():
    """{family: CASES} from each tests/layers/test_<family>.py that defines CASES."""
    out = {}
    for path in sorted(HERE.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        spec = importlib.util.spec_from_file_location(f"_layer_cases_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "CASES"):
            out[path.stem[len("test_"):]] = module.CASES
    return out


@pytest.fixture(scope="module")
def families():
    return family_cases()


def missing_classes(families):
    covered = {c.layer_cls for cases in families.values() for c in cases}
    return sorted(cls.__name__ for cls in registered_layer_classes() if cls not in covered and cls not in EXEMPT)


def test_every_registered_layer_class_has_cases(families):
    missing = missing_classes(families)
    assert not missing, (
        f"registered layer classes without sample cases: {sorted(missing)}; add LayerCase entries to "
        f"tests/layers/test_<family>.py (the family is the deepgpu/layers module that defines the class)")


def test_cases_sit_in_the_file_of_their_family(families):
    wrong = [f"{c.name} in test_{fam}.py, class from {c.layer_cls.__module__}"
             for fam, cases in families.items() for c in cases
             # a subpackage's module (layers/preprocessing/image.py) has test_preprocessing_image.py
             if c.layer_cls.__module__.removeprefix("deepgpu.layers.").replace(".", "_") != fam]
    assert not wrong, f"cases outside their family's file: {wrong}"


def test_cases_are_well_formed(families):
    for cases in families.values():
        for c in cases:
            assert isinstance(c, LayerCase), c
            assert c.input_shape is not None, f"{c.name}: no input_shape"
            assert set(c.unsupported) <= set(FORMATS), c.name
            # A declared reason is what a reader sees in the report: it must say something.
            assert all(isinstance(r, str) and r.strip() for r in {**c.unsupported, **c.skip}.values()), c.name


def test_the_completeness_check_sees_a_missing_class(families, monkeypatch):
    """The check above can fail: a registered class without cases is reported by name."""
    class Unlisted(Layer):
        def call(self, inputs):
            return inputs

    before = missing_classes(families)
    monkeypatch.setattr(deepgpu.layers, "Unlisted", Unlisted, raising=False)
    assert missing_classes(families) == sorted(before + ["Unlisted"])
