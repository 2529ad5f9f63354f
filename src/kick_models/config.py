"""Validated compression settings: every ``kick-hf`` model_arg is parsed and checked here, once, before weights load."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from kick_common.args import ArgsError, accepted_bools, as_bool
from kick_models.compression import registry

METHOD_NONE = "none"  # leave the weights as they are; every other method name comes from the registry
WBITS = (2, 3, 4, 8, 16)
CALIB_NAMES = ("bundled", "c4", "wikitext2")
SPARSITY_PROFILES = ("uniform", "owl")
PROPAGATE = ("compressed", "dense")
NM_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


class ConfigError(ValueError):
    """A model_arg has a value that is not accepted; the message names key, value and what is accepted."""


def _fail(key: str, value: Any, accepted: str) -> ConfigError:
    return ConfigError(f"kick-hf: invalid model_arg {key}={value!r}; accepted: {accepted}")


@dataclass(frozen=True)
class CompressionConfig:
    """What to do to the model's decoder Linear layers, and with which calibration data.

    ``pattern`` is ``None`` for unstructured sparsity, otherwise ``(n, m)``: keep ``n`` of every
    ``m`` consecutive input weights of each row (so 2:4 keeps 2, prunes 2; 50% sparsity).
    ``wbits == 16`` means no quantization. ``skip_experts`` leaves the routed experts of
    mixture-of-experts blocks dense (they are compressed by default; the accounting shows them).
    ``calib=None`` means "the method's default", resolved by :meth:`resolved_calib` (bundled text
    on the embedded model).
    """

    method: str = "none"
    sparsity: float = 0.0
    pattern: tuple[int, int] | None = None
    wbits: int = 16
    group_size: int = 128
    sym: bool = False
    act_order: bool = False
    damp: float = 0.01
    blocksize: int = 128
    calib: str | None = None
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    sparsity_profile: str = "uniform"
    owl_m: float = 5.0
    owl_lambda: float = 0.08
    propagate: str = "compressed"
    true_sequential: bool = False
    method_args: tuple[tuple[str, Any], ...] = ()  # the method's own parameters as given, sorted
    skip_experts: bool = False

    # ----------------------------------------------------------------- method
    @property
    def method_spec(self) -> registry.Method | None:
        """The registry entry of ``method`` (None for method=none)."""
        return None if self.method == METHOD_NONE else registry.get_method(self.method)

    @property
    def params(self) -> dict[str, Any]:
        """The method's parameters: its defaults, overridden by what was given."""
        spec = self.method_spec
        if spec is None:
            return {}
        values = {p.name: p.default for p in spec.params}
        values.update(dict(self.method_args))
        return values

    # ----------------------------------------------------------------- derived
    @property
    def target_sparsity(self) -> float:
        """Fraction of weights each pruned matrix ends with at zero (N:M: 1 - n/m)."""
        if self.pattern is not None:
            n, m = self.pattern
            return 1.0 - n / m
        return self.sparsity

    @property
    def prunes(self) -> bool:
        spec = self.method_spec
        return spec is not None and spec.prunes and (self.pattern is not None or self.sparsity > 0)

    @property
    def quantizes(self) -> bool:
        return self.wbits < 16 and self.method != METHOD_NONE

    @property
    def required_stats(self) -> frozenset:
        """Statistics the calibration loop must gather (empty: no data needed)."""
        if self.is_noop:
            return frozenset()
        return registry.required_stats(self.method_spec, self.quantizes)

    @property
    def needs_calibration(self) -> bool:
        """True when the method (or the quantizer composed with it) reads calibration statistics."""
        return bool(self.required_stats)

    @property
    def is_noop(self) -> bool:
        return not self.prunes and not self.quantizes

    @property
    def pattern_str(self) -> str:
        return "unstructured" if self.pattern is None else f"{self.pattern[0]}:{self.pattern[1]}"

    def resolved_calib(self, embedded_model: bool = False) -> str:
        """The calibration source to use: explicit ``calib`` wins; else bundled text on the
        embedded model (offline by design), else the method's own default (WikiText-2 for GPTQ,
        as its paper; C4 for the pruners, as the Wanda/SparseGPT papers and LLM-KICK)."""
        if self.calib is not None:
            return self.calib
        if embedded_model:
            return "bundled"
        spec = self.method_spec
        return spec.default_calib if spec is not None else "c4"

    def to_dict(self) -> dict[str, Any]:
        """Effective settings as plain JSON values, for lm-eval's results file and cache keys."""
        d = dataclasses.asdict(self)
        d["pattern"] = self.pattern_str
        d["target_sparsity"] = self.target_sparsity
        d["method_args"] = self.params
        spec = self.method_spec
        d["method_version"] = spec.version if spec is not None else None
        return d


