"""Item-by-item comparison of a compressed model with its dense parent: intervals, flips, McNemar, KL, verdicts.

Everything here is pure numpy/scipy over per-item arrays aligned on the same documents, so the
report and the tests share one definition of each statistic:

* the score difference (compressed − dense) with a seeded percentile bootstrap interval; documents
  are resampled with replacement (paired: a document's dense and compressed scores move together).
  With several calibration seeds the bootstrap has two levels — seeds are resampled, then
  documents — so the interval carries both the item variance and the seed-to-seed variance;
* for 0/1 metrics, flips right→wrong / wrong→right, retention (share of dense-correct documents still
  correct) and the exact McNemar p-value (a two-sided binomial test on the discordant pairs);
* agreement with dense's answer, and the mean KL(dense ‖ compressed) over multiple-choice options;
* the LLM-KICK verdict: *matches* / *worse* / *inconclusive* from the interval and a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

RESAMPLES = 2000  # bootstrap resamples per interval
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
REL_TOLERANCE = 0.05  # LLM-KICK's ε₀: a matching model loses at most 5% of dense's performance

MATCHES, WORSE, INCONCLUSIVE = "matches", "worse", "inconclusive"


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval."""

    estimate: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def scaled(self, factor: float) -> Interval:
        return Interval(self.estimate * factor, self.low * factor, self.high * factor)


def _as_seed_matrix(values: np.ndarray | Sequence) -> np.ndarray:
    """[seeds, items] float array; a 1-D input is one seed."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"expected [items] or [seeds, items] values with at least one item, got shape {arr.shape}")
    return arr


def bootstrap_mean(values: np.ndarray | Sequence, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                   seed: int = BOOTSTRAP_SEED) -> Interval:
    """Mean of ``values`` ([items], or [seeds, items] on the same items) with a percentile bootstrap interval.

    Level 1 draws items with replacement (the same draw for every seed, since the seeds share the
    items); level 2 draws seeds with replacement and averages their item means. With one seed this
    is the ordinary percentile bootstrap of the mean (checked against ``scipy.stats.bootstrap``).
    """
    data = _as_seed_matrix(values)  # [S, n]
    n_seeds, n = data.shape
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n, size=(resamples, n))  # [B, n]
    per_seed = data[:, items].mean(axis=2).T  # [B, S]: each resample's item mean per seed
    if n_seeds > 1:
        seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds))  # [B, S]
        per_seed = np.take_along_axis(per_seed, seeds, axis=1)
    stats = per_seed.mean(axis=1)  # [B]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return Interval(float(data.mean()), float(low), float(high))


def paired_difference(dense: Sequence[float], compressed: np.ndarray | Sequence, **kwargs) -> Interval:
    """Mean of (compressed − dense) per item with its paired bootstrap interval (see :func:`bootstrap_mean`).

    ``dense`` is [items]; ``compressed`` is [items] or [seeds, items] on the same items in the same order.
    """
    base = np.asarray(dense, dtype=np.float64)
    comp = _as_seed_matrix(compressed)
    if comp.shape[1] != base.shape[0]:
        raise ValueError(f"dense has {base.shape[0]} items, compressed {comp.shape[1]}: pair them on the same items")
    return bootstrap_mean(comp - base[None, :], **kwargs)


@dataclass(frozen=True)
class Flips:
    """How 0/1 outcomes moved from dense to compressed (counts summed over seeds)."""

    right_to_wrong: int
    wrong_to_right: int
    dense_right: int
    kept_right: int
    n: int

    @property
    def retention(self) -> float | None:
        """Share of dense-correct items the compressed model still gets right (None: dense got none right)."""
        return self.kept_right / self.dense_right if self.dense_right else None

    @property
    def mcnemar_p(self) -> float:
        """Exact McNemar p-value: two-sided binomial test of the discordant pairs against 1/2."""
        return mcnemar_exact(self.right_to_wrong, self.wrong_to_right)


def is_binary(values: np.ndarray | Sequence) -> bool:
    arr = np.asarray(values, dtype=np.float64)
    return arr.size > 0 and bool(np.all((arr == 0.0) | (arr == 1.0)))


def flips(dense: Sequence[float], compressed: np.ndarray | Sequence) -> Flips:
    """Flip counts and retention of 0/1 outcomes; with [seeds, items] the counts add up over seeds."""
    base = np.asarray(dense, dtype=np.float64) > 0.5
    comp = _as_seed_matrix(compressed) > 0.5
    r2w = int(np.sum(base[None, :] & ~comp))
    w2r = int(np.sum(~base[None, :] & comp))
    dense_right = int(base.sum()) * comp.shape[0]
    kept = int(np.sum(base[None, :] & comp))
    return Flips(r2w, w2r, dense_right, kept, comp.size)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) McNemar test: P(as extreme a split of the b + c discordant pairs | p = 1/2), two-sided."""
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue)


