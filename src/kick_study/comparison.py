"""Pair every compressed cell with the dense cell of its base model, item by item, and compute its verdict.

A cell's runs (one per calibration seed) are matched to the dense run of the same model on the
same documents (task, doc_id, doc_hash), on the items defined in both (how many were dropped on each
side is said). Groups (``kick_mmlu``, its categories) pool the items of all their leaf tasks, with a
heterogeneity line across leaves and leaf-level clusters as an option. Perplexity is paired by
document (log-likelihood and word count per document). When pairing is impossible — no dense run,
no samples files, a NaN value — the row keeps its score and says why, and how to rerun.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kick_models.compression.registry import method_names
from kick_study import paired
from kick_study.heldout import window_interval
from kick_study.paired import Interval, Tolerance
from kick_study.samples import TaskSamples, read_samples, samples_files

log = logging.getLogger(__name__)

RERUN_SAMPLES = ("no per-item samples (results written without --log_samples, e.g. by an older kick-sweep); "
                 "rerun kick-sweep on the same folder — cells without samples run again")
STALE_KL = ("measured by an older kick-hf whose rest bucket (1 − Σ top-k in float32) could exceed the full KL; "
            "rerun the cell (kick-sweep reruns nothing that is done: use a new --out, or lm_eval with no_cache=true)")
NO_DENSE = "no dense run of this model in the folder; kick-sweep always runs one — rerun it on the same folder"


PERPLEXITIES = ("word_perplexity", "byte_perplexity")  # exp(−Σ loglik / Σ words or bytes) over documents
BITS_PER_BYTE = "bits_per_byte"  # −Σ loglik / Σ bytes / ln 2


class NotANumber(ValueError):
    """A per-item metric value is NaN or infinite: refused, never turned into a silent verdict."""


@dataclass
class CellComparison:
    """One (task, compressed setting, sparsity) against dense: scores across seeds and the paired statistics."""

    setting: Any
    sparsity: float
    seeds: list[Any]
    score: float | None  # display units, mean over seeds
    score_sd: float | None = None  # seed-to-seed sd of the score (replicates, not evidence)
    score_interval: Interval | None = None  # the score's own 95% interval, on its own items (seeds averaged)
    score_n: int | None = None  # the items that interval stands on (defined in every seed)
    n: int | None = None  # items paired (defined in dense and every seed)
    dropped: tuple[int, int] = (0, 0)  # items left out: of dense's, of this cell's (most over its seeds)
    diff: Interval | None = None  # compressed − dense, display units, on seed-averaged items
    ratio: Interval | None = None  # perplexity: compressed / dense over documents
    decision: paired.Decision | None = None
    flips: paired.Flips | None = None
    retention: Interval | None = None
    dense_wrong: Interval | None = None  # accuracy on dense-wrong items: retention's chance baseline
    p_value: float | None = None  # two-sided paired sign-flip test on seed-averaged items (McNemar for one seed)
    agreement: float | None = None
    kappa: float | None = None
    choice_kl: float | None = None
    heterogeneity: tuple | None = None  # (Q, df, p, I²) across a group's leaf tasks
    adjusted: str | None = None  # the verdict after Holm / BH across the report's cells, when asked for
    reason: str | None = None  # why the paired columns are empty, or what was dropped

    @property
    def verdict(self) -> str | None:
        return None if self.decision is None else self.decision.verdict

    @property
    def shown(self) -> str | None:
        """The verdict the summary uses: adjusted across cells when an adjustment was asked for."""
        return self.adjusted if self.adjusted is not None else self.verdict

    @property
    def better(self) -> bool:
        return self.decision is not None and self.decision.better


@dataclass
class TaskComparison:
    """Dense and every compressed cell of one (model, task)."""

    model: str
    task: str
    metric: str
    scaled: bool
    higher_better: bool
    dense: float | None
    dense_interval: Interval | None = None  # dense's own score interval, on its dense_n items with a value
    dense_n: int | None = None
    n: int | None = None  # dense's items
    width: float | None = None
    chance: float = 0.0  # display units: mean 1/options for multiple choice, 0 otherwise
    cells: list[CellComparison] = field(default_factory=list)

    @property
    def at_chance(self) -> bool:
        """Dense's own interval reaches chance: no margin of knowledge to lose."""
        return self.chance > 0 and self.dense_interval is not None and self.dense_interval.low <= self.chance


