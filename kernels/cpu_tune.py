"""Choosing among the CPU backend's ways to compute one op, by timing them on this machine.

A convolution can run on the direct C kernel, on Winograd tiles, or as
im2col + BLAS; which is fastest depends on the shape, the instruction set and
the BLAS (issue 13: kernels tuned on an AVX-512 machine ran 10x slower than
BLAS on an AVX2 one). So, as cuDNN's benchmark mode does, the first call of
an op at a new shape times every candidate on the real operands and keeps
the fastest. Decisions are written beside the compiled kernels
(``<library>.tune.json``, so they are keyed by CPU, compiler and source as
the library is) under a key naming the op, its shapes and the thread count,
and later processes reuse them without timing.

``DEEPGPU_CPU_TUNE`` chooses: ``auto`` (default: as above), ``off`` (no
timing: fixed rules, the same path on every run and machine, for
reproducible numbers). ``decisions()`` lists what was chosen and why
(``deepgpu info`` prints it).
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time

# Below this (seconds, the rule's path once), timing noise outweighs any gain: keep the rule.
MIN_TIME_S = 2e-4
_RUNS = 3  # timed runs per candidate after one warm-up; the minimum counts

_lock = threading.Lock()
_state: dict = {"path": None, "loaded": False, "table": {}, "session": {}}


def mode() -> str:
    """``auto`` or ``off``, from ``DEEPGPU_CPU_TUNE``; ValueError for anything else."""
    m = os.environ.get("DEEPGPU_CPU_TUNE", "auto").strip().lower() or "auto"
    if m in ("0", "false", "no"):
        m = "off"
    if m not in ("auto", "off"):
        raise ValueError(f"DEEPGPU_CPU_TUNE={m!r}: expected 'auto' or 'off'")
    return m


def _path() -> str | None:
    from . import cpu
    lib_path = cpu.library_path()
    return None if lib_path is None else lib_path[:-len(".so")] + ".tune.json"


def _table() -> dict:
    """The decisions on disk for this library (read once per process)."""
    if not _state["loaded"]:
        _state["loaded"] = True
        _state["path"] = _path()
        if _state["path"] and os.path.exists(_state["path"]):
            try:
                with open(_state["path"]) as f:
                    data = json.load(f)
                if isinstance(data, dict):
                    _state["table"] = {k: v for k, v in data.items()
                                       if isinstance(v, dict) and isinstance(v.get("choice"), str)}
            except (OSError, ValueError):
                _state["table"] = {}  # a damaged cache only costs a new measurement
    return _state["table"]


def _save(key: str, record: dict) -> None:
    """Merge one decision into the file (re-read first: other processes may have added theirs);
    written to a temporary file and renamed, so a reader never sees half a file."""
    path = _state["path"]
    if not path:
        return
    try:
        merged = {}
        if os.path.exists(path):
            try:
                with open(path) as f:
                    merged = json.load(f)
            except (OSError, ValueError):
                merged = {}
        if not isinstance(merged, dict):
            merged = {}
        merged[key] = record
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=os.path.dirname(path))
        with os.fdopen(fd, "w") as f:
            json.dump(merged, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache: the decision still holds for this process


def choose(op: str, key: str, candidates: dict):
    """Run ``op`` by one of ``candidates`` (name -> function of no arguments returning the result)
    and return its result.

    The first candidate is the rule's choice: used alone when tuning is off,
    when it is the only one, or when it takes under ``MIN_TIME_S``. Otherwise
    the first call at ``key`` warms each candidate up once, then times them in
    ``_RUNS`` interleaved rounds (the best of each counts) and remembers the
    fastest, here and on disk.
    """
    names = list(candidates)
    if len(names) == 1 or mode() == "off":
        return candidates[names[0]]()
    full = f"{op} {key}"
    with _lock:
        rec = _state["session"].get(full) or _table().get(full)
    if rec is not None and rec["choice"] in candidates:
        _state["session"].setdefault(full, rec)
        return candidates[rec["choice"]]()
    t = time.perf_counter()
    out = candidates[names[0]]()
    if time.perf_counter() - t < MIN_TIME_S:
        with _lock:
            _state["session"][full] = {"choice": names[0], "why": "rule (too quick to time)"}
        return out
    for name in names[1:]:
        candidates[name]()  # warm-up: first-touch page faults, work buffers, nested choices
    # Rounds that take each candidate in turn, so a burst of load from elsewhere on a
    # shared machine slows them alike; the best of each one's runs counts.
    times = dict.fromkeys(names, float("inf"))
    for _ in range(_RUNS):
        for name in names:
            t = time.perf_counter()
            out = candidates[name]()
            times[name] = min(times[name], time.perf_counter() - t)
    choice = min(times, key=times.get)
    if names[-1] != choice:
        out = candidates[choice]()  # the winner runs last: side effects (kept columns) are its own
    rec = {"choice": choice, "why": "measured", "ms": {n: round(s * 1e3, 3) for n, s in times.items()}}
    with _lock:
        _state["session"][full] = rec
        _table()[full] = rec
        _save(full, rec)
    return out


def decisions(cached: bool = False) -> list[str]:
    """One line per op shape decided in this process (with ``cached``, also those in the cache
    file): the choice, and the times that made it."""
    lines = []
    recs = dict(_table()) if cached else {}
    recs.update(_state["session"])
    for key, rec in sorted(recs.items()):
        why = rec.get("why", "")
        if rec.get("ms"):
            why += ": " + ", ".join(f"{n} {ms:g} ms" for n, ms in sorted(rec["ms"].items(), key=lambda kv: kv[1]))
        lines.append(f"{key} -> {rec['choice']} ({why})")
    return lines


def reset(forget_disk: bool = False) -> None:
    """Forget this process's decisions (and the file's, with ``forget_disk``): the next call of
    each op shape measures again."""
    with _lock:
        _state["session"].clear()
        if forget_disk:
            _state["table"].clear()
            if _state["path"] and os.path.exists(_state["path"]):
                os.unlink(_state["path"])
        _state["loaded"] = forget_disk and _state["loaded"]
