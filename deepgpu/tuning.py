"""Hyper-parameter grid search, as the seeds' notes sketch it."""
from __future__ import annotations

import itertools
import math


class GridSearchResult:
    """``best_params`` (dict), ``best_val_loss`` (float), ``trials`` (list of dicts
    with ``params``, ``val_loss`` and the ``history`` dict)."""

    def __init__(self, trials, monitor):
        self.trials = trials
        self.monitor = monitor
        finite = [t for t in trials if math.isfinite(t["val_loss"])]
        if not finite:
            raise RuntimeError(f"grid_search: every trial ended with a non-finite {monitor}")
        best = min(finite, key=lambda t: t["val_loss"])
        self.best_params = dict(best["params"])
        self.best_val_loss = best["val_loss"]

    def __repr__(self):
        return f"GridSearchResult(best_params={self.best_params}, best_val_loss={self.best_val_loss:.4g}, trials={len(self.trials)})"


def grid_search(build_fn, param_grid, x, y, validation_data=None, validation_split=0.2, epochs=10,
                batch_size=32, monitor="val_loss", fit_kwargs=None, seed=None, verbose=0):
    """Train one model per combination in ``param_grid``; return a GridSearchResult.

    build_fn(**params) returns a compiled model. Parameters named
    ``epochs`` or ``batch_size`` in the grid are passed to ``fit`` instead.
    Each trial's score is the last value of ``monitor`` (lower is better).
    ``seed`` reseeds before each trial so trials differ only by parameters.
    """
    from .tensor import set_seed

    if not isinstance(param_grid, dict) or not param_grid:
        raise ValueError("param_grid must be a non-empty dict of name -> list of values")
    for k, v in param_grid.items():
        if not isinstance(v, (list, tuple)) or not v:
            raise ValueError(f"param_grid[{k!r}] must be a non-empty list of values")
    names = list(param_grid)
    trials = []
    for values in itertools.product(*(param_grid[k] for k in names)):
        params = dict(zip(names, values))
        fit_params = {"epochs": params.get("epochs", epochs), "batch_size": params.get("batch_size", batch_size)}
        build_params = {k: v for k, v in params.items() if k not in ("epochs", "batch_size")}
        if seed is not None:
            set_seed(seed)
        model = build_fn(**build_params)
        if not getattr(model, "compiled", False):
            raise ValueError("grid_search: build_fn must return a compiled model")
        kw = dict(fit_kwargs or {})
        if validation_data is not None:
            kw["validation_data"] = validation_data
        else:
            kw["validation_split"] = validation_split
        hist = model.fit(x, y, verbose=verbose, **fit_params, **kw)
        if monitor not in hist.history:
            raise ValueError(f"grid_search: {monitor!r} is not in the history; keys are {sorted(hist.history)}")
        trials.append({"params": params, "val_loss": float(hist.history[monitor][-1]),
                       "history": dict(hist.history)})
        if verbose:
            print(f"grid_search: {params} -> {monitor} {trials[-1]['val_loss']:.4f}")
    return GridSearchResult(trials, monitor)