@lru_cache(maxsize=256)
def _output_types(results_path: Path) -> dict[str, str]:
    try:
        configs = json.loads(results_path.read_text(encoding="utf-8")).get("configs") or {}
    except (OSError, ValueError):
        return {}
    return {task: str(cfg.get("output_type", "")) for task, cfg in configs.items() if isinstance(cfg, dict)}


def leaf_tasks(run, task: str) -> list[str]:
    """The leaf tasks under ``task`` in this run (``task`` itself when it is not a group)."""
    subs = run.group_subtasks.get(task)
    if not subs:
        return [task]
    out: list[str] = []
    for sub in subs:
        out += [leaf for leaf in leaf_tasks(run, sub) if leaf not in out]
    return out


def run_items(run, task: str, metric_filter: str) -> dict[tuple, Any] | None:
    """Every item of ``task`` (pooled over a group's leaves) in this run; None when a leaf has no samples file."""
    files = samples_files(Path(run.path))
    types = _output_types(Path(run.path))
    items: dict[tuple, Any] = {}
    for leaf in leaf_tasks(run, task):
        if leaf not in files:
            return None
        samples: TaskSamples = read_samples(files[leaf], leaf, metric_filter, types.get(leaf))
        items.update(samples.items)
    return items


def _value(raw: Any, key: tuple, name: str) -> float | tuple[float, float] | None:
    """A per-item value: a number, a (loglik, weight) pair (perplexities), or None when undefined (unparsed)."""
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, (int, float)):
        value: Any = float(raw)
    elif isinstance(raw, (list, tuple)) and len(raw) == 2 and all(isinstance(v, (int, float)) for v in raw):
        value = (float(raw[0]), float(raw[1]))
    else:
        return None
    if not all(math.isfinite(v) for v in (value if isinstance(value, tuple) else (value,))):
        raise NotANumber(f"metric {name!r} is {raw!r} for item {key[0]} doc {key[1]}; a verdict on it would be "
                         "meaningless — fix or rerun that run")
    return value


def common_values(dense_items: dict, seed_items: list[dict], name: str):
    """Pair on the items whose ``name`` is defined in dense and in every seed.

    Returns (keys, dense values, [seeds] values, (dropped of dense's, dropped of the cell's));
    raises :class:`NotANumber` for a NaN / infinite value.
    """
    def defined(items: dict) -> dict:
        out = {}
        for key, item in items.items():
            value = _value(item.metrics.get(name), key, name)
            if value is not None:
                out[key] = value
        return out

    dense = defined(dense_items)
    seeds = [defined(items) for items in seed_items]
    keys = sorted(set(dense).intersection(*seeds))
    dropped = (len(dense_items) - len(keys), max(len(items) - len(keys) for items in seed_items))
    return keys, [dense[k] for k in keys], [[s[k] for k in keys] for s in seeds], dropped


def _chance(dense_items: dict, name: str, factor: float) -> float:
    """Guessing's expected score: mean 1/options for multiple-choice accuracy, 0 for anything else."""
    if not name.startswith("acc"):
        return 0.0
    options = [len(item.choice_logliks) for item in dense_items.values() if item.choice_logliks]
    return factor * float(np.mean([1.0 / k for k in options])) if options and len(options) == len(dense_items) else 0.0


def _perplexity_cell(cell: CellComparison, name: str, dense: list, comp: list, dense_value: float, width: float,
                     resamples: int, seed: int) -> None:
    """Perplexity paired by document: the interval of the log ratio of sums, as compressed / dense and in units."""
    ll_dense = np.array([v[0] for v in dense])  # [n]
    weights = np.array([v[1] for v in dense])  # [n] words or bytes
    ll_comp = np.array([[v[0] for v in seed] for seed in comp]).mean(axis=0)  # [n], seeds averaged
    rise = paired.ratio_interval(ll_dense - ll_comp, weights, resamples=resamples, seed=seed)  # nats per unit
    if rise is None:
        cell.decision = paired.decide(None, width, len(dense), higher_better=False)
        return
    if name == BITS_PER_BYTE:
        cell.diff = rise.scaled(1.0 / math.log(2.0))
    else:
        cell.ratio = Interval(*(math.exp(v) for v in (rise.estimate, rise.low, rise.high)), rise.method)
        cell.diff = Interval(*(dense_value * (v - 1.0) for v in (cell.ratio.estimate, cell.ratio.low, cell.ratio.high)),
                             rise.method)
    cell.decision = paired.decide(cell.diff, width, len(dense), higher_better=False)