# --------------------------------------------------------------------------- coercion
def _as_bool(key: str, value: Any) -> bool:
    try:
        return as_bool(value, key=key)
    except ArgsError:
        raise _fail(key, value, accepted_bools()) from None


def _as_int(key: str, value: Any, accepted: str) -> int:
    if isinstance(value, bool):
        raise _fail(key, value, accepted)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise _fail(key, value, accepted)


def _as_float(key: str, value: Any, accepted: str) -> float:
    if isinstance(value, bool):
        raise _fail(key, value, accepted)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise _fail(key, value, accepted) from None
    if not math.isfinite(out):
        raise _fail(key, value, accepted)
    return out


def _as_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower() if not isinstance(value, bool) else ""
    if text not in choices:
        raise _fail(key, value, " | ".join(choices))
    return text


def parse_pattern(value: Any) -> tuple[int, int] | None:
    """``"unstructured"`` → None; ``"2:4"`` → (2, 4). N:M means keep N of every M (0 < N < M)."""
    accepted = "unstructured or N:M with 0 < N < M, e.g. 1:2, 2:4, 4:8"
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "unstructured", "none"):
        return None
    match = NM_PATTERN.match(text)
    if not match:
        raise _fail("pattern", value, accepted)
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise _fail("pattern", value, accepted)
    return n, m


def _calib(value: Any) -> str:
    text = str(value).strip()
    if not text or isinstance(value, bool):
        raise _fail("calib", value, f"{' | '.join(CALIB_NAMES)} or a path to a .txt/.jsonl file")
    return text.lower() if text.lower() in CALIB_NAMES else text


# key -> converter(value) for the compression args; anything else is an HFLM arg or an error
_CONVERTERS = {
    "method": lambda v: _as_choice("method", v, method_choices()),
    "sparsity": lambda v: _as_float("sparsity", v, "a number in [0, 1)"),
    "pattern": parse_pattern,
    "wbits": lambda v: _as_int("wbits", v, "one of 2, 3, 4, 8, 16"),
    "group_size": lambda v: _as_int("group_size", v, "a positive integer or -1 (per channel)"),
    "sym": lambda v: _as_bool("sym", v),
    "act_order": lambda v: _as_bool("act_order", v),
    "damp": lambda v: _as_float("damp", v, "a number in (0, 1]"),
    "blocksize": lambda v: _as_int("blocksize", v, "a positive integer"),
    "calib": _calib,
    "nsamples": lambda v: _as_int("nsamples", v, "a positive integer"),
    "seqlen": lambda v: _as_int("seqlen", v, "a positive integer"),
    "seed": lambda v: _as_int("seed", v, "an integer"),
    "sparsity_profile": lambda v: _as_choice("sparsity_profile", v, SPARSITY_PROFILES),
    "owl_m": lambda v: _as_float("owl_m", v, "a number > 0"),
    "owl_lambda": lambda v: _as_float("owl_lambda", v, "a number in [0, 1)"),
    "propagate": lambda v: _as_choice("propagate", v, PROPAGATE),
    "true_sequential": lambda v: _as_bool("true_sequential", v),
    "skip_experts": lambda v: _as_bool("skip_experts", v),
}
COMPRESSION_KEYS = tuple(_CONVERTERS)  # kick's own keys; methods add theirs (compression_keys())


def method_choices() -> tuple[str, ...]:
    """Every accepted ``method=``: none, the built-ins, then installed plug-ins."""
    return (METHOD_NONE, *registry.method_names())


def compression_keys() -> tuple[str, ...]:
    """kick's compression model_args plus every registered method's own parameters."""
    return COMPRESSION_KEYS + tuple(k for k in registry.param_owners() if k not in COMPRESSION_KEYS)


