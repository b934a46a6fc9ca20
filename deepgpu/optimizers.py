"""Optimizers with Keras 3's update rules, applied in place on the device.

    opt = optimizers.get("adam")                       # or Adam(learning_rate=1e-3)
    opt.apply_gradients([(grad, variable), ...])      # grads: Tensors (None is skipped)
    state = opt.get_weights()                         # [iterations, slots...] as NumPy
    opt2.set_weights(state)                           # resumes exactly (built lazily)

Each rule is one Backend primitive (``B.adam_update``, ``B.sgd_update``,
...) that updates the parameter and its slots in place, so a step allocates
no new parameter arrays and never reads a value back to the host; the GPU
backend swaps in fused kernels behind the same names. The learning rate is
a Python float (or a schedule evaluated on the Python step counter).
"""
from __future__ import annotations

import math

from . import backends as _backends
from . import ops
from . import schedules
from .autograd import no_grad
from .schedules import LearningRateSchedule
from .tensor import Tensor, Variable, tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "Lion", "Ftrl",
           "Lamb", "Adafactor",
           "get", "serialize", "deserialize", "schedules"]


class Optimizer:
    """Base class.

    Subclasses list their per-variable slots in ``_slots()`` (names, built
    lazily as zeros of each variable's shape) and implement
    ``_update(B, p, g, slots, lr, step)`` on raw arrays with one Backend
    primitive. ``iterations`` counts the applied steps.
    """

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name=None, **kwargs):
        if "lr" in kwargs:  # the Keras 2 spelling
            learning_rate = kwargs.pop("lr")
        for k in ("jit_compile", "loss_scale_factor"):
            kwargs.pop(k, None)  # accepted for Keras compatibility; no effect here
        if kwargs.pop("gradient_accumulation_steps", None):
            raise NotImplementedError(f"{type(self).__name__}: gradient_accumulation_steps is not supported")
        self._set_ema(kwargs.pop("use_ema", False), kwargs.pop("ema_momentum", 0.99),
                      kwargs.pop("ema_overwrite_frequency", None))
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s) {sorted(kwargs)}")
        if sum(x is not None for x in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("only one of clipnorm, clipvalue and global_clipnorm can be set; got "
                             f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}")
        for what, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue), ("global_clipnorm", global_clipnorm)):
            if v is not None and v <= 0:
                raise ValueError(f"{what} must be positive, got {v}")
        self.name = name or type(self).__name__.lower()
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self._learning_rate = self._check_lr(learning_rate)
        self.iterations = 0
        self._vars = []       # variables in build order
        self._slot_vars = {}  # id(variable) -> [slot Variable, ...]
        self._groups_memo = None  # _many_groups' last answer
        self._pending = None  # weights given to set_weights before build
        self._exclude_ids = set()
        self._exclude_names = ()

    # ------------------------------------------------------------- EMA
    def _set_ema(self, use_ema, ema_momentum, ema_overwrite_frequency):
        """Keras 3's exponential moving average of the trained variables: after each step
        ``average = m * average + (1 - m) * variable`` (the first step copies the variable);
        every ``ema_overwrite_frequency`` steps the variables take the averages;
        ``finalize_variable_values`` (end of fit) and ``callbacks.SwapEMAWeights`` use them."""
        who = type(self).__name__
        if isinstance(ema_momentum, bool) or not isinstance(ema_momentum, (int, float)) \
                or not 0.0 <= ema_momentum <= 1.0:
            raise ValueError(f"{who}: ema_momentum must be a number in [0, 1], got {ema_momentum!r}")
        if ema_overwrite_frequency is not None and (isinstance(ema_overwrite_frequency, bool) or not isinstance(
                ema_overwrite_frequency, int) or ema_overwrite_frequency < 1):
            raise ValueError(f"{who}: ema_overwrite_frequency must be an integer >= 1 or None, got "
                             f"{ema_overwrite_frequency!r}")
        self.use_ema = bool(use_ema)
        self.ema_momentum = float(ema_momentum)
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self._ema_vars = {}  # id(variable) -> its moving average (a Variable)

    def _ema_list(self, var_list):
        return [self._ema_vars[id(v)] for v in var_list if id(v) in self._ema_vars]

    def _ema_step(self, step):
        with no_grad():
            m = self.ema_momentum if step > 1 else 0.0
            for v in self._vars:
                avg = self._ema_vars[id(v)]
                avg.assign(avg * m + v * (1.0 - m))
            if self.ema_overwrite_frequency and step % self.ema_overwrite_frequency == 0:
                self.finalize_variable_values(self._vars)

    def finalize_variable_values(self, var_list):
        """With ``use_ema``: set each variable of ``var_list`` to its moving average (Keras 3 does
        this at the end of ``fit``). Without: nothing."""
        if not self.use_ema:
            return
        with no_grad():
            for v in var_list:
                avg = self._ema_vars.get(id(v))
                if avg is not None:
                    v.assign(avg)

    def swap_ema_weights(self, var_list=None):
        """Exchange the values of the variables and of their moving averages (SwapEMAWeights).
        ValueError without ``use_ema``."""
        if not self.use_ema:
            raise ValueError(f"{type(self).__name__} keeps no moving averages: create it with use_ema=True "
                             f"to swap them in")
        with no_grad():
            for v in (self._vars if var_list is None else var_list):
                avg = self._ema_vars.get(id(v))
                if avg is not None:
                    tmp = v._backend.copy(v.data)
                    v.assign(avg)
                    avg.data[...] = tmp

    # ---------------------------------------------------- learning rate
    @staticmethod
    def _check_lr(lr):
        if isinstance(lr, dict):
            return schedules.deserialize(lr)
        if isinstance(lr, LearningRateSchedule) or callable(lr):
            return lr
        if isinstance(lr, Tensor):
            lr = lr.item()
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            raise TypeError(f"learning_rate must be a number or a LearningRateSchedule, got {lr!r}") from None
        if not lr >= 0.0 or lr == math.inf:  # NaN fails the comparison
            raise ValueError(f"learning_rate must be a finite number >= 0, got {lr}")
        return lr

    @property
    def learning_rate(self) -> "LearningRate":
        """The learning rate of the next step (a schedule is evaluated at ``iterations``), as a
        float that also has Keras's variable methods: ``assign(value)`` sets the optimizer's
        rate (as ``opt.learning_rate = value`` does), ``numpy()`` reads it. Each read is the
        value at that moment."""
        return LearningRate(self._lr_at(self.iterations), self)

    @learning_rate.setter
    def learning_rate(self, value):
        value = self._check_lr(value)
        if isinstance(self._learning_rate, LearningRateSchedule) and not isinstance(value, LearningRateSchedule):
            raise TypeError(
                f"{type(self).__name__} was created with a LearningRateSchedule "
                f"({type(self._learning_rate).__name__}); its learning rate cannot be set to a number. "
                f"Set a new schedule, or create the optimizer with a float learning rate")
        self._learning_rate = value

    lr = learning_rate

    def _lr_at(self, step) -> float:
        lr = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            value = float(lr(step))
        elif callable(lr):
            value = float(lr())
        else:
            return lr
        if not value >= 0.0 or value == math.inf:  # a schedule must not turn the descent around
            raise ValueError(f"{type(self).__name__}: the learning rate schedule {lr!r} gave {value} at step "
                             f"{step}; a learning rate must be a finite number >= 0")
        return value

    # ------------------------------------------------------------ slots
    def _slots(self) -> tuple:
        """Names of the per-variable slots (zeros unless ``_slot_init`` says otherwise)."""
        return ()

    def _slot_init(self, name) -> float:
        return 0.0

    def _slot_shape(self, name, shape) -> tuple:
        """The shape of slot ``name`` for a variable of ``shape`` (the variable's, unless a rule
        keeps less, as Adafactor's factored second moments)."""
        return shape

    def _global_state(self) -> list:
        """Extra scalar state (Python floats) saved after ``iterations``."""
        return []

    def _set_global_state(self, values):
        pass

    def build(self, var_list):
        """Create the slots of each variable not built yet (in the order given)."""
        new = []
        for v in var_list:
            if id(v) in self._slot_vars:
                continue
            if not isinstance(v, Variable):
                raise TypeError(f"optimizers update Variables, got {type(v).__name__}")
            self._slot_vars[id(v)] = [
                Variable(tensor(v._backend.full(self._slot_shape(s, v.shape), self._slot_init(s), v.dtype),
                                backend=v.backend), trainable=False, name=f"{v.name}/{s}")
                for s in self._slots()]
            self._vars.append(v)
            if self.use_ema:
                self._ema_vars[id(v)] = Variable(tensor(v._backend.copy(v.data), backend=v.backend), trainable=False,
                                                 name=f"{v.name}/average")
            new.append(v)
        if new and self._pending is not None:
            pending, self._pending = self._pending, None
            if len(pending) == self._num_weights():
                self.set_weights(pending)
            else:
                self._pending = pending
        return new

    @property
    def built(self) -> bool:
        return bool(self._vars)

    def _num_weights(self):
        ema = len(self._vars) if self.use_ema else 0
        return 1 + len(self._global_state()) + len(self._slots()) * len(self._vars) + ema

    @property
    def variables(self) -> list:
        """The slot Variables, slot by slot (all first slots, then all second slots, ...)."""
        out = []
        for k in range(len(self._slots())):
            out.extend(self._slot_vars[id(v)][k] for v in self._vars)
        if self.use_ema:  # the moving averages last
            out.extend(self._ema_vars[id(v)] for v in self._vars)
        return out

    def get_weights(self) -> list:
        """The full state as NumPy arrays: ``[iterations, *global state, *slots]``,
        slots ordered as ``variables`` (a host transfer)."""
        cpu = _backends.get("cpu")  # NumPy arrays, made by the host backend
        out = [cpu.asarray(self.iterations, "int64")]
        out += [cpu.asarray(x, "float64") for x in self._global_state()]
        out += [v.data_sync() for v in self.variables]
        return out

    def get_weights_for(self, var_list) -> list:
        """``get_weights()`` restricted to ``var_list``, in its order: the state that
        ``set_weights(state, var_list=var_list)`` on a fresh optimizer expects. A
        variable without slots yet gets their initial values (what its first
        step would create). A model saves its optimizer's state with this."""
        cpu = _backends.get("cpu")
        out = [cpu.asarray(self.iterations, "int64")]
        out += [cpu.asarray(x, "float64") for x in self._global_state()]
        for k, s in enumerate(self._slots()):
            for v in var_list:
                slots = self._slot_vars.get(id(v))
                out.append(slots[k].data_sync() if slots is not None
                           else cpu.full(self._slot_shape(s, v.shape), self._slot_init(s), v.dtype))
        if self.use_ema:
            out += [(self._ema_vars[id(v)] if id(v) in self._ema_vars else v).data_sync() for v in var_list]
        return out

    def set_weights(self, weights, var_list=None):
        """Restore the state from ``get_weights()``'s list.

        With ``var_list`` the slots are built for it first. Before any build
        the weights are kept and applied when the variables are built (the
        first ``apply_gradients``), so a loaded model resumes exactly.
        """
        weights = list(weights)
        if var_list is not None:
            self.build(var_list)
        if not self._vars:
            self._pending = weights
            return
        n = self._num_weights()
        if len(weights) != n:
            raise ValueError(
                f"{type(self).__name__}.set_weights: expected {n} arrays (iterations, "
                f"{len(self._global_state())} global, {len(self._slots())} slot(s) x {len(self._vars)} "
                f"variable(s)), got {len(weights)}")
        ng = len(self._global_state())
        slots = self.variables
        for i, (dst, src) in enumerate(zip(slots, weights[1 + ng:])):
            if tuple(getattr(src, "shape", ())) != dst.shape:
                raise ValueError(f"{type(self).__name__}.set_weights: weight {1 + ng + i} has shape "
                                 f"{tuple(src.shape)}, the optimizer's {dst.name!r} has {dst.shape}")
        self.iterations = int(weights[0].item() if hasattr(weights[0], "item") else weights[0])
        self._set_global_state([float(w) for w in weights[1:1 + ng]])
        for dst, src in zip(slots, weights[1 + ng:]):
            dst.assign(src)

    # ------------------------------------------------------ weight decay
    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Leave these variables (or those whose name contains one of ``var_names``) undecayed."""
        self._exclude_ids |= {id(v) for v in (var_list or [])}
        self._exclude_names = tuple(self._exclude_names) + tuple(var_names or ())

    def _decays(self, v):
        return bool(self.weight_decay) and id(v) not in self._exclude_ids and not any(
            n in v.name for n in self._exclude_names)

    # ---------------------------------------------------------- clipping
    def _clip(self, grads):
        if self.clipvalue is not None:
            c = float(self.clipvalue)
            return [ops.clip(g, -c, c) for g in grads]
        if self.clipnorm is not None:
            c = float(self.clipnorm)
            out = []
            for g in grads:
                norm = ops.sqrt(ops.sum(ops.square(g)))
                out.append(g * (c / ops.maximum(norm, c)))
            return out
        if self.global_clipnorm is not None:
            c = float(self.global_clipnorm)
            total = None
            for g in grads:
                s = ops.sum(ops.square(ops.cast(g, "float32") if g.dtype == "float16" else g))
                total = s if total is None else total + s
            scale = c / ops.maximum(ops.sqrt(total), c)
            return [g * ops.cast(scale, g.dtype) for g in grads]
        return grads

    # ------------------------------------------------------------- apply
    def apply_gradients(self, grads_and_vars):
        """One step: ``grads_and_vars`` is a list of ``(gradient, variable)``.

        Gradients are Tensors (or raw backend arrays); None gradients and
        non-trainable variables are skipped. Clipping, weight decay, then
        the update rule, in place. Returns the new ``iterations``.
        """
        pairs = list(grads_and_vars)
        pairs = self._built_pairs((v for _, v in pairs), pairs)
        if not pairs:
            return self.iterations
        with no_grad():
            grads = []
            for g, v in pairs:
                if not isinstance(g, Tensor):
                    g = Tensor(v._backend.asarray(g, v.dtype), v._backend)
                if g.shape != v.shape:
                    raise ValueError(f"gradient of shape {g.shape} for variable {v.name!r} of shape {v.shape}")
                if g.requires_grad:
                    g = Tensor(g.data, g._backend)
                grads.append(g)
            grads = self._clip(grads)
        return self._step([g.data for g in grads], [v for _, v in pairs])

    def _built_pairs(self, variables, pairs):
        """The (gradient, variable) ``pairs`` an update applies (a gradient, a trainable variable),
        once the optimizer is built for every trainable one of ``variables`` (those of ``pairs``)."""
        self.build([v for v in variables if getattr(v, "trainable", True)])
        return [(g, v) for g, v in pairs if g is not None and getattr(v, "trainable", True)]

    def _step(self, gs, vars_):
        """The update of ``apply_gradients`` after its checks and clipping: raw gradients ``gs``."""
        with no_grad():
            lr = self._lr_at(self.iterations)
            step = self.iterations + 1
            self._before_step(step)
            gds = [g if g.dtype == v.data.dtype else v._backend.cast(g, v.dtype) for g, v in zip(gs, vars_)]
            self._update_all(vars_, gds, lr, step)
            for v in vars_:
                if getattr(v, "constraint", None) is not None:
                    v.assign(v.constraint(v))
        if self.use_ema:
            self._ema_step(step)
        self.iterations = step
        return self.iterations

    def _apply_raw_gradients(self, gs, vars_):
        """``apply_gradients(zip(gs, vars_))`` for a training step's raw gradient arrays (from backward:
        on the variables' backend, of their shapes), without a Tensor per gradient where nothing
        clips them and the class keeps apply_gradients as is (LossScaleOptimizer does not)."""
        cls = type(self)
        if (cls.apply_gradients is not Optimizer.apply_gradients or cls._clip is not Optimizer._clip
                or self.clipvalue is not None or self.clipnorm is not None or self.global_clipnorm is not None):
            return self.apply_gradients([(None if g is None else Tensor(g, v._backend), v) for g, v in zip(gs, vars_)])
        pairs = self._built_pairs(vars_, zip(gs, vars_))
        if not pairs:
            return self.iterations
        for g, v in pairs:
            if tuple(g.shape) != v.data.shape:
                raise ValueError(f"gradient of shape {tuple(g.shape)} for variable {v.name!r} of shape {v.shape}")
        return self._step([g for g, _ in pairs], [v for _, v in pairs])

    def apply(self, grads, trainable_variables=None):
        """Keras 3's form of ``apply_gradients``: ``grads`` paired with ``trainable_variables``
        (default: the variables this optimizer was built for). Returns the new ``iterations``."""
        grads = list(grads)
        if trainable_variables is None:
            if not self._vars:
                raise ValueError(f"{type(self).__name__}.apply: pass trainable_variables on the first call (the "
                                 f"optimizer is not built for any variables yet)")
            trainable_variables = [v for v in self._vars if v.trainable]
        trainable_variables = list(trainable_variables)
        if len(grads) != len(trainable_variables):
            raise ValueError(f"{type(self).__name__}.apply: {len(grads)} gradients for "
                             f"{len(trainable_variables)} variables")
        return self.apply_gradients(zip(grads, trainable_variables))

    # ------------------------------------------------ inside a CUDA graph
    # A captured training step freezes launch arguments, so an update inside
    # it reads this step's scalars (learning rate, Adam's step size) from a
    # small device array that the host fills before each replay.
    def _graph_scalars(self, lr, step):
        """The 1 to 4 floats an update inside a captured step reads from the
        device for step ``step`` at rate ``lr``; None when this optimizer's
        update runs outside the graph instead (after each replay)."""
        return None

    def _update_graph(self, B, v, g, slots, hp):
        raise NotImplementedError

    def graph_scalars_for_next_step(self):
        """``_graph_scalars`` of the step that ``apply_gradients`` would run next."""
        return self._graph_scalars(self._lr_at(self.iterations), self.iterations + 1)

    def can_update_in_graph(self, var_list) -> bool:
        """True when one step over ``var_list`` can be recorded inside a CUDA graph."""
        return (self.graph_scalars_for_next_step() is not None and not self.use_ema
                and not any(getattr(v, "constraint", None) is not None for v in var_list))

    def apply_gradients_in_graph(self, grads, var_list, hp):
        """The updates of ``apply_gradients`` written for capture: clipping, then
        each variable's rule reading its scalars from ``hp`` (a device float32
        array). Leaves ``iterations`` alone: the caller counts replays.
        ``grads`` are raw arrays or None, paired with ``var_list``."""
        self.build([v for v in var_list if getattr(v, "trainable", True)])
        pairs = [(g, v) for g, v in zip(grads, var_list) if g is not None and getattr(v, "trainable", True)]
        with no_grad():
            gs = [Tensor(g if g.dtype == v.data.dtype else v._backend.cast(g, v.dtype), v._backend)
                  for g, v in pairs]
            gs = self._clip(gs)
            self._update_all([v for _, v in pairs], [g.data for g in gs], None, None, hp)

    def _update_all(self, vars_, gs, lr, step, hp=None):
        """Update every variable (raw gradients ``gs``): ``_update`` each, or with
        ``hp`` (a captured step's device scalars) ``_update_graph`` each. Rules
        with a backend ``*_update_many`` form implement ``_many`` instead (and
        ``_has_many``): then the whole step is one backend call."""
        if self._has_many():
            for at, slots in self._many_groups(vars_):
                if len(at) == len(vars_):  # one backend: the usual case
                    self._many(vars_[0]._backend, vars_, gs, slots, lr, step, hp)
                else:
                    self._many(vars_[at[0]]._backend, [vars_[i] for i in at], [gs[i] for i in at], slots, lr,
                               step, hp)
            return
        for v, g in zip(vars_, gs):
            if hp is None:
                self._update(v._backend, v, g, self._slot_vars[id(v)], lr, step)
            else:
                self._update_graph(v._backend, v, g, self._slot_vars[id(v)], hp)

    def _has_many(self) -> bool:
        """True when ``_many`` can do this optimizer's whole step (where a subclass defines it)."""
        return type(self)._many is not Optimizer._many

    def _many(self, B, vars_, gs, slots, lr, step, hp):
        """The update of all ``vars_`` (on backend ``B``) in one backend call; see ``_update_all``."""
        raise NotImplementedError

    def _decay_all(self, B, vars_, lr, hp):
        for v in vars_:
            if self._decays(v):
                if hp is None:
                    B.weight_decay_update(v.data, lr, float(self.weight_decay))
                else:
                    B.weight_decay_update_dev(v.data, hp)

    def _before_step(self, step):
        """Hook run once per step before the updates (Nadam's momentum product)."""

    def _many_groups(self, vars_):
        """Per backend (variables on two are rare), one ``_many`` call's (positions in ``vars_``, their slot
        lists). Kept for the last list of variables, which a training step passes each time (the entry holds
        them, so their ids are not reused while it is kept): a variable's backend and its slot list, made
        once by ``build``, do not change."""
        key = tuple(map(id, vars_))
        memo = self._groups_memo
        if memo is None or memo[0] != key:
            groups = {}
            for i, v in enumerate(vars_):
                grp = groups.setdefault(id(v._backend), ([], []))
                grp[0].append(i)
                grp[1].append(self._slot_vars[id(v)])
            memo = self._groups_memo = (key, tuple(vars_), tuple(groups.values()))
        return memo[2]

    def _update(self, B, v, g, slots, lr, step):
        raise NotImplementedError

    def _maybe_decay(self, B, v, lr):
        if self._decays(v):
            B.weight_decay_update(v.data, lr, float(self.weight_decay))

    def scale_loss(self, loss):
        """Keras 3's hook before differentiating: ``loss`` unchanged here; a
        ``LossScaleOptimizer`` multiplies it by its dynamic scale."""
        return loss

    def minimize(self, loss, var_list=None):
        """Differentiate ``loss()`` (a zero-arg function) and apply one step; returns the loss.

        ``var_list`` defaults to every trainable Variable the loss used (TF.js's ``minimize``).
        """
        from .autograd import variable_grads

        value, gs = variable_grads(loss, var_list)
        self.apply_gradients([(g, v) for v, g in gs.items()])
        return value

    # ------------------------------------------------------------ config
    def get_config(self) -> dict:
        lr = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            lr = schedules.serialize(lr)
        elif callable(lr):
            lr = float(lr())
        cfg = {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
               "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
               "clipvalue": self.clipvalue}
        if self.use_ema:
            cfg.update(use_ema=True, ema_momentum=self.ema_momentum,
                       ema_overwrite_frequency=self.ema_overwrite_frequency)
        return cfg

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"])
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} learning_rate={self.learning_rate:g} iterations={self.iterations}>"


