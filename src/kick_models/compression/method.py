"""The whole plug-in contract of a compression method: :class:`Method`, the :class:`Param` it declares,
the :class:`Job` its functions receive and the :class:`PruneResult` a pruner returns. Imports nothing of kick
(and no torch at run time), so plug-ins, the registry and config validation all read it cheaply."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

KINDS = ("prune", "quantize", "load-time")  # load-time: another library quantizes (kick_models.external)
# statistics the one calibration loop can gather for a method, per Linear input
STATISTICS = {
    "col_norms": "‖X_j‖₂ per input column (Wanda, RIA)",
    "mean": "E[x_j] and Var[x_j] per input column (DSnoT)",
    "abs_mean": "E[|x_j|] per input column (AWQ)",
    "hessian": "H = 2XᵀX/n (SparseGPT, GPTQ; AWQ's and DSnoT's exact layer output error)",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MethodError(ValueError):
    """A method plug-in cannot be registered; the message names the plug-in and what is accepted."""


@dataclass(frozen=True)
class Param:
    """One ``model_arg`` (a method's own, or kick-hf's): its type, default and accepted values.

    ``read`` replaces the type's coercion for values a type and a range cannot describe (a path kept as
    written, seconds or -1): it returns the value or raises ValueError; ``accepts`` then says in words what
    is accepted (it overrides the text made from the type, choices and range).
    """

    name: str
    type: type  # int | float | bool | str
    default: Any
    help: str = ""
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: ``low`` itself is refused
    high_open: bool = False
    accepts: str = ""
    read: Callable[[Any], Any] | None = None

    def accepted(self) -> str:
        """What the value may be, for error messages and the generated model-args page."""
        if self.accepts:
            return self.accepts
        if self.type is bool:
            return "true or false"
        if self.choices:
            if all(isinstance(c, str) for c in self.choices):
                return " | ".join(self.choices)
            return "one of " + ", ".join(map(str, self.choices))
        kind = "an integer" if self.type is int else "a number" if self.type is float else "a string"
        if self.low is None and self.high is None:
            return kind
        if self.high is None:  # one-sided ranges read as inequalities
            if self.type is int and self.low == 1 and not self.low_open:
                return "a positive integer"
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def convert(self, value: Any) -> Any:
        """The typed value, or ValueError whose message is :meth:`accepted`."""
        if self.read is not None:
            try:
                return self.read(value)
            except ValueError:
                raise ValueError(self.accepted()) from None
        out = _coerce(self.type, value, self.accepted())
        if self.choices and out not in self.choices:
            raise ValueError(self.accepted())
        if self.type in (int, float):
            if self.low is not None and (out < self.low or (self.low_open and out == self.low)):
                raise ValueError(self.accepted())
            if self.high is not None and (out > self.high or (self.high_open and out == self.high)):
                raise ValueError(self.accepted())
        return out


def _coerce(kind: type, value: Any, accepted: str) -> Any:
    """``value`` as ``kind`` read as kick_common.args reads booleans and numbers (this module imports nothing of
    kick, so the plug-in contract stands alone), else ValueError."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "false"):
            return text == "true"
        raise ValueError(accepted)
    if isinstance(value, bool):
        raise ValueError(accepted)  # noqa: TRY004 -- one error type for every bad model_arg
    if kind is int:
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise ValueError(accepted)
    if kind is float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ValueError(accepted) from None
        if not math.isfinite(out):
            raise ValueError(accepted)
        return out
    text = str(value).strip().lower()
    if not text:
        raise ValueError(accepted)
    return text


@dataclass(frozen=True)
class Job:
    """What a method's functions receive besides tensors: the validated config, this block's
    sparsity (OWL may vary it per block) and the method's own parameters."""

    config: Any  # kick_models.config.CompressionConfig
    sparsity: float
    params: Mapping[str, Any]

    @property
    def pattern(self) -> tuple[int, int] | None:
        return self.config.pattern


@dataclass(frozen=True)
class Method:
    """A compression method, as the whole package sees it.

    ``prune(weights, stats, job) -> list[PruneResult]`` gets the weights [out, in] of one group of
    Linear layers that read the same input (q/k/v; gate/up) and their shared ``InputStats``; it
    returns one ``PruneResult`` per weight (new weight, keep-mask, loss) and mutates nothing.
    ``quantize(weight, stats, job, mask) -> QuantResult`` does the same for one weight (``mask``:
    what a pruner kept, or None). ``prepare_block(block, linears, groups, job)`` (optional) may
    change a block *without changing its function* before the groups are compressed (AWQ folds
    its scales there). ``stats`` names what the loop must gather (keys of ``STATISTICS``);
    ``uses`` lists the shared config fields that change the result (they enter the cache key);
    ``version`` enters the cache key too: bump it when the method's output changes.
    """

    name: str
    kind: str
    summary: str
    version: str
    stats: frozenset = frozenset()
    params: tuple = ()
    uses: frozenset = frozenset()
    prune: Callable | None = None
    quantize: Callable | None = None
    prepare_block: Callable | None = None
    check: Callable | None = None  # check(config) -> None or (key, value, accepted)
    default_calib: str = "c4"
    default_wbits: int = 4  # quantizers only: wbits when none is given
    default_group_size: int | None = None  # group_size when none is given (None: kick's default)
    load_time: Any = None  # kind 'load-time': its kick_models.external.loadtime.LoadTime
    source: str = "built-in"

    def __post_init__(self):
        problems = []
        if not isinstance(self.name, str) or not _NAME.match(self.name) or self.name == "none":
            problems.append(f"name {self.name!r} (accepted: lower-case [a-z][a-z0-9_]*, not 'none')")
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} (accepted: {' | '.join(KINDS)})")
        if self.kind == "prune" and not callable(self.prune):
            problems.append("kind 'prune' without a callable prune")
        if self.kind == "quantize" and not callable(self.quantize):
            problems.append("kind 'quantize' without a callable quantize")
        if self.kind == "load-time" and self.load_time is None:
            problems.append("kind 'load-time' without its load_time description")
        unknown = set(self.stats) - set(STATISTICS)
        if unknown:
            problems.append(f"stats {sorted(unknown)} (accepted: {' | '.join(STATISTICS)})")
        if not isinstance(self.version, str) or not self.version.strip():
            problems.append(f"version {self.version!r} (accepted: a non-empty string)")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names) or not all(isinstance(p, Param) for p in self.params):
            problems.append("params must be distinct Param objects")
        if problems:
            raise MethodError(f"kick: method {self.name!r} ({self.source}) is malformed: " + "; ".join(problems))

    @property
    def prunes(self) -> bool:
        return self.kind == "prune"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def describe(self) -> str:
        """One line for error messages and listings."""
        stats = ", ".join(sorted(self.stats)) or "no data"
        params = ", ".join(f"{p.name}={p.default}" for p in self.params) or "no parameters"
        return f"{self.name} ({self.kind}; {stats}; {params}; v{self.version}; {self.source})"


@dataclass
class PruneResult:
    """New weight (input's dtype/shape), its keep-mask (True = kept) and the method's own error
    estimate: magnitude Σ w², Wanda Σ (w·‖X_j‖)², SparseGPT the OBS loss Σ w²/[H⁻¹]_jj."""

    weight: torch.Tensor
    mask: torch.Tensor
    loss: float


def apply_mask(W: torch.Tensor, keep: torch.Tensor, score: torch.Tensor) -> PruneResult:
    """Zero the pruned entries of a copy of W; loss is the summed score of what was pruned."""
    loss = score.masked_fill(keep, 0).sum().item()
    return PruneResult(W.masked_fill(~keep, 0), keep, loss)
