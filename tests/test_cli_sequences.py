"""deepgpu train --dataset fortunes | seattle-weather: argument checks before any data loads, and short
runs on small fake data (CI installs neither data package)."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import cli


def _run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv, says", [
    (["--dataset", "seattle-weather", "--model", "conv1d"], "--model conv1d does not fit --dataset seattle-weather"),
    (["--dataset", "fortunes", "--model", "cnn"], "use --model lstm or conv1d"),
    (["--dataset", "digits", "--model", "lstm"], "use --model dnn, cnn or resnet"),
])
def test_models_that_do_not_fit_the_dataset_are_refused_first(argv, says, capsys, monkeypatch, tmp_path):
    from deepgpu.datasets import fortunes, seattle_weather

    def no_load(*a, **k):
        raise AssertionError("data loaded before the arguments were checked")
    monkeypatch.setattr(fortunes, "load_data", no_load)
    monkeypatch.setattr(seattle_weather, "load_data", no_load)
    code, _, err = _run(["train", "--out", str(tmp_path)] + argv, capsys)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_missing_data_gives_the_install_hint_in_one_line(capsys, tmp_path):
    code, _, err = _run(["train", "--dataset", "fortunes", "--data-dir", str(tmp_path / "none"),
                         "--out", str(tmp_path)], capsys)
    assert code == 2 and "apt-get install fortunes" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["train", "--dataset", "seattle-weather", "--data-dir", str(tmp_path),
                         "--out", str(tmp_path)], capsys)
    assert code == 2 and "seattle-weather.csv" in err and len(err.strip().splitlines()) == 1


def _fake_fortunes(tmp_path):
    d = tmp_path / "fortunes"
    d.mkdir()
    rng = np.random.default_rng(0)
    words = {"cats": ["meow", "purr", "whisker", "mouse"], "ships": ["sail", "anchor", "harbor", "wave"]}
    for name, ws in words.items():
        entries = [" ".join(rng.choice(ws + ["the", "a"], 6)) + f" {i}" for i in range(310)]
        (d / name).write_text("\n%\n".join(entries) + "\n")
    return d


@pytest.mark.parametrize("model", ["conv1d", "lstm"])
def test_fortunes_classifier_learns_and_saves_a_model_that_reads_strings(model, capsys, tmp_path):
    code, out, err = _run(["train", "--dataset", "fortunes", "--model", model, "--data-dir",
                           str(_fake_fortunes(tmp_path)), "--epochs", "2", "--verbose", "0",
                           "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    acc = float(out.split("test accuracy: ")[1].split("%")[0])
    assert acc > 90, out  # the two categories use different words
    model = dg.models.load_model(tmp_path / "out" / f"fortunes-{model}.dgm")
    probs = model.predict(["meow purr the whisker", "sail the anchor wave"]).data_sync()
    assert probs.argmax(1).tolist() == [0, 1]


def test_seattle_weather_lstm_runs_on_a_csv_and_reports_the_test_mae(capsys, tmp_path):
    days = np.arange(120)
    temp = 12 + 8 * np.sin(days / 10)
    lines = ["date,precipitation,temp_max,temp_min,wind,weather"]
    lines += [f"2013/{1 + d // 28:02d}/{1 + d % 28:02d},{d % 4}.0,{t:.1f},{t - 6:.1f},3.0,sun"
              for d, t in zip(days, temp)]
    (tmp_path / "seattle-weather.csv").write_text("\n".join(lines) + "\n")
    code, out, err = _run(["train", "--dataset", "seattle-weather", "--data-dir", str(tmp_path), "--epochs", "2",
                           "--verbose", "0", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "test MAE:" in out and "tomorrow = today's maximum" in out
    model = dg.models.load_model(tmp_path / "out" / "seattle-weather-lstm.dgm")
    assert model.predict(np.zeros((3, 14, 4), np.float32)).shape == (3, 1)
