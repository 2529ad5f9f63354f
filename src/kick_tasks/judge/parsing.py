"""Parsers for judge replies: a value, or ``None`` with the reason it could not be read.

Judges are asked to end with ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (pairwise), ``[[7]]`` (single
answer, 1-10), ``Coherence: [[7]]`` ... one line per criterion (summaries), or, in a pairwise
review, ``Scores: [[7, 5]]`` before the verdict. Parsers never raise on model text; the caller
counts ``None`` results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_BRACKETED = re.compile(r"\[\[\s*([^\[\]]{1,20}?)\s*\]\]")
_SCORE = re.compile(r"^(\d+(?:\.\d+)?)(?:\s*/\s*10)?$")
_VERDICTS = {"a": "A", "b": "B", "c": "tie", "tie": "tie"}
_PAIR = re.compile(r"^(\d+(?:\.\d+)?)\s*[,;/ ]\s*(\d+(?:\.\d+)?)$")
# the summary criteria of LLM-KICK's summarization judge, in its order
CRITERIA = ("coherence", "consistency", "fluency", "relevance")
_CRITERION = re.compile(r"\b(" + "|".join(CRITERIA) + r")\b\W{0,6}\[\[\s*([^\[\]]{1,12}?)\s*\]\]",
                        re.IGNORECASE)


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


def parse_criteria(text: str | None, low: float = 1.0, high: float = 10.0) -> Parsed[dict]:
    """``{criterion: score}`` for all four `CRITERIA` from lines like ``Coherence: [[7]]``."""
    if not isinstance(text, str) or not text.strip():
        return Parsed(None, "empty reply")
    found: dict[str, set[float]] = {}
    for match in _CRITERION.finditer(text):
        score = _SCORE.match(match.group(2))
        if score:
            found.setdefault(match.group(1).lower(), set()).add(float(score.group(1)))
    missing = [c for c in CRITERIA if c not in found]
    if missing:
        return Parsed(None, f"no [[score]] for {', '.join(missing)}")
    conflicting = [c for c in CRITERIA if len(found[c]) > 1]
    if conflicting:
        return Parsed(None, f"conflicting scores for {', '.join(conflicting)}")
    scores = {c: found[c].pop() for c in CRITERIA}
    outside = [f"{c}={v:g}" for c, v in scores.items() if not low <= v <= high]
    if outside:
        return Parsed(None, f"scores outside [{low:g}, {high:g}]: {', '.join(outside)}")
    return Parsed(scores)


def parse_score_pair(text: str | None, low: float = 1.0, high: float = 10.0) -> Parsed[list]:
    """``[score of A, score of B]`` from a reply containing ``[[7, 5]]`` (both in ``[low, high]``)."""
    found = _bracketed(text)
    if found is None:
        return Parsed(None, "empty reply")
    pairs = {(float(m.group(1)), float(m.group(2))) for m in map(_PAIR.match, found) if m}
    if not pairs:
        return Parsed(None, "no [[score A, score B]] pair found")
    if len(pairs) > 1:
        return Parsed(None, f"conflicting score pairs {sorted(pairs)}")
    pair = pairs.pop()
    if not all(low <= v <= high for v in pair):
        return Parsed(None, f"score pair {pair} outside [{low:g}, {high:g}]")
    return Parsed(list(pair))


def parse_review(text: str | None) -> Parsed[dict]:
    """A pairwise review: ``{"verdict": ..., "scores": [a, b] or None, "scores_reason": ...}``.

    The verdict decides whether the reply is read; a missing or bad score pair is reported in
    ``scores_reason`` and leaves ``scores`` None (the verdict still counts).
    """
    verdict = parse_verdict(text)
    if not verdict.ok:
        return Parsed(None, verdict.reason)
    pair = parse_score_pair(text)
    return Parsed({"verdict": verdict.value, "scores": pair.value, "scores_reason": pair.reason})
