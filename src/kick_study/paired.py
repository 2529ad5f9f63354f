"""Item-by-item comparison of a compressed model with its dense parent: intervals, tests, flips, verdicts.

Everything here is pure numpy/scipy over per-item arrays aligned on the same documents, so the
report, the calibration benchmark and the tests share one definition of each statistic
(docs/statistics.md explains them for readers):

* **paired 0/1 difference** (compressed − dense): Tango's score interval and the Bonett–Price
  adjusted Wald interval, the more cautious end of each — valid with few discordant items and never
  of zero width;
* **proportions** (retention, accuracy on dense-wrong items, single-model accuracy): Clopper–Pearson;
* **continuous per-item differences** (ROUGE, judge scores): BCa bootstrap, t interval below
  ``T_BELOW`` items; in groups, resampled within leaf tasks (stratified); **ratios of sums**
  (perplexity over documents): BCa, delta-method t below;
* **seeds are replicates**: each item's outcome is averaged over the calibration seeds first, then
  the one-level interval and an exact / permutation sign-flip test run on those averages; flips are
  reported per seed (mean ± sd), never summed into evidence;
* **the verdict rule** (this module only): one-sided 97.5% non-inferiority on the interval with
  LLM-KICK's ε₀ — *matches* / *worse* / *inconclusive*, or *too few items* below ``MIN_ITEMS``;
  with it the achieved margin, the items needed, one-sided p-values, Holm / BH across cells and a
  pooled per-cell decision across tasks;
* agreement with dense's answer with Cohen's κ, McNemar's exact p, KL over multiple-choice options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95  # two-sided; its lower end is the one-sided 97.5% non-inferiority bound
ALPHA = (1.0 - CONFIDENCE) / 2.0  # one-sided error rate of every verdict
Z = NormalDist().inv_cdf(1.0 - ALPHA)
RESAMPLES = 2000  # bootstrap resamples per interval
BOOTSTRAP_SEED = 0
REL_TOLERANCE = 0.05  # LLM-KICK's ε₀: a matching model loses at most 5% of dense's performance
MIN_ITEMS = 10  # fewer paired items: "too few items", whatever the interval says
T_BELOW = 30  # continuous metrics on fewer items: t interval (BCa's acceleration is unreliable there)
EXACT_SIGN_FLIPS = 16  # up to this many non-zero differences the sign-flip test enumerates all 2^m signs
SIGN_FLIP_DRAWS = 20000  # Monte-Carlo sign flips beyond that

MATCHES, WORSE, INCONCLUSIVE, TOO_FEW = "matches", "worse", "inconclusive", "too few items"


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval (``method`` names how it was computed)."""

    estimate: float
    low: float
    high: float
    method: str = ""

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def scaled(self, factor: float) -> Interval:
        return Interval(self.estimate * factor, self.low * factor, self.high * factor, self.method)


