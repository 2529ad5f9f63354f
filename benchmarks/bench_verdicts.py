"""Calibration of kick-report's verdicts: how often each rule is wrong when the true difference is known.

Simulates paired 0/1 outcomes of dense and a compressed model with a known true difference Δ
(compressed − dense, averaged over calibration seeds) over n ∈ {10, 52, 200, 1000, 5000} items,
dense accuracy ∈ {0.05, 0.25, 0.5, 0.8}, per-seed discordance (share of items whose outcome
changes) ∈ {0.01, 0.05, 0.3} and 1 or 3 calibration seeds. With 3 seeds the same items are
fragile in every seed (each flips in a seed with probability ``SEED_FLIP``), as pruning with
another calibration draw behaves. For each cell it tabulates, for the OLD rule (the percentile
bootstrap kick-report used before, two-level over seeds, copied below) and the NEW one
(:func:`kick_study.paired.paired_counts_interval` + :func:`kick_study.paired.decide`, as kick-report runs them):

* coverage of the 95% interval at Δ ∈ {0, −ε, −3ε};
* false *matches* and false *worse* at Δ = −ε (the tolerance edge: both claims are false there and
  this is where each is most likely), nominal 2.5% each;
* power: *matches* at Δ = 0, *worse* at Δ = −3ε;

with ε = 5% of the observed dense accuracy (LLM-KICK's ε₀). Cells whose Δ needs more discordance
than the cell has are skipped. Example (writes the Markdown table to --out):

    OMP_NUM_THREADS=1 python benchmarks/bench_verdicts.py --out docs/benchmarks/verdicts.md
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import os
import platform
import time

import numpy as np

from kick_study import paired

NS = (10, 52, 200, 1000, 5000)
ACCURACIES = (0.05, 0.25, 0.5, 0.8)
DISCORDANCES = (0.01, 0.05, 0.3)
SEEDS = (1, 3)
SEED_FLIP = 0.7  # with several seeds: a fragile item flips in each seed with this probability
EPS = paired.REL_TOLERANCE


def old_percentile_bootstrap(counts: np.ndarray, values: np.ndarray, n: int, rng, resamples: int) -> tuple:
    """The rule kick-report used before (kept here only): percentile bootstrap, seeds then items resampled.

    counts [R, K] items per outcome pattern, values [K, S] each pattern's difference per seed; returns
    the 2.5% and 97.5% percentiles [R] of the resampled mean. Items are resampled as multinomial
    pattern counts (sequential binomials: the same distribution as drawing n items with replacement).
    """
    reps, n_seeds = counts.shape[0], values.shape[1]
    left = np.full((resamples, reps), n)
    rest = np.ones(reps)
    per_seed = np.zeros((resamples, reps, n_seeds))
    for k in range(values.shape[0]):
        p = counts[:, k] / n  # [R]
        share = np.where(rest > 0, np.clip(p / np.maximum(rest, 1e-300), 0, 1), 0.0)
        drawn = rng.binomial(left, share[None, :])  # [B, R]
        left -= drawn
        rest = rest - p
        per_seed += drawn[:, :, None] * values[k][None, None, :]
    per_seed /= n
    if n_seeds > 1:
        pick = rng.integers(0, n_seeds, size=per_seed.shape)
        per_seed = np.take_along_axis(per_seed, pick, axis=2)
    stats = per_seed.mean(axis=2)  # [B, R]
    return np.percentile(stats, 2.5, axis=0), np.percentile(stats, 97.5, axis=0)


def old_verdicts(low: np.ndarray, high: np.ndarray, width: np.ndarray) -> np.ndarray:
    return np.where(low >= -width, paired.MATCHES, np.where(high < -width, paired.WORSE, paired.INCONCLUSIVE))


def patterns(n_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcome patterns of one item over the seeds: [K, S] differences and [K] dense-right flags.

    Pattern 0 / 1: unchanged and dense right / wrong; then every non-empty set of seeds in which a
    dense-right item is lost (−1), then every one in which a dense-wrong item is gained (+1).
    """
    sets = [s for s in itertools.product((0, 1), repeat=n_seeds) if any(s)]
    values = [np.zeros(n_seeds), np.zeros(n_seeds)] + [-np.array(s, float) for s in sets] + [np.array(s, float) for s in sets]
    right = [True, False] + [True] * len(sets) + [False] * len(sets)
    return np.array(values), np.array(right)


