"""Pair every compressed cell with the dense cell of its base model, item by item, and compute its verdict.

A cell's runs (one per calibration seed) are matched to the dense run of the same model on the
same documents (task, doc_id, doc_hash). Groups (``kick_mmlu``, its categories) pool the items of
all their leaf tasks. When pairing is impossible — no dense run, no samples files, different item
sets, a metric without per-item values — the row keeps its score and says why, and how to rerun.
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


@dataclass
class CellComparison:
    """One (task, compressed setting, sparsity) against dense: scores across seeds and the paired statistics."""

    setting: Any
    sparsity: float
    seeds: list[Any]
    score: float | None  # display units, mean over seeds
    score_sd: float | None = None
    n: int | None = None
    diff: Interval | None = None  # compressed − dense, display units, items (and seeds) resampled
    verdict: str | None = None
    better: bool = False
    flips: paired.Flips | None = None
    retention: Interval | None = None
    mcnemar_p: float | None = None
    agreement: float | None = None
    choice_kl: float | None = None
    reason: str | None = None  # why the paired columns are empty


@dataclass
class TaskComparison:
    """Dense and every compressed cell of one (model, task)."""

    model: str
    task: str
    metric: str
    scaled: bool
    higher_better: bool
    dense: float | None
    dense_interval: Interval | None = None
    n: int | None = None
    width: float | None = None
    cells: list[CellComparison] = field(default_factory=list)


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


def _values(items: dict, keys: Sequence[tuple], name: str) -> np.ndarray | None:
    out = []
    for key in keys:
        value = items[key].metrics.get(name)
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)):
            return None
        out.append(float(value))
    return np.asarray(out)


def _mismatch(dense_keys: set, keys: set) -> str:
    common = len(dense_keys & keys)
    return (f"item sets differ: dense has {len(dense_keys)} items, this cell {len(keys)} ({common} in common); "
            "rerun both with the same tasks and --limit (kick-sweep does) to pair them")


def compare_cell(cell: CellComparison, dense_items: dict, seed_items: list[dict], name: str, factor: float,
                 width: float, higher_better: bool, resamples: int, seed: int) -> None:
    """Fill ``cell``'s paired statistics from dense's items and each seed's items (same keys)."""
    keys = sorted(dense_items)
    dense = _values(dense_items, keys, name)
    per_seed = [_values(items, keys, name) for items in seed_items]
    if dense is None or any(v is None for v in per_seed):
        cell.reason = f"metric {name!r} has no numeric per-item value in the samples"
        return
    comp = np.stack(per_seed)  # [S, n]
    cell.n = len(keys)
    cell.diff = paired.paired_difference(dense, comp, resamples=resamples, seed=seed).scaled(factor)
    cell.verdict = paired.verdict(cell.diff, width, higher_better)
    cell.better = paired.is_better(cell.diff, width, higher_better)
    if paired.is_binary(dense) and paired.is_binary(comp):
        cell.flips = paired.flips(dense, comp)
        cell.mcnemar_p = cell.flips.mcnemar_p
        kept = dense > 0.5
        if kept.any():
            cell.retention = paired.bootstrap_mean(comp[:, kept], resamples=resamples, seed=seed)
    dense_answers = [dense_items[k].answer for k in keys]
    if all(a is not None for a in dense_answers):
        cell.agreement = float(np.mean([paired.agreement(dense_answers, [items[k].answer for k in keys])
                                        for items in seed_items]))
    if all(dense_items[k].choice_logliks is not None for k in keys):
        try:
            cell.choice_kl = float(np.mean([
                paired.choice_kl([dense_items[k].choice_logliks for k in keys],
                                 [items[k].choice_logliks for k in keys]).mean()
                for items in seed_items]))
        except ValueError:  # ragged option counts (several subjects): item by item instead
            cell.choice_kl = float(np.mean([
                np.mean([paired.choice_kl([dense_items[k].choice_logliks], [items[k].choice_logliks])[0] for k in keys])
                for items in seed_items]))


def compare_view(view, runs: Sequence, tol: Tolerance, resamples: int = paired.RESAMPLES,
                 seed: int = paired.BOOTSTRAP_SEED) -> TaskComparison:
    """The paired comparison of every compressed cell in ``view`` (a tables.TaskView) against dense."""
    model_runs = [r for r in runs if r.model == view.model and view.task in r.results]
    factor = 100.0 if view.scaled else 1.0
    name, metric_filter = (view.metric.split(",", 1) + ["none"])[:2]
    dense_run = next((r for r in model_runs if r.setting.is_dense), None)
    out = TaskComparison(view.model, view.task, view.metric, view.scaled, view.higher_better, view.dense)
    out.width = tol.width(view.dense, view.scaled) if view.dense is not None else None
    dense_items = run_items(dense_run, view.task, metric_filter) if dense_run is not None else None
    if dense_items:
        out.n = len(dense_items)
        dense_values = _values(dense_items, sorted(dense_items), name)
        if dense_values is not None:
            out.dense_interval = paired.bootstrap_mean(dense_values, resamples=resamples, seed=seed).scaled(factor)
    cells: dict[tuple, list] = {}
    for run in model_runs:
        if not run.setting.is_dense:
            cells.setdefault((run.setting, run.sparsity), []).append(run)
    for (setting, sparsity), cell_runs in cells.items():
        cell_runs = sorted(cell_runs, key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0))
        scores = [r.results[view.task].get(view.metric) for r in cell_runs]
        scores = [float(s) * factor for s in scores if isinstance(s, (int, float))]
        mean, sd = paired.seed_mean_sd(scores) if scores else (None, None)
        cell = CellComparison(setting, sparsity, [r.seed for r in cell_runs], mean, sd)
        out.cells.append(cell)
        if dense_run is None:
            cell.reason = NO_DENSE
            continue
        if dense_items is None:
            cell.reason = "dense run: " + RERUN_SAMPLES
            continue
        seed_items = [run_items(r, view.task, metric_filter) for r in cell_runs]
        if any(items is None for items in seed_items):
            cell.reason = RERUN_SAMPLES
            continue
        bad = next((items for items in seed_items if set(items) != set(dense_items)), None)
        if bad is not None:
            cell.reason = _mismatch(set(dense_items), set(bad))
            continue
        compare_cell(cell, dense_items, seed_items, name, factor, out.width, view.higher_better, resamples, seed)
    out.cells.sort(key=lambda c: (c.setting.method, c.setting.pattern, c.setting.wbits, c.sparsity))
    return out


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
            rows.append(FidelityRow(setting, sparsity, len(cell_runs), None, None, None, None, None, None, None, None,
                                    None, missing="not measured (results from before kick-hf measured fidelity, or "
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
    rows.sort(key=lambda r: (not r.setting.is_dense, r.setting.wbits != 16, r.setting.pattern != "unstructured",
                             r.setting.pattern,
                             rank.index(r.setting.method) if r.setting.method in rank else len(rank), r.sparsity))
    return rows
