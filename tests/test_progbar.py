"""The progress lines fit prints: each epoch says how long it took."""
import re

import numpy as np

import deepgpu as dg
from deepgpu.models.progbar import _fmt_time


def test_times_keep_a_decimal_under_ten_seconds():
    assert [_fmt_time(s) for s in (0.04, 0.64, 9.94, 12.4, 75, 3725)] == \
        ["0.0s", "0.6s", "9.9s", "12s", "1:15", "1:02:05"]


def test_each_epoch_line_says_its_time(capsys):
    m = dg.Sequential([dg.layers.Input((3,)), dg.layers.Dense(2)])
    m.compile("sgd", "mse")
    m.fit(np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32), epochs=2, batch_size=4, verbose=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("2/2")]
    assert len(lines) == 2
    for ln in lines:
        assert re.match(r"2/2 - \d+\.\ds - \d+(ms|us)/step - loss: ", ln), ln