class LearningRate(float):
    """An optimizer's learning rate as read: a float, with ``assign`` / ``numpy`` as Keras's
    learning-rate variable has them."""

    def __new__(cls, value, optimizer=None):
        obj = super().__new__(cls, value)
        obj._optimizer = optimizer
        return obj

    def assign(self, value):
        """Set the optimizer's learning rate (a number >= 0, or a Tensor holding one); returns
        the new value. TypeError for an optimizer driven by a schedule."""
        if self._optimizer is None:
            raise TypeError("this learning rate belongs to no optimizer")
        self._optimizer.learning_rate = value
        return self._optimizer.learning_rate

    def numpy(self):
        """The value as a NumPy float32 scalar (Keras's ``variable.numpy()``)."""
        return _backends.get("cpu").asarray(float(self), "float32")[()]

    @property
    def value(self) -> float:
        return float(self)

    def __reduce__(self):
        return float, (float(self),)


class SGD(Optimizer):
    """Gradient descent, with optional (Nesterov) momentum:
    ``m = momentum * m - lr * g; p += m`` (Nesterov: ``p += momentum * m - lr * g``)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="SGD", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be a float in [0, 1], got {momentum}")
        self.momentum = momentum
        self.nesterov = bool(nesterov)

    def _slots(self):
        return ("momentum",) if self.momentum else ()

    def _graph_scalars(self, lr, step):
        return (lr, lr * float(self.weight_decay or 0.0))

    def _many(self, B, vars_, gs, slots, lr, step, hp):
        self._decay_all(B, vars_, lr, hp)
        B.sgd_update_many([v.data for v in vars_], gs, [s[0].data if s else None for s in slots], lr,
                          self.momentum, self.nesterov, hp=hp)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba) in Keras's form: bias corrections folded into the step size,
    ``epsilon`` added to ``sqrt(v)``; ``amsgrad`` keeps the running maximum of ``v``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, name="adam", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.amsgrad = bool(amsgrad)

    def _slots(self):
        return ("momentum", "velocity", "velocity_hat") if self.amsgrad else ("momentum", "velocity")

    def _update(self, B, v, g, slots, lr, step):  # AMSGrad; plain Adam goes through _many
        self._maybe_decay(B, v, lr)
        B.adam_amsgrad_update(v.data, g, slots[0].data, slots[1].data, slots[2].data, lr,
                              self.beta_1, self.beta_2, self.epsilon, step)

    def _graph_scalars(self, lr, step):
        if self.amsgrad:
            return None
        step_size = lr * math.sqrt(1 - self.beta_2 ** step) / (1 - self.beta_1 ** step)
        return (step_size, lr * float(self.weight_decay or 0.0))

    def _has_many(self):
        return not self.amsgrad  # AMSGrad has no many-variable form

    def _many(self, B, vars_, gs, slots, lr, step, hp):
        B.adam_update_many([v.data for v in vars_], gs, [s[0].data for s in slots], [s[1].data for s in slots],
                           lr, self.beta_1, self.beta_2, self.epsilon, step, float(self.weight_decay or 0.0),
                           [self._decays(v) for v in vars_] if self.weight_decay else [False] * len(vars_), hp=hp)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p -= p * weight_decay * lr`` before each step."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None, name="adamw", **kwargs):
        if weight_decay is None:
            raise ValueError("AdamW needs a weight_decay (a float); use Adam for none")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue,
                         global_clipnorm, name, **kwargs)


class RMSprop(Optimizer):
    """RMSprop: ``v = rho v + (1 - rho) g^2; p -= lr g / sqrt(v + eps)``; optional
    momentum and centering (the running mean of g subtracted)."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, name="rmsprop",
                 **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.centered = bool(centered)

    def _slots(self):
        s = ["velocity"]
        if self.momentum > 0:
            s.append("momentum")
        if self.centered:
            s.append("average_gradient")
        return tuple(s)

    def _graph_scalars(self, lr, step):
        return (lr, lr * float(self.weight_decay or 0.0))

    def _many(self, B, vars_, gs, slots, lr, step, hp):
        self._decay_all(B, vars_, lr, hp)
        moms = [s[1].data if self.momentum > 0 else None for s in slots]
        mgs = [s[-1].data if self.centered else None for s in slots]
        B.rmsprop_update_many([v.data for v in vars_], gs, [s[0].data for s in slots], mgs, moms, lr,
                              self.rho, self.momentum, self.epsilon, hp=hp)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adagrad(Optimizer):
    """Adagrad: ``acc += g^2; p -= lr g / sqrt(acc + eps)``, acc starting at
    ``initial_accumulator_value``."""

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adagrad", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)

    def _slots(self):
        return ("accumulator",)

    def _slot_init(self, name):
        return self.initial_accumulator_value

    def _update(self, B, v, g, slots, lr, step):
        self._maybe_decay(B, v, lr)
        B.adagrad_update(v.data, g, slots[0].data, lr, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class Adadelta(Optimizer):
    """Adadelta (Zeiler) with a learning rate, as Keras: use 1.0 for the paper's form."""

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="adadelta", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.rho = float(rho)
        self.epsilon = float(epsilon)

    def _slots(self):
        return ("accumulated_grad", "accumulated_delta_var")

    def _update(self, B, v, g, slots, lr, step):
        self._maybe_decay(B, v, lr)
        B.adadelta_update(v.data, g, slots[0].data, slots[1].data, lr, self.rho, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm, ``u = max(beta_2 u, |g|)``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="adamax", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)

    def _slots(self):
        return ("m", "u")

    def _update(self, B, v, g, slots, lr, step):
        self._maybe_decay(B, v, lr)
        B.adamax_update(v.data, g, slots[0].data, slots[1].data, lr, self.beta_1, self.beta_2,
                        self.epsilon, step)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Nadam(Optimizer):
    """Nadam (Dozat): Adam with Nesterov momentum and the momentum schedule
    ``u_t = beta_1 (1 - 0.5 * 0.96^t)``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="nadam", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self._u_product = 1.0

    def _slots(self):
        return ("momentum", "velocity")

    def _global_state(self):
        return [self._u_product]

    def _set_global_state(self, values):
        self._u_product = float(values[0])

    def _before_step(self, step):
        self._u_product *= self.beta_1 * (1.0 - 0.5 * 0.96 ** step)

    def _update(self, B, v, g, slots, lr, step):
        self._maybe_decay(B, v, lr)
        B.nadam_update(v.data, g, slots[0].data, slots[1].data, lr, self.beta_1, self.beta_2,
                       self.epsilon, step, self._u_product)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}



# ------------------------------------------------ Keras 3's other rules, as composite ops
# Written with deepgpu.ops on the variable and its slots (a few small ops per variable),
# not as fused backend primitives: the rules of Keras 3.15's update_step, term by term.

def _t(B, array):
    return Tensor(array, B)


class Lion(Optimizer):
    """Lion (Chen et al., 2023): ``p -= lr * sign(beta_1 m + (1 - beta_1) g)``, then
    ``m = beta_2 m + (1 - beta_2) g``. Use a learning rate 3-10x smaller than Adam's."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="lion", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        if not 0.0 < float(beta_1) <= 1.0:
            raise ValueError(f"Lion: beta_1 must be in (0, 1] (0 makes it SignSGD), got {beta_1}")
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)

    def _slots(self):
        return ("momentum",)

    def _update(self, B, v, g, slots, lr, step):
        self._maybe_decay(B, v, lr)
        m, g = slots[0], _t(B, g)
        v.assign_sub(ops.sign(m * self.beta_1 + g * (1.0 - self.beta_1)) * lr)
        m.assign(m * self.beta_2 + g * (1.0 - self.beta_2))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}