def _binary_cell(cell: CellComparison, dense: np.ndarray, comp: np.ndarray, factor: float) -> Interval:
    cell.flips = paired.flips(dense, comp)
    cell.retention = cell.flips.retention
    cell.dense_wrong = cell.flips.dense_wrong_accuracy
    cell.p_value = paired.sign_flip_p(paired.seed_averaged_difference(dense, comp))
    return paired.paired_binary_interval(dense, comp).scaled(factor)


def _answers(cell: CellComparison, keys: list, dense_items: dict, seed_items: list[dict]) -> None:
    dense_answers = [dense_items[k].answer for k in keys]
    if keys and all(a is not None for a in dense_answers):
        per_seed = [[items[k].answer for k in keys] for items in seed_items]
        cell.agreement = float(np.mean([paired.agreement(dense_answers, a) for a in per_seed]))
        kappas = [paired.cohen_kappa(dense_answers, a) for a in per_seed]
        cell.kappa = None if any(k is None for k in kappas) else float(np.mean(kappas))
    if keys and all(dense_items[k].choice_logliks is not None for k in keys):
        cell.choice_kl = float(np.mean([
            np.mean([paired.choice_kl([dense_items[k].choice_logliks], [items[k].choice_logliks])[0] for k in keys])
            for items in seed_items]))


def _leaf_se(d: np.ndarray) -> float:
    """Standard error of a leaf's mean difference; for differences in [−1, 1] Bonett–Price's (never 0)."""
    if np.all(np.abs(d) <= 1.0):
        n = d.size
        p_l, p_g = (np.clip(-d, 0, None).sum() + 1) / (n + 2), (np.clip(d, 0, None).sum() + 1) / (n + 2)
        return math.sqrt(max(p_l + p_g - (p_g - p_l) ** 2, 0.0) / (n + 2))
    return float(d.std(ddof=1)) / math.sqrt(d.size) if d.size > 1 else 0.0


def _leaf_spread(keys: list, dense: np.ndarray, comp: np.ndarray) -> tuple | None:
    """Cochran's Q of the per-leaf mean differences (items of a group keyed by their leaf task)."""
    d = paired.seed_averaged_difference(dense, comp)
    leaves: dict[str, list[float]] = {}
    for key, value in zip(keys, d):
        leaves.setdefault(key[0], []).append(float(value))
    groups = [np.asarray(v) for v in leaves.values()]
    return paired.heterogeneity([g.mean() for g in groups], [_leaf_se(g) for g in groups])


def _cluster_interval(keys: list, dense: np.ndarray, comp: np.ndarray) -> Interval | None:
    """Leaf tasks (subjects) as clusters: the ratio-of-sums t interval over leaves (claims beyond these subjects)."""
    d = paired.seed_averaged_difference(dense, comp)
    sums: dict[str, list[float]] = {}
    for key, value in zip(keys, d):
        sums.setdefault(key[0], [0.0, 0.0])
        sums[key[0]][0] += float(value)
        sums[key[0]][1] += 1.0
    if len(sums) < 2:
        return None
    x, w = zip(*sums.values())
    return paired.ratio_interval(x, w, force_t=True)


def compare_cell(cell: CellComparison, dense_items: dict, seed_items: list[dict], name: str, factor: float,
                 width: float, higher_better: bool, resamples: int, seed: int, dense_value: float | None = None,
                 cluster: bool = False) -> None:
    """Fill ``cell``'s paired statistics from dense's items and each seed's items, on their common items."""
    try:
        keys, dense_v, comp_v, cell.dropped = common_values(dense_items, seed_items, name)
    except NotANumber as err:
        cell.reason = str(err)
        return
    cell.n = len(keys)
    if keys and isinstance(dense_v[0], tuple):
        if name not in (*PERPLEXITIES, BITS_PER_BYTE) or dense_value is None:
            cell.reason = f"metric {name!r} holds (value, weight) pairs kick does not know how to pair"
            return
        _perplexity_cell(cell, name, dense_v, comp_v, dense_value, width, resamples, seed)
        return
    dense = np.asarray(dense_v, dtype=np.float64)  # [n]
    comp = np.asarray(comp_v, dtype=np.float64).reshape(len(seed_items), len(keys))  # [S, n]
    if keys and paired.is_binary(dense) and paired.is_binary(comp):
        cell.diff = _binary_cell(cell, dense, comp, factor)
    elif keys:
        d = paired.seed_averaged_difference(dense, comp)
        strata = [k[0] for k in keys]
        diff = (paired.stratified_mean_interval(d, strata, resamples=resamples, seed=seed) if len(set(strata)) > 1
                else paired.mean_interval(d, resamples=resamples, seed=seed))
        cell.diff = None if diff is None else diff.scaled(factor)
        cell.p_value = paired.sign_flip_p(paired.seed_averaged_difference(dense, comp), seed=seed)
    if keys and len({k[0] for k in keys}) > 1:
        cell.heterogeneity = _leaf_spread(keys, dense, comp)
        if cluster:
            clustered = _cluster_interval(keys, dense, comp)
            cell.diff = None if clustered is None else clustered.scaled(factor)
    cell.decision = paired.decide(cell.diff, width, cell.n, higher_better)
    _answers(cell, keys, dense_items, seed_items)


