"""Keras 3's LossScaleOptimizer: dynamic loss scaling for float16 training.

    opt = LossScaleOptimizer(Adam(1e-3), initial_scale=2**15, dynamic_growth_steps=2000)
    model.compile(opt, ...)        # compile does this itself under "mixed_float16"

The training step multiplies the loss by ``dynamic_scale`` (``scale_loss``),
so small float16 gradients do not underflow; ``apply_gradients`` divides the
gradients by it again and then:

* if any gradient holds a NaN or an infinity, the step is skipped (variables
  and the inner optimizer's slots keep their values), the scale is halved and
  ``step_counter`` goes back to 0;
* otherwise the inner optimizer steps; after ``dynamic_growth_steps`` finite
  steps in a row the scale doubles (and the counter restarts).

The scale and the counter live on the device. On the CPU backend the finite
check is read on the host and a bad step is skipped outright, as in Keras 3
(the inner ``iterations`` does not advance). On other backends (and inside a
recorded CUDA-graph step) nothing is read back: the update runs and the
previous values are selected back with ``where`` when a gradient was not
finite, so the inner optimizer's ``iterations`` (Adam's bias correction) also
counts the skipped steps there.

State (``get_weights``): the inner optimizer's state, then ``step_counter``
and ``dynamic_scale``; ``set_weights`` takes it back (before the first step
too). ``get_config`` holds the inner optimizer's config, as Keras writes it.
"""
from __future__ import annotations

import math

from . import backends as _backends
from . import ops
from . import optimizers as _optimizers
from .autograd import no_grad
from .tensor import Tensor, Variable, tensor

__all__ = ["LossScaleOptimizer"]