def _as_seed_matrix(values: np.ndarray | Sequence) -> np.ndarray:
    """[seeds, items] float array; a 1-D input is one seed."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"expected [items] or [seeds, items] values with at least one item, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- intervals
def _out(value):
    """A 0-d result as a float; arrays (the calibration benchmark's vectorised calls) stay arrays."""
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


def bonett_price(lost, gained, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Bonett & Price (2012) adjusted Wald interval of a paired difference of proportions.

    ``lost`` items went right→wrong (−1), ``gained`` wrong→right (+1), out of ``n`` pairs; with
    p̃ = (count + 1)/(n + 2): (p̃_g − p̃_l) ± z·√((p̃_g + p̃_l − (p̃_g − p̃_l)²)/(n + 2)). Counts may
    be fractional (seed-averaged outcomes: the variance term then bounds E[d²] from above) or arrays.
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    lost, gained = np.asarray(lost, dtype=np.float64), np.asarray(gained, dtype=np.float64)
    p_l, p_g = (lost + 1.0) / (n + 2.0), (gained + 1.0) / (n + 2.0)
    centre = p_g - p_l
    se = np.sqrt(np.maximum(p_l + p_g - centre * centre, 0.0) / (n + 2.0))
    return Interval(_out((gained - lost) / n), _out(np.maximum(-1.0, centre - z * se)),
                    _out(np.minimum(1.0, centre + z * se)), "Bonett–Price")


def tango_statistic(delta0, lost, gained, n: int):
    """Tango's (1998) score statistic for H0: Δ = ``delta0`` (Δ = (gained − lost)/n), decreasing in ``delta0``.

    T = (g − l − nΔ0)/√(n(2p̃_l + Δ0(1 − Δ0))), p̃_l the restricted maximum-likelihood estimate of
    P(lost): the root of 2n·p² + B·p + C with B = −g − l + (2n − g + l)Δ0, C = −l·Δ0(1 − Δ0).
    """
    b = -gained - lost + (2 * n - gained + lost) * delta0
    c = -lost * delta0 * (1 - delta0)
    p_l = (-b + np.sqrt(np.maximum(b * b - 8 * n * c, 0.0))) / (4 * n)
    var = n * (2 * p_l + delta0 * (1 - delta0))
    return (gained - lost - n * delta0) / np.sqrt(np.maximum(var, 1e-300))


def tango(lost, gained, n: int, confidence: float = CONFIDENCE, steps: int = 60) -> Interval:
    """Tango's score interval {Δ0 : |T(Δ0)| ≤ z}, each end found by bisection (vectorised over arrays)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    lost, gained = np.asarray(lost, dtype=np.float64), np.asarray(gained, dtype=np.float64)
    est = (gained - lost) / n

    def solve(target: float, lo, hi):
        for _ in range(steps):  # 2^-60: exact in double precision
            mid = (lo + hi) / 2
            above = tango_statistic(mid, lost, gained, n) > target
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return (lo + hi) / 2

    low = solve(z, np.full_like(est, -1.0), est)
    high = solve(-z, est, np.full_like(est, 1.0))
    return Interval(_out(est), _out(low), _out(high), "Tango")


def paired_counts_interval(lost, gained, n: int, confidence: float = CONFIDENCE) -> Interval:
    """The interval kick decides on: the more cautious end of Tango's and Bonett–Price's at each side.

    Fagerland, Lydersen & Laake (2014) recommend both for paired proportions; each has one side that
    errs slightly more than nominal when nearly all changes go one way (docs/benchmarks/verdicts.md),
    so a claim is made only when both intervals support it.
    """
    t, bp = tango(lost, gained, n, confidence), bonett_price(lost, gained, n, confidence)
    return Interval(t.estimate, _out(np.minimum(t.low, bp.low)), _out(np.maximum(t.high, bp.high)),
                    "Tango ∪ Bonett–Price")


def clopper_pearson(k: float, n: float, confidence: float = CONFIDENCE) -> Interval:
    """Exact (Clopper–Pearson) interval of a proportion k/n from beta quantiles (k may be a seed mean)."""
    from scipy.stats import beta

    a = (1.0 - confidence) / 2.0
    low = 0.0 if k <= 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k >= n else float(beta.ppf(1 - a, k + 1, n - k))
    return Interval(k / n, low, high, "Clopper–Pearson")


def _t_interval(estimate: float, se: float, df: int, confidence: float) -> Interval:
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2.0, df)) * se
    return Interval(estimate, estimate - half, estimate + half, f"t ({df} df)")


def mean_interval(values: np.ndarray | Sequence, *, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                  confidence: float = CONFIDENCE) -> Interval | None:
    """Mean of continuous per-item values: BCa bootstrap, t interval below ``T_BELOW`` items.

    None when the spread cannot be estimated (fewer than two items, or all values equal): a
    zero-width interval would claim a certainty the items do not carry.
    """
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=np.float64)  # [n]
    n = x.size
    if n < 2 or float(np.ptp(x)) == 0.0:
        return None
    mean = float(x.mean())
    if n >= T_BELOW:
        res = bootstrap((x,), np.mean, vectorized=True, n_resamples=resamples, method="BCa",
                        confidence_level=confidence, rng=np.random.default_rng(seed))
        low, high = res.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            return Interval(mean, float(low), float(high), "BCa bootstrap")
    return _t_interval(mean, float(x.std(ddof=1)) / math.sqrt(n), n - 1, confidence)


def stratified_mean_interval(values: np.ndarray | Sequence, strata: Sequence, *, resamples: int = RESAMPLES,
                             seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> Interval | None:
    """Mean over a group's items with items resampled within their leaf task (lm-eval's size-weighted score).

    Percentile bootstrap with every stratum keeping its size; below ``T_BELOW`` items a t interval with
    the stratified standard error √(Σ_h n_h·s_h²)/n on n − H degrees of freedom. None without spread.
    """
    x = np.asarray(values, dtype=np.float64)  # [n]
    labels = np.asarray([str(s) for s in strata])
    n = x.size
    if n < 2 or float(np.ptp(x)) == 0.0:
        return None
    groups = [x[labels == h] for h in dict.fromkeys(labels)]
    mean = float(x.mean())
    if n >= T_BELOW:
        rng = np.random.default_rng(seed)
        total = sum(g[rng.integers(0, g.size, size=(resamples, g.size))].sum(axis=1) for g in groups)  # [B]
        low, high = np.percentile(total / n, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
        return Interval(mean, float(low), float(high), "stratified bootstrap")
    var = sum(g.size * (g.var(ddof=1) if g.size > 1 else 0.0) for g in groups) / n ** 2
    return _t_interval(mean, math.sqrt(var), max(n - len(groups), 1), confidence)


def ratio_interval(x: np.ndarray | Sequence, w: np.ndarray | Sequence, *, resamples: int = RESAMPLES,
                   seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE, force_t: bool = False) -> Interval | None:
    """Σx / Σw over units resampled together (documents; clusters): BCa, delta-method t below ``T_BELOW``.

    The t path linearises the ratio: residuals r = x − R·w, se = √(n/(n−1)·Σr²)/Σw, n − 1 df.
    """
    from scipy.stats import bootstrap

    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)  # [n], [n]
    n = x.size
    ratio = float(x.sum() / w.sum())
    resid = x - ratio * w
    if n < 2 or float(np.abs(resid).max()) == 0.0:
        return None
    if n >= T_BELOW and not force_t:
        res = bootstrap((x, w), lambda a, b, axis: a.sum(axis=axis) / b.sum(axis=axis), paired=True,
                        vectorized=True, n_resamples=resamples, method="BCa", confidence_level=confidence,
                        rng=np.random.default_rng(seed))
        low, high = res.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            return Interval(ratio, float(low), float(high), "BCa bootstrap")
    se = math.sqrt(n / (n - 1) * float(np.sum(resid ** 2))) / float(w.sum())
    return _t_interval(ratio, se, n - 1, confidence)


def bootstrap_mean(values: np.ndarray | Sequence, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                   seed: int = BOOTSTRAP_SEED) -> Interval:
    """Percentile bootstrap of the mean of ``values`` ([items], or [seeds, items]: seeds, then items resampled).

    Used for the held-out fidelity windows only; per-item comparisons use the intervals above.
    """
    data = _as_seed_matrix(values)  # [S, n]
    n_seeds, n = data.shape
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n, size=(resamples, n))  # [B, n]
    per_seed = data[:, items].mean(axis=2).T  # [B, S]
    if n_seeds > 1:
        per_seed = np.take_along_axis(per_seed, rng.integers(0, n_seeds, size=(resamples, n_seeds)), axis=1)
    low, high = np.percentile(per_seed.mean(axis=1), [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    return Interval(float(data.mean()), float(low), float(high), "percentile bootstrap")


# --------------------------------------------------------------------------- seeds and 0/1 outcomes
def seed_averaged_difference(dense: Sequence[float], compressed: np.ndarray | Sequence) -> np.ndarray:
    """Per item: compressed averaged over seeds, minus dense ([n]); the unit every paired statistic uses."""
    base = np.asarray(dense, dtype=np.float64)
    comp = _as_seed_matrix(compressed)
    if comp.shape[1] != base.shape[0]:
        raise ValueError(f"dense has {base.shape[0]} items, compressed {comp.shape[1]}: pair them on the same items")
    return comp.mean(axis=0) - base


def paired_binary_interval(dense: Sequence[float], compressed: np.ndarray | Sequence,
                           confidence: float = CONFIDENCE) -> Interval:
    """The paired interval of compressed − dense for 0/1 outcomes (:func:`paired_counts_interval`), on seed-averaged items."""
    d = seed_averaged_difference(dense, compressed)  # [n] in [−1, 1]
    return paired_counts_interval(float(np.clip(-d, 0, None).sum()), float(np.clip(d, 0, None).sum()), d.size,
                                  confidence)


def is_binary(values: np.ndarray | Sequence) -> bool:
    arr = np.asarray(values, dtype=np.float64)
    return arr.size > 0 and bool(np.all((arr == 0.0) | (arr == 1.0)))


@dataclass(frozen=True)
class Flips:
    """How 0/1 outcomes moved from dense to compressed, per calibration seed."""

    right_to_wrong: tuple[int, ...]  # one count per seed
    wrong_to_right: tuple[int, ...]
    dense_right: int
    n: int

    @property
    def lost(self) -> float:
        return float(np.mean(self.right_to_wrong))

    @property
    def gained(self) -> float:
        return float(np.mean(self.wrong_to_right))

    def spread(self) -> tuple[float | None, float | None]:
        """Seed-to-seed sd of right→wrong and wrong→right (None for one seed)."""
        return seed_mean_sd(self.right_to_wrong)[1], seed_mean_sd(self.wrong_to_right)[1]

    @property
    def retention(self) -> Interval | None:
        """Share of dense-correct items still correct (seed mean), Clopper–Pearson; None: dense got none right."""
        return clopper_pearson(self.dense_right - self.lost, self.dense_right) if self.dense_right else None

    @property
    def dense_wrong_accuracy(self) -> Interval | None:
        """Accuracy on the items dense got wrong: retention's chance baseline (guessing keeps this much too)."""
        wrong = self.n - self.dense_right
        return clopper_pearson(self.gained, wrong) if wrong else None


def flips(dense: Sequence[float], compressed: np.ndarray | Sequence) -> Flips:
    """Right→wrong and wrong→right counts of 0/1 outcomes, one per seed of [seeds, items] (or [items])."""
    base = np.asarray(dense, dtype=np.float64) > 0.5  # [n]
    comp = _as_seed_matrix(compressed) > 0.5  # [S, n]
    r2w = tuple(int(v) for v in np.sum(base[None, :] & ~comp, axis=1))
    w2r = tuple(int(v) for v in np.sum(~base[None, :] & comp, axis=1))
    return Flips(r2w, w2r, int(base.sum()), base.size)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) McNemar test: P(as extreme a split of the b + c discordant pairs | p = 1/2), two-sided."""
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue)


def sign_flip_p(differences: np.ndarray | Sequence, *, seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided paired sign-flip test of mean difference 0 on per-item (seed-averaged) differences.

    Equal magnitudes (one seed, 0/1 outcomes): the exact binomial = McNemar's exact p. Otherwise all
    2^m sign patterns of the m non-zero differences (m ≤ ``EXACT_SIGN_FLIPS``), else Monte-Carlo.
    """
    d = np.asarray(differences, dtype=np.float64)
    nz = d[d != 0]  # [m]
    m = nz.size
    if m == 0:
        return 1.0
    mags = np.abs(nz)
    if np.allclose(mags, mags[0]):
        return mcnemar_exact(int(np.sum(nz < 0)), int(np.sum(nz > 0)))
    observed = abs(float(nz.sum())) - 1e-12 * float(mags.sum())  # tolerance for float ties
    if m <= EXACT_SIGN_FLIPS:
        bits = (np.arange(2 ** m)[:, None] >> np.arange(m)[None, :]) & 1  # [2^m, m]
        sums = (1 - 2 * bits) @ mags
        return float(np.mean(np.abs(sums) >= observed))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(SIGN_FLIP_DRAWS, m))  # [D, m]
    hits = int(np.sum(np.abs(signs @ mags) >= observed))
    return (hits + 1) / (SIGN_FLIP_DRAWS + 1)


