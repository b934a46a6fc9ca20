"""The layer conformance harness: one layer class, one configuration, every path.

``run_layer_test(layer_cls, init_kwargs, input_shape, ...)`` builds the layer
on random data and runs the checks named in ``CHECKS``; ``LayerCase`` holds
the same arguments so that a test module can list a layer family's cases and
run each. A check that does not apply is skipped with its reason (``skip=``);
a file format the layer cannot be written to is declared in ``unsupported=``,
and then the save must raise an error naming the layer.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

from .. import backends

CHECKS = (
    "build",          # call, output shape == compute_output_shape (and symbolic), float32 out, counts
    "batch_of_one",   # a batch of one gives the first row of the full batch's output
    "mask",           # with input_mask: the output mask as expected, symbolic too; masked input values unseen
    "wrong_rank",     # an input of the wrong rank raises, naming the layer and both shapes
    "config",         # get_config is JSON; from_config and the registry rebuild it; same outputs
    "native",         # save_model / load_model: same predictions
    "tfjs",           # save_tfjs / load_tfjs: same predictions
    "tfjs_node",      # the real @tensorflow/tfjs loads the saved folder and predicts the same
    "keras",          # save_keras / load_keras (.keras): same predictions
    "keras_real",     # Keras 3 itself (where installed) loads the .keras file and predicts the same
    "onnx",           # export_onnx, run by onnxruntime: same predictions
    "gradients",      # float64 finite differences for the inputs and every trainable weight
    "training",       # training=True vs inference, as the case declares
    "trainable",      # frozen (config or setter): a fit step changes nothing; else every trainable weight moves
    "cuda_emulated",  # the CUDA backend's custom-kernel path, emulated on the CPU, vs NumPy (1e-4 rel)
    "cuda",           # the real CUDA backend vs NumPy, where a GPU is usable
)
FORMATS = ("native", "tfjs", "keras", "onnx")
TRAINING = (None, "deterministic", "random")
_PARITY_RTOL = 1e-4  # max |other - numpy| / max |numpy|, forward and backward
_GRAD_ELEMS = 64     # finite differences for at most this many elements per input or weight


class SkipCheck(Exception):
    """A check that cannot run here (a missing tool); the reason is recorded, not an error."""


@dataclasses.dataclass
class LayerTestReport:
    """What ``run_layer_test`` did: the CPU output, the checks run, those skipped with why, seconds per check."""

    output: object
    ran: list
    skipped: dict
    seconds: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(eq=False)
class LayerCase:
    """One sample case of a layer class: the arguments of ``run_layer_test``.

    ``input_shape`` includes the batch axis; a list of shapes gives a list
    of inputs (merge layers). ``training``: None when ``training=True``
    computes what inference does, "deterministic" when it differs
    reproducibly (batch statistics), "random" when it draws (dropout,
    noise). ``unsupported``: {format: reason} for formats in ``FORMATS``
    that cannot hold the layer. ``skip``: {check: reason}.
    ``input_mask``: a bool array (batch, ...) attached as ``_keras_mask`` to
    the input (a list: one per input, None for none) in every direct call of
    the layer (saved models are checked without it); ``expected_output_mask``:
    the mask the outputs must carry (None: none; a list for several
    outputs); ``mask_hides_inputs``: the outputs do not change when the input
    values at masked positions do.
    """

    layer_cls: type
    init_kwargs: dict = dataclasses.field(default_factory=dict)
    input_shape: object = None
    expected_output_shape: object = None
    input_dtype: object = None
    training: str | None = None
    unsupported: dict = dataclasses.field(default_factory=dict)
    skip: dict = dataclasses.field(default_factory=dict)
    custom_objects: dict | None = None
    wrong_rank_shape: tuple | None = None
    expected_num_weights: int | None = None
    expected_num_trainable_weights: int | None = None
    expected_num_params: int | None = None
    input_mask: object = None
    expected_output_mask: object = None
    mask_hides_inputs: bool = True
    input_data: object = None  # the inputs themselves (strings for text layers), instead of random ones
    id: str | None = None

    @property
    def name(self) -> str:
        """A readable test id: the class, then the given id or the arguments."""
        if self.id:
            return f"{self.layer_cls.__name__}-{self.id}"
        args = ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in self.init_kwargs.items())
        shapes = self.input_shape if isinstance(self.input_shape, list) else [self.input_shape]
        return f"{self.layer_cls.__name__}({args})-" + "-".join("x".join(map(str, s)) for s in shapes)

    def arguments(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "id"}

    def run(self, tfjs_batch=None, **overrides) -> LayerTestReport:
        """``run_layer_test`` with this case's arguments (``overrides`` replace some).

        tfjs_batch: a ``TfjsNodeBatch`` holding this case, whose single node
        run gives the TF.js check its prediction.
        """
        kw = self.arguments()
        if tfjs_batch is not None:
            kw["tfjs_node"] = lambda: tfjs_batch.result(self)
        kw.update(overrides)
        return run_layer_test(**kw)


def run_layer_test(layer_cls, init_kwargs=None, input_shape=None, expected_output_shape=None, *,
                   input_dtype=None, input_data=None, expected_output=None, expected_output_dtype=None,
                   expected_num_weights=None, expected_num_trainable_weights=None,
                   expected_num_non_trainable_weights=None, expected_num_params=None,
                   training=None, unsupported=None, skip=None, checks=None, custom_objects=None,
                   wrong_rank_shape=None, perturb_weights=True, tfjs_node=None, rtol=1e-4, atol=1e-5,
                   seed=0, input_mask=None, expected_output_mask=None, mask_hides_inputs=True) -> LayerTestReport:
    """Check ``layer_cls(**init_kwargs)`` on every path; raise AssertionError naming what differs.

    input_shape: with the batch axis (a list of shapes for several inputs),
    filled with random values of ``input_dtype`` (float32); or ``input_data``.
    The weights are moved off their initial values (``perturb_weights``) so
    that a weight lost on the way shows. ``training``, ``unsupported``,
    ``skip``: as in ``LayerCase``; ``checks``: run only these (names
    from ``CHECKS``). ``custom_objects``: for loading a custom
    layer by name. ``tfjs_node``: a function giving (deepgpu's outputs,
    TF.js's outputs) from a batched node run (``LayerCase.run(tfjs_batch=)``),
    or None to run node for this case alone (where node and
    @tensorflow/tfjs are installed; ``$DEEPGPU_TFJS_DIR`` or the repository's
    tests/js). Returns a ``LayerTestReport``.
    """
    skip = dict(skip or {})
    if checks is not None:
        unknown = set(checks) - set(CHECKS)
        if unknown:
            raise ValueError(f"checks: {sorted(unknown)} are not checks; checks are {CHECKS}")
        skip.update({c: "not selected (checks=)" for c in CHECKS if c not in checks and c not in skip})
    h = _Harness(layer_cls, dict(init_kwargs or {}), input_shape, input_dtype, input_data, training,
                 dict(unsupported or {}), skip, custom_objects, perturb_weights, rtol, atol, seed)
    h.expect = dict(output_shape=expected_output_shape, output=expected_output, output_dtype=expected_output_dtype,
                    num_weights=expected_num_weights, num_trainable=expected_num_trainable_weights,
                    num_non_trainable=expected_num_non_trainable_weights, num_params=expected_num_params)
    h.wrong_rank_shape = wrong_rank_shape
    h.tfjs_node = tfjs_node
    h.set_mask(input_mask, expected_output_mask, mask_hides_inputs)
    h.run()
    return h.report


# ------------------------------------------------------------------ helpers
def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _host(t):
    from ..tensor import Tensor
    return t.data_sync() if isinstance(t, Tensor) else np.asarray(t)


def _close(actual, expected, rtol, atol, what):
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {a.shape}, expected {e.shape}")
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max(initial=0.0)) / max(float(np.abs(b).max(initial=0.0)), 1e-6)


def _dtype_name(a):
    """The dtype of array ``a`` as an Input takes it: "string" for text (str, bytes, object)."""
    return "string" if a.dtype.kind in "USO" else str(a.dtype)


def _is_float(dtype):
    return np.dtype(dtype).kind == "f"


def _builtin(cls):
    """Whether ``cls`` is one of deepgpu's own layer classes (TF.js knows those by name)."""
    from .. import layers
    return getattr(layers, cls.__name__, None) is cls


def make_inputs(input_shape, input_dtype=None, seed=0):
    """Random arrays for ``input_shape`` (one shape or a list): normal floats, or ints in [0, 4)."""
    shapes = input_shape if isinstance(input_shape, list) else [input_shape]
    dtypes = input_dtype if isinstance(input_dtype, list) else [input_dtype] * len(shapes)
    rng = np.random.default_rng(seed)
    out = []
    for s, dt in zip(shapes, dtypes):
        dt = np.dtype(dt or "float32")
        out.append(rng.standard_normal(tuple(s)).astype(dt) if dt.kind == "f"
                   else rng.integers(0, 4, tuple(s)).astype(dt))
    return out


def perturb(layer, seed=0):
    """Move every weight off its initial value by up to 0.25, so that a weight lost in a round trip shows."""
    rng = np.random.default_rng(seed + 1)
    for w in layer.weights:
        v = w.data_sync()
        w.assign((v + rng.uniform(-0.25, 0.25, v.shape)).astype(v.dtype))


def functional_model(layer, arrays):
    """A functional Model of ``layer`` alone, with one Input per array (batch axis left out)."""
    from ..layers.base import Input
    from ..models import Model

    ins = [Input(shape=a.shape[1:], dtype=_dtype_name(a)) for a in arrays]
    out = layer(ins if len(ins) > 1 else ins[0])
    return Model(ins if len(ins) > 1 else ins[0], out, name=f"{layer.name}_model")


def _predict(model, xs):
    y = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    return [_host(o) for o in _as_list(y)]


# ------------------------------------------------------------- TF.js in node
def tfjs_dir():
    """The folder with tfjs_check.js and node_modules/@tensorflow/tfjs: $DEEPGPU_TFJS_DIR or tests/js."""
    d = os.environ.get("DEEPGPU_TFJS_DIR")
    if d:
        return d
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests", "js")


def tfjs_node_status(js_dir=None):
    """``(True, "")`` where node can run the real @tensorflow/tfjs, else ``(False, why)``."""
    js_dir = js_dir or tfjs_dir()
    if shutil.which("node") is None:
        return False, "node is not installed, so the real @tensorflow/tfjs cannot run"
    if not os.path.isfile(os.path.join(js_dir, "tfjs_check.js")):
        return False, f"no tfjs_check.js in {js_dir} (set $DEEPGPU_TFJS_DIR)"
    if not os.path.isdir(os.path.join(js_dir, "node_modules", "@tensorflow", "tfjs")):
        return False, f"@tensorflow/tfjs is not installed: run (cd {js_dir} && npm ci)"
    return True, ""


def _write_arrays(path, arrays):
    docs = [{"shape": list(a.shape), "data": a.astype(np.float32).ravel().tolist()} for a in arrays]
    with open(path, "w") as f:
        json.dump(docs if len(docs) > 1 else docs[0], f)


def _read_arrays(path):
    with open(path) as f:
        doc = json.load(f)
    return [np.asarray(d["data"], np.float32).reshape(d["shape"]) for d in _as_list(doc)]


def tfjs_predict(jobs, js_dir=None):
    """Run TF.js once over ``jobs`` [(model folder, [input arrays])]; returns [[output arrays]] in order.

    Raises SkipCheck when node or @tensorflow/tfjs is missing, AssertionError
    with TF.js's message when it fails.
    """
    js_dir = js_dir or tfjs_dir()
    ok, why = tfjs_node_status(js_dir)
    if not ok:
        raise SkipCheck(why)
    work = tempfile.mkdtemp(prefix="dg-tfjs-")
    try:
        args, outs = [], []
        for i, (folder, xs) in enumerate(jobs):
            x_path, y_path = os.path.join(work, f"{i}.x.json"), os.path.join(work, f"{i}.y.json")
            _write_arrays(x_path, xs)
            args += [folder, x_path, y_path]
            outs.append(y_path)
        proc = subprocess.run([shutil.which("node"), os.path.join(js_dir, "tfjs_check.js"), "predict", *args],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"TF.js failed to load or run a saved model:\n{proc.stderr[-4000:]}")
        return [_read_arrays(p) for p in outs]
    finally:
        shutil.rmtree(work, ignore_errors=True)


class TfjsNodeBatch:
    """Runs many cases' TF.js folders in one node process (starting node and TF.js takes seconds).

    ``TfjsNodeBatch(cases)``: on the first ``result(case)`` every case that
    TF.js can hold is built as ``run_layer_test`` builds it, saved, and
    predicted by TF.js; ``result`` returns (deepgpu's prediction, TF.js's).
    """

    def __init__(self, cases, js_dir=None):
        self.cases = list(cases)
        self.js_dir = js_dir
        self._work = None
        self._jobs = None     # {id(case): (folder, inputs, deepgpu's outputs)}
        self._results = None  # {id(case): TF.js's outputs}, when the batch ran whole
        self._skip = None

    def _prepare(self):
        from ..io import save_tfjs

        self._work = tempfile.mkdtemp(prefix="dg-tfjs-batch-")
        self._jobs = {}
        for k, case in enumerate(self.cases):
            if ("tfjs" in case.unsupported or "tfjs" in case.skip or "tfjs_node" in case.skip
                    or not _builtin(case.layer_cls)):
                continue
            kw = case.arguments()
            h = _Harness(case.layer_cls, dict(kw["init_kwargs"] or {}), kw["input_shape"], kw["input_dtype"],
                         None, kw["training"], {}, {}, kw["custom_objects"], True, 1e-4, 1e-5, 0)
            with backends.use_backend("cpu"):
                h.setup()
                model = h.model()
                folder = os.path.join(self._work, str(k))
                save_tfjs(model, folder)
                self._jobs[id(case)] = (folder, h.data, _predict(model, h.data))

    def _run(self):
        ok, why = tfjs_node_status(self.js_dir)
        if not ok:
            self._skip = why
            return
        self._prepare()
        keys = list(self._jobs)
        try:
            got = tfjs_predict([self._jobs[k][:2] for k in keys], self.js_dir)
            self._results = dict(zip(keys, got))
        except AssertionError:
            self._results = {}  # one case broke the batch: each case then runs alone, to name the culprit

    def result(self, case):
        """(deepgpu's outputs, TF.js's outputs) for ``case``; SkipCheck where node cannot run."""
        if self._results is None and self._skip is None:
            self._run()
        if self._skip is not None:
            raise SkipCheck(self._skip)
        if id(case) not in self._jobs:
            raise KeyError(f"{case.name} is not a TF.js case of this TfjsNodeBatch")
        folder, xs, y = self._jobs[id(case)]
        if id(case) not in self._results:
            self._results[id(case)] = tfjs_predict([(folder, xs)], self.js_dir)[0]
        return y, self._results[id(case)]

    def __del__(self):
        if self._work:
            shutil.rmtree(self._work, ignore_errors=True)


# ------------------------------------------------------------------ harness
class _Harness:
    def __init__(self, layer_cls, init_kwargs, input_shape, input_dtype, input_data, training, unsupported, skip,
                 custom_objects, perturb_weights, rtol, atol, seed):
        if input_shape is None and input_data is None:
            raise ValueError("run_layer_test needs input_shape or input_data")
        if training not in TRAINING:
            raise ValueError(f"training must be one of {TRAINING}, got {training!r}")
        for k in unsupported:
            if k not in FORMATS:
                raise ValueError(f"unsupported: {k!r} is not a format; formats are {FORMATS}")
        for k in skip:
            if k not in CHECKS:
                raise ValueError(f"skip: {k!r} is not a check; checks are {CHECKS}")
        self.cls, self.kwargs = layer_cls, init_kwargs
        self.who = layer_cls.__name__
        self.input_shape, self.input_dtype, self.input_data = input_shape, input_dtype, input_data
        self.training, self.unsupported, self.skips = training, unsupported, skip
        self.custom = dict(custom_objects or {})
        self.perturb_weights, self.rtol, self.atol, self.seed = perturb_weights, rtol, atol, seed
        self.multi = isinstance(input_shape, list) if input_data is None else isinstance(input_data, (list, tuple))
        self.expect = {}
        self.wrong_rank_shape = None
        self.tfjs_node = None
        self.report = LayerTestReport(None, [], {})
        self.tmp = None
        self.masks = None

    def set_mask(self, input_mask, expected_output_mask, hides):
        if input_mask is None:
            if expected_output_mask is not None:
                raise ValueError("expected_output_mask needs input_mask")
            return
        ms = list(input_mask) if self.multi else [input_mask]
        self.masks = [None if m is None else np.asarray(m, bool) for m in ms]
        self.expect_mask, self.mask_hides = expected_output_mask, hides

    def _attach(self, ts):
        """Attach the case's input masks to the Tensors ``ts`` (cut to their batch size)."""
        if self.masks is not None:
            from ..tensor import tensor
            for t, m in zip(ts, self.masks):
                if m is not None:
                    t._keras_mask = tensor(m[:t.shape[0]])
        return ts

    # ------------------------------------------------------------ plumbing
    def setup(self):
        from ..tensor import set_seed

        if self.input_data is not None:
            self.data = [np.asarray(a) for a in _as_list(self.input_data)]
        else:
            self.data = make_inputs(self.input_shape, self.input_dtype, self.seed)
        set_seed(self.seed)
        self.layer = self.cls(**self.kwargs)
        self.y = self.call(self.layer, self.data)
        if self.perturb_weights:
            perturb(self.layer, self.seed)
            self.y = self.call(self.layer, self.data)
        self.cfg = self.layer.get_config()
        self.weights = self.layer.get_weights()

    def tensors(self, arrays, dtype=None):
        from ..tensor import tensor
        return self._attach([a if _dtype_name(a) == "string" else tensor(a, dtype or str(a.dtype))
                             for a in arrays])

    def call(self, layer, arrays, training=False, with_masks=False):
        xs = self.tensors(arrays)
        out = layer(xs if self.multi else xs[0], training=training)
        if with_masks:
            return [_host(o) for o in _as_list(out)], [getattr(o, "_keras_mask", None) for o in _as_list(out)]
        return [_host(o) for o in _as_list(out)]

    def clone(self, **cfg_over):
        """A new layer from the config (fresh name), built on the data, with the weights set."""
        cfg = dict(self.cfg, **cfg_over)
        cfg.pop("name", None)
        layer = self.cls.from_config(cfg)
        self.call(layer, self.data)
        layer.set_weights([w.astype(cfg.get("dtype") or w.dtype) if _is_float(w.dtype) else w
                           for w in self.weights])
        return layer

    def model(self, **cfg_over):
        layer = self.clone(**cfg_over)
        return functional_model(layer, self.data)

    def run(self):
        with backends.use_backend("cpu"):
            self.setup()
        self.report.output = self.y if len(self.y) > 1 else self.y[0]
        self.tmp = tempfile.mkdtemp(prefix="dg-layer-test-")
        try:
            for name in CHECKS:
                if name in self.skips:
                    self.report.skipped[name] = self.skips[name]
                    continue
                start = time.perf_counter()
                try:
                    if name in ("cuda_emulated", "cuda"):
                        getattr(self, "check_" + name)()
                    else:
                        with backends.use_backend("cpu"):
                            getattr(self, "check_" + name)()
                except SkipCheck as e:
                    self.report.skipped[name] = str(e)
                    continue
                finally:
                    self.report.seconds[name] = time.perf_counter() - start
                self.report.ran.append(name)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def fail(self, what):
        raise AssertionError(f"{self.who} {self.kwargs}: {what}")

    # -------------------------------------------------------------- checks
    def check_build(self):
        from ..layers.base import Input

        layer, y = self.layer, self.y
        if not layer.built:
            self.fail("not built after a call")
        want = self.expect.get("output_dtype")
        if want is None and all(a.dtype == np.float32 for a in self.data):
            want = "float32"
        for o in y:
            if want is not None and o.dtype != np.dtype(want):
                self.fail(f"output dtype {o.dtype}, expected {want}")
            if _is_float(o.dtype) and not np.isfinite(o).all():
                self.fail("output holds NaN or inf on random inputs")
        got = [(None,) + o.shape[1:] for o in y]
        shapes = [(None,) + a.shape[1:] for a in self.data]
        computed = layer.compute_output_shape(shapes if self.multi else shapes[0])
        computed = [tuple(c) for c in (computed if isinstance(computed, list) else [computed])]
        if computed != got:
            self.fail(f"compute_output_shape gives {computed}, the call gives {got}")
        exp = self.expect.get("output_shape")
        if exp is not None:
            exp = [tuple(e) for e in (exp if isinstance(exp, list) else [exp])]
            if exp != got:
                self.fail(f"output shape {got}, expected {exp}")
        sym_layer = self.cls.from_config({k: v for k, v in self.cfg.items() if k != "name"})
        syms = [Input(shape=a.shape[1:], dtype=_dtype_name(a)) for a in self.data]
        out = sym_layer(syms if self.multi else syms[0])
        sym_shapes = [tuple(s.shape) for s in _as_list(out)]
        if sym_shapes != got:
            self.fail(f"a symbolic call (through Input) gives shape {sym_shapes}, a real call {got}")
        counts = {"num_weights": len(layer.weights), "num_trainable": len(layer.trainable_weights),
                  "num_non_trainable": len(layer.non_trainable_weights), "num_params": layer.count_params()}
        for k, v in counts.items():
            if self.expect.get(k) is not None and self.expect[k] != v:
                self.fail(f"{k} is {v}, expected {self.expect[k]}")
        if self.expect.get("output") is not None:
            for o, e in zip(y, _as_list(self.expect["output"])):
                _close(o, e, self.rtol, self.atol, f"{self.who} output")
        if self.training != "random":
            for a, b in zip(self.call(layer, self.data), y):
                if not np.array_equal(a, b):
                    self.fail("two inference calls on the same input differ")

    def check_batch_of_one(self):
        ones = self.call(self.layer, [a[:1] for a in self.data])
        for o, full in zip(ones, self.y):
            if o.shape != (1,) + full.shape[1:]:
                self.fail(f"a batch of one gives shape {o.shape}, expected {(1,) + full.shape[1:]}")
            if self.training != "random":
                _close(o, full[:1], self.rtol, self.atol, f"{self.who}: a batch of one vs row 0 of the batch")

    def _wrong_shape(self, layer):
        """(a batch shape of the wrong rank, the expected rank as the error must say it) for ``layer``."""
        if self.wrong_rank_shape is not None:
            return tuple(self.wrong_rank_shape), None
        spec = layer.input_spec
        x = self.data[0]
        if self.multi or spec is None:
            return None
        if spec.ndim is not None:
            return x.shape + (2,), f"ndim={spec.ndim}"
        if spec.min_ndim is not None and spec.min_ndim > 1:
            return x.shape[:spec.min_ndim - 1], f"min_ndim={spec.min_ndim}"
        return None

    def check_mask(self):
        from ..layers.base import Input

        if self.masks is None:
            raise SkipCheck("no input_mask in this case")
        ys, got = self.call(self.layer, self.data, with_masks=True)
        want = _as_list(self.expect_mask) if self.expect_mask is not None else [None] * len(ys)
        if len(want) != len(ys):
            self.fail(f"expected_output_mask lists {len(want)} masks for {len(ys)} outputs")
        for i, (g, w) in enumerate(zip(got, want)):
            if w is None and g is not None:
                self.fail(f"output {i} carries a mask of shape {g.shape}; expected none")
            if w is not None:
                if g is None:
                    self.fail(f"output {i} carries no mask; expected one of shape {np.shape(w)}")
                if g.dtype != "bool" or not np.array_equal(_host(g), np.asarray(w, bool)):
                    self.fail(f"output {i}'s mask is {_host(g).tolist()} ({g.dtype}), expected "
                              f"{np.asarray(w, bool).tolist()}")
        # A symbolic call carries a mask where the real one does, of the same shape (batch None).
        sym_layer = self.cls.from_config({k: v for k, v in self.cfg.items() if k != "name"})
        syms = [Input(shape=a.shape[1:], dtype=_dtype_name(a)) for a in self.data]
        for s, m in zip(syms, self.masks):
            if m is not None:
                s._keras_mask = Input(shape=m.shape[1:], dtype="bool")
        outs = _as_list(sym_layer(syms if self.multi else syms[0]))
        for i, (o, g) in enumerate(zip(outs, got)):
            sm = getattr(o, "_keras_mask", None)
            if (sm is None) != (g is None) or (g is not None and tuple(sm.shape) != (None,) + g.shape[1:]):
                self.fail(f"symbolic output {i} has mask {sm!r}, the real call "
                          f"{None if g is None else (None,) + g.shape[1:]}")
        if self.mask_hides:
            rng = np.random.default_rng(self.seed + 5)
            other = []
            for a, m in zip(self.data, self.masks):
                b = a.copy()
                if m is not None and _is_float(a.dtype):
                    hidden = ~m.reshape(m.shape + (1,) * (a.ndim - m.ndim))
                    b = np.where(hidden, rng.standard_normal(a.shape).astype(a.dtype), a)
                elif m is not None:
                    hidden = ~m.reshape(m.shape + (1,) * (a.ndim - m.ndim))
                    b = np.where(hidden, rng.integers(0, 4, a.shape).astype(a.dtype), a)
                other.append(b)
            for i, (a, b) in enumerate(zip(self.call(self.layer, other), ys)):
                _close(a, b, self.rtol, self.atol,
                       f"{self.who}: output {i} changed when only input values under the mask changed")

    def check_wrong_rank(self):
        from ..layers.base import Input, fmt_shape

        checked = 0
        for layer, how in ((self.cls(**self.kwargs), "a new layer"), (self.layer, "the built layer")):
            wrong = self._wrong_shape(layer)
            if wrong is None:
                continue
            shape, rank = wrong
            received = fmt_shape((None,) + tuple(shape[1:]))
            bad = [np.zeros(shape, self.data[0].dtype)]
            for symbolic in (False, True):
                checked += 1
                try:
                    if symbolic:
                        layer(Input(shape=shape[1:], dtype=_dtype_name(bad[0])))
                    else:
                        self.call(layer, bad)
                except ValueError as e:
                    msg = str(e)
                    built = layer._build_input_shape  # a built layer names the shape it expects
                    expected = fmt_shape(built) if built is not None and not isinstance(built, list) else None
                    missing = [w for w in (layer.name, received, rank, expected) if w is not None and w not in msg]
                    if missing:
                        self.fail(f"the error for a wrong-rank input on {how} does not name {missing}: {msg}")
                    continue
                except Exception as e:  # noqa: BLE001 - any other exception is the failure reported
                    self.fail(f"a wrong-rank input {received} on {how} raised {type(e).__name__}, "
                              f"not ValueError: {e}")
                self.fail(f"a wrong-rank input {received} on {how} ({'symbolic' if symbolic else 'eager'}) "
                          f"raised no error")
        if not checked:
            raise SkipCheck("several inputs (pass wrong_rank_shape)" if self.multi
                            else "the layer takes inputs of any rank (it sets no input_spec rank)")

    def check_config(self):
        from ..registry import deserialize_layer

        try:
            text = json.dumps(self.cfg)
        except TypeError as e:
            self.fail(f"get_config() is not JSON: {e}")
        cfg = json.loads(text)
        clone = self.cls.from_config(cfg)
        if clone.get_config() != self.cfg:
            self.fail(f"config changed in a round trip:\n{self.cfg}\n{clone.get_config()}")
        rebuilt = deserialize_layer({"class_name": self.cls.__name__, "config": cfg}, self.custom or None)
        if type(rebuilt) is not self.cls:
            self.fail(f"the registry rebuilds {self.cls.__name__!r} as {type(rebuilt).__name__}")
        for layer in (clone, rebuilt):
            self.call(layer, self.data)
            layer.set_weights(self.weights)
            for a, b in zip(self.call(layer, self.data), self.y):
                _close(a, b, self.rtol, self.atol, f"{self.who}: the layer rebuilt from its config")

    # ------------------------------------------------------------- formats
    def _format(self, fmt, save, load, compare_rtol=1e-5, compare_atol=1e-6):
        model = self.model()
        path = os.path.join(self.tmp, fmt)
        if fmt in self.unsupported:
            layer = model.layers[-1]
            try:
                save(model, path)
            except (ValueError, NotImplementedError) as e:
                msg = str(e)
                if layer.name not in msg or self.cls.__name__ not in msg:
                    self.fail(f"saving to {fmt} fails as declared, but the error does not name the layer "
                              f"({layer.name!r}, {self.cls.__name__}): {msg}")
                raise SkipCheck(f"not expressible in {fmt} ({self.unsupported[fmt]}); saving raises, naming "
                                f"the layer") from None
            self.fail(f"declared unsupported in {fmt} ({self.unsupported[fmt]}), but saving worked: "
                      f"remove it from unsupported")
        want = _predict(model, self.data)
        save(model, path)
        got = load(path)
        for a, b in zip(got if isinstance(got, list) else _predict(got, self.data), want):
            _close(a, b, compare_rtol, compare_atol, f"{self.who}: prediction after {fmt} save / load")
        return path, want

    def check_native(self):
        from ..io import load_model, save_model
        self._format("native", lambda m, p: save_model(m, p + ".zip"),
                     lambda p: load_model(p + ".zip", custom_objects=self.custom or None))

    def check_tfjs(self):
        from ..io import load_tfjs, save_tfjs
        self._tfjs_saved = self._format("tfjs", save_tfjs, lambda p: load_tfjs(p, custom_objects=self.custom or None))

    def check_tfjs_node(self):
        if "tfjs" in self.unsupported:
            raise SkipCheck(f"not expressible in TF.js ({self.unsupported['tfjs']})")
        if not _builtin(self.cls):
            raise SkipCheck(f"{self.who} is not a deepgpu layer: TF.js would need a JavaScript class of that name")
        if self.tfjs_node is not None:
            y, y_js = self.tfjs_node()
        else:
            saved = getattr(self, "_tfjs_saved", None)
            if saved is None:
                from ..io import save_tfjs
                model = self.model()
                path = os.path.join(self.tmp, "tfjs_node")
                save_tfjs(model, path)
                saved = path, _predict(model, self.data)
            y_js = tfjs_predict([(saved[0], self.data)])[0]
            y = saved[1]
        if len(y_js) != len(y):
            self.fail(f"TF.js gives {len(y_js)} outputs, deepgpu {len(y)}")
        for a, b in zip(y_js, y):
            _close(a, b, 1e-4, 1e-5, f"{self.who}: the real TF.js's prediction vs deepgpu's")

    def check_keras(self):
        from ..io import load_keras, save_keras
        self._keras_saved = self._format("keras", lambda m, p: save_keras(m, p + ".keras"),
                                         lambda p: load_keras(p + ".keras", custom_objects=self.custom or None))

    def check_keras_real(self):
        if "keras" in self.unsupported:
            raise SkipCheck(f"not expressible in Keras ({self.unsupported['keras']})")
        try:
            import keras
        except ImportError:
            raise SkipCheck("Keras 3 is not installed") from None
        saved = getattr(self, "_keras_saved", None)
        if saved is None:
            from ..io import save_keras
            model = self.model()
            path = os.path.join(self.tmp, "keras_real")
            save_keras(model, path + ".keras")
            saved = path, _predict(model, self.data)
        km = keras.saving.load_model(saved[0] + ".keras")
        got = km(self.data if self.multi else self.data[0], training=False)  # eager: predict() traces
        for a, b in zip(_as_list(got), saved[1]):
            _close(keras.ops.convert_to_numpy(a), b, 1e-4, 1e-5, f"{self.who}: Keras 3's prediction from the .keras file vs deepgpu's")

    def check_onnx(self):
        try:
            import onnx  # noqa: F401
            import onnxruntime as ort
        except ImportError:
            raise SkipCheck('onnx and onnxruntime are not installed (pip install "deepgpu[interop]")') from None
        from ..io import export_onnx

        def load(path):
            sess = ort.InferenceSession(path + ".onnx", providers=["CPUExecutionProvider"])
            feed = {i.name: a for i, a in zip(sess.get_inputs(), self.data)}
            return sess.run(None, feed)
        self._format("onnx", lambda m, p: export_onnx(m, p + ".onnx"), load, self.rtol, self.atol)

    # ----------------------------------------------------------- gradients
    def check_gradients(self):
        floats = [k for k, a in enumerate(self.data) if _is_float(a.dtype)]
        modes = [False] + ([True] if self.training == "deterministic" else [])
        with_weights = bool(self.layer.trainable_weights)
        if not floats and not with_weights:
            raise SkipCheck("no float input and no trainable weight: nothing to differentiate")
        for mode in modes:
            layer = self.clone(dtype="float64")
            xs = [a.astype(np.float64) if _is_float(a.dtype) else a for a in self.data]
            _fd_check(self, layer, xs, floats, mode)

    # ------------------------------------------------------------ training
    def check_training(self):
        infer = self.call(self.clone(), self.data)
        a = self.call(self.clone(), self.data, training=True)
        if self.training is None:
            for t, i in zip(a, infer):
                _close(t, i, self.rtol, self.atol,
                       f"{self.who}: training=True differs from inference (declare training='deterministic' "
                       f"or 'random' if it should)")
            return
        if all(np.allclose(t, i, rtol=1e-6, atol=1e-7) for t, i in zip(a, infer)):
            self.fail(f"declared training={self.training!r}, but training=True computes what inference does")
        # A small mask can repeat by chance: "random" needs one of several draws to differ.
        for _ in range(8 if self.training == "random" else 1):
            b = self.call(self.clone(), self.data, training=True)
            same = all(np.array_equal(p, q) for p, q in zip(a, b))
            if not same:
                break
        if self.training == "deterministic" and not same:
            self.fail("declared training='deterministic', but two training calls from the same weights differ")
        if self.training == "random" and same:
            self.fail("declared training='random', but eight training calls drew the same values")

    def check_trainable(self):
        from .. import optimizers

        if not self.layer.weights:
            raise SkipCheck("the layer has no weights")
        ys = [np.random.default_rng(self.seed + 2).standard_normal(o.shape).astype(np.float32) for o in self.y]
        # Frozen from the config, frozen by the setter after building (fine-tuning), and trainable.
        for how in ("trainable=False", "layer.trainable = False", "trainable"):
            model = self.model(trainable=how != "trainable=False")
            layer = model.layers[-1]
            if how == "layer.trainable = False":
                layer.trainable = False
            frozen = how != "trainable"
            if frozen and (layer.trainable_weights or model.trainable_weights):
                self.fail(f"{how} leaves trainable weights {[w.name for w in layer.trainable_weights]}")
            before = [w.data_sync() for w in layer.weights]
            model.compile(optimizer=optimizers.SGD(0.1), loss="mse")
            model.train_on_batch(self.data if self.multi else self.data[0], ys if len(ys) > 1 else ys[0])
            after = [w.data_sync() for w in layer.weights]
            for w, b, a in zip(layer.weights, before, after):
                if frozen and not np.array_equal(a, b):
                    self.fail(f"{how}, yet a fit step changed {w.name}")
                if not frozen and w.trainable and np.array_equal(a, b):
                    self.fail(f"a fit step left the trainable weight {w.name} unchanged (no gradient reaches it?)")

    # --------------------------------------------------------------- parity
    def check_cuda_emulated(self):
        from . import emulation

        ok, why = emulation.emulation_status()
        if not ok:
            raise SkipCheck(why)
        with emulation.emulated_cuda():
            self._parity("the emulated custom-kernel CUDA path")

    def check_cuda(self):
        ok, why = backends.cuda_status()
        if not ok:
            raise SkipCheck(why)
        with backends.use_backend("cuda"):
            self._parity("the CUDA backend")

    def _parity(self, where):
        """Forward and backward on the current backend vs the NumPy backend, from the same weights."""
        modes = [False] + ([True] if self.training == "deterministic" else [])
        r = [np.random.default_rng(self.seed + 3).standard_normal(o.shape).astype(np.float32) for o in self.y]
        for mode in modes:
            other = self._forward_backward(mode, r)
            with backends.use_backend("cpu"):
                ref = self._forward_backward(mode, r)
            for what, a, b in zip(ref[0], other[1], ref[1]):
                err = _rel_err(a, b)
                if not err < _PARITY_RTOL:
                    self.fail(f"{where} (training={mode}): {what} differs from NumPy's by {err:.3g} "
                              f"relative (limit {_PARITY_RTOL})")

    def _forward_backward(self, mode, r):
        """(names, values): the outputs and the gradients of sum(outputs * r) on the current backend."""
        from .. import ops
        from ..autograd import backward, enable_grad
        from ..tensor import tensor

        layer = self.clone()
        xs = self.tensors(self.data)
        for k, x in enumerate(xs):
            x.requires_grad = _is_float(self.data[k].dtype)
        with enable_grad():
            outs = _as_list(layer(xs if self.multi else xs[0], training=mode))
            total = None
            for o, rr in zip(outs, r):
                s = ops.sum(o * tensor(rr))
                total = s if total is None else total + s
        ws = layer.trainable_weights
        srcs = [x for x in xs if x.requires_grad] + ws
        gs = backward(total, srcs)
        names = [f"output {i}" for i in range(len(outs))] + \
                [f"gradient of input {k}" for k, x in enumerate(xs) if x.requires_grad] + \
                [f"gradient of {w.name.split('/')[-1]}" for w in ws]
        vals = [_host(o) for o in outs]
        for g, s in zip(gs, srcs):
            vals.append(np.zeros(s.shape, np.float32) if g is None else backends.current().to_numpy(g))
        return names, vals


def _fd_check(h, layer, xs, floats, training, eps=1e-6):
    """Autograd vs central differences of sum(layer(xs) * r) in float64, input and weight elements."""
    from .. import ops
    from ..autograd import backward, enable_grad, no_grad
    from ..tensor import tensor

    rng = np.random.default_rng(h.seed + 4)
    ts = h._attach([tensor(a, "float64") if k in floats else tensor(a) for k, a in enumerate(xs)])
    for k in floats:
        ts[k].requires_grad = True
    with no_grad():
        outs = _as_list(layer(ts if h.multi else ts[0], training=training))
    r = [tensor(rng.standard_normal(o.shape), "float64") for o in outs]

    def scalar(grad):
        ctx = enable_grad() if grad else no_grad()
        with ctx:
            outs = _as_list(layer(ts if h.multi else ts[0], training=training))
            total = None
            for o, rr in zip(outs, r):
                s = ops.sum(o * rr)
                total = s if total is None else total + s
        return total

    ws = layer.trainable_weights
    srcs = [ts[k] for k in floats] + ws
    names = [f"input {k}" for k in floats] + [w.name.split("/")[-1] for w in ws]
    gs = backward(scalar(True), srcs)
    for name, src, g in zip(names, srcs, gs):
        ana = np.zeros(src.shape) if g is None else np.asarray(g, np.float64)
        arr = src.data  # the CPU backend's array: changed in place and put back
        flat = arr.reshape(-1)
        assert np.shares_memory(flat, arr), f"{name}: not a contiguous array"
        idx = np.arange(flat.size)
        if flat.size > _GRAD_ELEMS:
            idx = np.sort(rng.choice(flat.size, _GRAD_ELEMS, replace=False))
        num = np.empty(len(idx))
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + eps
            plus = float(scalar(False).data_sync())
            flat[i] = old - eps
            minus = float(scalar(False).data_sync())
            flat[i] = old
            num[j] = (plus - minus) / (2 * eps)
        got = ana.reshape(-1)[idx]
        scale = max(float(np.abs(num).max(initial=0.0)), 1.0)
        err = float(np.abs(got - num).max(initial=0.0))
        if not err <= 1e-5 * scale:
            j = int(np.argmax(np.abs(got - num)))
            h.fail(f"gradient of {name} (training={training}) differs from finite differences by {err:.3g} "
                   f"(element {int(idx[j])}: autograd {got[j]:.6g}, numeric {num[j]:.6g})")
