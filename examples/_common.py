"""Shared bits of the examples: backend choice and the quick mode the tests use.

Every example runs on the backend named by $DEEPGPU_BACKEND (default
"auto": the GPU where one is usable). $DEEPGPU_EXAMPLES_QUICK=1 shrinks the
budgets so the test suite can run all of them in seconds.
"""
import os

QUICK = os.environ.get("DEEPGPU_EXAMPLES_QUICK") == "1"


def budget(full, quick):
    """``full`` normally, ``quick`` under the tests."""
    return quick if QUICK else full
