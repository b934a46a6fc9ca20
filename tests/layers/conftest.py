"""Fixtures shared by the layer-family files."""
import pytest

from deepgpu.testing import TfjsNodeBatch


@pytest.fixture
def tfjs_agrees_or_refuses():
    """Check that save_tfjs either refuses ``case`` naming the layer, or the real TF.js predicts as deepgpu.

    A gap the harness found (the real TF.js disagreeing) is closed either way;
    where the real TF.js is not installed the agreement half skips.
    """
    def check(case):
        try:
            report = case.run(checks=["tfjs", "tfjs_node"])
        except ValueError as e:
            assert case.layer_cls.__name__ in str(e), f"save_tfjs refused without naming the layer: {e}"
            return
        if "tfjs_node" in report.skipped:
            pytest.skip(report.skipped["tfjs_node"])
    return check


@pytest.fixture(scope="module")
def tfjs_batch(request):
    """The real TF.js's predictions for every case of a family file's ``CASES``, from one node process."""
    return TfjsNodeBatch(request.module.CASES)
