"""The noise floor: how far results move when only the numerics change (thread count, batch size), measured.

Same-command reruns are bit-identical, so one run hides how much of a cell's difference from
dense the floats alone make: a different torch thread count changes the reduction order of the
calibration statistics and of every matmul, a different batch size changes padding and kernels.
With ``noise_floor: true`` kick-sweep adds, per model, two cells run under other numerics:

* **dense** again (``floor=dense``): its items paired with dense's give the flips, score change
  and held-out KL(dense ‖ dense') that numerics alone produce;
* the **cheapest calibrating cell** (at its largest sparsity) compressed again, bypassing the cache (``floor=recompressed``):
  paired with the cell as first compressed, it shows how far a recompression alone moves it.

kick-hf records ``config.kick.numerics`` (threads, batch size, device, dtype, torch, floor role)
in every results file, so any two runs can be told apart. The report puts both floor rows next to
the cells and says which cells' differences from dense lie within the floor.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

ROLE_DENSE, ROLE_RECOMPRESSED = "dense", "recompressed"


# --------------------------------------------------------------------------- planning (kick-sweep)
def other_threads(threads: int) -> int:
    """The floor's thread count: 1 when the cells run multi-threaded, else 2."""
    return 1 if threads > 1 else 2


def other_batch_size(batch_size: Any) -> int:
    """The floor's lm-eval batch size: 2 for a batch size of 1, else 1 ("auto" included)."""
    try:
        return 2 if int(str(batch_size)) == 1 else 1
    except ValueError:
        return 1


def calibration_cost(method: str, wbits: int) -> tuple[int, int] | None:
    """A rough cost rank of a cell's calibration (Hessians cost most), or None when it calibrates on nothing."""
    from kick_models.compression.registry import get_method, required_stats

    if method == "none":
        return None
    stats = required_stats(get_method(method), wbits < 16)
    return (int("hessian" in stats), len(stats)) if stats else None


def _redo(cell, role: str, threads: int, batch_size: int):
    from kick_common.args import format_kv, parse_kv

    args = parse_kv(cell.model_args)
    args["floor"] = role
    if role == ROLE_RECOMPRESSED:
        args["no_cache"] = "true"  # compress again under the new numerics, never load the first result
    return dataclasses.replace(cell, model_args=format_kv(args), threads=threads, batch_size=batch_size, floor=role)


def floor_cells(cells: Sequence, threads: int, batch_size: Any) -> list:
    """Per model: dense again and its cheapest calibrating cell again, both with other threads and batch size."""
    out = []
    floor_threads, floor_batch = other_threads(threads), other_batch_size(batch_size)
    for model in dict.fromkeys(c.model for c in cells):
        mine = [c for c in cells if c.model == model and c.floor is None]
        out += [_redo(c, ROLE_DENSE, floor_threads, floor_batch) for c in mine[:1] if c.method == "none"]
        # same cost, the largest sparsity: where the rerun with another thread count moved most
        ranked = [(cost, -c.sparsity, i) for i, c in enumerate(mine)
                  if (cost := calibration_cost(c.method, c.wbits)) is not None]
        if ranked:
            out.append(_redo(mine[min(ranked)[-1]], ROLE_RECOMPRESSED, floor_threads, floor_batch))
    return out


# --------------------------------------------------------------------------- report (kick-report)
@dataclasses.dataclass
class FloorPair:
    """One task's items under two numerics: the reference run's against the floor run's."""

    label: str
    task: str
    comparison: Any  # kick_study.comparison.CellComparison: Δ [CI], verdict, agreement, choice KL
    discordant: int | None  # items whose 0/1 outcome changed (None: not a 0/1 metric)
    delta: float | None  # floor − reference, display units


def load_floor_runs(root: Path) -> list:
    """The runs under ``root`` whose results say ``config.kick.numerics.floor``."""
    from kick_study.runs import parse_run

    out = []
    for path in sorted(root.rglob("results_*.json")):
        try:
            run = parse_run(path)
        except Exception:  # noqa: BLE001 — load_runs has already warned about unreadable files
            continue
        if run.floor:
            out.append(run)
    return out


def _numerics_text(run) -> str:
    numerics = run.extra.get("numerics") or {}
    if not numerics:
        return "not recorded"
    threads = numerics.get("torch_threads")
    return f"{threads} thread{'s' if threads != 1 else ''}, batch {numerics.get('batch_size')}"


def _binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


