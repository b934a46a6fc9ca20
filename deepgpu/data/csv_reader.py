"""``deepgpu.data.csv``: a Dataset of the rows of CSV files (TF.js ``tf.data.csv``,
tf.data's ``make_csv_dataset`` / ``CsvDataset`` arguments).

Parsing is the standard library's ``csv`` module (quoting, embedded commas
and newlines); each value is converted per column. Every error names the
file, the line and the column.
"""
from __future__ import annotations

import csv as _csv
import glob
import itertools
import os

import numpy as np

from .dataset import Dataset, UNKNOWN_CARDINALITY

__all__ = ["csv", "make_csv_dataset", "CSVError"]


class CSVError(ValueError):
    """A CSV file that does not fit the requested columns or types (names file, line, column)."""


def _paths(file_pattern):
    pats = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else list(file_pattern)
    out = []
    for p in pats:
        p = os.fspath(p)
        if p.startswith("file://"):  # TF.js's URL form
            p = p[len("file://"):]
        hits = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        if not hits:
            raise FileNotFoundError(f"csv(): no file matches {p!r}")
        for h in hits:
            if not os.path.isfile(h):
                raise FileNotFoundError(f"csv(): no such file {h!r}")
        out.extend(hits)
    return out


_KINDS = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64,
          "string": np.str_, "str": np.str_, "bool": np.bool_}


def _kind_of_default(d):
    if isinstance(d, (list, tuple)):  # tf.data's [] (required, float) or [value]
        if not d:
            return np.float32, None
        d = d[0]
    if d is None:
        return None, None
    if isinstance(d, bool):
        return np.bool_, d
    if isinstance(d, (int, np.integer)):
        return (np.int64 if isinstance(d, np.int64) else np.int32), d
    if isinstance(d, (float, np.floating)):
        return np.float32, d
    if isinstance(d, str):
        if d in _KINDS:  # a dtype name: the column's type, no default
            return _KINDS[d], None
        return np.str_, d
    if isinstance(d, type) or isinstance(d, np.dtype):
        return np.dtype(d).type, None
    raise ValueError(f"csv(): column default {d!r} is not a number, string, bool or dtype")


def _parse(text, kind, default, where):
    if text == "" or text is None:
        if default is None:
            raise CSVError(f"{where}: missing value (the column has no default; give column_defaults)")
        return kind(default) if kind is not None else default
    if kind is np.str_:
        return text
    try:
        if kind is np.bool_:
            low = text.strip().lower()
            if low in ("true", "1"):
                return True
            if low in ("false", "0"):
                return False
            raise ValueError(text)
        if kind in (np.int32, np.int64):
            return kind(int(text))
        return kind(float(text))
    except (ValueError, OverflowError):
        raise CSVError(f"{where}: cannot parse {text!r} as {np.dtype(kind).name}") from None


def csv(source, column_names=None, column_defaults=None, label_name=None, select_columns=None,
        header=True, field_delim=",", na_value="", column_configs=None, configured_columns_only=False,
        has_header=None, delimiter=None, columnNames=None, columnConfigs=None,  # noqa: N803 - TF.js
        configuredColumnsOnly=None, hasHeader=None):
    """A Dataset with one element per data row of the CSV file(s) ``source`` (a path, a glob
    pattern or a list of them).

    column_names: the columns' names (default: the header line). header: the
    first line is a header (skipped). column_defaults: one per column (or a
    dict by name): a value (its type sets the column's dtype and fills empty
    fields), a dtype name ("float32", "int32", "string", ...), or ``[]`` /
    None for a required column. Without it a column is float32 when its first
    value parses as a number, else a string. select_columns: keep only these
    (names or indices). label_name: this column becomes the label: elements
    are ``(features_dict, label)``, else ``features_dict``. TF.js:
    column_configs ``{name: {"dtype", "default", "required", "isLabel"}}`` makes
    elements ``{"xs": features, "ys": labels}`` when a column is a label.

    Raises CSVError (a ValueError) naming the file, line and column for a
    missing column, a row with too few or too many fields, an empty required
    field or a value that does not parse; FileNotFoundError for no file.
    """
    column_names = columnNames if columnNames is not None else column_names
    column_configs = columnConfigs if columnConfigs is not None else column_configs
    if configuredColumnsOnly is not None:
        configured_columns_only = configuredColumnsOnly
    for v in (has_header, hasHeader):
        if v is not None:
            header = v
    delim = delimiter if delimiter is not None else field_delim
    paths = _paths(source)
    configs = dict(column_configs or {})

    def columns_of(path):
        """(names, kinds, defaults) for one file, from the arguments and its header."""
        with open(path, newline="", encoding="utf-8") as f:
            r = _csv.reader(f, delimiter=delim)
            first = next(r, None)
            data_row = next(r, None) if header else first
        if first is None:
            raise CSVError(f"{path}: the file is empty")
        names = list(column_names) if column_names is not None else (
            [c.strip() for c in first] if header else [f"column_{i}" for i in range(len(first))])
        if header and column_names is None and len(set(names)) != len(names):
            raise CSVError(f"{path}, line 1: duplicate column names in the header {names}")
        return names, data_row

    plan = {}

    def prepare(path):
        names, data_row = columns_of(path)
        wanted = list(names)
        if select_columns is not None:
            wanted = [names[c] if isinstance(c, int) else c for c in select_columns]
        if configured_columns_only:
            wanted = [c for c in names if c in configs]
        for c in list(wanted) + ([label_name] if label_name else []) + list(configs):
            if c not in names:
                raise CSVError(f"{path}, line 1: no column {c!r} (the columns are {names})")
        if label_name and label_name not in wanted:
            wanted.append(label_name)
        defaults = column_defaults
        if isinstance(defaults, dict):
            defaults = [defaults.get(n) for n in names]
        if defaults is not None and len(defaults) != len(names):
            raise CSVError(f"{path}: column_defaults has {len(defaults)} entries for {len(names)} columns {names}")
        kinds, fills = {}, {}
        for i, n in enumerate(names):
            if n not in wanted:
                continue
            kind, fill = (None, None) if defaults is None else _kind_of_default(defaults[i])
            cfg = configs.get(n, {})
            if "dtype" in cfg:
                kind = _KINDS.get(str(cfg["dtype"]), None) or np.dtype(cfg["dtype"]).type
            if "default" in cfg:
                fill = cfg["default"]
            if kind is None:
                sample = data_row[i] if data_row is not None and i < len(data_row) else ""
                try:
                    float(sample)
                    kind = np.float32
                except ValueError:
                    kind = np.str_ if sample != "" else np.float32
            kinds[n], fills[n] = kind, fill
        labels = [label_name] if label_name else [n for n, c in configs.items() if c.get("isLabel")]
        plan[path] = (names, wanted, kinds, fills, labels)

    for p in paths:  # checked now, so a missing column fails at once, not mid-epoch
        prepare(p)

    def rows(path):
        names, wanted, kinds, fills, labels = plan[path]
        idx = {n: i for i, n in enumerate(names)}
        for line, row in _data_rows(path, delim, header):
            if len(row) != len(names):
                missing = names[len(row):] if len(row) < len(names) else []
                more = f" (column {missing[0]!r} is missing)" if missing else ""
                raise CSVError(f"{path}, line {line}: {len(row)} fields, expected {len(names)}{more}")
            feats, labs = {}, {}
            for n in wanted:
                text = row[idx[n]]
                if text == na_value and na_value != "":
                    text = ""
                v = np.asarray(_parse(text, kinds[n], fills[n], f"{path}, line {line}, column {n!r}"),
                               dtype=kinds[n])
                (labs if n in labels else feats)[n] = v
            if label_name:
                yield feats, labs[label_name]
            elif labels:
                yield {"xs": feats, "ys": labs}
            else:
                yield feats

    def make():
        for p in paths:
            yield from rows(p)
    return Dataset(make, UNKNOWN_CARDINALITY, "CsvDataset")