class Ftrl(Optimizer):
    """FTRL-proximal (McMahan et al.) as Keras 3 writes it, with L1 / L2 / L2-shrinkage
    regularization and ``beta``; accumulators start at ``initial_accumulator_value``."""

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                 l2_shrinkage_regularization_strength=0.0, beta=0.0, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name="ftrl", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        checks = (("initial_accumulator_value", initial_accumulator_value, ">= 0"),
                  ("l1_regularization_strength", l1_regularization_strength, ">= 0"),
                  ("l2_regularization_strength", l2_regularization_strength, ">= 0"),
                  ("l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength, ">= 0"))
        for what, value, rule in checks:
            if not float(value) >= 0.0:
                raise ValueError(f"Ftrl: {what} must be {rule}, got {value}")
        if not float(learning_rate_power) <= 0.0:
            raise ValueError(f"Ftrl: learning_rate_power must be <= 0, got {learning_rate_power}")
        self.learning_rate_power = float(learning_rate_power)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.l1_regularization_strength = float(l1_regularization_strength)
        self.l2_regularization_strength = float(l2_regularization_strength)
        self.l2_shrinkage_regularization_strength = float(l2_shrinkage_regularization_strength)
        self.beta = float(beta)

    def _slots(self):
        return ("accumulator", "linear")

    def _slot_init(self, name):
        return self.initial_accumulator_value if name == "accumulator" else 0.0

    def _update(self, B, v, g, slots, lr, step):
        self._maybe_decay(B, v, lr)
        if lr <= 0.0:
            raise ValueError("Ftrl: the learning rate must be > 0 (the rule divides by it)")
        accum, linear, g = slots[0], slots[1], _t(B, g)
        p = -self.learning_rate_power
        l2 = self.l2_regularization_strength + self.beta / (2.0 * lr)
        w = _t(B, v.data)
        grad = g + w * (2.0 * self.l2_shrinkage_regularization_strength)
        new_accum = accum + ops.square(g)
        new_pow = ops.pow(new_accum, p)
        linear.assign_add(grad - (new_pow - ops.pow(_t(B, accum.data), p)) / lr * w)
        quadratic = new_pow / lr + 2.0 * l2
        l1 = self.l1_regularization_strength
        lin = _t(B, linear.data)
        v.assign((ops.clip(lin, -l1, l1) - lin) / quadratic)
        accum.assign(new_accum)

    def get_config(self):
        return {**super().get_config(), "learning_rate_power": self.learning_rate_power,
                "initial_accumulator_value": self.initial_accumulator_value,
                "l1_regularization_strength": self.l1_regularization_strength,
                "l2_regularization_strength": self.l2_regularization_strength,
                "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
                "beta": self.beta}


class Lamb(Optimizer):
    """LAMB (You et al.): Adam's bias-corrected direction ``m_hat / (sqrt(v_hat) + epsilon)``
    scaled per variable by the trust ratio ``||p|| / ||update||`` (1 where either is 0)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name="lamb", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _slots(self):
        return ("momentum", "velocity")

    def _update(self, B, v, g, slots, lr, step):
        self._maybe_decay(B, v, lr)
        m, vel, g = slots[0], slots[1], _t(B, g)
        m.assign_add((g - m) * (1.0 - self.beta_1))
        vel.assign_add((ops.square(g) - vel) * (1.0 - self.beta_2))
        update = (m / (1.0 - self.beta_1 ** step)) / (ops.sqrt(vel / (1.0 - self.beta_2 ** step)) + self.epsilon)
        w_norm = ops.sqrt(ops.sum(ops.square(_t(B, v.data))))
        u_norm = ops.sqrt(ops.sum(ops.square(update)))
        ok = ops.logical_and(ops.greater(w_norm, 0.0), ops.greater(u_norm, 0.0))
        ratio = ops.where(ok, w_norm / ops.where(ok, u_norm, 1.0), 1.0)
        v.assign_sub(update * (ratio * lr))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern) as Keras 3: second moments factored into row and column
    means for variables of rank >= 2 (a slot of ``shape[:-1]`` and one of ``shape[:-2] +
    shape[-1:]``), a full one below; updates clipped by RMS to ``clip_threshold`` and scaled
    by ``max(epsilon_2, RMS(p)) * min(lr, 1 / sqrt(step))``."""

    def __init__(self, learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3, clip_threshold=1.0,
                 relative_step=True, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name="adafactor", **kwargs):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name, **kwargs)
        self.beta_2_decay, self.epsilon_1, self.epsilon_2 = float(beta_2_decay), float(epsilon_1), float(epsilon_2)
        self.clip_threshold, self.relative_step = float(clip_threshold), bool(relative_step)

    def _slots(self):
        return ("r", "c", "velocity")

    def _slot_shape(self, name, shape):
        if len(shape) < 2:
            return shape if name == "velocity" else ()
        if name == "r":
            return tuple(shape[:-1])
        if name == "c":
            return tuple(shape[:-2]) + (shape[-1],)
        return shape

    @staticmethod
    def _rms(x):
        return ops.sqrt(ops.mean(ops.square(x)))

    def _update(self, B, v, g, slots, lr, step):
        self._maybe_decay(B, v, lr)
        r, c, vel, g = slots[0], slots[1], slots[2], _t(B, g)
        rho = min(lr, 1.0 / math.sqrt(step))  # the relative step; Keras takes this min either way
        alpha = ops.maximum(self._rms(_t(B, v.data)), self.epsilon_2) * rho
        sq = ops.square(g) + self.epsilon_1
        beta_2 = 1.0 - float(step) ** self.beta_2_decay
        if v.ndim >= 2:
            r.assign(r * beta_2 + ops.mean(sq, axis=-1) * (1.0 - beta_2))
            c.assign(c * beta_2 + ops.mean(sq, axis=-2) * (1.0 - beta_2))
            vel.assign(ops.expand_dims(r / ops.mean(r, axis=-1, keepdims=True), -1) * ops.expand_dims(c, -2))
        else:
            vel.assign(vel * beta_2 + sq * (1.0 - beta_2))
        u = g / ops.sqrt(_t(B, vel.data))
        u = u / ops.maximum(self._rms(u) / self.clip_threshold, 1.0)
        v.assign_sub(u * alpha)

    def get_config(self):
        return {**super().get_config(), "beta_2_decay": self.beta_2_decay, "epsilon_1": self.epsilon_1,
                "epsilon_2": self.epsilon_2, "clip_threshold": self.clip_threshold,
                "relative_step": self.relative_step}

# -------------------------------------------------------------------- get

_CLASSES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
            "adadelta": Adadelta, "adamax": Adamax, "nadam": Nadam, "lion": Lion, "ftrl": Ftrl, "lamb": Lamb,
            "adafactor": Adafactor}


