"""Paired statistics against published worked examples, scipy / scikit-learn, and brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import comb

from kick_study import paired
from kick_study.paired import INCONCLUSIVE, MATCHES, TOO_FEW, WORSE, Interval, Tolerance


def test_bonett_price_matches_the_authors_worked_example():
    # Bonett's own example (within-subjects proportions): f12 = 26, f21 = 4, n = 40 → [0.3126438, 0.7349752]
    iv = paired.bonett_price(lost=4, gained=26, n=40)
    assert iv.estimate == pytest.approx(22 / 40)
    assert iv.low == pytest.approx(0.3126438, abs=1e-7) and iv.high == pytest.approx(0.7349752, abs=1e-7)


def _exact_coverages(interval, n: int) -> list[float]:
    """True coverage at each (P(lost), P(gained)) of a grid: every (b, c) outcome weighted by its trinomial probability."""
    b, c = (a.ravel() for a in np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij"))
    keep = b + c <= n
    b, c = b[keep], c[keep]
    iv = interval(b.astype(float), c.astype(float), n)  # vectorised over every outcome
    out = []
    for p_l, p_g in itertools.product(np.linspace(0.0, 0.4, 9), repeat=2):
        pmf = stats.multinomial.pmf(np.stack([b, c, n - b - c], axis=1), n, [p_l, p_g, 1 - p_l - p_g])
        out.append(float(np.sum(pmf[(iv.low <= p_g - p_l) & (p_g - p_l <= iv.high)])))
    return out


def test_bonett_price_exact_coverage_by_enumeration_at_n_20():
    cov = _exact_coverages(paired.bonett_price, 20)
    assert min(cov) >= 0.92 and np.mean(cov) >= 0.95


@pytest.mark.parametrize("lost, gained, n", [(4, 26, 40), (7, 1, 21), (0, 0, 52), (2, 0, 2), (45, 5, 1000), (1.5, 0.5, 12)])
def test_tango_interval_is_the_set_its_score_statistic_accepts(lost, gained, n):
    # brute force from the definition: scan Δ0 on a fine grid, keep those with |T(Δ0)| ≤ z
    z = stats.norm.ppf(0.975)
    grid = np.linspace(-1 + 1e-9, 1 - 1e-9, 400001)
    accepted = grid[np.abs(paired.tango_statistic(grid, lost, gained, n)) <= z]
    iv = paired.tango(lost, gained, n)
    assert iv.low == pytest.approx(accepted.min(), abs=2e-5) and iv.high == pytest.approx(accepted.max(), abs=2e-5)
    both = paired.paired_counts_interval(lost, gained, n)
    bp = paired.bonett_price(lost, gained, n)
    assert both.low == min(iv.low, bp.low) and both.high == max(iv.high, bp.high)


def test_tango_score_statistic_against_its_closed_form_at_zero():
    # at Δ0 = 0 the restricted estimate is (l + g)/(2n) and T is McNemar's z: (g − l)/√(g + l)
    assert paired.tango_statistic(0.0, 4.0, 26.0, 40) == pytest.approx(22 / math.sqrt(30))


def test_paired_interval_exact_coverage_by_enumeration_at_n_20():
    assert min(_exact_coverages(paired.paired_counts_interval, 20)) >= 0.94


def test_no_zero_width_interval_without_discordant_items():
    iv = paired.paired_binary_interval([1.0], [1.0])
    assert iv.low < -0.5 and iv.high > 0.5  # one agreeing item says almost nothing
    iv = paired.paired_binary_interval([1, 0] * 26, [1, 0] * 26)  # 52 items, nothing changed
    assert iv.high - iv.low > 0.05


@pytest.mark.parametrize("k, n", [(0, 12), (3, 12), (12, 12), (7, 52), (40, 52)])
def test_clopper_pearson_matches_scipy(k, n):
    ours = paired.clopper_pearson(k, n)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert ours.low == pytest.approx(ref.low, abs=1e-12) and ours.high == pytest.approx(ref.high, abs=1e-12)


def test_zero_of_twelve_retention_reaches_26_percent():
    f = paired.flips([1] * 12 + [0] * 3, [0] * 15)
    assert f.retention.estimate == 0.0 and f.retention.high == pytest.approx(0.2646, abs=1e-4)


def test_mean_interval_t_fallback_bca_and_no_spread():
    rng = np.random.default_rng(3)
    small = rng.normal(0.1, 1.0, 12)
    ours = paired.mean_interval(small)
    low, high = stats.t.interval(0.95, 11, loc=small.mean(), scale=stats.sem(small))
    assert (ours.low, ours.high) == pytest.approx((low, high)) and ours.method == "t (11 df)"
    large = rng.normal(0.1, 1.0, 80)
    ours = paired.mean_interval(large, seed=4)
    ref = stats.bootstrap((large,), np.mean, n_resamples=paired.RESAMPLES, method="BCa", rng=np.random.default_rng(4))
    assert (ours.low, ours.high) == pytest.approx(tuple(ref.confidence_interval)) and ours.method == "BCa bootstrap"
    assert paired.mean_interval([0.2] * 40) is None  # no spread: no interval rather than a zero-width one


def test_ratio_interval_delta_method_by_hand_and_bca_against_scipy():
    rng = np.random.default_rng(5)
    w = rng.integers(50, 300, 12).astype(float)
    x = rng.normal(0.02, 0.05, 12) * w
    ours = paired.ratio_interval(x, w)
    r = x.sum() / w.sum()
    se = math.sqrt(12 / 11 * np.sum((x - r * w) ** 2)) / w.sum()
    assert ours.estimate == pytest.approx(r)
    assert ours.high - r == pytest.approx(stats.t.ppf(0.975, 11) * se)
    w, x = np.tile(w, 4), np.tile(x, 4) + rng.normal(0, 1, 48)
    ours = paired.ratio_interval(x, w, seed=2)
    ref = stats.bootstrap((x, w), lambda a, b, axis: a.sum(axis=axis) / b.sum(axis=axis), paired=True,
                          n_resamples=paired.RESAMPLES, method="BCa", rng=np.random.default_rng(2))
    assert (ours.low, ours.high) == pytest.approx(tuple(ref.confidence_interval))


def test_sign_flip_is_mcnemar_for_one_seed_and_three_identical_seeds():
    dense = np.array([1.0] * 100 + [0.0] * 100)
    comp = dense.copy()
    comp[:4] = 0.0  # b = 4 right→wrong, c = 0
    one = paired.sign_flip_p(paired.seed_averaged_difference(dense, comp))
    three = paired.sign_flip_p(paired.seed_averaged_difference(dense, np.stack([comp] * 3)))
    assert one == three == pytest.approx(0.125) == pytest.approx(paired.mcnemar_exact(4, 0))


def test_sign_flip_exact_enumeration_against_brute_force():
    d = np.array([-1, -2 / 3, -2 / 3, 1 / 3, -1 / 3, 0, 0])
    nz = d[d != 0]
    sums = [abs(sum(s * v for s, v in zip(signs, np.abs(nz)))) for signs in itertools.product([-1, 1], repeat=nz.size)]
    expected = np.mean([s >= abs(nz.sum()) - 1e-12 for s in sums])
    assert paired.sign_flip_p(d) == pytest.approx(expected)


def test_mcnemar_exact_against_binomial_definition():
    assert paired.mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    b, c = 7, 19
    expected = min(1.0, 2 * sum(comb(b + c, k) for k in range(b + 1)) / 2 ** (b + c))
    assert paired.mcnemar_exact(b, c) == pytest.approx(expected)
    assert paired.mcnemar_exact(0, 0) == 1.0


def test_flips_are_per_seed_with_their_spread():
    dense = [1, 1, 1, 1, 0, 0, 0, 1]
    comp = [1, 0, 1, 0, 1, 0, 0, 1]
    f = paired.flips(dense, [comp, dense])
    assert (f.right_to_wrong, f.wrong_to_right, f.dense_right, f.n) == ((2, 0), (1, 0), 5, 8)
    assert f.lost == 1.0 and f.spread()[0] == pytest.approx(math.sqrt(2))
    assert f.retention.estimate == pytest.approx(4 / 5)
    assert f.dense_wrong_accuracy.estimate == pytest.approx(0.5 / 3)
    assert paired.flips([0, 0], [1, 0]).retention is None


def test_cohen_kappa_matches_bonett_worked_example_and_scikit_learn():
    # 2×2 agreement table 31, 12, 4, 58 → Cohen's κ 0.6756757 (Bonett's worked example)
    a = [0] * 43 + [1] * 62
    b = [0] * 31 + [1] * 12 + [0] * 4 + [1] * 58
    assert paired.cohen_kappa(a, b) == pytest.approx(0.6756757, abs=1e-7)
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 4, 60).tolist(), rng.integers(0, 4, 60).tolist()
    assert paired.cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))
    assert paired.cohen_kappa(["a", "a"], ["a", "a"]) is None


def test_choice_kl_on_known_distributions():
    p = np.array([0.7, 0.1, 0.1, 0.1])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    kl = paired.choice_kl(np.log(p)[None] + 3.0, np.log(q)[None] - 1.0)
    assert kl[0] == pytest.approx(stats.entropy(p, q))


def test_verdict_rule_and_the_five_percent_boundary():
    width = Tolerance().width(40.0)
    assert width == pytest.approx(2.0)
    assert paired.verdict(Interval(-1.0, -2.0, 0.0), width) == MATCHES  # exactly on the boundary
    assert paired.verdict(Interval(-1.0, -2.0001, 0.0), width) == INCONCLUSIVE
    assert paired.verdict(Interval(-6.0, -8.0, -2.0001), width) == WORSE
    assert paired.verdict(Interval(5.0, 3.0, 7.0), width, higher_better=False) == WORSE
    assert Tolerance(abs_points=1.0).width(40.0) == pytest.approx(2.0)  # the larger of the two


def test_one_agreeing_item_is_too_few_items():
    d = paired.decide(paired.paired_binary_interval([1.0], [1.0]).scaled(100), 5.0, 1)
    assert d.verdict == TOO_FEW and "1 paired item" in d.missing


def test_two_lost_items_are_not_a_certain_worse():
    iv = paired.paired_binary_interval([1.0, 1.0], [0.0, 0.0]).scaled(100)
    assert iv.high > 0  # the interval reaches "no loss at all"
    assert paired.decide(iv, 5.0, 2).verdict == TOO_FEW


def test_decision_margin_items_needed_and_p_values_agree_with_the_interval():
    iv = Interval(-1.0, -3.0, 1.0)
    d = paired.decide(iv, 2.0, 100)
    assert d.verdict == INCONCLUSIVE and d.margin == pytest.approx(3.0)
    # per-item sd ≈ 2·√100/z; to put the lower end at −2 from −1 needs (z·sd / 1)² items
    assert d.items_needed == pytest.approx(100 * (2.0 / 1.0) ** 2)
    for low, state in ((-2.0, MATCHES), (-2.2, INCONCLUSIVE)):
        d = paired.decide(Interval(-1.0, low, 0.0), 2.0, 100)
        assert d.verdict == state and (d.p_matches <= paired.ALPHA + 1e-12) == (state == MATCHES)
    assert paired.decide(Interval(-6.0, -8.0, -4.0), 2.0, 100).p_worse < paired.ALPHA


def test_holm_and_benjamini_hochberg_by_hand():
    assert paired.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert paired.benjamini_hochberg([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])


def test_adjusted_and_pooled_decisions():
    edge = paired.Decision(MATCHES, p_matches=0.02, p_worse=0.9)
    strong = paired.Decision(MATCHES, p_matches=0.001, p_worse=0.99)
    assert paired.adjusted_verdicts([edge, edge, strong]) == [INCONCLUSIVE, INCONCLUSIVE, MATCHES]  # Holm: 0.04
    assert paired.pooled_decision([edge, edge, strong]) == MATCHES  # intersection–union: each at 2.5% suffices
    lost = paired.Decision(WORSE, p_matches=0.9, p_worse=0.01)
    assert paired.pooled_decision([strong, lost]) == WORSE  # Holm over two tasks: 0.02 ≤ 0.025
    assert paired.pooled_decision([strong, strong, lost]) == INCONCLUSIVE  # over three: 0.03 > 0.025
    assert paired.pooled_decision([strong, paired.Decision(TOO_FEW)]) == TOO_FEW


def test_heterogeneity_by_hand():
    q, df, p, i2 = paired.heterogeneity([0.0, 0.1], [0.05, 0.05])
    assert q == pytest.approx(2 * (0.05 / 0.05) ** 2) and df == 1
    assert p == pytest.approx(stats.chi2.sf(q, 1)) and i2 == pytest.approx((q - 1) / q)


def test_largest_matching_walks_verdicts():
    def pct(s):
        return f"{s * 100:g}%"

    assert paired.largest_matching([(0.5, WORSE), (0.3, MATCHES), (0.1, MATCHES)]) == paired.LargestMatching(0.3)
    lm = paired.largest_matching([(0.1, MATCHES), (0.3, INCONCLUSIVE), (0.5, MATCHES)])
    assert lm.describe(pct) == "≥ 10% (inconclusive at 30%)"
    assert paired.largest_matching([(0.1, TOO_FEW)]).describe(pct) == "none (too few items at 10%)"
    assert paired.largest_matching([(0.3, MATCHES), (0.5, MATCHES)]).describe(pct) == "50%"


def test_stratified_interval_keeps_leaf_sizes_and_drops_between_leaf_variance():
    rng = np.random.default_rng(8)
    a, b = rng.normal(-1.0, 0.3, 200), rng.normal(1.0, 0.3, 200)  # two leaves with very different means
    x, strata = np.concatenate([a, b]), ["a"] * 200 + ["b"] * 200
    strat = paired.stratified_mean_interval(x, strata, resamples=20000, seed=1)
    pooled = paired.mean_interval(x)
    se = math.sqrt((200 * a.var(ddof=1) + 200 * b.var(ddof=1))) / 400  # the stratified standard error
    assert strat.estimate == pytest.approx(x.mean()) and strat.method == "stratified bootstrap"
    assert strat.high - strat.low == pytest.approx(2 * 1.96 * se, rel=0.05)
    assert strat.high - strat.low < (pooled.high - pooled.low) / 2
    small = paired.stratified_mean_interval(x[:10].tolist() + x[-10:].tolist(), ["a"] * 10 + ["b"] * 10)
    s = np.concatenate([a[:10], b[-10:]])
    se = math.sqrt(10 * a[:10].var(ddof=1) + 10 * b[-10:].var(ddof=1)) / 20
    assert small.method == "t (18 df)" and small.high - s.mean() == pytest.approx(stats.t.ppf(0.975, 18) * se)
