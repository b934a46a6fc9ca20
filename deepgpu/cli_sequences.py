"""``deepgpu train --dataset fortunes | seattle-weather``: the sequence tasks of issue 16.

fortunes: which category is a quotation from (17 categories of Debian's ``fortunes``), a
TextVectorization (10,000 tokens, 64 steps) learned on the training quotes, then an Embedding +
bidirectional LSTM or a Conv1D classifier on the ids; the saved model takes strings.
seattle-weather: tomorrow's maximum temperature from the last 14 days, with an LSTM.
"""
from __future__ import annotations

import os
import time

MAX_TOKENS = 10_000
SEQUENCE_LENGTH = 64


def _data_error(e, user_error):
    return user_error(" ".join(line.strip() for line in str(e).splitlines() if line.strip()))


def _fortunes(args, opt, user_error):
    from collections import Counter

    import deepgpu as dg
    from . import layers as L
    from . import zoo
    from .datasets import fortunes

    try:
        (xtr, ytr), (xte, yte) = fortunes.load_data(path=args.data_dir)
        names = fortunes.get_label_names(path=args.data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise _data_error(e, user_error) from None
    vectorize = L.TextVectorization(max_tokens=MAX_TOKENS, output_sequence_length=SEQUENCE_LENGTH)
    vectorize.adapt(xtr)
    ids_tr, ids_te = vectorize(xtr).data_sync(), vectorize(xte).data_sync()
    print(f"{len(xtr)} training / {len(xte)} test quotations in {len(names)} categories; a vocabulary of "
          f"{vectorize.vocabulary_size()} tokens, {SEQUENCE_LENGTH} per quotation")
    model = zoo.SEQUENCE_MODELS[("fortunes", args.model)](vectorize.vocabulary_size(), len(names), SEQUENCE_LENGTH)
    model.summary()
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(ids_tr, ytr, batch_size=args.batch_size or 64, epochs=args.epochs or 6,
                        validation_split=0.1 if args.validation_split is None else args.validation_split,
                        verbose=args.verbose)
    loss, acc = model.evaluate(ids_te, yte, batch_size=256)
    # The loaded labels are host arrays: the baseline needs no backend.
    largest = Counter(ytr.tolist()).most_common(1)[0][0]
    majority = float((yte == largest).mean())
    print(f"Test loss: {loss:.4f} - test accuracy: {acc * 100:.2f}% (the largest category alone: "
          f"{majority * 100:.1f}%)")
    # The saved model reads strings: the vocabulary travels inside it.
    text = L.Input(shape=(1,), dtype="string", name="quotation")
    return dg.models.Model(text, model(vectorize(text)), name=f"fortunes_{args.model}_text"), history


def _weather(args, opt, user_error):
    from . import zoo
    from .datasets import seattle_weather

    path = args.data_dir
    if path is not None and os.path.isdir(path):
        path = os.path.join(path, "seattle-weather.csv")
    try:
        (xtr, ytr), (xte, yte) = seattle_weather.load_data(path=path)
    except (FileNotFoundError, ValueError) as e:
        raise _data_error(e, user_error) from None
    days = xtr.reshape(-1, xtr.shape[-1])
    model = zoo.weather_lstm(xtr.shape[1:], mean=days.mean(0), variance=days.var(0),
                             target_mean=float(ytr.mean()), target_std=float(ytr.std()))
    print(f"{len(xtr)} training / {len(xte)} test windows of {xtr.shape[1]} days x {xtr.shape[2]} measurements "
          f"({', '.join(seattle_weather.FEATURES)}) -> the next day's temp_max")
    model.summary()
    model.compile(optimizer=opt, loss="mse", metrics=["mae"])
    history = model.fit(xtr, ytr.reshape(-1, 1), batch_size=args.batch_size or 32, epochs=args.epochs or 20,
                        validation_split=0.1 if args.validation_split is None else args.validation_split,
                        verbose=args.verbose)
    loss, mae = model.evaluate(xte, yte.reshape(-1, 1), batch_size=256)
    persistence = float(abs(xte[:, -1, seattle_weather.FEATURES.index("temp_max")] - yte).mean())
    print(f"Test MSE: {loss:.3f} - test MAE: {mae:.2f} deg C (tomorrow = today's maximum: {persistence:.2f})")
    return model, history


def train_sequence_model(args, opt, backend, user_error):
    """Train, evaluate and save the chosen network on ``args.dataset``; returns the exit status."""
    import deepgpu as dg

    print(f"deepgpu {dg.__version__} on {backend}: {args.model} on {args.dataset}")
    t0 = time.perf_counter()
    run = _fortunes if args.dataset == "fortunes" else _weather
    model, history = run(args, opt, user_error)
    print(f"(training took {time.perf_counter() - t0:.1f} s)")
    path = os.path.join(args.out, f"{args.dataset}-{args.model}.dgm")
    try:
        os.makedirs(args.out, exist_ok=True)
        model.save(path)
    except OSError as e:
        raise user_error(f"cannot save the model to {path!r}: {e.strerror or e}") from None
    print(f"Saved the model to {path}")
    try:
        from .plotting import plot_history
        png = os.path.join(args.out, f"{args.dataset}-{args.model}-history.png")
        plot_history(history, png)
        print(f"Saved the training curves to {png}")
    except ImportError:
        print("(no plot: install matplotlib, e.g. pip install 'deepgpu[plot]')")
    return 0
