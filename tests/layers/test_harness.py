"""The harness itself: each check catches the fault it is for, and a user's custom layer passes.

Every broken layer below is the correct ``Scale`` with one fault; the test
runs the one check meant to catch it and expects its message.
"""
import re
from pathlib import Path

import numpy as np
import pytest

from deepgpu import ops
from deepgpu.layers import Layer
from deepgpu.tensor import Variable, tensor
from deepgpu.testing import CHECKS, LayerCase, run_layer_test

README = Path(__file__).resolve().parents[2] / "README.md"


class Scale(Layer):
    """``x * w * factor`` with one weight per feature: a user's custom layer."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def build(self, input_shape):
        self.w = self.add_weight("w", (input_shape[-1],), "ones")

    def call(self, x):
        return x * self.w * self.factor

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


CUSTOM = {"unsupported": {"keras": "a custom layer", "onnx": "a custom layer"}}


def run(cls, check, **kw):
    kw = {"input_shape": (4, 3), "custom_objects": {cls.__name__: cls}, **CUSTOM, **kw}
    return run_layer_test(cls, {"factor": 2.0}, checks=[check], **kw)


def test_a_custom_layer_passes_every_check_that_applies():
    report = run_layer_test(Scale, {"factor": 2.0}, (4, 3), (None, 3), custom_objects={"Scale": Scale}, **CUSTOM)
    assert set(report.ran) >= {"build", "batch_of_one", "config", "native", "tfjs", "gradients", "training",
                               "trainable"}
    assert "not a deepgpu layer" in report.skipped["tfjs_node"]
    assert "saving raises, naming the layer" in report.skipped["keras"]
    assert set(report.ran) | set(report.skipped) == set(CHECKS)


def test_the_readme_example_runs():
    """The README's five lines, as printed there."""
    text = README.read_text()
    block = re.search(r"```python\n(from deepgpu.testing import run_layer_test\n.*?)```", text, re.S)
    assert block, "README has no run_layer_test example"
    exec(compile(block.group(1), "README.md", "exec"), {"Scale": Scale})


class WrongShape(Scale):
    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + 1,)


class Float64Out(Scale):
    def call(self, x):
        return ops.cast(super().call(x), "float64")


class BatchCoupled(Scale):
    def call(self, x):
        return super().call(x) - ops.mean(x, 0, keepdims=True)


class NoRankCheck(Scale):
    def call(self, x):
        if x.ndim != 2:
            raise ValueError("bad rank")
        return super().call(x)


class ForgetsConfig(Scale):
    def get_config(self):
        return Layer.get_config(self)


class Detached(Scale):
    def call(self, x):
        return super().call(x) + tensor(np.square(x.data_sync()))  # a term autograd cannot see


class IgnoresTraining(Scale):
    def call(self, x, training=None):
        return super().call(x) + (1.0 if training else 0.0)


class UntrackedTrainable(Scale):
    def build(self, input_shape):
        super().build(input_shape)
        self.v = Variable(np.ones(input_shape[-1], np.float32), name=f"{self.name}/v")  # ignores trainable=False
        self._weights.append(self.v)

    def call(self, x):
        return super().call(x) + self.v


class BackendDependent(Scale):
    def call(self, x):
        y = super().call(x)
        return y * 1.01 if x.backend != "cpu" else y


@pytest.mark.parametrize("cls,check,kw,message", [
    (WrongShape, "build", {}, "compute_output_shape"),
    (Float64Out, "build", {}, "output dtype float64, expected float32"),
    (BatchCoupled, "batch_of_one", {}, "a batch of one vs row 0"),
    (NoRankCheck, "wrong_rank", {"wrong_rank_shape": (4, 3, 2)}, "does not name"),
    (ForgetsConfig, "config", {}, "rebuilt from its config"),
    (Scale, "native", {"unsupported": {"native": "claimed"}}, "but saving worked"),
    (Detached, "gradients", {}, "differs from finite differences"),
    (IgnoresTraining, "training", {}, "training=True differs from inference"),
    (Scale, "training", {"training": "random"}, "training=True computes what inference does"),
    (UntrackedTrainable, "trainable", {}, "trainable=False leaves trainable weights"),
    (BackendDependent, "cuda_emulated", {}, "differs from NumPy's"),
], ids=lambda v: v if isinstance(v, str) and " " not in v else None)
def test_each_check_catches_its_fault(cls, check, kw, message):
    if check == "cuda_emulated":
        from deepgpu.testing.emulation import emulation_status
        ok, why = emulation_status()
        if not ok:
            pytest.skip(why)
    with pytest.raises(AssertionError, match=re.escape(message)):
        run(cls, check, **kw)


def test_a_check_that_cannot_run_is_skipped_with_its_reason():
    report = run(Scale, "gradients", skip={"gradients": "said why"})
    assert report.ran == [] and report.skipped["gradients"] == "said why"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="not a check"):
        run_layer_test(Scale, {}, (2, 3), skip={"gradient": "typo"})
    with pytest.raises(ValueError, match="not a format"):
        run_layer_test(Scale, {}, (2, 3), unsupported={"tfjs_node": "not a format"})
    with pytest.raises(ValueError, match="training must be one of"):
        LayerCase(Scale, {}, (2, 3), training="sometimes").run()
