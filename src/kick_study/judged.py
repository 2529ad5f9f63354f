"""Pairwise judging of each compressed cell's generated answers against dense's answers on the same prompts.

The question LLM-KICK asks of its generative tasks is "what does compression lose?"; the fairest
reference for a compressed model is therefore its own dense parent. Each prompt is judged in both
orders through kick's judge client (cached verdicts, retries); a verdict counts only when both
orders agree, else it is a tie (see :mod:`kick_tasks.judge.grading`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from kick_study import paired
from kick_study.comparison import run_items

log = logging.getLogger(__name__)

JUDGED_PREFIXES = ("kick_instruct", "kick_summarization", "kick_mtbench")
_POINTS = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass
class JudgedCell:
    """Win / tie / loss of one cell against dense, over its seeds' items."""

    setting: object
    sparsity: float
    summary: dict | None
    score: paired.Interval | None  # win 1, tie ½, loss 0 per judged item: 0.5 = no different from dense
    reason: str | None = None


def outcome_rates(records: Sequence[dict]) -> dict:
    """Win / tie / loss / inconsistent shares over the judged items, and counts of those without an outcome."""
    judged = [r for r in records if r["outcome"] is not None]

    def share(pred) -> float | None:
        return sum(1 for r in judged if pred(r)) / len(judged) if judged else None

    return {"items": len(records), "judged": len(judged),
            "win_rate": share(lambda r: r["outcome"] == "win"), "tie_rate": share(lambda r: r["outcome"] == "tie"),
            "loss_rate": share(lambda r: r["outcome"] == "loss"),
            "inconsistency_rate": share(lambda r: not r["consistent"]),
            "unparsed": sum(1 for r in records if r["status"] == "unparsed"),
            "failed": sum(1 for r in records if r["status"] == "failed")}


def judged_tasks(views: Sequence, wanted: Sequence[str] | None = None) -> list:
    """The views to judge: ``wanted`` task names, else the judged generative families."""
    if wanted:
        return [v for v in views if v.task in wanted]
    return [v for v in views if v.task.startswith(JUDGED_PREFIXES)]


def judge_view(client, view, runs: Sequence) -> list[JudgedCell]:
    """Grade every compressed cell of ``view`` against the dense run's answers, prompt by prompt."""
    from kick_tasks.judge.grading import PairwiseItem, grade_pairwise

    model_runs = [r for r in runs if r.model == view.model and view.task in r.results]
    metric_filter = (view.metric.split(",", 1) + ["none"])[1]
    dense = next((r for r in model_runs if r.setting.is_dense), None)
    dense_items = run_items(dense, view.task, metric_filter) if dense is not None else None
    cells: dict[tuple, list] = {}
    for run in model_runs:
        if not run.setting.is_dense:
            cells.setdefault((run.setting, run.sparsity), []).append(run)
    out = []
    for (setting, sparsity), cell_runs in sorted(cells.items(), key=lambda kv: (kv[0][0].label, kv[0][1])):
        if not dense_items:
            out.append(JudgedCell(setting, sparsity, None, None, "no dense run with samples to judge against"))
            continue
        records = []
        for run in cell_runs:
            items = run_items(run, view.task, metric_filter)
            if items is None or set(items) != set(dense_items):
                out_reason = "no samples" if items is None else "item sets differ from dense"
                records = None
                break
            keys = sorted(dense_items)
            pairs = [PairwiseItem(dense_items[k].prompt, items[k].response, dense_items[k].response) for k in keys]
            records += grade_pairwise(client, pairs, desc=f"judge {setting.label} {sparsity:g} vs dense")
        if records is None:
            out.append(JudgedCell(setting, sparsity, None, None, out_reason))
            continue
        summary = outcome_rates(records)
        points = [_POINTS[r["outcome"]] for r in records if r["outcome"] is not None]
        score = paired.mean_interval(points) if points else None
        out.append(JudgedCell(setting, sparsity, summary, score))
    return out


def judge_section(client, model: str, runs: Sequence, views: Sequence, tasks: Sequence[str] | None = None) -> list[str]:
    """Markdown: one table per judged task, win / tie / loss against dense with the judge score's interval."""
    lines: list[str] = []
    for view in judged_tasks(views, tasks):
        cells = judge_view(client, view, runs)
        if not cells:
            continue
        lines += [f"### Judged against dense: {view.task}", "",
                  f"Judge `{client.config.model}`, each prompt in both orders (disagreeing orders count as a tie). "
                  "Score: win 1, tie ½, loss 0 — 0.5 means no different from dense.", "",
                  "| setting | sparsity | judged | win | tie | loss | inconsistent | score vs dense [95% CI] |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in cells:
            if c.summary is None:
                lines.append(f"| {c.setting.label} | {c.sparsity * 100:g}% | — | — | — | — | — | {c.reason} |")
                continue
            s = c.summary

            def pct(v):
                return "—" if v is None else f"{v * 100:.0f}%"

            score = "—" if c.score is None else f"{c.score.estimate:.2f} [{c.score.low:.2f}, {c.score.high:.2f}]"
            lines.append(f"| {c.setting.label} | {c.sparsity * 100:g}% | {s['judged']}/{s['items']} | {pct(s['win_rate'])} | "
                         f"{pct(s['tie_rate'])} | {pct(s['loss_rate'])} | {pct(s['inconsistency_rate'])} | {score} |")
        lines.append("")
    return lines