def pattern_probs(acc: float, disc: float, delta: float, n_seeds: int) -> np.ndarray | None:
    """Probability of each pattern, or None when Δ and the discordance cannot both hold."""
    q = SEED_FLIP if n_seeds > 1 else 1.0
    lose, gain = (disc - delta) / 2, (disc + delta) / 2  # per seed
    frag_l, frag_g = lose / (acc * q), gain / ((1 - acc) * q)
    if lose < 0 or gain < 0 or frag_l > 1 or frag_g > 1:
        return None
    sets = [s for s in itertools.product((0, 1), repeat=n_seeds) if any(s)]
    seeds_p = np.array([q ** sum(s) * (1 - q) ** (n_seeds - sum(s)) for s in sets])
    never = (1 - q) ** n_seeds
    probs = [acc * (1 - frag_l + frag_l * never), (1 - acc) * (1 - frag_g + frag_g * never)]
    probs += list(acc * frag_l * seeds_p) + list((1 - acc) * frag_g * seeds_p)
    return np.array(probs)


def simulate(n, acc, disc, delta, n_seeds, reps, old_reps, resamples, rng) -> dict | None:
    """Old verdicts on the first ``old_reps`` data sets (bootstraps are costly), new ones on all ``reps``."""
    probs = pattern_probs(acc, disc, delta, n_seeds)
    if probs is None:
        return None
    values, right = patterns(n_seeds)
    counts = rng.multinomial(n, probs / probs.sum(), size=reps)  # [R, K]
    width = EPS * counts[:, right].sum(axis=1) / n  # [R] ε from the observed dense accuracy
    low, high = old_percentile_bootstrap(counts[:old_reps], values, n, rng, resamples)
    old = old_verdicts(low, high, width[:old_reps])
    old_cover = (low <= delta) & (delta <= high)
    mean_d = values.mean(axis=1)  # [K] each pattern's seed-averaged difference
    lost = counts @ np.clip(-mean_d, 0, None)  # [R]
    gained = counts @ np.clip(mean_d, 0, None)
    ivs = paired.paired_counts_interval(lost, gained, n)  # arrays [R]: the report's interval, vectorised
    new = [paired.decide(paired.Interval(e, lo, hi), float(w), n).verdict
           for e, lo, hi, w in zip(ivs.estimate, ivs.low, ivs.high, width)]
    new_cover = (ivs.low <= delta) & (delta <= ivs.high)
    return {"old": old, "new": np.array(new), "old_cover": old_cover.mean(), "new_cover": float(new_cover.mean())}