def agreement(dense_answers: Sequence, compressed_answers: Sequence) -> float:
    """Share of items where the compressed model gives dense's answer (argmax option, or normalised text)."""
    if len(dense_answers) != len(compressed_answers) or not dense_answers:
        raise ValueError(f"agreement needs two equally long non-empty answer lists, got {len(dense_answers)} "
                         f"and {len(compressed_answers)}")
    return sum(a == b for a, b in zip(dense_answers, compressed_answers)) / len(dense_answers)


def cohen_kappa(dense_answers: Sequence, compressed_answers: Sequence) -> float | None:
    """Cohen's κ of the two models' answers: agreement beyond what their answer frequencies give by chance.

    κ = (p_o − p_e)/(1 − p_e), p_e = Σ_k p_dense(k)·p_compressed(k); None when p_e = 1 (one answer only).
    """
    observed = agreement(dense_answers, compressed_answers)
    n = len(dense_answers)
    counts_d: dict = {}
    counts_c: dict = {}
    for a in dense_answers:
        counts_d[a] = counts_d.get(a, 0) + 1
    for a in compressed_answers:
        counts_c[a] = counts_c.get(a, 0) + 1
    expected = sum(v * counts_c.get(k, 0) for k, v in counts_d.items()) / (n * n)
    return None if expected >= 1.0 else (observed - expected) / (1.0 - expected)


