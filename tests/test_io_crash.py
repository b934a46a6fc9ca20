"""A process killed (SIGKILL) while it saves leaves the old file or the new one, never neither and
never a mix; the next save of the same target removes what the dead one left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import deepgpu as dg
from deepgpu.io import load_tfjs

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and flock are POSIX")

_MODELS = textwrap.dedent("""
    import deepgpu as dg
    from deepgpu import Sequential
    from deepgpu.layers import Dense

    def model(seed):
        dg.set_seed(seed)
        m = Sequential([Dense(384, activation="relu", input_shape=(64,)), Dense(384), Dense(4)])
        m.compile(optimizer="adam", loss="mse")
        return m
""")

_CHILD = _MODELS + textwrap.dedent("""
    import sys
    from deepgpu.io import save_tfjs
    kind, target, exchange = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    if not exchange:
        from deepgpu.io import _atomic
        _atomic._exchange = lambda a, b: False
    models = [model(1), model(2)]
    i = 0
    while True:
        m = models[i % 2]
        if kind == "native":
            m.save(target)
        else:
            save_tfjs(m, target)
        i += 1
        print(i, flush=True)
""")


def _models():
    ns = {}
    exec(_MODELS, ns)
    return ns["model"](1), ns["model"](2)


def _run_and_kill(kind, target, exchange, delay):
    """Start a child that saves models 1 and 2 in turn to ``target``; kill it ``delay`` s after its
    third save."""
    env = dict(os.environ, DEEPGPU_BACKEND="cpu")
    p = subprocess.Popen([sys.executable, "-c", _CHILD, kind, str(target), "1" if exchange else "0"],
                         stdout=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(3):
            assert p.stdout.readline(), "the saving process died on its own"
        time.sleep(delay)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()


@pytest.mark.parametrize("kind,exchange", [("native", True), ("tfjs", True), ("tfjs", False)],
                         ids=["native", "tfjs", "tfjs-two-renames"])
def test_a_save_killed_at_any_moment_leaves_old_or_new_and_the_next_save_cleans(tmp_path, kind, exchange):
    a, b = _models()
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    expect = [a.predict(x, verbose=0).data_sync(), b.predict(x, verbose=0).data_sync()]
    target = tmp_path / ("m.dgm" if kind == "native" else "m")
    load = dg.models.load_model if kind == "native" else load_tfjs
    for delay in (0.0, 0.004, 0.011, 0.023):
        _run_and_kill(kind, target, exchange, delay)
        got = load(target).predict(x, verbose=0).data_sync()
        assert any(np.array_equal(got, e) for e in expect)
        (a if delay else b).save(target) if kind == "native" else dg.io.save_tfjs(a if delay else b, target)
        assert sorted(os.listdir(tmp_path)) == [target.name]