def _method_args(method: str, given: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Validate the method-specific keys of ``given`` against ``method``'s declared parameters."""
    spec = None if method == METHOD_NONE else registry.get_method(method)
    declared = {p.name: p for p in spec.params} if spec is not None else {}
    owners = registry.param_owners()
    out = {}
    for key, value in given.items():
        if key not in declared:
            raise _fail(key, value, f"only with method={' | '.join(owners[key])} (method={method} takes "
                        f"{', '.join(declared) or 'no parameters of its own'})")
        try:
            out[key] = declared[key].convert(value)
        except ValueError as exc:
            raise _fail(key, value, str(exc)) from None
    return tuple(sorted(out.items()))


def build_config(args: Mapping[str, Any]) -> CompressionConfig:
    """Turn raw model_args (strings, or lm-eval's coerced ints/floats/bools) into a checked config."""
    args = {key: value for key, value in args.items() if value is not None}
    own = {key: value for key, value in args.items() if key in _CONVERTERS}
    values = {key: _CONVERTERS[key](value) for key, value in own.items()}
    unknown = sorted(set(args) - set(own) - set(registry.param_owners()))
    if unknown:
        raise _fail(unknown[0], args[unknown[0]], f"one of {', '.join(compression_keys())}")
    method = values.get("method", METHOD_NONE)
    values["method_args"] = _method_args(method, {k: v for k, v in args.items() if k not in own})
    spec = None if method == METHOD_NONE else registry.get_method(method)
    if spec is not None and not spec.prunes:
        values.setdefault("wbits", spec.default_wbits)
        if spec.default_group_size is not None:
            values.setdefault("group_size", spec.default_group_size)
    config = CompressionConfig(**values)
    _check(config, set(values))
    return config


def _check(c: CompressionConfig, given: set[str]) -> None:
    if not 0.0 <= c.sparsity < 1.0:
        raise _fail("sparsity", c.sparsity, "a number in [0, 1)")
    if c.pattern is not None and "sparsity" in given and not math.isclose(c.sparsity, c.target_sparsity):
        raise _fail(
            "sparsity",
            c.sparsity,
            f"nothing, or {c.target_sparsity:g} with pattern={c.pattern_str} (N:M fixes sparsity at 1 - N/M)",
        )
    if c.wbits not in WBITS:
        raise _fail("wbits", c.wbits, "one of 2, 3, 4, 8, 16")
    if c.group_size == 0 or c.group_size < -1:
        raise _fail("group_size", c.group_size, "a positive integer or -1 (per channel)")
    if not 0.0 < c.damp <= 1.0:
        raise _fail("damp", c.damp, "a number in (0, 1]")
    if c.blocksize <= 0:
        raise _fail("blocksize", c.blocksize, "a positive integer")
    if c.nsamples <= 0:
        raise _fail("nsamples", c.nsamples, "a positive integer")
    if c.seqlen <= 0:
        raise _fail("seqlen", c.seqlen, "a positive integer")
    if c.owl_m <= 0:
        raise _fail("owl_m", c.owl_m, "a number > 0")
    if not 0.0 <= c.owl_lambda < 1.0:
        raise _fail("owl_lambda", c.owl_lambda, "a number in [0, 1)")
    methods = registry.all_methods().values()
    pruners = " | ".join(m.name for m in methods if m.prunes)
    quantizers = " | ".join(m.name for m in methods if not m.prunes)
    if c.method == METHOD_NONE and (c.sparsity > 0 or c.pattern is not None or c.wbits < 16):
        raise _fail("method", METHOD_NONE,
                    f"{pruners} (to prune) or {quantizers} (to quantize) when sparsity, pattern or wbits is given")
    spec = c.method_spec
    if spec is not None and not spec.prunes and (c.sparsity > 0 or c.pattern is not None):
        raise _fail("method", c.method,
                    f"{pruners} with wbits=N to prune and quantize; {c.method} alone takes no sparsity or pattern")
    refusal = spec.check(c) if spec is not None and spec.check is not None else None
    if refusal is not None:
        raise _fail(*refusal)
    if c.sparsity_profile == "owl" and c.pattern is not None:
        raise _fail("sparsity_profile", "owl", "uniform with an N:M pattern (OWL sets per-layer unstructured ratios)")
