"""The (de)serialization registry: which class or function a name in a config means.

It sits below everything that uses it (layers, activations, models, io) and
imports none of them: the library's own classes are put in by the packages
that define them (``deepgpu.layers`` its namespace, ``deepgpu.models`` the
model classes), a user's by ``@register_serializable()``.
"""
from __future__ import annotations

_CUSTOM: dict = {}     # name -> the user's class or function (register_serializable)
_BUILTIN: dict = {}    # name -> one of the library's classes found by that name only
_NAMESPACES: list = []  # modules whose classes are found by attribute name (deepgpu.layers)


def register_serializable(name=None):
    """Decorator: make a custom Layer / loss / activation class or function loadable by name."""
    def deco(obj):
        _CUSTOM[name or obj.__name__] = obj
        return obj
    return deco


_KERAS_NAMES: dict = {}  # id(obj) -> "package>name", as Keras's registered_name spells it


def register_keras_serializable(package="Custom", name=None):
    """Keras 3's decorator: register a class or function as ``"package>name"`` (name: its own
    ``__name__`` by default), found by that name and by the bare name."""
    if not isinstance(package, str) or not package or ">" in package:
        raise ValueError(f"register_keras_serializable: package must be a non-empty string without '>', got "
                         f"{package!r}")

    def deco(obj):
        bare = name or obj.__name__
        key = f"{package}>{bare}"
        if key in _CUSTOM and _CUSTOM[key] is not obj:
            raise ValueError(f"register_keras_serializable: {key!r} is already registered for {_CUSTOM[key]!r}")
        _CUSTOM[key] = obj
        _CUSTOM[bare] = obj
        _KERAS_NAMES[id(obj)] = key
        return obj
    return deco


def registered_name(obj) -> str:
    """The name a config gives ``obj`` (a class or function): ``"package>name"`` when
    ``register_keras_serializable`` registered it, else its ``__name__``."""
    return _KERAS_NAMES.get(id(obj), obj.__name__)


def custom_objects() -> dict:
    """The user's registered objects, by name (a copy)."""
    return dict(_CUSTOM)


def register_builtin(name, cls):
    """Make one of the library's classes loadable as ``name`` (Sequential, Model, Functional)."""
    _BUILTIN[name] = cls


def register_namespace(module):
    """Make every class of ``module`` loadable by its attribute name.

    Read at each lookup, not copied, so a class set on the module later is
    found too.
    """
    if module not in _NAMESPACES:
        _NAMESPACES.append(module)


def lookup_class(class_name, custom=None):
    """The class a config names: from ``custom``, the user's registry, then the library's own."""
    if custom and class_name in custom:
        return custom[class_name]
    if class_name in _CUSTOM:
        return _CUSTOM[class_name]
    if class_name in _BUILTIN:
        return _BUILTIN[class_name]
    for module in _NAMESPACES:
        cls = getattr(module, class_name, None)
        if isinstance(cls, type):
            return cls
    raise ValueError(
        f"unknown layer class {class_name!r}: it is not a deepgpu layer; pass it in "
        f"custom_objects={{'{class_name}': cls}} or decorate it with @register_serializable()")


def serialize_layer(layer) -> dict:
    spec = {"class_name": type(layer).__name__, "config": layer.get_config()}
    build = getattr(layer, "get_build_config", None)
    build = build() if build is not None else None
    if build is not None:  # a subclassed model: the input shape that creates its weights
        spec["build_config"] = build
    return spec


def deserialize_layer(spec, custom=None):
    """A layer (or model) from ``{"class_name": ..., "config": ...}``."""
    if not isinstance(spec, dict) or "class_name" not in spec:
        raise ValueError(f"a layer must be described as {{'class_name':..., 'config':...}}, got {spec!r}")
    cls = lookup_class(spec["class_name"], custom)
    cfg = dict(spec.get("config") or {})
    try:
        if "custom_objects" in cls.from_config.__code__.co_varnames:
            obj = cls.from_config(cfg, custom_objects=custom)
        else:
            obj = cls.from_config(cfg)
    except TypeError as e:
        raise ValueError(f"cannot build layer {spec['class_name']} from its config: {e}") from None
    build = spec.get("build_config")
    if isinstance(build, dict) and hasattr(obj, "build_from_config") and not obj.built:
        obj.build_from_config(build)
    return obj