def choice_kl(dense_logliks: np.ndarray | Sequence, compressed_logliks: np.ndarray | Sequence) -> np.ndarray:
    """KL(dense ‖ compressed) in nats per item between the softmaxes of the options' log-likelihoods.

    Inputs are [items, options]; returns [items]. The softmax turns lm-eval's per-option
    log-likelihoods into the model's distribution over the offered answers. A −inf option of
    dense adds 0 (0·log 0 = 0); one that only the compressed model gives −inf makes the item +inf.
    """
    from scipy.special import log_softmax

    p_log = log_softmax(np.asarray(dense_logliks, dtype=np.float64), axis=-1)
    q_log = log_softmax(np.asarray(compressed_logliks, dtype=np.float64), axis=-1)
    with np.errstate(invalid="ignore"):  # −inf − (−inf) is replaced just below
        term = np.where(q_log == -np.inf, np.inf, np.exp(p_log) * (p_log - q_log))
    return np.sum(np.where(p_log == -np.inf, 0.0, term), axis=-1)


def seed_mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1) across seeds; sd is None for a single seed."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    return mean, (float(arr.std(ddof=1)) if arr.size > 1 else None)


# --------------------------------------------------------------------------- the verdict rule
@dataclass(frozen=True)
class Tolerance:
    """How much worse than dense still matches: max(``abs_points``, ``rel`` × base).

    base = |dense| (LLM-KICK's ε₀ = 5% of dense, the default) or, ``chance_corrected``, dense − chance
    (0 when dense is at or below chance). ``abs_points`` is in displayed units: points for metrics
    shown × 100, the metric's own units otherwise (perplexity, a 1–10 judge score).
    """

    abs_points: float = 0.0
    rel: float = REL_TOLERANCE
    chance_corrected: bool = False

    def width(self, dense: float, chance: float = 0.0) -> float:
        base = max(dense - chance, 0.0) if self.chance_corrected else abs(dense)
        return max(self.abs_points, self.rel * base)

    def describe(self) -> str:
        base = "of (dense − chance)" if self.chance_corrected else "of dense"
        parts = [f"{self.rel * 100:g}% {base}"] if self.rel else []
        if self.abs_points:
            parts.append(f"{self.abs_points:g} (points, or the metric's own units when not shown × 100)")
        text = " or ".join(parts) or "0"
        return f"max({text})" if len(parts) > 1 else text