def _pair(label: str, ref_run, floor_run, task_comp, resamples: int, seed: int) -> FloorPair | None:
    """Pair ``floor_run``'s items of one task with ``ref_run``'s, as the report pairs a cell with dense."""
    from kick_study.comparison import CellComparison, compare_cell, run_items

    name, metric_filter = (task_comp.metric.split(",", 1) + ["none"])[:2]
    ref, other = run_items(ref_run, task_comp.task, metric_filter), run_items(floor_run, task_comp.task, metric_filter)
    if not ref or not other or set(ref) != set(other):
        return None
    keys = sorted(ref)
    try:
        a = np.asarray([float(ref[k].metrics[name]) for k in keys])
        b = np.asarray([float(other[k].metrics[name]) for k in keys])
    except (KeyError, TypeError, ValueError):
        return None
    cell = CellComparison(floor_run.setting, floor_run.sparsity, [floor_run.seed], None)
    factor = 100.0 if task_comp.scaled else 1.0
    compare_cell(cell, ref, [other], name, factor, task_comp.width or 0.0, task_comp.higher_better, resamples, seed)
    discordant = int(np.sum((a > 0.5) != (b > 0.5))) if _binary(a) and _binary(b) else None
    return FloorPair(label, task_comp.task, cell, discordant, float(np.mean(b - a)) * factor)


def _cell_discordance(model: str, runs: Sequence, task_comp, cell) -> tuple[float | None, float | None]:
    """(items changed vs dense, mean over seeds; |Δ| vs dense) of one compressed cell, from its samples."""
    from kick_study.comparison import run_items

    name, metric_filter = (task_comp.metric.split(",", 1) + ["none"])[:2]
    dense_run = next((r for r in runs if r.model == model and r.setting.is_dense and task_comp.task in r.results), None)
    cell_runs = [r for r in runs if r.model == model and r.setting == cell.setting and r.sparsity == cell.sparsity
                 and task_comp.task in r.results]
    dense = run_items(dense_run, task_comp.task, metric_filter) if dense_run else None
    if not dense or not cell_runs:
        return None, None
    keys = sorted(dense)
    changed, deltas = [], []
    for run in cell_runs:
        items = run_items(run, task_comp.task, metric_filter)
        if not items or set(items) != set(dense):
            return None, None
        try:
            a = np.asarray([float(dense[k].metrics[name]) for k in keys])
            b = np.asarray([float(items[k].metrics[name]) for k in keys])
        except (KeyError, TypeError, ValueError):
            return None, None
        changed.append(float(np.sum((a > 0.5) != (b > 0.5))) if _binary(a) and _binary(b) else math.nan)
        deltas.append(float(np.mean(b - a)) * (100.0 if task_comp.scaled else 1.0))
    mean_changed = float(np.mean(changed))
    return (None if math.isnan(mean_changed) else mean_changed), abs(float(np.mean(deltas)))


def _fmt_interval(iv, signed: bool) -> str:
    if iv is None:
        return "—"
    form = "{:+.1f}" if signed else "{:.1f}"
    return f"{form.format(iv.estimate)} [{form.format(iv.low)}, {form.format(iv.high)}]"