def run_grid(reps: int, old_reps: int, resamples: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for n, acc, disc, n_seeds in itertools.product(NS, ACCURACIES, DISCORDANCES, SEEDS):
        eps = EPS * acc
        out = {"n": n, "acc": acc, "disc": disc, "seeds": n_seeds}
        for name, delta in (("zero", 0.0), ("edge", -eps), ("far", -3 * eps)):
            out[name] = simulate(n, acc, disc, delta, n_seeds, reps, old_reps, resamples, rng)
        rows.append(out)
    return rows


def _rate(result: dict | None, rule: str, state: str) -> float | None:
    return None if result is None else float(np.mean(result[rule] == state))


def summarise(row: dict, rule: str) -> dict:
    """Coverage (worst of the three Δ), false matches / worse at the edge, power."""
    covers = [row[k][f"{rule}_cover"] for k in ("zero", "edge", "far") if row[k] is not None]
    return {"coverage": min(covers) if covers else None,
            "false_matches": _rate(row["edge"], rule, paired.MATCHES),
            "false_worse": _rate(row["edge"], rule, paired.WORSE),
            "power_matches": _rate(row["zero"], rule, paired.MATCHES),
            "power_worse": _rate(row["far"], rule, paired.WORSE),
            "too_few": _rate(row["zero"], rule, paired.TOO_FEW)}


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _limit(reps: int) -> float:
    """Nominal 2.5% plus two Monte-Carlo standard errors at ``reps`` data sets."""
    return 0.025 + 2 * math.sqrt(0.025 * 0.975 / reps)


def tables(rows: list[dict], reps: int, old_reps: int) -> list[str]:
    limits = {"old": _limit(old_reps), "new": _limit(reps)}
    lines = ["## Summary by n and seeds (worst cell over dense accuracy and discordance)", "",
             "| n | seeds | rule | min coverage | max false matches | max false worse | mean power matches (Δ=0) | "
             "mean power worse (Δ=−3ε) | too few items |", "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    fails = {"old": 0, "new": 0}
    for n, n_seeds in itertools.product(NS, SEEDS):
        group = [r for r in rows if r["n"] == n and r["seeds"] == n_seeds]
        for rule in ("old", "new"):
            s = [summarise(r, rule) for r in group]

            def pick(key, fn, s=s):
                vals = [x[key] for x in s if x[key] is not None]
                return fn(vals) if vals else None

            fm, fw, cov = pick("false_matches", max), pick("false_worse", max), pick("coverage", min)
            limit = limits[rule]
            fails[rule] += sum(1 for x in s if (x["false_matches"] or 0) > limit or (x["false_worse"] or 0) > limit
                               or (x["coverage"] is not None and x["coverage"] < 0.93))
            lines.append(f"| {n} | {n_seeds} | {rule} | {_f(cov)} | {_f(fm)} | {_f(fw)} | "
                         f"{_f(pick('power_matches', np.mean))} | {_f(pick('power_worse', np.mean))} | "
                         f"{_f(pick('too_few', np.mean))} |")
    lines += ["", "Cells missing a target (a false-verdict rate above 2.5% + 2 Monte-Carlo SE — "
              f"{limits['old']:.3f} old, {limits['new']:.3f} new — or coverage < 0.93): old rule {fails['old']}, "
              f"new rule {fails['new']}, of {len(rows)}.", "",
              "## Every cell", "",
              "| n | dense acc | discordance | seeds | coverage old / new | false matches old / new | "
              "false worse old / new | power matches old / new | power worse old / new |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o, w = summarise(r, "old"), summarise(r, "new")
        cells = [f"{_f(o[k])} / {_f(w[k])}" for k in ("coverage", "false_matches", "false_worse", "power_matches",
                                                        "power_worse")]
        lines.append(f"| {r['n']} | {r['acc']} | {r['disc']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=4000, help="simulated data sets per cell and Δ (new rule)")
    parser.add_argument("--old_reps", type=int, default=1000, help="of those, how many the old rule bootstraps")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per data set, old rule")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="Markdown file to write the tables to (default: print them)")
    args = parser.parse_args()
    wall, cpu = time.perf_counter(), time.process_time()
    rows = run_grid(args.reps, args.old_reps, args.resamples, args.seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    head = ["# Calibration of kick-report's verdicts", "",
            f"`benchmarks/bench_verdicts.py --reps {args.reps} --old_reps {args.old_reps} --resamples {args.resamples} "
            f"--seed {args.seed}` on "
            f"{platform.machine()} ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end, Python "
            f"{platform.python_version()}), {datetime.date.today().isoformat()}: {wall:.0f} s wall, {cpu:.0f} s CPU, "
            "single-threaded. "
            "Old = percentile bootstrap of the mean difference (two-level over seeds), no minimum of evidence; new = "
            f"Tango ∪ Bonett–Price on seed-averaged items, too few items below {paired.MIN_ITEMS} items. ε = 5% of the observed "
            f"dense accuracy; false rates at true Δ = −ε; {args.reps} data sets per cell and Δ for the new rule, "
            f"{args.old_reps} for the old (each bootstrapped {args.resamples} times). With 3 seeds a fragile "
            f"item flips in each seed with probability {SEED_FLIP}. — : Δ impossible at that discordance.", ""]
    text = "\n".join(head + tables(rows, args.reps, args.old_reps)) + "\n"
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
