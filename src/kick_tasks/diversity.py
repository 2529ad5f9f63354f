"""Repetition and "unique content" metrics (LLM-KICK's finding that compressed models repeat themselves).

distinct-n = unique n-grams / total n-grams within one answer; repetition rate = share of an
answer's 4-gram occurrences that repeat an earlier 4-gram (so 1 - distinct-4); self-BLEU =
mean BLEU of each answer against all the others (0-1; high means answers look alike).
Answers too short to have an n-gram give ``None`` and are left out of means, not counted as 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"\w+(?:'\w+)?")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation dropped)."""
    return _WORD.findall((text or "").lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    if n < 1:
        raise ValueError(f"n-gram order {n} must be >= 1")
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(text: str, n: int) -> float | None:
    """Unique n-grams / total n-grams of one text; None when it has no n-gram."""
    grams = ngrams(words(text), n)
    return len(set(grams)) / len(grams) if grams else None


def repetition_rate(text: str, n: int = 4) -> float | None:
    """Share of n-gram occurrences that repeat an n-gram seen earlier in the same text."""
    d = distinct_n(text, n)
    return None if d is None else 1.0 - d


def self_bleu(texts: Iterable[str]) -> float | None:
    """Mean sentence BLEU (0-1) of each non-empty text against all other texts; None for < 2 texts."""
    from sacrebleu.metrics import BLEU

    pool = [t.strip() for t in texts if t and t.strip()]
    if len(pool) < 2:
        return None
    bleu = BLEU(effective_order=True)
    scores = [bleu.sentence_score(hyp, pool[:i] + pool[i + 1:]).score for i, hyp in enumerate(pool)]
    return sum(scores) / len(scores) / 100.0


def diversity_metrics(text: str) -> dict[str, float | None]:
    """Per-answer distinct-1/2/3, 4-gram repetition rate and word count."""
    return {"distinct_1": distinct_n(text, 1), "distinct_2": distinct_n(text, 2),
            "distinct_3": distinct_n(text, 3), "repetition_4": repetition_rate(text, 4),
            "words": float(len(words(text)))}


def mean_defined(items: Iterable[float | None]) -> float:
    """lm-eval aggregation: mean over the items that are not None (NaN when none are)."""
    values = [float(x) for x in items if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(values) / len(values) if values else float("nan")


def count_true(items: Iterable) -> int:
    """lm-eval aggregation: how many items are truthy (e.g. unparsed verdicts, truncated stories)."""
    return int(sum(1 for x in items if x))


def self_bleu_aggregation(items: Iterable[str]) -> float:
    """lm-eval aggregation over the answers themselves: self-BLEU across the task (NaN if < 2)."""
    value = self_bleu(items)
    return float("nan") if value is None else value