def _data_rows(path, delim, header):
    """(line number, fields) of each data row of one file: the header and blank lines skipped."""
    with open(path, newline="", encoding="utf-8") as f:
        r = _csv.reader(f, delimiter=delim)
        if header:
            next(r, None)
        for row in r:
            if row and row != [""]:
                yield r.line_num, row


def _widen(kind, text):
    """The narrowest of int32, int64, float32, str that holds ``text`` and what ``kind`` held."""
    if kind in (None, np.int32, np.int64):
        try:
            v = int(text)
            return np.int32 if kind is not np.int64 and -2 ** 31 <= v < 2 ** 31 else np.int64
        except ValueError:
            pass
    if kind is not np.str_:
        try:
            float(text)
            return np.float32
        except ValueError:
            pass
    return np.str_


def _inferred_defaults(paths, header, delim, na_value, num_rows):
    """tf.data's column_defaults when none are given: per column, over the first ``num_rows`` data
    rows (empty and ``na_value`` fields aside), 0 when every value is an integer (int32, or int64
    when one needs it), 0.0 (float32) when a number, else "" (string); the default fills empty fields."""
    kinds = None
    rows = (row for path in paths for _, row in _data_rows(path, delim, header))
    for row in itertools.islice(rows, num_rows):
        kinds = kinds or [None] * len(row)
        for j, text in enumerate(row[:len(kinds)]):
            if text not in ("", na_value):
                kinds[j] = _widen(kinds[j], text)
    if kinds is None:
        return None
    return [{np.int32: 0, np.int64: np.int64(0), np.float32: 0.0}.get(k, "") for k in kinds]


def make_csv_dataset(file_pattern, batch_size, column_names=None, column_defaults=None, label_name=None,
                     select_columns=None, field_delim=",", header=True, num_epochs=None, shuffle=True,
                     shuffle_buffer_size=10000, shuffle_seed=None, prefetch_buffer_size=None, na_value="",
                     num_rows_for_inference=100):
    """tf.data.experimental.make_csv_dataset: ``csv(...)`` repeated ``num_epochs`` times (None:
    forever), shuffled and batched (each feature a batched array). Without column_defaults the
    types are tf.data's, inferred over ``num_rows_for_inference`` rows: int32 (or int64), float32
    or string, empty fields filled with 0 / 0.0 / ""."""
    if column_defaults is None:
        if isinstance(num_rows_for_inference, bool) or not isinstance(num_rows_for_inference, int) \
                or num_rows_for_inference < 0:
            raise ValueError(f"make_csv_dataset(): num_rows_for_inference must be an int >= 0, got "
                             f"{num_rows_for_inference!r}")
        column_defaults = _inferred_defaults(_paths(file_pattern), header, field_delim, na_value,
                                             num_rows_for_inference)
    ds = csv(file_pattern, column_names=column_names, column_defaults=column_defaults, label_name=label_name,
             select_columns=select_columns, header=header, field_delim=field_delim, na_value=na_value)
    ds = ds.repeat(num_epochs)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer_size, seed=shuffle_seed)
    ds = ds.batch(batch_size)
    return ds.prefetch(prefetch_buffer_size or 2)
