"""Paired statistics against their definitions and against scipy on fixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import comb

from kick_study import paired
from kick_study.paired import INCONCLUSIVE, MATCHES, WORSE, Interval, Tolerance


@pytest.fixture
def outcomes():
    rng = np.random.default_rng(7)
    dense = (rng.random(300) < 0.6).astype(float)
    flip = rng.random(300) < 0.15
    compressed = np.where(flip, 1 - dense, dense)
    return dense, compressed


def test_bootstrap_matches_scipy_percentile_paired(outcomes):
    dense, compressed = outcomes
    ours = paired.paired_difference(dense, compressed, resamples=20000, seed=1)
    ref = stats.bootstrap((dense, compressed), lambda d, c, axis: np.mean(c - d, axis=axis), paired=True,
                          vectorized=True, n_resamples=20000, method="percentile", confidence_level=0.95,
                          rng=np.random.default_rng(2))
    assert ours.estimate == pytest.approx(np.mean(compressed - dense))
    # two independent Monte-Carlo runs of the same procedure: endpoints agree to Monte-Carlo error
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.006)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.006)


def test_bootstrap_is_seeded_and_contains_estimate(outcomes):
    dense, compressed = outcomes
    a = paired.paired_difference(dense, compressed, seed=3)
    b = paired.paired_difference(dense, compressed, seed=3)
    assert a == b
    assert a.low <= a.estimate <= a.high


def test_seed_level_widens_interval_and_identical_seeds_change_nothing(outcomes):
    dense, compressed = outcomes
    one = paired.paired_difference(dense, compressed, seed=5)
    same = paired.paired_difference(dense, np.stack([compressed] * 3), seed=5)
    assert same.low == pytest.approx(one.low) and same.high == pytest.approx(one.high)
    rng = np.random.default_rng(0)
    # seeds that differ a lot from each other (one seed much worse): the interval must widen
    worse = np.where(rng.random(300) < 0.5, 0.0, compressed)
    varied = paired.paired_difference(dense, np.stack([compressed, worse, compressed]), seed=5)
    assert varied.half_width > one.half_width


def test_identical_models_give_a_zero_interval(outcomes):
    dense, _ = outcomes
    assert paired.paired_difference(dense, dense) == Interval(0.0, 0.0, 0.0)


def test_mcnemar_exact_against_binomial_definition():
    # b=1, c=9: p = 2 * (C(10,0) + C(10,1)) / 2**10
    assert paired.mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert paired.mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)
    b, c = 7, 19
    n = b + c
    expected = min(1.0, 2 * sum(comb(n, k) for k in range(b + 1)) / 2 ** n)
    assert paired.mcnemar_exact(b, c) == pytest.approx(expected)
    assert paired.mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert paired.mcnemar_exact(0, 0) == 1.0


def test_flips_retention_on_hand_made_outcomes():
    dense = [1, 1, 1, 1, 0, 0, 0, 1]
    comp = [1, 0, 1, 0, 1, 0, 0, 1]
    f = paired.flips(dense, comp)
    assert (f.right_to_wrong, f.wrong_to_right, f.dense_right, f.kept_right, f.n) == (2, 1, 5, 3, 8)
    assert f.retention == pytest.approx(3 / 5)
    assert f.mcnemar_p == pytest.approx(paired.mcnemar_exact(2, 1))
    seeds = paired.flips(dense, [comp, dense])
    assert (seeds.right_to_wrong, seeds.wrong_to_right, seeds.dense_right, seeds.kept_right) == (2, 1, 10, 8)
    assert paired.flips([0, 0], [1, 0]).retention is None


def test_agreement():
    assert paired.agreement([0, 1, 2, 3], [0, 1, 3, 3]) == pytest.approx(0.75)
    assert paired.agreement(["paris", "rome"], ["paris", "rome"]) == 1.0
    with pytest.raises(ValueError, match="equally long"):
        paired.agreement([1], [1, 2])


def test_choice_kl_on_known_distributions():
    p = np.array([0.7, 0.1, 0.1, 0.1])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    kl = paired.choice_kl(np.log(p)[None] + 3.0, np.log(q)[None] - 1.0)  # logliks need not be normalised
    assert kl[0] == pytest.approx(stats.entropy(p, q))
    assert kl[0] == pytest.approx(0.7 * math.log(2.8) + 3 * 0.1 * math.log(0.4))
    same = paired.choice_kl([[-1.0, -2.0, -3.0]], [[-1.0, -2.0, -3.0]])
    assert same[0] == 0.0


def test_verdict_states_and_the_five_percent_boundary():
    tol = Tolerance()
    width = tol.width(40.0)  # 5% of 40 points = 2 points
    assert width == pytest.approx(2.0)
    assert paired.verdict(Interval(-0.5, -1.5, 0.5), width) == MATCHES
    assert paired.verdict(Interval(-1.0, -2.0, 0.0), width) == MATCHES  # exactly on the boundary
    assert paired.verdict(Interval(-1.0, -2.0001, 0.0), width) == INCONCLUSIVE
    assert paired.verdict(Interval(-5.0, -9.0, 3.0), width) == INCONCLUSIVE  # too few items
    assert paired.verdict(Interval(-6.0, -8.0, -2.0001), width) == WORSE
    assert paired.verdict(Interval(5.0, 3.0, 7.0), width) == MATCHES
    assert paired.is_better(Interval(5.0, 3.0, 7.0), width)
    assert not paired.is_better(Interval(1.0, -1.0, 3.0), width)
    # lower is better (perplexity-like): an increase is the bad direction
    assert paired.verdict(Interval(5.0, 3.0, 7.0), width, higher_better=False) == WORSE
    assert Tolerance(abs_points=1.0, rel=0.0).width(40.0) == 1.0
    assert Tolerance(abs_points=1.0).width(40.0) == pytest.approx(2.0)  # the larger of the two
    assert Tolerance().width(20.0, scaled=False) == pytest.approx(1.0)


def test_largest_matching_walks_verdicts():
    lm = paired.largest_matching([(0.5, WORSE), (0.3, MATCHES), (0.1, MATCHES)])
    assert lm == paired.LargestMatching(0.3, None)
    lm = paired.largest_matching([(0.1, MATCHES), (0.3, INCONCLUSIVE), (0.5, MATCHES)])
    assert lm == paired.LargestMatching(0.1, 0.3)
    def pct(s):
        return f"{s * 100:g}%"

    assert lm.describe(pct) == "≥ 10% (inconclusive at 30%)"
    assert paired.largest_matching([(0.3, INCONCLUSIVE)]).describe(pct) == "none (inconclusive at 30%)"
    assert paired.largest_matching([(0.3, WORSE)]).describe(pct) == "none"
    assert paired.largest_matching([(0.3, MATCHES), (0.5, MATCHES)]).describe(pct) == "50%"


def test_seed_mean_sd():
    mean, sd = paired.seed_mean_sd([1.0, 2.0, 3.0])
    assert mean == 2.0 and sd == pytest.approx(1.0)
    assert paired.seed_mean_sd([4.0]) == (4.0, None)
