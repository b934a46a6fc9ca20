"""The `deepgpu` command: train on the built-in data and on IDX files, info, one-line user errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

import deepgpu as dg
from deepgpu.cli import main
from deepgpu.data.idx import save_idx


def _run(*args, env=None):
    e = dict(os.environ, MPLBACKEND="Agg", **(env or {}))
    return subprocess.run([sys.executable, "-m", "deepgpu.cli", *args], capture_output=True, text=True,
                          env=e, timeout=600)


def test_train_digits_dnn_saves_a_loadable_model_and_a_plot(tmp_path, capsys):
    pytest.importorskip("sklearn")
    rc = main(["train", "--model", "dnn", "--epochs", "3", "--out", str(tmp_path), "--verbose", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Total params:" in out and "Epoch 3/3" in out
    acc = float(out.split("test accuracy: ")[1].split("%")[0])
    assert acc > 85.0, out
    model_path = tmp_path / "digits-dnn.dgm"
    m = dg.models.load_model(model_path)
    (_, _), (xte, yte) = dg.datasets.digits.load_data()
    x = (xte.astype("float32") / 16.0).reshape(-1, 8, 8, 1)
    _, acc2 = m.evaluate(x, yte.astype("int32"), verbose=0)
    assert acc2 * 100 == pytest.approx(acc, abs=0.01)
    if pytest.importorskip("matplotlib"):
        assert (tmp_path / "digits-dnn-history.png").stat().st_size > 1000


def test_the_default_run_reaches_96_percent(tmp_path, capsys):
    """`deepgpu train` with no options: the seed convnet on the bundled digits, >= 96% on the test split.

    One seed is one draw: on 2026-12-02 seeds 0-3 gave 96.89, 98.89, 98.22 and 98.67% (450 test
    images, so one image is 0.22 points); the bar sits below the spread, far above chance (10%).
    """
    pytest.importorskip("sklearn")
    rc = main(["train", "--out", str(tmp_path), "--verbose", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert float(out.split("test accuracy: ")[1].split("%")[0]) >= 96.0, out


@pytest.mark.parametrize("seed", [0, 1])
def test_a_short_resnet_run_works_at_test_time(tmp_path, capsys, seed):
    """Two epochs of the ResNet: BatchNormalization's moving statistics settle (10% before)."""
    pytest.importorskip("sklearn")
    rc = main(["train", "--model", "resnet", "--epochs", "2", "--seed", str(seed), "--out", str(tmp_path),
               "--verbose", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert float(out.split("test accuracy: ")[1].split("%")[0]) >= 90.0, out
    assert "far below" not in out


def test_a_test_accuracy_far_below_training_is_pointed_out(tmp_path, capsys, monkeypatch):
    from deepgpu.models.training import Trainer
    real = Trainer.evaluate
    # A model whose test-time behaviour breaks (as unsettled moving statistics did): labels shifted.
    monkeypatch.setattr(Trainer, "evaluate", lambda self, x, y, **kw: real(self, x, (y + 1) % 10, **kw))
    pytest.importorskip("sklearn")
    assert main(["train", "--epochs", "2", "--out", str(tmp_path), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "far below" in out and "training accuracy" in out, out


def _fake_idx(folder, n_train=96, n_test=32, seed=0):
    """Four IDX files of a learnable 28x28 task (class = which quadrant is bright)."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 4, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            r, q = divmod(int(c), 2)
            x[i, r * 14:(r + 1) * 14, q * 14:(q + 1) * 14] += 150
        return x, y

    folder.mkdir(parents=True, exist_ok=True)
    xtr, ytr = make(n_train)
    xte, yte = make(n_test)
    save_idx(folder / "train-images-idx3-ubyte.gz", xtr)
    save_idx(folder / "train-labels-idx1-ubyte.gz", ytr)
    save_idx(folder / "t10k-images-idx3-ubyte", xte)
    save_idx(folder / "t10k-labels-idx1-ubyte", yte)


@pytest.mark.parametrize("model", ["cnn", "resnet"])
def test_train_fashion_mnist_from_a_data_dir(tmp_path, capsys, model):
    _fake_idx(tmp_path / "data")
    rc = main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "data"), "--model", model,
               "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "out"), "--verbose", "0",
               "--optimizer", "sgd", "--learning-rate", "0.05", "--validation-split", "0"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "96 training / 32 test images of 28x28" in out
    if model == "cnn":  # the seed convnet with a 4-class head: 594,922 - 10 * 513 + 4 * 513
        assert "Total params: 591,844" in out
    assert (tmp_path / "out" / f"fashion-mnist-{model}.dgm").exists()


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent/dir"], "/nonexistent/dir"),
    (["train", "--backend", "cuda"], "cuda"),
    (["train", "--optimizer", "nosuchopt", "--epochs", "1"], "nosuchopt"),
    (["train", "--out", "/proc/version/x"], "--out"),
    (["train", "--out", "/proc/deepgpu-out"], "--out"),  # permission bits say writable to root
    (["train", "--data-dir", "/some/dir"], "--data-dir"),
    (["train", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent/d", "--optimizer", "adamm"], "adamm"),
])
def test_user_errors_are_one_line(args, message):
    if "--backend" in args and dg.cuda_status()[0]:
        pytest.skip("a GPU is usable here, so --backend cuda is not an error")
    p = _run(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("deepgpu: error:"), p.stderr
    assert message in lines[0].lower()
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("args", [["train", "--epochs", "zero"], ["train", "--validation-split", "1.5"],
                                  ["train", "--model", "vgg"], ["frobnicate"]])
def test_bad_arguments_exit_2_without_traceback(args):
    p = _run(*args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "error:" in p.stderr


def test_info_names_backends_and_versions(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"deepgpu {dg.__version__}" in out and "NumPy" in out
    assert "cpu (NumPy) - available" in out
    from deepgpu.kernels import cpu
    assert f"cpu C kernels: {cpu.status()}" in out
    ok, why = dg.cuda_status()
    assert ("cuda (CuPy) - available" in out) if ok else (why in out)


def test_version_and_help_texts():
    p = _run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"deepgpu {dg.__version__}", (p.stdout, p.stderr)
    h = _run("train", "--help").stdout.split("options:", 1)[1]
    for flag in ("--model", "--dataset", "--optimizer", "--learning-rate", "--seed", "--backend", "--out",
                 "--verbose"):
        line = h.split(flag, 1)[1].split("\n  --", 1)[0]
        assert "default" in line, (flag, line)
    assert "else auto" in h


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`deepgpu info --layers | head -1`: a closed pipe ends the command quietly (exit 141, as SIGPIPE)."""
    r, w = os.pipe()
    os.close(r)  # the reader is already gone: the first write meets a closed pipe
    try:
        proc = subprocess.run([sys.executable, "-m", "deepgpu.cli", "info", "--layers"], cwd=tmp_path,
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141
