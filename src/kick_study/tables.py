"""Score-vs-sparsity curves, the "still matches dense" statistic, and their Markdown tables.

Matching follows LLM-KICK (§3, "Matching Compressed LLM"): a compressed model matches when it loses
no more than a tolerance of dense's performance — by default ε₀ = 5% of dense, relative;
``max(abs_tol points, rel_tol × dense)`` in general. With per-item samples the decision is :func:`kick_study.paired.decide` on
the paired interval of the difference (*matches*, *worse*, *inconclusive* or *too few items*);
without them it falls back to the point estimates (:func:`kick_study.paired.point_matches`) and says
so — the rule lives in :mod:`kick_study.paired` only. Metrics in [0, 1] where higher is better
(accuracy, exact match) are shown in points (× 100); others (perplexity) keep their own units.
The largest matching sparsity of a line is the largest sparsity up to which *every* point
matches, so one lucky point after a collapse does not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from kick_models.compression.registry import is_quantizer, method_names
from kick_study import paired
from kick_study.paired import LargestMatching, Tolerance, largest_matching
from kick_study.runs import (
    Run,
    Setting,
    higher_is_better,
    primary_metric,
    score,
    top_level_tasks,
)


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

    def band(self, tol: Tolerance, chance: float = 0.0) -> tuple[float, float] | None:
        if self.dense is None:
            return None
        width = tol.width(self.dense, chance)
        return self.dense - width, self.dense + width


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
            seeds: dict[tuple[Setting, float], list[float]] = {}
            for r, v in raw:
                if not r.setting.is_dense:
                    seeds.setdefault((r.setting, r.sparsity), []).append(v * factor)
            by_setting: dict[Setting, list[tuple[float, float]]] = {}
            for (setting, sparsity), values in seeds.items():  # several calibration seeds: their mean
                by_setting.setdefault(setting, []).append((sparsity, sum(values) / len(values)))
            curves = [Curve(s, sorted(p)) for s, p in sorted(by_setting.items(), key=lambda kv: _order(kv[0]))]
            views.append(TaskView(model, task, metric, hib, scaled, dense, curves))
    return views


def _order(setting: Setting) -> tuple:
    methods = method_names()  # the registry's order: built-ins, then plug-ins
    rank = methods.index(setting.method) if setting.method in methods else len(methods)
    return (setting.is_external, setting.wbits != 16, -setting.wbits, setting.pattern != "unstructured", setting.pattern,
            rank, setting.method, setting.source)  # models kick did not compress come after its own methods


def _fmt(value: float | None, scaled: bool) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if scaled else f"{value:.2f}" if abs(value) < 1e5 else f"{value:.3g}"


def _pct(sparsity: float) -> str:
    return f"{sparsity * 100:g}%"


def _cell_index(comp) -> dict:
    return {} if comp is None else {(c.setting, c.sparsity): c for c in comp.cells}


def _fmt_range(low: float, high: float, scaled: bool) -> str:
    return f"[{_fmt(low, scaled)}, {_fmt(high, scaled)}]"


def _own_text(value: float | None, iv, n: int | None, scaled: bool, n_shown: int | None) -> str:
    """A score with its own 95% interval; its n when it stands on other items than the table names."""
    text = _fmt(value, scaled)
    if value is None or iv is None:
        return text
    text += " " + _fmt_range(iv.low, iv.high, scaled)
    return text + (f" (n = {n})" if n is not None and n != n_shown else "")


def markdown_table(view: TaskView, comp=None) -> str:
    """Rows: dense then each method/pattern/bits; columns: every sparsity seen for this task.

    With a paired comparison (``comp``, a :class:`~kick_study.comparison.TaskComparison`) every
    score reads ``value [low, high]``, its own 95% interval over its own items (the n of dense's
    items unless the cell says otherwise), and a compressed cell adds its verdict. The difference
    from dense and its paired interval, on which the verdict rests, are in :func:`paired_table`.
    """
    columns = sorted({0.0} | {s for c in view.curves for s, _ in c.points})
    header = "| setting | " + " | ".join(_pct(s) for s in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    cells = _cell_index(comp)
    n_shown = None if comp is None else comp.n
    dense_text = (_fmt(view.dense, view.scaled) if comp is None
                  else _own_text(view.dense, comp.dense_interval, comp.dense_n, view.scaled, n_shown))
    lines.append("| dense | " + " | ".join(dense_text if s == 0.0 else "—" for s in columns) + " |")
    for curve in view.curves:
        values = dict(curve.points)
        shown = []
        for s in columns:
            cell = cells.get((curve.setting, s))
            if s in values and cell is not None:
                text = _own_text(values[s], cell.score_interval, cell.score_n, view.scaled, n_shown)
                text += f" {cell.shown}" if cell.decision is not None else ""
            else:
                text = _fmt(values.get(s), view.scaled)
            shown.append(text)
        lines.append(f"| {curve.setting.label} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def _fmt_interval(iv, scaled: bool, signed: bool = False) -> str:
    if iv is None:
        return "—"

    def f(v: float) -> str:
        if not signed:
            return _fmt(v, scaled)
        return f"{v:+.1f}" if scaled else f"{v:+.3g}"

    return f"{f(iv.estimate)} [{f(iv.low)}, {f(iv.high)}]"


def _pct_interval(iv) -> str:
    return "—" if iv is None else f"{iv.estimate * 100:.0f}% [{iv.low * 100:.0f}, {iv.high * 100:.0f}]"


def _needed(decision) -> str:
    if decision is None or decision.items_needed is None or decision.verdict in (paired.MATCHES, paired.WORSE):
        return "—"
    if decision.items_needed == float("inf"):
        return "never (estimate on the edge)"
    return f"≈ {decision.items_needed:,.0f}"


def _flips_text(flips) -> str:
    if flips is None:
        return "—"
    if len(flips.right_to_wrong) == 1:
        return f"{flips.right_to_wrong[0]} / {flips.wrong_to_right[0]}"
    sd_l, sd_g = flips.spread()
    return f"{flips.lost:.1f} ± {sd_l:.1f} / {flips.gained:.1f} ± {sd_g:.1f}"


def _diff_text(c, scaled: bool) -> str:
    text = _fmt_interval(c.diff, scaled, signed=True)
    if c.ratio is not None:
        text += f" (× {c.ratio.estimate:.3f} [{c.ratio.low:.3f}, {c.ratio.high:.3f}])"
    return text


def _verdict_text(c) -> str:
    if c.decision is None:
        return "—"
    text = f"{c.verdict} (better)" if c.better else c.verdict
    if c.adjusted is not None and c.adjusted != c.verdict:
        text += f"; adjusted: {c.adjusted}"
    return text


def _cell_notes(c) -> list[str]:
    label = f"{c.setting.label} {_pct(c.sparsity)}"
    notes = [f"{label}: {c.reason}"] if c.reason else []
    if c.decision is not None and c.decision.missing:
        notes.append(f"{label}: too few items — {c.decision.missing}")
    if c.heterogeneity is not None:
        q, df, hp, i2 = c.heterogeneity
        notes.append(f"{label}: heterogeneity across leaf tasks Q = {q:.1f} on {df} df, p = {hp:.2g}, I² = {i2:.0%}")
    return notes


def paired_table(comp) -> tuple[str, list[str]]:
    """The per-cell paired statistics against dense, and the notes of cells with something to say."""
    worse = "loses at most" if comp.higher_better else "rises at most"
    lines = ["| setting | sparsity | seeds | n | score [95% CI] (sd over seeds) | Δ vs dense [95% CI] | verdict | "
             f"{worse} (one-sided 97.5%) | items to decide | retention [95% CI] | accuracy on dense-wrong [95% CI] | "
             "flips right→wrong / wrong→right (per seed) | paired p | agreement (Cohen's κ) | choice KL |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes: list[str] = []
    for c in sorted(comp.cells, key=lambda c: (_order(c.setting), c.sparsity)):
        score_text = _own_text(c.score, c.score_interval, c.score_n, comp.scaled, c.n)
        score_text += f" ({_fmt(c.score_sd, comp.scaled)})" if c.score_sd is not None else ""
        d = c.decision
        margin = "—" if d is None or d.margin is None else _fmt(d.margin, comp.scaled)
        agree = "—" if c.agreement is None else f"{c.agreement * 100:.0f}%" + (
            f" (κ {c.kappa:.2f})" if c.kappa is not None else "")
        p = "—" if c.p_value is None else f"{c.p_value:.3g}"
        kl = "—" if c.choice_kl is None else f"{c.choice_kl:.3g}"
        lines.append(f"| {c.setting.label} | {_pct(c.sparsity)} | {len(c.seeds)} | {c.n if c.n is not None else '—'} | "
                     f"{score_text} | {_diff_text(c, comp.scaled)} | {_verdict_text(c)} | {margin} | {_needed(d)} | "
                     f"{_pct_interval(c.retention)} | {_pct_interval(c.dense_wrong)} | {_flips_text(c.flips)} | {p} | "
                     f"{agree} | {kl} |")
        notes += _cell_notes(c)
    return "\n".join(lines), notes


def pooled_table(comparisons: Mapping, model: str) -> str | None:
    """One decision per (setting, sparsity) across every paired task of ``model`` (see paired.pooled_decision)."""
    by_cell: dict[tuple, list] = {}
    for (m, _task), comp in comparisons.items():
        if m != model:
            continue
        for c in comp.cells:
            if c.decision is not None:
                by_cell.setdefault((c.setting, c.sparsity), []).append(c.decision)
    if not by_cell:
        return None
    lines = ["| setting | sparsity | tasks | pooled decision |", "|---|---:|---:|---|"]
    for (setting, sparsity), decisions in sorted(by_cell.items(), key=lambda kv: (_order(kv[0][0]), kv[0][1])):
        lines.append(f"| {setting.label} | {_pct(sparsity)} | {len(decisions)} | {paired.pooled_decision(decisions)} |")
    return "\n".join(lines)


def fidelity_table(rows) -> tuple[str, list[str]]:
    """kick-hf's held-out KL(dense ‖ compressed), top-1 agreement and perplexities per cell."""
    lines = ["| setting | sparsity | seeds | KL(dense ‖ compressed), nats/token [95% CI] | top-1 agreement [95% CI] | "
             "perplexity dense → compressed (± sd over seeds) | measurement (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for r in rows:
        label = "dense" if r.setting.is_dense else r.setting.label
        if r.kl is None:
            notes.append(f"{label} {_pct(r.sparsity)}: {r.missing}")
            continue
        kl = f"{r.kl.estimate:.4f} [{r.kl.low:.4f}, {r.kl.high:.4f}]"
        top1 = f"{r.top1.estimate * 100:.1f}% [{r.top1.low * 100:.1f}, {r.top1.high * 100:.1f}]"
        ppl = f"{r.ppl_dense:.2f} → {r.ppl_compressed:.2f}" + (f" ± {r.ppl_sd:.2f}" if r.ppl_sd is not None else "")
        lines.append(f"| {label} | {_pct(r.sparsity)} | {r.seeds} | {kl} | {top1} | {ppl} | {r.seconds:.1f} |")
    return "\n".join(lines), notes


def _curve_state(view: TaskView, curve: Curve, comp) -> LargestMatching | None:
    """The verdict-based statistic for one line, or None when some point has no paired verdict."""
    cells = _cell_index(comp)
    verdicts = []
    for sparsity, _ in curve.points:
        cell = cells.get((curve.setting, sparsity))
        if cell is None or cell.verdict is None:
            return None
        verdicts.append((sparsity, cell.shown))
    return largest_matching(verdicts)


def matching_summary(views: Sequence[TaskView], tol: Tolerance, comparisons: Mapping | None = None
                     ) -> tuple[dict[str, dict[str, str]], set[str]]:
    """setting label → task → the largest sparsity still matching dense, as shown; and the tasks
    decided on point estimates (no paired verdicts: no samples, or a lower-is-better metric)."""
    out: dict[str, dict[str, str]] = {}
    point_based: set[str] = set()
    for view in views:
        if view.dense is None:
            continue
        comp = (comparisons or {}).get((view.model, view.task))
        width = tol.width(view.dense, comp.chance if comp is not None else 0.0)
        for curve in view.curves:
            # quantization only, or a model kick did not compress: no sparsity axis
            quantizer = is_quantizer(curve.setting.method) or curve.setting.is_external
            state = _curve_state(view, curve, comp)
            if state is not None:
                if quantizer:
                    text = next(c.shown for c in comp.cells if c.setting == curve.setting)
                else:
                    text = state.describe(_pct)
            else:
                point_based.add(view.task)
                value = paired.largest_point_matching(curve.points, view.dense, width, view.higher_better)
                text = ("matches" if value is not None else "no") if quantizer else ("none" if value is None else _pct(value))
            out.setdefault(curve.setting.label, {})[view.task] = text
    return out, point_based


def matching_table(views: Sequence[TaskView], tol: Tolerance, comparisons: Mapping | None = None) -> str:
    """Rows: settings; columns: tasks; cells: the largest sparsity still matching dense."""
    summary, point_based = matching_summary(views, tol, comparisons)
    tasks = [v.task for v in views if v.dense is not None and v.curves]
    tasks = list(dict.fromkeys(tasks))
    if not summary or not tasks:
        return "_No compressed runs with a dense baseline to compare against._"
    lines = ["| setting | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for label, per_task in summary.items():
        lines.append(f"| {label} | " + " | ".join(per_task.get(task, "—") for task in tasks) + " |")
    decided = [t for t in tasks if t not in point_based]
    if decided:
        lines += ["", f"{', '.join(decided)}: each cell decided on its own (verdicts are per cell) by a one-sided "
                  "97.5% non-inferiority test on the paired interval of the difference from dense; \"≥ X "
                  "(inconclusive at Y)\" means every point up to X matches and the interval at Y straddles the "
                  "tolerance; \"too few items at Y\" means Y has less evidence than a verdict needs."]
    if point_based:
        lines += ["", f"{', '.join(t for t in tasks if t in point_based)}: decided on point estimates "
                  "(runs without per-item samples) — no uncertainty is taken into account."]
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
