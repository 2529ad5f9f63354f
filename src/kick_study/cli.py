"""``kick-report RESULTS_DIR``: the LLM-KICK picture as Markdown — tables, plots, perplexity contrast."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from kick_study.plots import plot_view
from kick_study.runs import ReportError, load_runs
from kick_study.tables import (
    Tolerance,
    build_views,
    category_breakdown,
    markdown_table,
    matching_table,
)

log = logging.getLogger(__name__)
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"


def _failed_cells(results_dir: Path) -> list[dict]:
    """Failed cells of the sweep's ``index.json``; what cannot be read is skipped with one warning."""
    index = results_dir / "index.json"
    if not index.is_file():
        return []
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("kick-report: %s is unreadable (%s); failed cells are not listed", index, err)
        return []
    cells = data.get("cells", {}) if isinstance(data, dict) else None
    if not isinstance(cells, dict):
        log.warning("kick-report: %s is not a sweep index (an object with a 'cells' mapping); failed cells are not listed",
                    index)
        return []
    bad = [name for name, cell in cells.items() if not isinstance(cell, dict)]
    if bad:
        log.warning("kick-report: %s: cells %s are not objects; skipping them", index, bad[:3])
    return [c for c in cells.values() if isinstance(c, dict) and c.get("status") == "failed"]


def _report_path(root: Path, out: str | Path | None) -> Path:
    """Where the report goes, its folder created now (before any work); a ReportError if it cannot be."""
    report = Path(out).expanduser() if out else root / REPORT_FILE
    if report.is_dir():
        raise ReportError(f"kick-report: --out {str(report)!r} is a folder; accepted: a Markdown file path")
    try:
        report.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"kick-report: cannot create the folder of --out {str(report)!r} ({err.strerror or err}); "
                          "accepted: a file path whose parents are (or can be made) folders") from None
    return report


def build_report(results_dir: str | Path, out: str | Path | None = None, tol: Tolerance = Tolerance(),
                 metric_overrides: dict[str, str] | None = None, plots: bool = True) -> Path:
    """Write ``report.md`` (and ``plots/*.png`` beside it) for every lm-eval run under ``results_dir``."""
    root = Path(results_dir).expanduser()
    runs = load_runs(root)
    report = _report_path(root, out)
    views = build_views(runs, metric_overrides)
    scores = [v for v in views if v.higher_better]
    ppl = [v for v in views if not v.higher_better]

    lines = ["# LLM-KICK report", "",
             f"{len(runs)} lm-eval runs from `{root}`. A compressed model *matches* dense when it is no worse "
             f"than dense by more than max({tol.abs_points:g} points, {tol.rel * 100:g}% of dense) "
             "(relative only for perplexity).", ""]
    for model in sorted({v.model for v in views}):
        model_scores = [v for v in scores if v.model == model]
        model_ppl = [v for v in ppl if v.model == model]
        lines += [f"## {model}", "", "### Largest sparsity still matching dense", "",
                  matching_table(model_scores + model_ppl, tol), ""]
        for view in model_scores + model_ppl:
            kind = "Perplexity contrast" if view in model_ppl else "Task"
            lines += [f"### {kind}: {view.task} — {view.metric_name}", "", markdown_table(view), ""]
            if plots and view.curves:
                path = plot_view(view, report.parent / PLOTS_DIR, tol)
                lines += [f"![{view.task}]({path.relative_to(report.parent).as_posix()})", ""]
    for title, table in category_breakdown(runs, metric_overrides):
        lines += [f"### {title}", "", table, ""]
    failed = _failed_cells(root)
    if failed:
        lines += ["## Failed cells", "", "| cell | error |", "|---|---|"]
        for cell in failed:
            error = (str(cell.get("error", "")).splitlines() or [""])[0][:200].replace("|", "\\|")
            lines.append(f"| {cell.get('cell_id', '?')} | {error} |")
        lines.append("")
    try:
        report.write_text("\n".join(lines), encoding="utf-8")
    except OSError as err:
        raise ReportError(f"kick-report: cannot write {str(report)!r} ({err.strerror or err})") from None
    return report


def _metric_overrides(items: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ReportError(f"kick-report: --metric {item!r} is not TASK=METRIC (e.g. kick_mmlu=acc)")
        task, metric = item.split("=", 1)
        out[task.strip()] = metric.strip()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="kick-report", description=__doc__.split("\n")[0])
    p.add_argument("results_dir", help="folder holding lm-eval results_*.json files (e.g. kick-sweep --out)")
    p.add_argument("--out", help=f"Markdown file to write (default RESULTS_DIR/{REPORT_FILE}); plots go beside it")
    p.add_argument("--abs_tol", type=float, default=1.0, help="matching tolerance in points (default 1)")
    p.add_argument("--rel_tol", type=float, default=0.02, help="relative matching tolerance (default 0.02 = 2%%)")
    p.add_argument("--metric", action="append", help="TASK=METRIC to report a task by another metric (repeatable)")
    p.add_argument("--no_plots", action="store_true", help="tables only")
    args = p.parse_args(argv)
    if args.abs_tol < 0 or args.rel_tol < 0:
        sys.stderr.write(f"kick-report: tolerances must be >= 0 (got abs_tol={args.abs_tol}, rel_tol={args.rel_tol})\n")
        return 2
    try:
        path = build_report(args.results_dir, args.out, Tolerance(args.abs_tol, args.rel_tol),
                            _metric_overrides(args.metric), plots=not args.no_plots)
    except ReportError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    sys.stdout.write(f"kick-report: wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
