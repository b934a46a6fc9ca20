"""deepgpu.datasets.fortunes and seattle_weather on small fake data (CI needs neither package)."""
import os

import numpy as np
import pytest

from deepgpu.datasets import fortunes, seattle_weather


def _fortune_dir(tmp_path, sizes):
    d = tmp_path / "fortunes"
    d.mkdir()
    for name, n in sizes.items():
        entries = [f"{name} quote number {i}\n  -- someone" for i in range(n)]
        (d / name).write_text("\n%\n".join(entries) + "\n%\n")
        (d / f"{name}.dat").write_bytes(b"\x00\x01binary index")
        os.symlink(d / name, d / f"{name}.u8")
    return d


def test_fortunes_split_is_stratified_reproducible_and_disjoint(tmp_path):
    d = _fortune_dir(tmp_path, {"alpha": 40, "beta": 25, "gamma": 9})
    (d / "beta").write_text((d / "beta").read_text() + "alpha quote number 0\n  -- someone\n%\n"
                            "beta quote number 3\n  -- someone\n")  # a shared quote and a repeat
    (x_tr, y_tr), (x_te, y_te) = fortunes.load_data(path=d, min_entries=10, test_split=0.2, seed=1)
    assert fortunes.get_label_names(path=d, min_entries=10) == ["alpha", "beta"]  # gamma is too small
    assert x_tr.dtype == object and y_tr.dtype == np.int32
    # "alpha quote number 0" is in two categories: left out of both; "beta ... 3" counted once.
    assert "alpha quote number 0\n  -- someone" not in set(x_tr) | set(x_te)
    assert np.bincount(y_te).tolist() == [8, 5] and np.bincount(y_tr).tolist() == [31, 20]
    assert not set(x_tr) & set(x_te)
    for x, y in zip(x_tr, y_tr):
        assert x.startswith(["alpha", "beta"][y])
    (x2, y2), (x3, _) = fortunes.load_data(path=d, min_entries=10, test_split=0.2, seed=1)
    assert list(x2) == list(x_tr) and list(y2) == list(y_tr) and list(x3) == list(x_te)
    (_, _), (x4, _) = fortunes.load_data(path=d, min_entries=10, test_split=0.2, seed=2)
    assert set(x4) != set(x_te)


def test_fortunes_missing_data_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes"):
        fortunes.load_data(path=tmp_path / "none")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes"):
        fortunes.load_data(path=empty)
    d = _fortune_dir(tmp_path, {"alpha": 5})
    with pytest.raises(ValueError, match="at least 300"):
        fortunes.load_data(path=d)
    with pytest.raises(ValueError, match="test_split"):
        fortunes.load_data(path=d, min_entries=2, test_split=1.5)
    with pytest.raises(ValueError, match="min_entries"):
        fortunes.load_data(path=d, min_entries=0)


def _weather_csv(tmp_path, days=30):
    p = tmp_path / "seattle-weather.csv"
    lines = ["date,precipitation,temp_max,temp_min,wind,weather"]
    for i in range(days):
        lines.append(f"2012/{1 + i // 28:02d}/{1 + i % 28:02d},{i % 3}.0,{10 + i}.5,{i}.0,{i % 5}.5,rain")
    p.write_text("\n".join(lines) + "\n")
    return p


def test_seattle_weather_windows_and_chronological_split(tmp_path):
    p = _weather_csv(tmp_path, 30)
    (x, y), (xt, yt) = seattle_weather.load_data(path=p, window=14, test_split=0.25)
    assert x.shape == (12, 14, 4) and xt.shape == (4, 14, 4) and x.dtype == y.dtype == np.float32
    # Window k holds days k..k+13; its target is day k+14's temp_max (10.5 + day).
    np.testing.assert_array_equal(x[0, :, 1], 10.5 + np.arange(14))
    np.testing.assert_array_equal(y, 10.5 + np.arange(14, 26))
    np.testing.assert_array_equal(yt, 10.5 + np.arange(26, 30))
    np.testing.assert_array_equal(x[:, :, 0], (np.arange(12)[:, None] + np.arange(14)) % 3)


def test_seattle_weather_missing_data_and_bad_file(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "vega_datasets" else real(n, *a))
    with pytest.raises(FileNotFoundError, match="pip install vega_datasets"):
        seattle_weather.load_data()
    bad = tmp_path / "bad.csv"
    bad.write_text("date,precipitation,temp_max,temp_min,wind\n2012/01/01,0,x,1,2\n")
    with pytest.raises(ValueError, match="line 2"):
        seattle_weather.load_data(path=bad)
    with pytest.raises(ValueError, match="lacks the column"):
        (tmp_path / "c.csv").write_text("date,temp_max\n2012/01/01,3\n")
        seattle_weather.load_data(path=tmp_path / "c.csv")
    with pytest.raises(ValueError, match="window"):
        seattle_weather.load_data(path=_weather_csv(tmp_path), window=0)