def verdict(diff: Interval, width: float, higher_better: bool = True) -> str:
    """LLM-KICK's matching rule as a one-sided 97.5% non-inferiority test on the interval of compressed − dense.

    *matches*: the lower end (upper for lower-is-better) lies no further than ``width`` below dense;
    *worse*: the whole interval lies beyond the tolerance; *inconclusive*: it straddles its edge.
    """
    low, high = (diff.low, diff.high) if higher_better else (-diff.high, -diff.low)
    if low >= -width:
        return MATCHES
    if high < -width:
        return WORSE
    return INCONCLUSIVE


def point_matches(value: float, dense: float, width: float, higher_better: bool = True) -> bool:
    """The same rule on point values alone (results without per-item samples; no uncertainty)."""
    return value >= dense - width if higher_better else value <= dense + width


def missing_evidence(n: int, diff: Interval | None) -> str | None:
    """What a verdict lacks, or None: at least ``MIN_ITEMS`` paired items and an estimable spread."""
    if n < MIN_ITEMS:
        return f"{n} paired item{'s' if n != 1 else ''}; a verdict needs at least {MIN_ITEMS}"
    if diff is None:
        return "every item changed by the same amount, so the spread (and any interval) cannot be estimated"
    return None


@dataclass(frozen=True)
class Decision:
    """A cell's verdict with what a reader needs to apply another ε or plan a rerun."""

    verdict: str
    better: bool = False  # the whole interval lies above dense + width
    margin: float | None = None  # achieved: the most it may lose (one-sided 97.5%), displayed units, ≥ 0
    items_needed: float | None = None  # items to decide at the observed spread (inf: estimate on the edge)
    p_matches: float = 1.0  # one-sided p of H0 "loses more than width" (small ⇒ matches)
    p_worse: float = 1.0  # one-sided p of H0 "loses at most width" (small ⇒ worse)
    missing: str | None = None


