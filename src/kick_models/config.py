"""Validated compression settings: every ``kick-hf`` model_arg is parsed and checked here, once, before weights load."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from kick_common.args import as_number
from kick_models.compression import registry
from kick_models.compression.method import Param

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


# --------------------------------------------------------------------------- kick's own model_args
# Declared like a plug-in's parameters (one coercion and one message shape, Param.convert); the four whose
# accepted values are not a type and a range (method, pattern, calib, group_size) have their own readers below.
KICK_PARAMS = (
    Param("method", str, METHOD_NONE, "none (the dense model), a built-in method or an installed plug-in"),
    Param("sparsity", float, 0.0, "fraction of each matrix's weights set to zero (unstructured)", low=0.0, high=1.0,
          high_open=True),
    Param("pattern", str, "unstructured", "unstructured, or N:M: keep N of every M consecutive input weights"),
    Param("wbits", int, 16, "weight bits; 16 quantizes nothing", choices=WBITS),
    Param("group_size", int, 128, "input columns sharing one quantization scale; -1: one per output row"),
    Param("sym", bool, False, "symmetric quantization grid"),
    Param("act_order", bool, False, "GPTQ: quantize columns in order of decreasing Hessian diagonal"),
    Param("damp", float, 0.01, "Hessian dampening, a fraction of its mean diagonal", low=0.0, high=1.0, low_open=True),
    Param("blocksize", int, 128, "columns per lazy-update block (SparseGPT, GPTQ)", low=1),
    Param("calib", str, None, "calibration text: bundled | c4 | wikitext2 | a .txt/.jsonl file (default: the method's)"),
    Param("nsamples", int, 128, "calibration windows", low=1),
    Param("seqlen", int, 2048, "tokens per calibration window (capped at the model's context)", low=1),
    Param("seed", int, 0, "seed of the calibration window draw"),
    Param("sparsity_profile", str, "uniform", "uniform, or owl: per-block sparsity from outlier ratios",
          choices=SPARSITY_PROFILES),
    Param("owl_m", float, 5.0, "OWL: an outlier is M times its layer's mean score", low=0.0, low_open=True),
    Param("owl_lambda", float, 0.08, "OWL: largest per-block deviation from the target", low=0.0, high=1.0,
          high_open=True),
    Param("propagate", str, "compressed", "which outputs feed the next block: compressed | dense", choices=PROPAGATE),
    Param("true_sequential", bool, False, "refit each layer group to the outputs of the compressed groups before it"),
    Param("skip_experts", bool, False, "leave routed mixture-of-experts experts dense (recorded)"),
)
_GROUP_SIZE_ACCEPTED = "a positive integer or -1 (per channel)"


def _group_size(value: Any) -> int:
    out = as_number(value, int)
    if out is None or out == 0 or out < -1:
        raise _fail("group_size", value, _GROUP_SIZE_ACCEPTED)
    return out


def _as_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower() if not isinstance(value, bool) else ""
    if text not in choices:
        raise _fail(key, value, " | ".join(choices))
    return text


def _method(value: Any) -> str:
    """A registered method name; a plug-in that was skipped is named with the reason."""
    try:
        return _as_choice("method", value, method_choices())
    except ConfigError:
        skipped = registry.skipped_plugins().get(str(value).strip().lower())
        if skipped is None:
            raise
        raise _fail("method", value, f"{' | '.join(method_choices())} (the plug-in {str(value).strip()!r} was "
                    f"skipped: {skipped})") from None


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


_READERS = {"method": lambda v: _method(v), "pattern": parse_pattern, "calib": _calib, "group_size": _group_size}
_PARAMS = {p.name: p for p in KICK_PARAMS}


def _convert(key: str, value: Any) -> Any:
    """One of kick's own model_args as its type, or the refusal naming key, value and what is accepted."""
    if key in _READERS:
        return _READERS[key](value)
    param = _PARAMS[key]
    try:
        out = param.convert(value)
    except ValueError:
        raise _fail(key, value, param.accepted()) from None
    return str(out).lower() if param.choices and isinstance(out, str) else out


COMPRESSION_KEYS = tuple(_PARAMS)  # kick's own keys; methods add theirs (compression_keys())


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
    own = {key: value for key, value in args.items() if key in _PARAMS}
    values = {key: _convert(key, value) for key, value in own.items()}
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
    """What no single value shows: settings that contradict each other (each value's own range is its Param's)."""
    if c.pattern is not None and "sparsity" in given and not math.isclose(c.sparsity, c.target_sparsity):
        raise _fail(
            "sparsity",
            c.sparsity,
            f"nothing, or {c.target_sparsity:g} with pattern={c.pattern_str} (N:M fixes sparsity at 1 - N/M)",
        )
    methods = registry.all_methods().values()
    pruners = " | ".join(m.name for m in methods if m.prunes)
    quantizers = " | ".join(m.name for m in methods if not m.prunes)
    if c.method == METHOD_NONE and (c.sparsity > 0 or c.pattern is not None or c.wbits < 16):
        raise _fail("method", METHOD_NONE,
                    f"{pruners} (to prune) or {quantizers} (to quantize) when sparsity, pattern or wbits is given")
    spec = c.method_spec
    _refuse_noop(c, spec, given)
    if spec is not None and not spec.prunes and (c.sparsity > 0 or c.pattern is not None):
        raise _fail("method", c.method,
                    f"{pruners} with wbits=N to prune and quantize; {c.method} alone takes no sparsity or pattern")
    refusal = spec.check(c) if spec is not None and spec.check is not None else None
    if refusal is not None:
        raise _fail(*refusal)
    if c.sparsity_profile == "owl" and c.pattern is not None:
        raise _fail("sparsity_profile", "owl", "uniform with an N:M pattern (OWL sets per-layer unstructured ratios)")


def _refuse_noop(c: CompressionConfig, spec: registry.Method | None, given: set[str]) -> None:
    """A method that would change nothing is refused, so a dense model is never recorded as compressed:
    a pruning method needs a sparsity above 0 or a pattern, a quantizer fewer than 16 bits."""
    if spec is None:
        return
    if spec.prunes and c.pattern is None and c.sparsity == 0:
        value = c.sparsity if "sparsity" in given else "(not given)"
        raise _fail("sparsity", value, f"a number in (0, 1), or pattern=N:M, with method={c.method} "
                    "(a pruning method without either prunes nothing; method=none is the dense model)")
    if not spec.prunes and c.wbits >= 16:
        raise _fail("wbits", c.wbits, f"one of 2, 3, 4, 8 with method={c.method} "
                    "(16 bits quantizes nothing; method=none is the dense model)")
