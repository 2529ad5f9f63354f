"""Intervals for kick-hf's held-out KL and top-1 agreement: Student t over the text's windows, df = windows − 1.

kick-hf measures fidelity on a few long windows of fixed held-out text (8 × 256 tokens by
default) and records each window's mean. Positions inside a window are not independent, so the
window is the unit of resampling; with so few units a percentile bootstrap of their mean covers
only 86–90% at a nominal 95% (it ignores the uncertainty of the spread itself). The t interval
pays for that with the t quantile on windows − 1 degrees of freedom. Calibration seeds are
replicates, not evidence: each window's value is first averaged over the seeds.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

from kick_study.paired import CONFIDENCE, Interval


def window_interval(per_seed_windows: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                    bounds: tuple[float, float] = (-math.inf, math.inf)) -> Interval:
    """Mean of the per-window values ([seeds, windows] or [windows]) with a t interval over windows.

    ``bounds``: the statistic's range (KL ≥ 0, agreement in [0, 1]); the interval is clipped to it,
    which keeps its coverage. One window gives no interval (the whole range); an infinite window
    (a token dense predicts that the compressed model rules out) makes everything +inf.
    """
    data = np.asarray(per_seed_windows, dtype=np.float64)
    windows = data if data.ndim == 1 else data.mean(axis=0)  # [W]
    if windows.size == 0 or np.isnan(windows).any():
        raise ValueError(f"window_interval needs finite or +inf per-window values, got {windows.tolist()}")
    mean = float(windows.mean())
    if math.isinf(mean):
        return Interval(mean, mean, mean)
    if windows.size < 2:
        return Interval(mean, bounds[0], bounds[1])
    half = stats.t.ppf(0.5 + confidence / 2.0, windows.size - 1) * windows.std(ddof=1) / math.sqrt(windows.size)
    return Interval(mean, float(max(bounds[0], mean - half)), float(min(bounds[1], mean + half)))