def _task_rows(pairs: Sequence[FloorPair]) -> list[str]:
    lines = ["| floor | task | n | items changed | Δ [95% CI] | verdict | agreement | choice KL |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    for p in pairs:
        c = p.comparison
        agree = "—" if c.agreement is None else f"{c.agreement * 100:.0f}%"
        kl = "—" if c.choice_kl is None else f"{c.choice_kl:.3g}"
        changed = "—" if p.discordant is None else str(p.discordant)
        lines.append(f"| {p.label} | {p.task} | {c.n if c.n is not None else '—'} | {changed} | "
                     f"{_fmt_interval(c.diff, signed=True)} | {c.verdict or '—'} | {agree} | {kl} |")
    return lines


def _kl_text(fid: Mapping | None) -> str:
    """``KL [95% CI] nats/token, top-1 x%`` of one run's held-out fidelity."""
    if not isinstance(fid, Mapping) or not isinstance(fid.get("kl_mean"), (int, float)):
        return "not measured"
    from kick_study.heldout import window_interval

    iv = window_interval(fid.get("kl_windows") or [fid["kl_mean"]], bounds=(0.0, math.inf))
    top1 = fid.get("top1_agreement")
    return (f"{iv.estimate:.4g} [{iv.low:.4g}, {iv.high:.4g}]"
            + (f", top-1 {top1 * 100:.1f}%" if isinstance(top1, (int, float)) else ""))


def _kl_line(label: str, numerics: str, role: str, ref, floor_run) -> str:
    fid = floor_run.extra.get("fidelity")
    if role == ROLE_DENSE:
        return f"- {label} ({numerics}): held-out KL(dense ‖ dense') {_kl_text(fid)}"
    first = ref.extra.get("fidelity")
    shift = ""
    if isinstance(fid, Mapping) and isinstance(first, Mapping) and all(
            isinstance(f.get("kl_mean"), (int, float)) for f in (fid, first)):
        shift = f"; shift {fid['kl_mean'] - first['kl_mean']:+.3g}"
    return (f"- {label} ({numerics}): held-out KL(dense ‖ compressed) first {_kl_text(first)}; "
            f"recompressed {_kl_text(fid)}{shift}")


def _within(model: str, runs: Sequence, comparisons: Mapping, pairs: Sequence[FloorPair]) -> list[str]:
    """One line per task: which cells' differences from dense are no larger than numerics alone make."""
    lines = []
    for (m, task), task_comp in comparisons.items():
        floor = [p for p in pairs if p.task == task]
        if m != model or not floor:
            continue
        binary = all(p.discordant is not None for p in floor)
        limit = max((p.discordant if binary else abs(p.delta or 0.0)) for p in floor)
        inside, outside = [], []
        for cell in sorted(task_comp.cells, key=lambda c: (c.setting.label, c.sparsity)):
            changed, delta = _cell_discordance(model, runs, task_comp, cell)
            value = changed if binary else delta
            if value is None:
                continue
            shown = f"{cell.setting.label} {cell.sparsity * 100:g}% ({value:.3g})"
            (inside if value <= limit else outside).append(shown)
        unit = "items changed vs dense" if binary else "|Δ| vs dense"
        lines.append(f"- {task} ({unit}; floor {limit:.3g}): within the floor — {', '.join(inside) or 'none'}; "
                     f"beyond it — {', '.join(outside) or 'none'}")
    return lines


def floor_section(root: Path, model: str, runs: Sequence, comparisons: Mapping, fid_rows: Sequence = (),
                  resamples: int | None = None, seed: int | None = None) -> list[str]:
    """The report's noise-floor section for ``model`` (empty when the folder holds no floor runs)."""
    from kick_study import paired

    resamples = paired.RESAMPLES if resamples is None else resamples
    seed = paired.BOOTSTRAP_SEED if seed is None else seed
    floor_runs = [r for r in load_floor_runs(Path(root)) if r.model == model]
    if not floor_runs:
        return []
    mine = [r for r in runs if r.model == model]
    dense = next((r for r in mine if r.setting.is_dense), None)
    pairs: list[FloorPair] = []
    kl_lines = []
    for floor_run in floor_runs:
        if floor_run.floor == ROLE_DENSE:
            ref, label = dense, "dense vs dense"
        else:
            ref = next((r for r in mine if (r.setting, r.sparsity, r.seed) ==
                        (floor_run.setting, floor_run.sparsity, floor_run.seed)), None)
            label = f"{floor_run.setting.label} {floor_run.sparsity * 100:g}% vs recompressed"
        if ref is None:
            kl_lines.append(f"- {label}: the run it repeats is missing from the folder")
            continue
        numerics = f"{_numerics_text(ref)} → {_numerics_text(floor_run)}"
        for task_comp in (c for (m, _), c in comparisons.items() if m == model):
            pair = _pair(label, ref, floor_run, task_comp, resamples, seed)
            if pair is not None:
                pairs.append(pair)
        kl_lines.append(_kl_line(label, numerics, floor_run.floor, ref, floor_run))
    lines = ["### Noise floor: what numerics alone change", "",
             "Dense evaluated again, and one calibrating cell compressed again (cache bypassed), under another "
             "thread count and batch size; each paired item by item with the run it repeats. Differences here "
             "come from floating-point reduction order only: a cell whose difference from dense is no larger "
             "cannot be told apart from dense by these numbers.", ""]
    if pairs:
        lines += [*_task_rows(pairs), ""]
    lines += [*kl_lines, ""]
    within = _within(model, mine, comparisons, pairs)
    if within:
        lines += ["Cells within the floor (as many items changed vs dense as numerics alone change, or fewer):", "",
                  *within, ""]
    cost = floor_seconds(Path(root))
    if cost is not None:
        lines += [f"Cost of the floor: {cost[1]} extra cell{'s' if cost[1] != 1 else ''}, {cost[0]:.0f} s "
                  "(from index.json).", ""]
    kl_floor = _dense_kl_floor(floor_runs)
    if kl_floor is not None:
        below = [f"{r.setting.label} {r.sparsity * 100:g}%" for r in fid_rows
                 if getattr(r, "kl", None) is not None and not r.setting.is_dense and r.kl.estimate <= kl_floor]
        lines += [f"Held-out KL floor (dense vs dense'): {kl_floor:.4g} nats/token; cells at or below it: "
                  f"{', '.join(below) or 'none'}.", ""]
    return lines


def _dense_kl_floor(floor_runs: Sequence) -> float | None:
    for run in floor_runs:
        fid = run.extra.get("fidelity")
        if run.floor == ROLE_DENSE and isinstance(fid, Mapping) and isinstance(fid.get("kl_mean"), (int, float)):
            return float(fid["kl_mean"])
    return None


def floor_seconds(root: Path) -> tuple[float, int] | None:
    """(seconds, cells) the sweep's floor cells took, from ``index.json``; None without a sweep index."""
    import json

    try:
        cells = json.loads((root / "index.json").read_text(encoding="utf-8")).get("cells", {})
        timed = [float(c["seconds"]) for c in cells.values() if isinstance(c, dict) and c.get("floor") and c.get("seconds")]
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None
    return (sum(timed), len(timed)) if timed else None
