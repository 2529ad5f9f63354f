"""Score-vs-sparsity curves, the "still matches dense" statistic, and their Markdown tables.

Matching follows LLM-KICK: a compressed model matches when it is no worse than dense by more than
a tolerance, ``max(abs_tol points, rel_tol × dense)`` (default 1 point or 2% relative). Metrics
in [0, 1] where higher is better (accuracy, exact match) are shown in points (× 100);
lower-is-better metrics (perplexity) keep their scale and use the relative tolerance only. The
largest matching sparsity of a line is the largest sparsity up to which *every* point matches,
so one lucky point after a collapse does not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from kick_models.compression.registry import is_quantizer, method_names
from kick_study.runs import (
    Run,
    Setting,
    higher_is_better,
    primary_metric,
    score,
    top_level_tasks,
)


@dataclass(frozen=True)
class Tolerance:
    abs_points: float = 1.0
    rel: float = 0.02

    def width(self, dense: float, scaled: bool) -> float:
        """Half-width of the matching band around ``dense`` (in the displayed unit)."""
        return max(self.abs_points if scaled else 0.0, self.rel * abs(dense))


@dataclass
class Curve:
    setting: Setting
    points: list[tuple[float, float]]  # (sparsity, displayed value), sorted by sparsity


@dataclass
class TaskView:
    """Everything one table and one plot need for one (model, task)."""

    model: str
    task: str
    metric: str
    higher_better: bool
    scaled: bool
    dense: float | None
    curves: list[Curve] = field(default_factory=list)

    @property
    def metric_name(self) -> str:
        return self.metric.split(",")[0] + (" (points)" if self.scaled else "")

    def band(self, tol: Tolerance) -> tuple[float, float] | None:
        if self.dense is None:
            return None
        width = tol.width(self.dense, self.scaled)
        return self.dense - width, self.dense + width


def matches(value: float, dense: float, width: float, higher_better: bool) -> bool:
    """No worse than dense by more than ``width`` (better is always a match)."""
    return value >= dense - width if higher_better else value <= dense + width


def largest_matching_sparsity(points: Sequence[tuple[float, float]], dense: float, width: float,
                              higher_better: bool) -> float | None:
    """Largest sparsity s such that every point at sparsity ≤ s matches dense; None if the first fails."""
    best = None
    for sparsity, value in sorted(points):
        if not matches(value, dense, width, higher_better):
            break
        best = sparsity
    return best


def _scaled(values: list[float], higher_better: bool) -> bool:
    return higher_better and bool(values) and all(0.0 <= v <= 1.0 for v in values)


def build_views(runs: list[Run], metric_overrides: Mapping[str, str] | None = None) -> list[TaskView]:
    """One :class:`TaskView` per (model, top-level task), dense value and one curve per setting."""
    views = []
    for model in sorted({r.model for r in runs}):
        model_runs = [r for r in runs if r.model == model]
        for task in top_level_tasks(model_runs):
            metric = primary_metric(task, model_runs, metric_overrides)
            if metric is None:
                continue
            hib = higher_is_better(model_runs, task, metric)
            raw = [(r, score(r, task, metric)) for r in model_runs]
            raw = [(r, v) for r, v in raw if v is not None]
            scaled = _scaled([v for _, v in raw], hib)
            factor = 100.0 if scaled else 1.0
            dense = next((v * factor for r, v in raw if r.setting.is_dense), None)
            by_setting: dict[Setting, list[tuple[float, float]]] = {}
            for r, v in raw:
                if not r.setting.is_dense:
                    by_setting.setdefault(r.setting, []).append((r.sparsity, v * factor))
            curves = [Curve(s, sorted(p)) for s, p in sorted(by_setting.items(), key=lambda kv: _order(kv[0]))]
            views.append(TaskView(model, task, metric, hib, scaled, dense, curves))
    return views


def _order(setting: Setting) -> tuple:
    methods = method_names()  # the registry's order: built-ins, then plug-ins
    rank = methods.index(setting.method) if setting.method in methods else len(methods)
    return (setting.wbits != 16, -setting.wbits, setting.pattern != "unstructured", setting.pattern, rank, setting.method)


def _fmt(value: float | None, scaled: bool) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if scaled else f"{value:.2f}" if abs(value) < 1e5 else f"{value:.3g}"


def _pct(sparsity: float) -> str:
    return f"{sparsity * 100:g}%"


def markdown_table(view: TaskView) -> str:
    """Rows: dense then each method/pattern/bits; columns: every sparsity seen for this task."""
    columns = sorted({0.0} | {s for c in view.curves for s, _ in c.points})
    header = "| setting | " + " | ".join(_pct(s) for s in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    rows = [("dense", {0.0: view.dense} if view.dense is not None else {})]
    rows += [(c.setting.label, dict(c.points)) for c in view.curves]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(values.get(s), view.scaled) for s in columns) + " |")
    return "\n".join(lines)


def matching_summary(views: Sequence[TaskView], tol: Tolerance) -> dict[str, dict[str, float | None]]:
    """setting label → task → largest sparsity still matching dense (None: not even the first point)."""
    out: dict[str, dict[str, float | None]] = {}
    for view in views:
        if view.dense is None:
            continue
        width = tol.width(view.dense, view.scaled)
        for curve in view.curves:
            out.setdefault(curve.setting.label, {})[view.task] = largest_matching_sparsity(
                curve.points, view.dense, width, view.higher_better)
    return out


def matching_table(views: Sequence[TaskView], tol: Tolerance) -> str:
    """Rows: settings; columns: tasks; cells: the largest sparsity still matching dense."""
    summary = matching_summary(views, tol)
    tasks = [v.task for v in views if v.dense is not None and v.curves]
    tasks = list(dict.fromkeys(tasks))
    if not summary or not tasks:
        return "_No compressed runs with a dense baseline to compare against._"
    lines = ["| setting | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    quantizers = {c.setting.label for v in views for c in v.curves if is_quantizer(c.setting.method)}
    for label, per_task in summary.items():
        cells = []
        for task in tasks:
            if task not in per_task:
                cells.append("—")
            else:
                value = per_task[task]
                if label in quantizers:  # quantization only: no sparsity axis, just yes / no
                    cells.append("matches" if value is not None else "no")
                else:
                    cells.append("none" if value is None else _pct(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_breakdown(runs: list[Run], metric_overrides: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(title, Markdown table) per MMLU-like group whose subtasks are themselves groups (categories)."""
    out = []
    for model in sorted({r.model for r in runs}):
        model_runs = [r for r in runs if r.model == model]
        groups: dict[str, list[str]] = {}
        for run in model_runs:
            for group, subs in run.group_subtasks.items():
                cats = [s for s in subs if s in run.group_subtasks]
                if "mmlu" in group.lower() and cats:
                    groups.setdefault(group, cats)
        for group, cats in groups.items():
            metric = primary_metric(group, model_runs, metric_overrides) or "acc,none"
            lines = ["| setting | sparsity | " + " | ".join(cats) + " |", "|---|---:|" + "---:|" * len(cats)]
            ordered = sorted(model_runs, key=lambda r: (not r.setting.is_dense, _order(r.setting), r.sparsity))
            for run in ordered:
                if group not in run.results:
                    continue
                values = [score(run, c, metric) for c in cats]
                shown = [_fmt(v * 100 if v is not None and 0 <= v <= 1 else v, True) for v in values]
                lines.append(f"| {run.setting.label} | {_pct(run.sparsity)} | " + " | ".join(shown) + " |")
            out.append((f"{group} by category ({model}, {metric.split(',')[0]}, points)", "\n".join(lines)))
    return out