# Keras refuses these on the wrapper (they belong to the inner optimizer).
_BASE_DEFAULTS = {"weight_decay": None, "clipnorm": None, "global_clipnorm": None, "clipvalue": None,
                  "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                  "loss_scale_factor": None, "gradient_accumulation_steps": None}


class LossScaleOptimizer(_optimizers.Optimizer):
    """Wraps ``inner_optimizer`` (an Optimizer, a name or a config) with dynamic loss scaling.

    initial_scale: the first scale (a finite number > 0; Keras's default 2**15).
    dynamic_growth_steps: finite steps before the scale doubles (an int >= 1).
    ValueError for ``dynamic=False`` and for the base optimizer's options
    (clipnorm, weight_decay, ...), which go on the inner optimizer, as Keras.
    """

    def __init__(self, inner_optimizer, initial_scale=2.0 ** 15, dynamic_growth_steps=2000, name=None, **kwargs):
        if not kwargs.pop("dynamic", True):
            raise ValueError("LossScaleOptimizer no longer supports dynamic=False (as Keras 3): set "
                             "loss_scale_factor on the inner optimizer instead")
        for arg, default in _BASE_DEFAULTS.items():
            if arg in kwargs:
                value = kwargs.pop(arg)
                if value != default:
                    raise ValueError(f"LossScaleOptimizer does not support {arg}; set it on the inner optimizer")
        if kwargs:
            raise ValueError(f"LossScaleOptimizer does not support argument(s) {', '.join(sorted(kwargs))}")
        if isinstance(initial_scale, bool) or not isinstance(initial_scale, (int, float)) \
                or not 0 < float(initial_scale) < math.inf:
            raise ValueError(f"LossScaleOptimizer: initial_scale must be a finite number > 0, got {initial_scale!r}")
        if isinstance(dynamic_growth_steps, bool) or not isinstance(dynamic_growth_steps, int) \
                or dynamic_growth_steps < 1:
            raise ValueError(f"LossScaleOptimizer: dynamic_growth_steps must be an integer >= 1, got "
                             f"{dynamic_growth_steps!r}")
        inner = _optimizers.get(inner_optimizer)
        if isinstance(inner, LossScaleOptimizer):
            raise ValueError("LossScaleOptimizer: the inner optimizer is already a LossScaleOptimizer")
        super().__init__(learning_rate=0.0, name=name or "loss_scale_optimizer")
        self.inner_optimizer = inner
        self.initial_scale = float(initial_scale)
        self.dynamic_growth_steps = int(dynamic_growth_steps)
        self.step_counter = None   # int32 scalar Variable, made with the first step (or scale_loss)
        self.dynamic_scale = None  # float32 scalar Variable
        self._own_pending = None   # (counter, scale) given to set_weights before the state exists
        # Read the finite check on the host and skip outright (True), or select back on the
        # device (False); None: on the CPU backend only, where a read costs nothing.
        self._host_check = None

    # ------------------------------------------------------- delegation
    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if "inner_optimizer" in self.__dict__:  # the base __init__ sets a rate of 0 first
            self.inner_optimizer.learning_rate = value

    lr = learning_rate

    @property
    def iterations(self) -> int:
        return self.inner_optimizer.iterations if "inner_optimizer" in self.__dict__ else 0

    @iterations.setter
    def iterations(self, value):
        if "inner_optimizer" in self.__dict__:
            self.inner_optimizer.iterations = value

    @property
    def built(self) -> bool:
        return self.inner_optimizer.built

    @property
    def variables(self) -> list:
        own = [v for v in (self.step_counter, self.dynamic_scale) if v is not None]
        return own + self.inner_optimizer.variables

    def can_update_in_graph(self, var_list) -> bool:
        return self.inner_optimizer.can_update_in_graph(var_list)

    def graph_scalars_for_next_step(self):
        return self.inner_optimizer.graph_scalars_for_next_step()

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def swap_ema_weights(self, var_list=None):
        self.inner_optimizer.swap_ema_weights(var_list)

    @property
    def use_ema(self):
        return self.inner_optimizer.use_ema if "inner_optimizer" in self.__dict__ else False

    @use_ema.setter
    def use_ema(self, value):
        pass  # the base __init__ sets it; the inner optimizer's counts

    # ------------------------------------------------------------ state
    def _state(self, B):
        """The scale and counter Variables on backend ``B`` (made on first use)."""
        if self.dynamic_scale is None or self.dynamic_scale._backend is not B:
            counter, scale = self._own_pending or (0, self.initial_scale)
            self._own_pending = None
            self.step_counter = Variable(tensor(B.full((), int(counter), "int32"), backend=B.name),
                                         trainable=False, name=f"{self.name}/step_counter")
            self.dynamic_scale = Variable(tensor(B.full((), float(scale), "float32"), backend=B.name),
                                          trainable=False, name=f"{self.name}/dynamic_scale")
        return self.step_counter, self.dynamic_scale

    def build(self, var_list):
        new = self.inner_optimizer.build(var_list)
        vs = list(var_list)
        if vs:
            self._state(vs[0]._backend)
        return new

    def scale_loss(self, loss):
        """``loss`` times the current scale (a device read, so a recorded step sees updates)."""
        B = loss._backend if isinstance(loss, Tensor) else _backends.current()
        _, scale = self._state(B)
        return ops.multiply(loss, ops.cast(scale, loss.dtype) if loss.dtype != "float32" else scale)

    def get_weights(self) -> list:
        return self.inner_optimizer.get_weights() + self._own_weights()

    def get_weights_for(self, var_list) -> list:
        return self.inner_optimizer.get_weights_for(var_list) + self._own_weights()

    def _own_weights(self):
        cpu = _backends.get("cpu")
        if self.dynamic_scale is None:
            counter, scale = self._own_pending or (0, self.initial_scale)
            return [cpu.asarray(int(counter), "int32"), cpu.asarray(float(scale), "float32")]
        return [self.step_counter.data_sync(), self.dynamic_scale.data_sync()]

    def set_weights(self, weights, var_list=None):
        """Restore ``get_weights()``'s list: the inner optimizer's state, then the counter and the scale."""
        weights = list(weights)
        if len(weights) < 3:
            raise ValueError(f"LossScaleOptimizer.set_weights: expected the inner optimizer's state followed by "
                             f"step_counter and dynamic_scale, got {len(weights)} arrays")
        counter, scale = weights[-2:]
        counter = int(counter.item() if hasattr(counter, "item") else counter)
        scale = float(scale.item() if hasattr(scale, "item") else scale)
        if not 0 < scale < math.inf:
            raise ValueError(f"LossScaleOptimizer.set_weights: the saved dynamic_scale {scale} is not a finite "
                             f"number > 0")
        self.inner_optimizer.set_weights(weights[:-2], var_list=var_list)
        if self.dynamic_scale is None:
            self._own_pending = (counter, scale)
            if var_list:
                self._state(list(var_list)[0]._backend)
        else:
            self.step_counter.assign(tensor(self.step_counter._backend.full((), counter, "int32"),
                                            backend=self.step_counter.backend))
            self.dynamic_scale.assign(tensor(self.dynamic_scale._backend.full((), scale, "float32"),
                                             backend=self.dynamic_scale.backend))

    # ------------------------------------------------------------- apply
    def _finite(self, B, gs):
        ok = None
        for g in gs:
            f = B.all(B.isfinite(g))
            ok = f if ok is None else B.logical("and", ok, f)
        return ok

    def _update_scale(self, B, finite):
        """The counter and scale after a step whose gradients were ``finite`` (a device bool)."""
        counter, scale = self.step_counter, self.dynamic_scale
        c, s = counter.data, scale.data
        grow = B.logical("and", finite, B.compare("==", c, B.full((), self.dynamic_growth_steps - 1, "int32")))
        one = B.full((), 1, "int32")
        zero = B.full((), 0, "int32")
        new_c = B.where(finite, B.where(grow, zero, B.add(c, one)), zero)
        new_s = B.where(finite, B.where(grow, B.multiply(s, B.full((), 2.0, "float32")), s),
                        B.multiply(s, B.full((), 0.5, "float32")))
        counter.data[...] = new_c
        scale.data[...] = new_s

    def _unscaled(self, B, gs):
        inv = B.divide(B.full((), 1.0, "float32"), self.dynamic_scale.data)
        return [B.multiply(g, inv if g.dtype == inv.dtype else B.cast(inv, g.dtype)) for g in gs]

    def _kept_state(self, vars_):
        """Every array the inner step may change: the variables, their slots and averages."""
        inner = self.inner_optimizer
        out = list(vars_)
        for v in vars_:
            out.extend(inner._slot_vars.get(id(v), ()))
            avg = inner._ema_vars.get(id(v))
            if avg is not None:
                out.append(avg)
        return out

    def _select_back(self, B, finite, kept, before):
        for v, old in zip(kept, before):
            v.data[...] = B.where(finite, v.data, old)

    def apply_gradients(self, grads_and_vars):
        """One step of the inner optimizer on the unscaled gradients, or a skipped one (see the
        module docstring). Returns the inner optimizer's ``iterations``."""
        pairs = [(g, v) for g, v in grads_and_vars if g is not None and getattr(v, "trainable", True)]
        if not pairs:
            return self.iterations
        vars_ = [v for _, v in pairs]
        self.build(vars_)
        B = vars_[0]._backend
        with no_grad():
            gs = [g.data if isinstance(g, Tensor) else B.asarray(g, v.dtype) for g, v in pairs]
            finite = self._finite(B, gs)
            unscaled = self._unscaled(B, gs)
            host = B.name == "cpu" if self._host_check is None else self._host_check
            if host:  # a host read costs nothing here: skip outright, as Keras
                if bool(finite):
                    self.inner_optimizer.apply_gradients([(Tensor(g, B), v) for g, v in zip(unscaled, vars_)])
                self._update_scale(B, finite)
                return self.iterations
            kept = self._kept_state(vars_)
            before = [B.copy(v.data) for v in kept]
        self.inner_optimizer.apply_gradients([(Tensor(g, B), v) for g, v in zip(unscaled, vars_)])
        with no_grad():
            kept = self._kept_state(vars_)  # slots made by this first step are kept as made
            self._select_back(B, finite, kept[:len(before)], before)
            self._update_scale(B, finite)
        return self.iterations

    def apply(self, grads, trainable_variables=None):
        """Keras 3's form: ``grads`` paired with ``trainable_variables`` (default: the variables
        the inner optimizer was built for)."""
        if trainable_variables is None:
            if not self.inner_optimizer._vars:
                raise ValueError("LossScaleOptimizer.apply: pass trainable_variables on the first call (the "
                                 "optimizer is not built for any variables yet)")
            trainable_variables = [v for v in self.inner_optimizer._vars if v.trainable]
        grads, trainable_variables = list(grads), list(trainable_variables)
        if len(grads) != len(trainable_variables):
            raise ValueError(f"LossScaleOptimizer.apply: {len(grads)} gradients for {len(trainable_variables)} "
                             f"variables")
        return self.apply_gradients(zip(grads, trainable_variables))

    def apply_gradients_in_graph(self, grads, var_list, hp):
        """``apply_gradients`` for a recorded step: nothing read back, bad steps selected away."""
        pairs = [(g, v) for g, v in zip(grads, var_list) if g is not None and getattr(v, "trainable", True)]
        if not pairs:
            return
        vars_ = [v for _, v in pairs]
        self.build(vars_)
        B = vars_[0]._backend
        with no_grad():
            gs = [g for g, _ in pairs]
            finite = self._finite(B, gs)
            unscaled = self._unscaled(B, gs)
            kept = self._kept_state(vars_)
            before = [B.copy(v.data) for v in kept]
        self.inner_optimizer.apply_gradients_in_graph(unscaled, vars_, hp)
        with no_grad():
            self._select_back(B, finite, kept, before)
            self._update_scale(B, finite)

    # ------------------------------------------------------------ config
    def get_config(self) -> dict:
        return {"name": self.name, "inner_optimizer": _optimizers.serialize(self.inner_optimizer),
                "initial_scale": self.initial_scale, "dynamic_growth_steps": self.dynamic_growth_steps}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        inner = config.pop("inner_optimizer")
        return cls(inner, **config)

    def __repr__(self):
        scale = self.initial_scale if self.dynamic_scale is None else float(self.dynamic_scale.data_sync())
        return f"<LossScaleOptimizer scale={scale:g} inner={self.inner_optimizer!r}>"


_optimizers._CLASSES["lossscaleoptimizer"] = LossScaleOptimizer