def _good(diff: Interval, higher_better: bool) -> tuple[float, float, float]:
    """(estimate, low, high) oriented so that larger is better."""
    return (diff.estimate, diff.low, diff.high) if higher_better else (-diff.estimate, -diff.high, -diff.low)


def _upper_tail(stat: float) -> float:
    return 1.0 - NormalDist().cdf(stat)


def decide(diff: Interval | None, width: float, n: int, higher_better: bool = True) -> Decision:
    """The verdict of one cell (``diff`` in displayed units) with margin, items needed and one-sided p-values.

    The p-values are read off the interval itself (its side's implied standard error), so p ≤ 2.5%
    exactly when the interval alone decides; Holm / BH across cells then adjust them.
    """
    missing = missing_evidence(n, diff)
    if diff is None:
        return Decision(TOO_FEW, missing=missing)
    est, low, high = _good(diff, higher_better)
    tiny = 1e-12 * max(1.0, abs(est), width)
    se_low, se_high = max(est - low, tiny) / Z, max(high - est, tiny) / Z
    p_matches = _upper_tail((est + width) / se_low)
    p_worse = _upper_tail((-width - est) / se_high)
    state = verdict(diff, width, higher_better)
    se = se_low if est + width > 0 else se_high
    gap = abs(est + width)
    needed = math.inf if gap == 0 else n * (Z * se / gap) ** 2
    return Decision(TOO_FEW if missing else state, bool(not missing and low > width), max(0.0, -low), needed,
                    p_matches, p_worse, missing)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    m = p.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (false-discovery-rate control)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p)[::-1]
    adjusted = np.minimum.accumulate(p[order] * m / (m - np.arange(m)))
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def adjusted_verdicts(decisions: Sequence[Decision], worse_method: str = "holm") -> list[str]:
    """Verdicts after adjusting across ``decisions``: Holm for *matches*, Holm or BH (``"bh"``) for *worse*."""
    live = [i for i, d in enumerate(decisions) if d.verdict != TOO_FEW]
    out = [d.verdict for d in decisions]
    if not live:
        return out
    p_match = holm([decisions[i].p_matches for i in live])
    p_worse = (benjamini_hochberg if worse_method == "bh" else holm)([decisions[i].p_worse for i in live])
    for i, pm, pw in zip(live, p_match, p_worse):
        out[i] = MATCHES if pm <= ALPHA else WORSE if pw <= ALPHA else INCONCLUSIVE
    return out


