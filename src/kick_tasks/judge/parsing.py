"""Parsers for judge replies: a value, or ``None`` with the reason it could not be read.

Judges are asked to end with ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (pairwise) or ``[[7]]``
(single answer, 1-10). Parsers never raise on model text; the caller counts ``None`` results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_BRACKETED = re.compile(r"\[\[\s*([^\[\]]{1,20}?)\s*\]\]")
_SCORE = re.compile(r"^(\d+(?:\.\d+)?)(?:\s*/\s*10)?$")
_VERDICTS = {"a": "A", "b": "B", "c": "tie", "tie": "tie"}


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """A parsed value, or ``value is None`` and ``reason`` says why."""

    value: T | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None


def _bracketed(text: str | None) -> list[str] | None:
    if not isinstance(text, str) or not text.strip():
        return None
    return [m.group(1).strip() for m in _BRACKETED.finditer(text)]


def parse_verdict(text: str | None) -> Parsed[str]:
    """``"A"``, ``"B"`` or ``"tie"`` from a pairwise reply ending in ``[[A]]``/``[[B]]``/``[[C]]``."""
    found = _bracketed(text)
    if found is None:
        return Parsed(None, "empty reply")
    verdicts = {_VERDICTS[f.lower()] for f in found if f.lower() in _VERDICTS}
    if not verdicts:
        return Parsed(None, "no [[A]], [[B]] or [[C]] verdict found")
    if len(verdicts) > 1:
        return Parsed(None, f"conflicting verdicts {sorted(verdicts)}")
    return Parsed(verdicts.pop())


def parse_score(text: str | None, low: float = 1.0, high: float = 10.0) -> Parsed[float]:
    """A score in ``[low, high]`` from a reply containing ``[[score]]`` (``[[7]]``, ``[[7.5]]``, ``[[7/10]]``)."""
    found = _bracketed(text)
    if found is None:
        return Parsed(None, "empty reply")
    scores = set()
    for item in found:
        match = _SCORE.match(item)
        if match:
            scores.add(float(match.group(1)))
    if not scores:
        return Parsed(None, "no [[score]] found")
    if len(scores) > 1:
        return Parsed(None, f"conflicting scores {sorted(scores)}")
    score = scores.pop()
    if not low <= score <= high:
        return Parsed(None, f"score {score:g} outside [{low:g}, {high:g}]")
    return Parsed(score)
