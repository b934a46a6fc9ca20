"""A Keras-style progress display that behaves in terminals, notebooks and log files.

On a terminal (or in a notebook) ``verbose=1`` redraws one bar in place, at
most every ``interval`` seconds (each redraw reads the metrics from the
device, so it is rate-limited). Anywhere else, and with ``verbose=2``, it
writes one line per epoch, so log files do not fill with bars.
"""
from __future__ import annotations

import sys
import time


def _dynamic(stream) -> bool:
    if "ipykernel" in sys.modules:  # notebooks redraw "\r" lines fine
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def _fmt_time(sec: float) -> str:
    if sec >= 3600:
        return f"{int(sec // 3600)}:{int(sec % 3600 // 60):02d}:{int(sec % 60):02d}"
    if sec >= 60:
        return f"{int(sec // 60)}:{int(sec % 60):02d}"
    # A short epoch still says how long it took ("0.6s", not "0s" / "1s").
    return f"{sec:.1f}s" if sec < 10 else f"{sec:.0f}s"


def _fmt_per_step(sec: float) -> str:
    if sec >= 1:
        return f"{sec:.0f}s/step"
    if sec >= 1e-3:
        return f"{sec * 1e3:.0f}ms/step"
    return f"{sec * 1e6:.0f}us/step"


def fmt_value(v) -> str:
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.4e}"


class Progbar:
    """Progress of ``target`` steps; ``update(step, values_fn, final=False)``.

    values_fn: a callable returning [(name, float)], called only when a line
    is actually drawn (it may read values from the device).
    """

    def __init__(self, target, verbose=1, width=30, interval=0.1, stream=None):
        self.target = target
        self.verbose = verbose
        self.width = width
        self.interval = interval
        self.stream = stream or sys.stdout
        self.dynamic = verbose == 1 and _dynamic(self.stream)
        self.start = time.perf_counter()
        self._last = 0.0
        self._prev_len = 0

    def update(self, step, values_fn=None, final=False):
        if self.verbose == 0:
            return
        now = time.perf_counter()
        if not final and (not self.dynamic or now - self._last < self.interval):
            return
        self._last = now
        elapsed = now - self.start
        values = values_fn() if values_fn else []
        metrics = "".join(f" - {k}: {fmt_value(v)}" for k, v in values)
        per = elapsed / max(step, 1)
        if self.target is not None:
            digits = len(str(self.target))
            count = f"{step:>{digits}}/{self.target}"
        else:  # a data source of unknown length (Keras shows the same)
            count = f"{step}/Unknown"
        if self.dynamic:
            bar = ""
            if self.target:
                done = int(self.width * min(step, self.target) / self.target)
                bar = " [" + "=" * max(done - 1, 0) + (">" if done < self.width else "=") + \
                      "." * (self.width - done) + "]"
            if final or not self.target:  # no ETA without a target: the time so far, as Keras shows
                tail = f" - {_fmt_time(elapsed)} {_fmt_per_step(per)}"
            else:
                tail = f" - ETA: {_fmt_time(per * (self.target - step))}"
            line = count + bar + tail + metrics
            pad = " " * max(self._prev_len - len(line), 0)
            self.stream.write("\r" + line + pad + ("\n" if final else ""))
            self._prev_len = len(line)
        elif final:
            self.stream.write(f"{count} - {_fmt_time(elapsed)} - {_fmt_per_step(per)}{metrics}\n")
        self.stream.flush()