def agreement(dense_answers: Sequence, compressed_answers: Sequence) -> float:
    """Share of items where the compressed model gives dense's answer (argmax option, or normalised text)."""
    if len(dense_answers) != len(compressed_answers) or not dense_answers:
        raise ValueError(f"agreement needs two equally long non-empty answer lists, got {len(dense_answers)} "
                         f"and {len(compressed_answers)}")
    return sum(a == b for a, b in zip(dense_answers, compressed_answers)) / len(dense_answers)


def choice_kl(dense_logliks: np.ndarray | Sequence, compressed_logliks: np.ndarray | Sequence) -> np.ndarray:
    """KL(dense ‖ compressed) in nats per item between the softmaxes of the options' log-likelihoods.

    Inputs are [items, options]; returns [items]. The softmax turns lm-eval's per-option
    log-likelihoods into the model's distribution over the offered answers.
    """
    from scipy.special import log_softmax

    p_log = log_softmax(np.asarray(dense_logliks, dtype=np.float64), axis=-1)
    q_log = log_softmax(np.asarray(compressed_logliks, dtype=np.float64), axis=-1)
    return np.sum(np.exp(p_log) * (p_log - q_log), axis=-1)


# --------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Tolerance:
    """How much worse than dense still matches: max(``abs_points``, ``rel`` × |dense|).

    The default is LLM-KICK's ε₀ = 5% of dense, relative; ``abs_points`` (in displayed points,
    ignored for unscaled metrics such as perplexity) is the absolute option.
    """

    abs_points: float = 0.0
    rel: float = REL_TOLERANCE

    def width(self, dense: float, scaled: bool = True) -> float:
        return max(self.abs_points if scaled else 0.0, self.rel * abs(dense))

    def describe(self) -> str:
        parts = [f"{self.rel * 100:g}% of dense"] if self.rel else []
        if self.abs_points:
            parts.append(f"{self.abs_points:g} points")
        text = " or ".join(parts) or "0"
        return f"max({text})" if len(parts) > 1 else text


def verdict(diff: Interval, width: float, higher_better: bool = True) -> str:
    """LLM-KICK's matching rule with uncertainty, on the interval of (compressed − dense).

    *matches*: the whole interval lies no further than ``width`` below dense (an interval above
    dense + width also matches — the paper's rule is one-sided); *worse*: the whole interval lies
    beyond the tolerance; *inconclusive*: it straddles the tolerance's edge.
    """
    low, high = (diff.low, diff.high) if higher_better else (-diff.high, -diff.low)
    if low >= -width:
        return MATCHES
    if high < -width:
        return WORSE
    return INCONCLUSIVE


def is_better(diff: Interval, width: float, higher_better: bool = True) -> bool:
    """The whole interval lies above dense + width (still *matches*; shown so a reader sees it)."""
    low = diff.low if higher_better else -diff.high
    return low > width


@dataclass(frozen=True)
class LargestMatching:
    """The largest sparsity up to which every point matches dense, and whether more is undecided."""

    sparsity: float | None  # None: not even the first point matches
    inconclusive_at: float | None = None  # the first sparsity whose verdict is inconclusive, if that ended the run

    def describe(self, pct) -> str:
        if self.inconclusive_at is not None:
            head = "none" if self.sparsity is None else f"≥ {pct(self.sparsity)}"
            return f"{head} (inconclusive at {pct(self.inconclusive_at)})"
        return "none" if self.sparsity is None else pct(self.sparsity)


def largest_matching(points: Sequence[tuple[float, str]]) -> LargestMatching:
    """From (sparsity, verdict) pairs: walk up in sparsity while every verdict is *matches*."""
    best = None
    for sparsity, state in sorted(points):
        if state == MATCHES:
            best = sparsity
            continue
        return LargestMatching(best, sparsity if state == INCONCLUSIVE else None)
    return LargestMatching(best)


def seed_mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1) across seeds; sd is None for a single seed."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    return mean, (float(arr.std(ddof=1)) if arr.size > 1 else None)