def pooled_decision(decisions: Sequence[Decision]) -> str:
    """One decision for a cell across tasks, false-positive rate ≤ 2.5% for each claim.

    *matches* on every task is an intersection–union test (each task at 2.5% suffices); *worse* on
    some task uses Holm across the tasks; any task with too few items blocks *matches*.
    """
    if not decisions:
        return TOO_FEW
    if any(p <= ALPHA for p in holm([d.p_worse for d in decisions if d.verdict != TOO_FEW] or [1.0])):
        return WORSE
    if any(d.verdict == TOO_FEW for d in decisions):
        return TOO_FEW
    return MATCHES if all(d.p_matches <= ALPHA for d in decisions) else INCONCLUSIVE


def heterogeneity(estimates: Sequence[float], ses: Sequence[float]) -> tuple[float, int, float, float] | None:
    """Cochran's Q over leaf-task differences: (Q, df, p, I²); None with fewer than two usable leaves."""
    from scipy.stats import chi2

    est, se = np.asarray(estimates, dtype=np.float64), np.asarray(ses, dtype=np.float64)
    keep = se > 0
    if keep.sum() < 2:
        return None
    w = 1.0 / se[keep] ** 2
    pooled = float(np.sum(w * est[keep]) / w.sum())
    q = float(np.sum(w * (est[keep] - pooled) ** 2))
    df = int(keep.sum()) - 1
    return q, df, float(chi2.sf(q, df)), max(0.0, (q - df) / q) if q > 0 else 0.0


# --------------------------------------------------------------------------- the largest matching sparsity
@dataclass(frozen=True)
class LargestMatching:
    """The largest sparsity up to which every point matches dense, and what stopped the walk if undecided."""

    sparsity: float | None  # None: not even the first point matches
    inconclusive_at: float | None = None  # the first sparsity whose verdict is undecided, if that ended the run
    stopped_by: str = INCONCLUSIVE  # INCONCLUSIVE or TOO_FEW

    def describe(self, pct) -> str:
        if self.inconclusive_at is not None:
            head = "none" if self.sparsity is None else f"≥ {pct(self.sparsity)}"
            return f"{head} ({self.stopped_by} at {pct(self.inconclusive_at)})"
        return "none" if self.sparsity is None else pct(self.sparsity)


def largest_matching(points: Sequence[tuple[float, str]]) -> LargestMatching:
    """From (sparsity, verdict) pairs: walk up in sparsity while every verdict is *matches*."""
    best = None
    for sparsity, state in sorted(points):
        if state == MATCHES:
            best = sparsity
            continue
        undecided = state in (INCONCLUSIVE, TOO_FEW)
        return LargestMatching(best, sparsity if undecided else None, state if undecided else INCONCLUSIVE)
    return LargestMatching(best)


def largest_point_matching(points: Sequence[tuple[float, float]], dense: float, width: float,
                           higher_better: bool) -> float | None:
    """On point values: the largest sparsity s such that every point at sparsity ≤ s matches dense."""
    best = None
    for sparsity, value in sorted(points):
        if not point_matches(value, dense, width, higher_better):
            break
        best = sparsity
    return best
