"""The held-out KL stays a lower bound of the full-vocabulary KL in float32, −inf never gives NaN, and
the window interval is a t interval with honest degrees of freedom."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from kick_models import fidelity
from kick_study import paired
from kick_study.heldout import window_interval


def _old_topk_kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """kick's first formula (rest bucket = 1 − Σ top-k of float32 probabilities, compressed rest clamped
    at 1e-300), kept here to show the case it got wrong."""
    p_log, q_log = p_log.double(), q_log.double()
    p_rest = (1.0 - p_log.exp().sum(-1)).clamp_min(0.0)
    q_rest = (1.0 - q_log.exp().sum(-1)).clamp_min(1e-300)
    head = (p_log.exp() * (p_log - q_log)).sum(-1)
    rest = torch.where(p_rest > 0, p_rest * (p_rest.clamp_min(1e-300).log() - q_rest.log()), torch.zeros_like(p_rest))
    return head + rest


def _both(dense_logits: torch.Tensor, compressed_logits: torch.Tensor, k: int):
    """(top-k KL as kick-hf computes it, full-vocabulary KL, old formula) per row, from float32 logits."""
    p, q = torch.log_softmax(dense_logits, -1), torch.log_softmax(compressed_logits, -1)  # float32, as in kick-hf
    top = torch.topk(p, k, -1).indices
    bound = fidelity.topk_kl(p.gather(-1, top), fidelity.tail_logp(p, top), q.gather(-1, top), fidelity.tail_logp(q, top))
    full = fidelity.kl_terms(p.double().log_softmax(-1), q.double().log_softmax(-1))  # the same numbers, normalised
    return bound, full, _old_topk_kl(p.gather(-1, top), q.gather(-1, top))


def test_bound_holds_where_the_float32_rest_bucket_overshot():
    # dense puts 1 − 1e-6 … 1 − 1e-10 on one token, the compressed model is even surer: Σ of its
    # float32 top-k rounds to ≥ 1, the old compressed rest became 1e-300 and its term p_R·(log p_R + 690.8)
    dense = torch.zeros(41, 1000)
    dense[:, 0] = torch.linspace(14.0, 24.0, 41)
    compressed = torch.zeros(41, 1000)
    compressed[:, 0] = 30.0
    bound, full, old = _both(dense, compressed, k=4)
    assert (bound <= full * (1 + 1e-6)).all()
    assert torch.allclose(bound, full, rtol=1e-4)  # the rest is uniform here: the partition loses nothing
    assert (old > 10 * full).sum() >= 30  # the old formula: 45–95× the full KL on most rows


@pytest.mark.parametrize("peak", [0.0, 8.0, 16.0, 25.0])
def test_bound_holds_at_every_position_on_random_and_adversarial_distributions(peak):
    gen = torch.Generator().manual_seed(int(peak))
    dense = 3.0 * torch.randn(64, 4096, generator=gen)
    dense[:, 0] += peak
    compressed = dense + torch.randn(64, 4096, generator=gen)
    compressed[:32, 4000:] -= 40.0  # adversarial: the compressed model empties part of dense's tail
    compressed[32:, 1:9] += 6.0  # … or moves dense's top-k mass elsewhere
    bound, full, _ = _both(dense, compressed, k=8)
    assert torch.isfinite(bound).all() and (bound >= 0).all()
    assert (bound <= full * (1 + 1e-6)).all()


def test_minus_infinity_is_zero_for_dense_and_infinite_for_compressed():
    p = torch.tensor([[-1.0, float("-inf"), -2.0]]).log_softmax(-1)
    q = torch.tensor([[-1.0, -3.0, -2.0]]).log_softmax(-1)
    expected = math.log(1 + math.exp(-3) / (math.exp(-1) + math.exp(-2)))  # p ∝ (e⁻¹, 0, e⁻²)
    assert fidelity.kl_terms(p, q).item() == pytest.approx(expected, rel=1e-5)  # float32 inputs
    assert fidelity.kl_terms(q, p).item() == math.inf  # dense gives e⁻³ to what the other rules out
    # top-k form: dense's tail is −inf (the top-k covers all its mass), the compressed one's is not
    kl = fidelity.topk_kl(p[:, [0, 2]], torch.tensor([float("-inf")]), q[:, [0, 2]], q[:, 1])
    assert kl.item() == pytest.approx(expected, rel=1e-5)
    assert fidelity.topk_kl(q[:, [0, 2]], q[:, 1], p[:, [0, 2]], torch.tensor([float("-inf")])).item() == math.inf


def test_choice_kl_with_a_minus_infinity_option_worked_by_hand():
    # p = (e⁻¹, 0, e⁻²)/(e⁻¹ + e⁻²), q = (e⁻¹, e⁻³, e⁻²)/(e⁻¹ + e⁻² + e⁻³): p/q is the same
    # constant 1 + e⁻³/(e⁻¹ + e⁻²) = 1.098938 on both of dense's options, so KL = ln 1.098938 = 0.094343
    kl = paired.choice_kl([[-1.0, -math.inf, -2.0]], [[-1.0, -3.0, -2.0]])
    assert round(float(kl[0]), 4) == 0.0943
    assert paired.choice_kl([[-1.0, -3.0, -2.0]], [[-1.0, -math.inf, -2.0]])[0] == math.inf
    assert not np.isnan(paired.choice_kl([[-math.inf, -1.0]], [[-math.inf, -2.0]])).any()


def test_window_interval_is_scipys_t_interval():
    windows = [0.12, 0.30, 0.18, 0.25, 0.09, 0.40, 0.22, 0.15]
    got = window_interval(windows)
    low, high = stats.t.interval(0.95, len(windows) - 1, loc=np.mean(windows), scale=stats.sem(windows))
    assert (got.estimate, got.low, got.high) == pytest.approx((np.mean(windows), low, high))
    seeds = window_interval([windows, [w + 0.02 for w in windows]])  # seeds averaged per window first
    assert seeds.estimate == pytest.approx(np.mean(windows) + 0.01)
    assert seeds.high - seeds.low == pytest.approx(high - low)
    assert window_interval([0.01, 0.5, 0.02], bounds=(0.0, math.inf)).low == 0.0
    assert window_interval([0.3]).low == -math.inf
    assert window_interval([0.1, math.inf]).estimate == math.inf


def test_window_interval_covers_where_the_percentile_bootstrap_did_not():
    # 8 skewed window means (gamma, like per-window KL): the t interval keeps ~95%, the bootstrap ~89%
    rng = np.random.default_rng(0)
    draws, truth = rng.gamma(4.0, 0.05, size=(2000, 8)), 4.0 * 0.05
    t_cover = np.mean([(iv.low <= truth <= iv.high) for iv in map(window_interval, draws)])
    boot_cover = np.mean([(iv.low <= truth <= iv.high)
                          for iv in (paired.bootstrap_mean(d, resamples=400, seed=i) for i, d in enumerate(draws[:500]))])
    assert t_cover >= 0.925  # nominal 0.95; Monte-Carlo sd ≈ 0.005
    assert boot_cover < t_cover