def _key(name):
    return str(name).replace("_", "").lower()


def valid_names() -> list:
    return sorted(_CLASSES)


def _unknown(name):
    return ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(valid_names())} "
                      f"(any case, e.g. 'Adam', 'RMSprop')")


def get(identifier):
    """An Optimizer from an instance, a name ("adam", "SGD", "rmsprop", ... in any case:
    Keras and TF.js names), or ``{"class_name": ..., "config": {...}}``.

    A name gives a fresh optimizer with Keras's defaults. Unknown names raise
    ValueError listing the valid ones.
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = _CLASSES.get(_key(name))
        if cls is None:
            raise _unknown(name)
        return cls.from_config(dict(identifier.get("config") or {}))
    if isinstance(identifier, str):
        cls = _CLASSES.get(_key(identifier))
        if cls is None:
            raise _unknown(identifier)
        return cls()
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    raise TypeError(f"an optimizer must be a name, a config dict or an Optimizer, got {type(identifier).__name__}")


def serialize(optimizer) -> dict:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


deserialize = get


from . import loss_scale as _loss_scale  # noqa: E402,F401  (LossScaleOptimizer registers itself with get())


def __getattr__(name):
    if name == "LossScaleOptimizer":  # keras.optimizers.LossScaleOptimizer (deepgpu/loss_scale.py)
        from .loss_scale import LossScaleOptimizer
        return LossScaleOptimizer
    raise AttributeError(f"module 'deepgpu.optimizers' has no attribute {name!r}")
