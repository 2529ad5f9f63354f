"""Runs whose compression did not do what their setting says: named near the top of the report and kept out
of every table, verdict and plot, so a dense (or differently compressed) model is never shown as that setting."""

from __future__ import annotations

from pathlib import Path

from kick_study.runs import Run


def split_flagged(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(runs to report, compressed runs carrying a compression warning). Dense runs are never set aside:
    they are the baseline, and no compression check applies to them."""
    def set_aside(run: Run) -> bool:
        return bool(run.warnings) and not run.setting.is_dense

    return [r for r in runs if not set_aside(r)], [r for r in runs if set_aside(r)]


def _label(run: Run) -> str:
    return f"{run.setting.label} {run.sparsity * 100:g}%"


def _where(run: Run, root: Path) -> str:
    try:
        return run.path.relative_to(root).as_posix()
    except ValueError:
        return str(run.path)


def warnings_section(flagged: list[Run], root: Path) -> list[str]:
    """The "Compression warnings" list: one row per set-aside run with its warning(s) and file."""
    if not flagged:
        return []
    lines = ["## Compression warnings", "",
             f"{len(flagged)} run(s) did not compress as their setting says (kick-hf's check of the weights, or the "
             "sparsity their results file records). They are **left out** of every table, verdict and plot below: "
             "their scores are not those of the setting they name.", "",
             "| | model | setting | warning | results file |", "|---|---|---|---|---|"]
    for run in sorted(flagged, key=lambda r: (r.model, r.setting.label, r.sparsity)):
        said = "; ".join(run.warnings).replace("|", "\\|")
        lines.append(f"| ⚠ | {run.model} | {_label(run)} | {said} | `{_where(run, root)}` |")
    return [*lines, ""]


def left_out_note(flagged: list[Run], model: str) -> list[str]:
    """One line under a model's matching table naming its set-aside cells (they would otherwise seem never run)."""
    mine = sorted({_label(r) for r in flagged if r.model == model})
    if not mine:
        return []
    return [f"⚠ Not counted (see Compression warnings): {', '.join(mine)}.", ""]
