"""The compression-method registry: one :class:`Method` per name, built-ins plus the ``kick.methods``
entry-point group. Config validation, the engine, the cache key, the sweep and the report all read it.

Importing this module loads no torch and no plug-in; the registry is built on first use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata

from .method import KINDS, STATISTICS, Job, Method, MethodError, Param  # noqa: F401 -- plug-ins import these from here
from .methods import BUILTIN_METHODS, COMPOSING_QUANTIZER

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kick.methods"
# kick's own model_args (the fields of kick_models.config.CompressionConfig, which reads this registry):
# a plug-in param may not shadow them. A test keeps the two equal.
RESERVED_PARAMS = frozenset({
    "method", "sparsity", "pattern", "wbits", "group_size", "sym", "act_order", "damp", "blocksize", "calib",
    "nsamples", "seqlen", "seed", "sparsity_profile", "owl_m", "owl_lambda", "propagate", "true_sequential",
    "method_args", "skip_experts",
})


@dataclass
class _Registry:
    methods: dict[str, Method] = field(default_factory=dict)
    builtin: frozenset = frozenset()
    skipped: dict[str, str] = field(default_factory=dict)  # entry-point name -> why it was not registered


def _builtins() -> list[Method]:
    from kick_models.external.loadtime import LOAD_TIME_METHODS  # other libraries' quantizers, as methods

    return [*BUILTIN_METHODS, *LOAD_TIME_METHODS]


def _load_plugin(ep) -> Method:
    dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
    where = f"entry point {ep.name} = {ep.value} ({dist})"
    try:
        obj = ep.load()
        method = obj() if callable(obj) and not isinstance(obj, Method) else obj
    except MethodError:
        raise
    except Exception as exc:
        raise MethodError(f"kick: the method plug-in {where} failed to load: {exc!r}") from exc
    if not isinstance(method, Method):
        raise MethodError(f"kick: the method plug-in {where} gave {type(method).__name__}; accepted: a "
                          "kick_models.compression.registry.Method (or a function returning one)")
    if method.name != ep.name:
        raise MethodError(f"kick: the method plug-in {where} registers {method.name!r} under the name {ep.name!r}; "
                          "accepted: the same name for the entry point and the Method")
    if method.source == "built-in":
        method = _replace(method, source=dist)
    return method


def _replace(method: Method, **changes) -> Method:
    import dataclasses

    return dataclasses.replace(method, **changes)


def _plugin_problem(method: Method, ep, builtin: frozenset) -> str | None:
    """Why a loaded plug-in cannot be registered beside the built-ins, or None."""
    if method.name in builtin:
        return (f"kick: the method plug-in {ep.value} ({method.source}) registers {method.name!r}, which is a "
                f"built-in method; accepted: a name other than {', '.join(sorted(builtin))}")
    clash = RESERVED_PARAMS.intersection(method.param_names)
    if clash:
        return (f"kick: the method plug-in {method.name!r} ({method.source}) declares parameter(s) "
                f"{sorted(clash)} that are kick's own model_args; accepted: other names")
    return None


@lru_cache(maxsize=1)
def _registry() -> _Registry:
    """Built-ins, then every plug-in that loads and fits. A plug-in that fails to load, is malformed, shadows a
    built-in or a kick model_arg, or shares its name with another plug-in is skipped with one warning naming it,
    so one broken installation does not take every method (``magnitude`` included) down with it."""
    reg = _Registry()
    for method in _builtins():
        reg.methods[method.name] = method
    reg.builtin = frozenset(reg.methods)
    loaded: dict[str, list[Method]] = {}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            method = _load_plugin(ep)
        except MethodError as err:
            reg.skipped[ep.name] = str(err)
            continue
        problem = _plugin_problem(method, ep, reg.builtin)
        if problem:
            reg.skipped[ep.name] = problem
            continue
        loaded.setdefault(method.name, []).append(method)
    for name, methods in loaded.items():
        if len(methods) > 1:  # neither is the user's evident choice: use none
            reg.skipped[name] = (f"kick: method {name!r} is registered by both "
                                 f"{' and '.join(m.source for m in methods)}; uninstall one of them")
            continue
        reg.methods[name] = methods[0]
        log.debug("kick: method plug-in %s", methods[0].describe())
    for name, why in reg.skipped.items():
        log.warning("%s -- plug-in %r skipped; every other method works", why, name)
    return reg


def skipped_plugins() -> dict[str, str]:
    """Plug-in entry points that were not registered, with the reason (also logged once as a warning)."""
    return dict(_registry().skipped)


def reload() -> None:
    """Forget the registry (it is rebuilt, plug-ins re-read, on next use)."""
    _registry.cache_clear()


def all_methods() -> dict[str, Method]:
    """name → Method: the built-ins in their order, then plug-ins by name."""
    return dict(_registry().methods)


def method_names() -> tuple[str, ...]:
    return tuple(_registry().methods)


def get_method(name: str) -> Method:
    """The method called ``name``; KeyError listing every registered one otherwise."""
    reg = _registry()
    if name not in reg.methods:
        why = f" (its plug-in was skipped: {reg.skipped[name]})" if name in reg.skipped else ""
        raise KeyError(f"unknown method {name!r}{why}; accepted: {' | '.join(reg.methods)}")
    return reg.methods[name]


def param_owners() -> dict[str, list[str]]:
    """Method-specific model_arg → the methods that declare it."""
    owners: dict[str, list[str]] = {}
    for method in _registry().methods.values():
        for name in method.param_names:
            owners.setdefault(name, []).append(method.name)
    return owners


def composing_quantizer() -> Method:
    """The quantizer a pruning method's ``wbits < 16`` runs after pruning (mask-aware GPTQ)."""
    return get_method(COMPOSING_QUANTIZER)


def required_stats(method: Method, quantizes: bool) -> frozenset:
    """Statistics the loop must gather: the method's, plus the composing quantizer's when a
    pruning method also quantizes."""
    needed = set(method.stats)
    if method.prunes and quantizes:
        needed |= composing_quantizer().stats
    return frozenset(needed)


def is_quantizer(name: str) -> bool:
    """True for a registered quantization-only method (no sparsity axis in the report)."""
    try:
        return get_method(name).kind != "prune"
    except KeyError:
        return False


def calibrates(name: str) -> bool:
    """True for a registered method whose result depends on calibration data (so on its seed)."""
    try:
        return bool(get_method(name).stats)
    except KeyError:
        return False