def own_interval(seed_items: list[dict], name: str, factor: float) -> tuple[Interval | None, int]:
    """A score's own 95% interval in display units, and the items it stands on (defined in every seed).

    Each item is averaged over the seeds first (seeds are replicates). 0/1 metrics: Clopper–Pearson;
    continuous: BCa / t (stratified by leaf task in groups); perplexities and bits per byte: the ratio
    of sums −Σ loglik / Σ weight over documents, exponentiated (perplexity) or divided by ln 2.
    """
    try:
        keys, _, values, _ = common_values(seed_items[0], seed_items, name)
    except NotANumber:
        return None, 0
    if not keys:
        return None, 0
    if isinstance(values[0][0], tuple):
        nll = -np.array([[v[0] for v in seed] for seed in values]).mean(axis=0)  # [n], seeds averaged
        weights = np.array([v[1] for v in values[0]])  # [n] words or bytes
        rate = paired.ratio_interval(nll, weights)  # nats per word / byte
        if rate is None or name not in (*PERPLEXITIES, BITS_PER_BYTE):
            return None, len(keys)
        if name == BITS_PER_BYTE:
            return rate.scaled(1.0 / math.log(2.0)), len(keys)
        return Interval(*(math.exp(v) for v in (rate.estimate, rate.low, rate.high)), rate.method), len(keys)
    arr = np.asarray(values, dtype=np.float64)  # [S, n]
    mean = arr.mean(axis=0)  # [n]
    if paired.is_binary(arr):
        return paired.clopper_pearson(float(mean.sum()), mean.size).scaled(factor), len(keys)
    strata = [k[0] for k in keys]
    found = (paired.stratified_mean_interval(mean, strata) if len(set(strata)) > 1 else paired.mean_interval(mean))
    return (None if found is None else found.scaled(factor)), len(keys)


def compare_view(view, runs: Sequence, tol: Tolerance, resamples: int = paired.RESAMPLES,
                 seed: int = paired.BOOTSTRAP_SEED, cluster: bool = False) -> TaskComparison:
    """The paired comparison of every compressed cell in ``view`` (a tables.TaskView) against dense."""
    model_runs = [r for r in runs if r.model == view.model and view.task in r.results]
    factor = 100.0 if view.scaled else 1.0
    name, metric_filter = (view.metric.split(",", 1) + ["none"])[:2]
    dense_run = next((r for r in model_runs if r.setting.is_dense), None)
    out = TaskComparison(view.model, view.task, view.metric, view.scaled, view.higher_better, view.dense)
    dense_items = run_items(dense_run, view.task, metric_filter) if dense_run is not None else None
    if dense_items:
        out.n = len(dense_items)
        out.dense_interval, out.dense_n = own_interval([dense_items], name, factor)
        out.chance = _chance(dense_items, name, factor) if view.higher_better else 0.0
    out.width = tol.width(view.dense, out.chance) if view.dense is not None else None
    cells: dict[tuple, list] = {}
    for run in model_runs:
        if not run.setting.is_dense:
            cells.setdefault((run.setting, run.sparsity), []).append(run)
    for (setting, sparsity), cell_runs in cells.items():
        cell_runs = sorted(cell_runs, key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0))
        scores = [r.results[view.task].get(view.metric) for r in cell_runs]
        scores = [float(s) * factor for s in scores if isinstance(s, (int, float)) and math.isfinite(s)]
        mean, sd = paired.seed_mean_sd(scores) if scores else (None, None)
        cell = CellComparison(setting, sparsity, [r.seed for r in cell_runs], mean, sd)
        out.cells.append(cell)
        seed_items = [run_items(r, view.task, metric_filter) for r in cell_runs]
        if all(items for items in seed_items):  # the score's own uncertainty, with or without a dense run
            cell.score_interval, cell.score_n = own_interval(seed_items, name, factor)
        if dense_run is None:
            cell.reason = NO_DENSE
            continue
        if dense_items is None:
            cell.reason = "dense run: " + RERUN_SAMPLES
            continue
        if any(items is None for items in seed_items):
            cell.reason = RERUN_SAMPLES
            continue
        compare_cell(cell, dense_items, seed_items, name, factor, out.width, view.higher_better, resamples, seed,
                     view.dense, cluster)
        if cell.reason is None and any(cell.dropped):
            cell.reason = _dropped_note(cell)
    out.cells.sort(key=lambda c: (c.setting.method, c.setting.pattern, c.setting.wbits, c.sparsity))
    return out


