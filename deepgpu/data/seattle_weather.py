"""Seattle's daily weather 2012-2015 (``seattle-weather.csv`` of the ``vega_datasets`` package) as a
forecasting dataset: the next day's maximum temperature from the last ``window`` days.

    from deepgpu.datasets import seattle_weather
    (x_train, y_train), (x_test, y_test) = seattle_weather.load_data()   # x: (n, 14, 4) float32

The CSV comes with ``pip install vega_datasets`` (the package is not imported, only its data
file is read; nothing is downloaded). Features per day, in this order: precipitation (mm),
temp_max (deg C), temp_min (deg C), wind (m/s); the target is the following day's temp_max.
"""
from __future__ import annotations

import csv
import importlib.util
import os

import numpy as np

__all__ = ["load_data", "read_csv", "FEATURES", "INSTALL_HINT"]

FEATURES = ("precipitation", "temp_max", "temp_min", "wind")
INSTALL_HINT = "pip install vega_datasets"


def _default_path():
    spec = importlib.util.find_spec("vega_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"seattle_weather: the vega_datasets package is not installed; install it with: "
                                f"{INSTALL_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "_data", "seattle-weather.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"seattle_weather: vega_datasets has no {path!r}; reinstall it with: "
                                f"{INSTALL_HINT}")
    return path


def read_csv(path=None):
    """(dates as str, float32 array (days, 4) of ``FEATURES``) in the file's (chronological) order.

    Raises ValueError naming the file and line for a missing column or a value that is not a number.
    """
    path = os.fspath(path) if path is not None else _default_path()
    dates, rows = [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("date",) + FEATURES if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"seattle_weather: {path!r} lacks the column(s) {missing} "
                             f"(has {reader.fieldnames})")
        for line, rec in enumerate(reader, start=2):
            try:
                rows.append([float(rec[c]) for c in FEATURES])
            except (TypeError, ValueError):
                raise ValueError(f"seattle_weather: {path!r} line {line}: a value of {FEATURES} is not a number: "
                                 f"{rec}") from None
            dates.append(rec["date"])
    order = np.argsort(np.asarray(dates), kind="stable")
    return [dates[i] for i in order], np.asarray(rows, np.float32)[order]


def load_data(path=None, window=14, test_split=0.2):
    """``(x_train, y_train), (x_test, y_test)``: x float32 (n, window, 4), the ``window`` days before
    each target day; y float32 (n,), that day's temp_max. Split in time: the last ``test_split`` of
    the target days are the test set (their windows may reach back into the training period, as a
    forecast would). Raises FileNotFoundError with ``pip install vega_datasets`` when the data is
    missing, ValueError for bad arguments or too short a file.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"seattle_weather: window must be a positive int, got {window!r}")
    if not 0 < test_split < 1:
        raise ValueError(f"seattle_weather: test_split must be between 0 and 1 (exclusive), got {test_split!r}")
    _, days = read_csv(path)
    n = len(days) - window
    if n < 2:
        raise ValueError(f"seattle_weather: {len(days)} days make no {window}-day windows with a next day")
    idx = np.arange(window)[None, :] + np.arange(n)[:, None]
    x = days[idx]
    y = days[window:, FEATURES.index("temp_max")].copy()
    cut = n - max(1, int(round(test_split * n)))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])
