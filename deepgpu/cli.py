"""The ``deepgpu`` command: ``train``, ``info`` (and ``bench`` once installed).

User errors (a missing data folder, an unusable backend, a bad number) end
with one line on stderr and exit status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v


def _positive_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {v}")
    return v


def _fraction(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {v}")
    return v


def _version():
    from importlib import metadata
    try:
        return metadata.version("deepgpu")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def build_parser():
    p = argparse.ArgumentParser(prog="deepgpu", description="Keras-style deep learning on NumPy or CUDA.")
    p.add_argument("--version", action="version", version=f"deepgpu {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network on a real dataset (digits by default)")
    t.add_argument("--model", choices=["dnn", "cnn", "resnet", "lstm", "conv1d"], default=None,
                   help="the network: for images a dense one, the seed convnet or a small ResNet; for fortunes "
                        "an Embedding + bidirectional LSTM or a Conv1D text classifier; for seattle-weather an "
                        "LSTM (default: cnn for images, lstm otherwise)")
    t.add_argument("--dataset", choices=["digits", "fashion-mnist", "mnist", "fortunes", "seattle-weather"],
                   default="digits",
                   help="digits ships with scikit-learn; MNIST / Fashion-MNIST are read from IDX files; fortunes "
                        "(apt-get install fortunes) and seattle-weather (pip install vega_datasets) are "
                        "sequence tasks (default: digits)")
    t.add_argument("--data-dir", default=None,
                   help="folder holding the IDX files (MNIST / Fashion-MNIST), the fortune files (default "
                        "/usr/share/games/fortunes) or seattle-weather.csv (default: vega_datasets' copy)")
    t.add_argument("--backend", choices=["auto", "cpu", "cuda"], default=None,
                   help="default: $DEEPGPU_BACKEND, else auto (the GPU where CuPy can use one, else the CPU)")
    t.add_argument("--epochs", type=_positive_int, default=None,
                   help="default: 20 for digits and seattle-weather, 6 for fortunes, 3 otherwise")
    t.add_argument("--batch-size", type=_positive_int, default=None,
                   help="default: 32 for digits and seattle-weather, 64 for fortunes, 128 otherwise")
    t.add_argument("--optimizer", default="adam",
                   help="a Keras optimizer name: adam, sgd, rmsprop, adamw, ... (default: adam)")
    t.add_argument("--learning-rate", type=_positive_float, default=1e-3, help="default: 0.001")
    t.add_argument("--validation-split", type=_fraction, default=None,
                   help="fraction of the training images held out for validation; default 0.1 for digits, "
                        "0 for MNIST / Fashion-MNIST (all 60,000 train; the test set is shown as validation)")
    t.add_argument("--seed", type=int, default=0,
                   help="seeds the weights, the shuffling and the validation split (default: 0)")
    t.add_argument("--out", default="deepgpu-out",
                   help="folder for the saved model and the history plot (default: deepgpu-out)")
    t.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                   help="0 quiet, 1 a progress bar, 2 one line per epoch (default: 1)")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of `mpiexec -n N python -m mpi4py -m deepgpu.cli train "
                        "--distributed ...` (pip install 'deepgpu[distributed]'); --batch-size is the global "
                        "batch; rank 0 prints and saves")

    i = sub.add_parser("info", help="versions, backends, and the GPU if any")
    i.add_argument("--layers", action="store_true",
                   help="the layer-coverage table instead: every TF.js Layers and Keras layer name, "
                        "with deepgpu's class or 'missing'")

    b = sub.add_parser("bench", help="time training steps against PyTorch and Keras (see bench/)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    return p


_SEQUENCE_DATASETS = ("fortunes", "seattle-weather")


def _load(dataset, data_dir):
    from . import datasets

    if dataset == "digits":
        (xtr, ytr), (xte, yte) = datasets.digits.load_data()
        scale = 16.0
    else:
        mod = datasets.fashion_mnist if dataset == "fashion-mnist" else datasets.mnist
        try:
            (xtr, ytr), (xte, yte) = mod.load_data(path=data_dir)
        except FileNotFoundError as e:
            # One line: the folders looked in and the how-to, joined, in the command's own terms.
            lines = [l.strip() for l in str(e).splitlines() if l.strip()]
            msg = " ".join(lines).replace("in the folder given as path", f"in --data-dir {data_dir!r}")
            msg = msg.replace("pass path=THAT_FOLDER (deepgpu train --data-dir THAT_FOLDER)",
                              "pass --data-dir THAT_FOLDER")
            raise UserError(msg) from None
        scale = 255.0
    xtr = (xtr.astype("float32") / scale).reshape(xtr.shape[0], xtr.shape[1], xtr.shape[2], 1)
    xte = (xte.astype("float32") / scale).reshape(xte.shape[0], xte.shape[1], xte.shape[2], 1)
    return (xtr, ytr.astype("int32")), (xte, yte.astype("int32"))


def _check_out(out):
    """Fail before training, not after, when the output folder cannot be written."""
    import tempfile
    probe = os.path.abspath(out)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise UserError(f"--out {out!r}: {probe!r} is not a writable folder")
    try:  # os.access trusts permission bits (always true for root), not a read-only or virtual file system
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise UserError(f"--out {out!r}: cannot write there ({e.strerror or e})") from None


def _batch_size(args):
    return args.batch_size or (32 if args.dataset == "digits" else 128)


def cmd_train(args):
    import deepgpu as dg
    from . import optimizers, zoo

    try:
        backend = dg.set_backend(args.backend or os.environ.get("DEEPGPU_BACKEND", "auto"))
    except (dg.BackendUnavailableError, ValueError) as e:
        raise UserError(str(e)) from None
    _check_out(args.out)
    distribute = None
    if getattr(args, "distributed", False):
        try:
            dg.distributed.init()
        except ImportError as e:
            raise UserError(str(e)) from None
        distribute = dg.distributed.DataParallel(seed=args.seed)
        if not dg.distributed.is_main():  # one rank speaks; errors still reach stderr
            sys.stdout = open(os.devnull, "w")
        size = dg.distributed.size()
        if args.dataset not in _SEQUENCE_DATASETS and _batch_size(args) % size:
            raise UserError(f"--batch-size {_batch_size(args)} is the global batch and must be divisible by "
                            f"the number of ranks ({size}); use a multiple of {size}")
    sequences = args.dataset in _SEQUENCE_DATASETS
    model_name = args.model or ("lstm" if sequences else "cnn")
    if sequences != (model_name in ("lstm", "conv1d")) or (args.dataset, model_name) == ("seattle-weather", "conv1d"):
        fits = {"fortunes": "lstm or conv1d", "seattle-weather": "lstm"}.get(args.dataset, "dnn, cnn or resnet")
        raise UserError(f"--model {model_name} does not fit --dataset {args.dataset}: use --model {fits}")
    args.model = model_name
    if args.dataset == "digits" and args.data_dir is not None:
        raise UserError(f"--data-dir {args.data_dir!r} is for --dataset mnist or fashion-mnist; the digits "
                        f"ship with scikit-learn")
    try:  # before the data loads: a misspelt optimizer should not cost a wait
        opt = optimizers.get({"class_name": args.optimizer, "config": {"learning_rate": args.learning_rate}})
    except ValueError as e:
        raise UserError(str(e)) from None
    dg.set_seed(args.seed)
    if sequences and distribute is not None:
        raise UserError("--distributed trains the image models (dnn, cnn, resnet) only for now")
    if sequences:
        from .cli_sequences import train_sequence_model
        return train_sequence_model(args, opt, backend, UserError)
    (xtr, ytr), (xte, yte) = _load(args.dataset, args.data_dir)
    epochs = args.epochs or (20 if args.dataset == "digits" else 3)
    batch = _batch_size(args)
    print(f"deepgpu {dg.__version__} on {backend}: {args.model} on {args.dataset} "
          f"({len(xtr)} training / {len(xte)} test images of {xtr.shape[1]}x{xtr.shape[2]})")
    model = zoo.MODELS[args.model](input_shape=xtr.shape[1:], num_classes=int(ytr.max()) + 1)
    model.summary()
    # On the GPU the step is recorded once as a CUDA graph and replayed (no effect on the CPU);
    # under --distributed too where NCCL can be captured (MPI: eager, with one warning saying why).
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  cuda_graph="auto", distribute=distribute)
    t0 = time.perf_counter()
    split = args.validation_split
    if split is None:
        split = 0.1 if args.dataset == "digits" else 0.0
    # With no split the test set is shown per epoch (it only watches: nothing is tuned on it).
    history = model.fit(xtr, ytr, batch_size=batch, epochs=epochs, validation_split=split,
                        validation_data=None if split else (xte, yte), verbose=args.verbose)
    train_s = time.perf_counter() - t0
    loss, acc = model.evaluate(xte, yte, batch_size=256)
    print(f"Test loss: {loss:.4f} - test accuracy: {acc * 100:.2f}% (training took {train_s:.1f} s)")
    train_acc = (history.history.get("accuracy") or [None])[-1]
    if train_acc is not None and acc < train_acc - 0.2:
        print(f"Note: the test accuracy is far below the training accuracy ({train_acc * 100:.1f}%): the "
              f"model does not generalize yet (too few epochs for BatchNormalization's moving statistics, "
              f"or overfitting); try more --epochs")
    path = os.path.join(args.out, f"{args.dataset}-{args.model}.dgm")
    try:
        os.makedirs(args.out, exist_ok=True)
        model.save(path)
    except OSError as e:
        raise UserError(f"cannot save the model to {path!r}: {e.strerror or e}") from None
    print(f"Saved the model to {path}")
    if distribute is not None and not dg.distributed.is_main():
        return 0  # rank 0 draws the plot
    try:
        from .plotting import plot_history
        png = os.path.join(args.out, f"{args.dataset}-{args.model}-history.png")
        plot_history(history, png)
        print(f"Saved the training curves to {png}")
    except ImportError:
        print("(no plot: install matplotlib, e.g. pip install 'deepgpu[plot]')")
    return 0


_INFO_DECISIONS = 40  # the most path choices `deepgpu info` lists


def layer_coverage():
    """{"tfjs" | "keras": (version, [(name, deepgpu's object as text or None)])} from deepgpu/layer_names.json."""
    import json
    from importlib import resources

    from . import layers

    doc = json.loads(resources.files("deepgpu").joinpath("layer_names.json").read_text())

    def ours(name):
        obj = getattr(layers, name, None)
        if obj is None or name.startswith("_"):
            return None
        what = f"deepgpu.layers.{getattr(obj, '__name__', name)}"
        return what if getattr(obj, "__name__", name) == name else f"{what} (as {name})"

    return {"tfjs": (doc["tfjs"]["version"], [(n, ours(n)) for n in doc["tfjs"]["classes"]]),
            "keras": (doc["keras"]["version"], [(n, ours(n)) for n in doc["keras"]["names"]])}


def print_layer_coverage():
    table = layer_coverage()
    for key, title, what in (("tfjs", "TF.js Layers", "layer classes"), ("keras", "Keras", "keras.layers names")):
        version, rows = table[key]
        have = sum(1 for _, o in rows if o)
        print(f"{title} {version}: deepgpu has {have} of {len(rows)} {what} ({len(rows) - have} missing)")
        width = max(len(n) for n, _ in rows) + 2
        for name, obj in rows:
            print(f"  {name:{width}s}{obj or 'missing'}")
    return 0


def cmd_info(args):
    if getattr(args, "layers", False):
        return print_layer_coverage()
    import platform

    import numpy

    import deepgpu as dg
    from .backends import cuda_status

    print(f"deepgpu {dg.__version__}")
    print(f"Python {platform.python_version()} on {platform.platform()}")
    print(f"NumPy {numpy.__version__}")
    ok, why = cuda_status()
    print("backends: cpu (NumPy) - available")
    try:
        from .kernels import cpu as cpu_kernels

        print(f"cpu C kernels: {cpu_kernels.status()}")
        if cpu_kernels.library() is not None:
            from .kernels import cpu_tune

            lines = cpu_tune.decisions(cached=True)
            how = ("measured at each op shape's first use, kept in " + str(cpu_tune._path())
                   if cpu_tune.mode() == "auto" else "off ($DEEPGPU_CPU_TUNE=off): fixed rules")
            print(f"cpu path choice: {how}; {len(lines)} shape(s) decided" + (":" if lines else ""))
            for line in lines[:_INFO_DECISIONS]:
                print("  " + line)
            if len(lines) > _INFO_DECISIONS:
                print(f"  ... and {len(lines) - _INFO_DECISIONS} more")
    except (ValueError, RuntimeError) as e:  # a bad DEEPGPU_CPU_KERNELS, a failed forced build: report it
        print(f"cpu C kernels: not used: {e}")
    print(f"backends: cuda (CuPy) - {'available' if ok else 'unavailable'}: {why}")
    if ok:
        import cupy

        print(f"CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            prop = cupy.cuda.runtime.getDeviceProperties(i)
            print(f"GPU {i}: {prop['name'].decode()}, {prop['totalGlobalMem'] / 2**30:.1f} GiB")
    env = os.environ.get("DEEPGPU_BACKEND")
    print(f"default backend: {dg.get_backend()}" + (f" ($DEEPGPU_BACKEND={env})" if env else " (auto)"))
    return 0


def cmd_bench(args):
    try:
        from .bench import main as bench_main
    except ImportError:
        raise UserError("the benchmark runner is not installed in this version") from None
    return bench_main(args.rest)


def _end_the_job(status):
    """Under --distributed, a rank that stops with an error ends every rank (no other rank is left
    waiting in a collective, even when launched without ``-m mpi4py``)."""
    from .distributed import comm
    if comm.launched_size() > 1:
        comm.abort_on_failure(status)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # argparse's REMAINDER drops a leading "--option"; hand bench its arguments untouched.
        args = argparse.Namespace(command="bench", rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "info": cmd_info, "bench": cmd_bench}[args.command](args)
    except UserError as e:
        print(f"deepgpu: error: {e}", file=sys.stderr)
        if getattr(args, "distributed", False):
            _end_the_job(2)
        return 2
    except KeyboardInterrupt:
        print("deepgpu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`deepgpu info --layers | head`): not an error of ours. Point stdout
        # at devnull so Python's flush at exit does not raise again (the Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