def _dropped_note(cell: CellComparison) -> str:
    dense, own = cell.dropped
    return (f"paired on the {cell.n} items defined in both runs; dropped {dense} of dense's and {own} of this cell's "
            "(items missing on one side — another --limit — or without a value, e.g. an unparsed judge reply)")


# --------------------------------------------------------------------------- fidelity on held-out text
@dataclass
class FidelityRow:
    """kick-hf's KL / top-1 agreement / perplexities for one cell (means over seeds, intervals over windows and seeds)."""

    setting: Any
    sparsity: float
    seeds: int
    kl: Interval | None
    top1: Interval | None
    ppl_dense: float | None
    ppl_compressed: float | None
    ppl_sd: float | None
    tokens: int | None
    windows: int | None
    top_k: int | None
    seconds: float | None
    missing: str | None = None


def fidelity_rows(runs: Sequence, model: str, resamples: int = paired.RESAMPLES,
                  seed: int = paired.BOOTSTRAP_SEED) -> list[FidelityRow]:
    """One row per (setting, sparsity) of ``model``; t intervals over the text's windows (seeds averaged first)."""
    from kick_models.fidelity import KL_FORMAT  # lazily: kick_models.fidelity imports torch
    groups: dict[tuple, list] = {}
    for run in runs:
        if run.model == model:
            groups.setdefault((run.setting, run.sparsity), []).append(run)
    rows = []
    for (setting, sparsity), cell_runs in groups.items():
        fids = [r.extra.get("fidelity") for r in cell_runs]
        fids = [f for f in fids if isinstance(f, dict) and f.get("kl_windows")]
        if fids and any(f.get("kl_format") != KL_FORMAT for f in fids):
            rows.append(FidelityRow(setting, sparsity, len(cell_runs), None, None, None, None, None, None, None, None,
                                    None, missing=STALE_KL))
            continue
        if not fids:
            why = cell_runs[0].extra.get("no_kl")  # a run made elsewhere says why it has none
            rows.append(FidelityRow(setting, sparsity, len(cell_runs), None, None, None, None, None, None, None, None,
                                    None, missing=why or "not measured (results from before kick-hf measured fidelity, or "
                                    "fidelity=false, or a cache entry that predates it; rerun with no_cache=true)"))
            continue
        windows = min(len(f["kl_windows"]) for f in fids)
        kl = window_interval([f["kl_windows"][:windows] for f in fids], bounds=(0.0, math.inf))
        top1 = window_interval([f["top1_windows"][:windows] for f in fids], bounds=(0.0, 1.0))
        ppl_mean, ppl_sd = paired.seed_mean_sd([f["ppl_compressed"] for f in fids])
        rows.append(FidelityRow(setting, sparsity, len(fids), kl, top1, float(fids[0]["ppl_dense"]), ppl_mean, ppl_sd,
                                int(fids[0]["tokens"]), windows, int(fids[0]["top_k"]),
                                float(np.mean([f["seconds"] for f in fids]))))
    rank = method_names()  # the registry's order, as the task tables use it
    rows.sort(key=lambda r: (not r.setting.is_dense, r.setting.is_external, r.setting.wbits != 16,
                             r.setting.pattern != "unstructured",
                             r.setting.pattern,
                             rank.index(r.setting.method) if r.setting.method in rank else len(rank), r.sparsity))
    return rows
