"""``kick-report RESULTS_DIR``: the LLM-KICK picture as Markdown — verdicts with intervals, paired tables, plots."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Sequence

from kick_study import paired
from kick_study.comparison import compare_view, fidelity_rows
from kick_study.flags import left_out_note, split_flagged, warnings_section
from kick_study.floor import floor_section
from kick_study.paired import Tolerance
from kick_study.parents import ParentLink, apply_links, looks_compressed, parse_links, read_mapping
from kick_study.plots import plot_fidelity, plot_retention, plot_view
from kick_study.provenance import provenance_rows, provenance_table
from kick_study.runs import ReportError, distinct_sources, load_runs, newest, relabel
from kick_study.tables import (
    build_views,
    category_breakdown,
    fidelity_table,
    markdown_table,
    matching_table,
    paired_table,
    pooled_table,
)

log = logging.getLogger(__name__)
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"


def _index_cells(results_dir: Path) -> list[dict]:
    """The cells of the sweep's ``index.json``; what cannot be read is skipped with one warning."""
    index = results_dir / "index.json"
    if not index.is_file():
        return []
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("kick-report: %s is unreadable (%s); failed cells and cell times are not listed", index, err)
        return []
    cells = data.get("cells", {}) if isinstance(data, dict) else None
    if not isinstance(cells, dict):
        log.warning("kick-report: %s is not a sweep index (an object with a 'cells' mapping); failed cells and "
                    "cell times are not listed", index)
        return []
    bad = [name for name, cell in cells.items() if not isinstance(cell, dict)]
    if bad:
        log.warning("kick-report: %s: cells %s are not objects; skipping them", index, bad[:3])
    return [c for c in cells.values() if isinstance(c, dict)]


def _failed_cells(cells: list[dict]) -> list[dict]:
    return [c for c in cells if c.get("status") == "failed"]


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


def _check_plots_dir(report: Path) -> None:
    """The plots go to ``plots/`` beside the report: a file of that name is refused now, before any work."""
    plots = report.parent / PLOTS_DIR
    if plots.exists() and not plots.is_dir():
        raise ReportError(f"kick-report: {str(plots)!r} is a file, but the plots go in a folder of that name; accepted: "
                          "move the file away, write the report elsewhere (--out), or pass --no_plots")


def _cell_seconds(cells: list[dict]) -> list[float]:
    seconds = []
    for cell in cells:
        try:
            if cell.get("status") == "ok" and cell.get("seconds"):
                seconds.append(float(cell["seconds"]))
        except (TypeError, ValueError):
            continue
    return seconds


def _method_note(tol: Tolerance, multiplicity: str, cluster: bool) -> list[str]:
    adjust = {"none": "Verdicts are per cell: across many cells some will be wrong by chance (2.5% each); "
                      "--multiplicity holm (or bh) adjusts them across the report.",
              "holm": "Verdicts are adjusted across every cell of the report (Holm), shown as \"adjusted: …\".",
              "bh": "Verdicts are adjusted across every cell of the report (Holm for *matches*, Benjamini–Hochberg "
                    "for *worse*), shown as \"adjusted: …\"."}[multiplicity]
    return [
        f"A compressed model *matches* dense when it loses no more than {tol.describe()} (LLM-KICK's ε₀ by default). "
        "With per-item samples each cell is a one-sided 97.5% non-inferiority test on the 95% interval of the paired "
        "difference compressed − dense: **matches** — its lower end (upper for lower-is-better metrics) lies within "
        "the tolerance (wholly above dense + tolerance: marked *better*); **worse** — the whole interval lies beyond "
        f"it; **inconclusive** — it straddles the edge; **too few items** — fewer than {paired.MIN_ITEMS} paired items "
        "or no estimable spread. \"loses at most\" is the achieved margin (apply your own ε); \"items to decide\" "
        "is how many items the observed spread would need. " + adjust,
        "",
        "Intervals: every score (dense's and each cell's) carries its own 95% interval over its own items — "
        "Clopper–Pearson for 0/1 metrics (as retention and accuracy on dense-wrong items do), BCa bootstrap for "
        f"continuous metrics ({paired.RESAMPLES} resamples, seed {paired.BOOTSTRAP_SEED}; a t interval below "
        f"{paired.T_BELOW} items), a bootstrapped ratio of sums over documents for perplexity. The difference from "
        "dense (the Δ column, on which the verdict rests) is paired item by item: for 0/1 metrics the more cautious "
        "end of Tango's and Bonett–Price's intervals, for continuous metrics the same bootstrap on the differences, "
        "for perplexity the ratio of sums paired by document. Calibration seeds are replicates: each item's "
        "outcome is averaged over the "
        "seeds first; flips are per seed (mean ± sd); paired p is the exact sign-flip test on those averages "
        "(= McNemar's exact p for one seed). Accuracy on dense-wrong items is retention's chance baseline; "
        "Cohen's κ is agreement beyond chance. "
        + ("Groups: leaf tasks are clusters (t interval over leaves). " if cluster else "")
        + "See docs/statistics.md.",
        "",
    ]


def _notes(notes: list[str]) -> list[str]:
    if not notes:
        return []
    return ["Notes:", "", *[f"- {n}" for n in notes], ""]


def _task_section(view, comp, tol, report: Path, plots: bool) -> list[str]:
    kind = "Task" if view.higher_better else "Perplexity (paired by document)"
    lines = [f"### {kind}: {view.task} — {view.metric_name}", "", markdown_table(view, comp), ""]
    if comp is not None and comp.cells:
        head = f"Paired with dense item by item (dense: {comp.n} items)" if comp.n else "Paired statistics"
        width = f"; tolerance {comp.width:.3g}" if comp.width is not None else ""
        chance = ""
        if comp.chance:
            chance = f"; chance {comp.chance:.3g}" + (" — dense is at chance: nothing to lose, no margin" if comp.at_chance
                                                       else "")
        table, notes = paired_table(comp)
        lines += [f"{head}{width}{chance} ({'points' if comp.scaled else 'metric units'}):", "", table, "",
                  *_notes(notes)]
    if plots and view.curves:
        path = plot_view(view, report.parent / PLOTS_DIR, tol, comp)
        lines += [f"![{view.task}]({path.relative_to(report.parent).as_posix()})", ""]
        extra = plot_retention(view, comp, report.parent / PLOTS_DIR) if comp is not None else None
        if extra is not None:
            lines += [f"![{view.task} retention and flips]({extra.relative_to(report.parent).as_posix()})", ""]
    return lines


def _fidelity_section(model: str, runs, ppl_views, report: Path, plots: bool) -> tuple[list[str], list]:
    rows = fidelity_rows(runs, model)
    if not rows or all(r.kl is None for r in rows):
        return [], rows
    table, notes = fidelity_table(rows)
    lines = ["### Fidelity to dense on held-out text (kick-hf)", "",
             "Mean KL(dense ‖ compressed) of the next-token distribution and the share of positions whose most "
             "likely next token is unchanged, measured by kick-hf on fixed bundled held-out text (dense top-k "
             "log-probabilities + one bucket for the rest of the vocabulary: a lower bound of the full KL). "
             "Intervals: Student t over the text's windows (df = windows − 1), each window first averaged over "
             "seeds (docs/fidelity.md).", "", table, ""]
    if notes:
        lines += ["Not measured:", "", *[f"- {n}" for n in notes], ""]
    if plots:
        path = plot_fidelity(model, rows, next(iter(ppl_views), None), report.parent / PLOTS_DIR)
        if path is not None:
            lines += [f"![fidelity]({path.relative_to(report.parent).as_posix()})", ""]
    return lines, rows


def _cost_section(paired_s: float, n_cells: int, fid_rows: list, cell_seconds: list[float]) -> list[str]:
    lines = ["## Cost of the paired statistics and of the fidelity measurement", "",
             f"- paired statistics (pairing, bootstrap, flips, KL) for {n_cells} (task, cell) pairs: {paired_s:.2f} s "
             "in this report"]
    measured = [r.seconds for r in fid_rows if r.kl is not None and r.seconds is not None and not r.setting.is_dense]
    if measured:
        mean = sum(measured) / len(measured)
        share = ""
        if cell_seconds:
            cell = sum(cell_seconds) / len(cell_seconds)
            share = f" = {100 * mean / cell:.1f}% of the mean cell ({cell:.1f} s, from index.json)"
        lines.append(f"- fidelity measurement in kick-hf: {mean:.2f} s per compressed cell{share}; a cache hit "
                     "reports the stored values and costs nothing")
    return [*lines, ""]


def _provenance_section(runs, model: str) -> list[str]:
    """Where each row came from; for a model with dense runs only, why it is unpaired and how to pair it."""
    model_runs = [r for r in runs if r.model == model]
    hint = next((why for why in map(looks_compressed, model_runs) if why), None)
    alone = len({r.model for r in runs}) == 1  # one model, dense only: nothing yet to pair, nothing to explain
    if all(r.setting.is_dense for r in model_runs) and (hint or not alone):
        looks = f" It may be a compressed checkpoint: {hint}." if hint else ""
        return ["### Unpaired", "",
                f"Every run of `{model}` reads as a dense model: its results record no compression (no kick-hf "
                "`config.kick`, no `kick_compression.json` beside the checkpoint), and no `--parent` link names it, "
                f"so it is paired with nothing.{looks} To judge it against its dense parent item by item, name the "
                f"parent: `kick-report RESULTS --parent {model}=DENSE` (DENSE: the parent's results file or folder, "
                "or its model name), or evaluate it with `lm_eval --model kick-hf --model_args "
                "pretrained=CHECKPOINT,parent=DENSE` to add KL to dense.", ""]
    lines = ["### Where each row came from", "", provenance_table(provenance_rows(runs, model)), ""]
    if not any(r.setting.is_dense for r in model_runs) and any(r.setting.is_external for r in model_runs):
        lines += [f"No dense run of `{model}` is here, so its rows are unpaired: a checkpoint evaluated without "
                  "`parent=` is recorded under its own name. Rerun it with `--model_args pretrained=CHECKPOINT,"
                  f"parent=DENSE`, or pair these runs with a dense run: `kick-report RESULTS --parent {model}=DENSE`.", ""]
    return lines


def build_report(results_dir: str | Path, out: str | Path | None = None, tol: Tolerance = Tolerance(),
                 metric_overrides: dict[str, str] | None = None, plots: bool = True, judge=None,
                 judge_tasks: Sequence[str] | None = None, multiplicity: str = "none", cluster: bool = False,
                 parents: Sequence[ParentLink] = ()) -> Path:
    """Write ``report.md`` (and ``plots/*.png`` beside it) for every lm-eval run under ``results_dir``.

    ``judge`` (a :class:`~kick_tasks.judge.client.JudgeClient`) adds pairwise grading of every
    compressed cell's generated answers against dense's; ``parents`` pairs runs made elsewhere
    with a dense run (:mod:`kick_study.parents`).
    """
    root = Path(results_dir).expanduser()
    cells = _index_cells(root)
    runs = relabel(load_runs(root), {root / str(c["results_file"]): str(c["label"]) for c in cells
                                     if c.get("label") and c.get("status") == "ok" and c.get("results_file")})
    if parents:
        runs = newest(distinct_sources(apply_links(runs, parents)))
    runs, flagged = split_flagged(runs)
    report = _report_path(root, out)
    if plots:
        _check_plots_dir(report)
    views = build_views(runs, metric_overrides)
    scores = [v for v in views if v.higher_better]
    ppl = [v for v in views if not v.higher_better]
    start = time.perf_counter()
    comparisons = {(v.model, v.task): compare_view(v, runs, tol, cluster=cluster) for v in views}
    if multiplicity != "none":
        _adjust(comparisons, multiplicity)
    paired_s = time.perf_counter() - start
    n_pairs = sum(len(c.cells) for c in comparisons.values())

    lines = ["# LLM-KICK report", "", f"{len(runs) + len(flagged)} lm-eval runs from `{root}`.", "",
             *warnings_section(flagged, root), *_method_note(tol, multiplicity, cluster)]
    fid_all: list = []
    for model in sorted({v.model for v in views}):
        model_scores = [v for v in scores if v.model == model]
        model_ppl = [v for v in ppl if v.model == model]
        lines += [f"## {model}", "", *_provenance_section(runs, model), "### Largest sparsity still matching dense", "",
                  matching_table(model_scores + model_ppl, tol, comparisons), "", *left_out_note(flagged, model)]
        pooled = pooled_table(comparisons, model)
        if pooled:
            lines += ["### One decision per cell across tasks", "",
                      "*matches* on every task (each at 2.5%: an intersection–union test), *worse* on some task (Holm "
                      "across tasks): each claim's false-positive rate stays ≤ 2.5%.", "", pooled, ""]
        for view in model_scores:
            lines += _task_section(view, comparisons.get((model, view.task)), tol, report, plots)
        fid_lines, fid_rows = _fidelity_section(model, runs, model_ppl, report, plots)
        lines += fid_lines
        lines += floor_section(root, model, runs, comparisons, fid_rows)
        fid_all += fid_rows
        for view in model_ppl:
            lines += _task_section(view, comparisons.get((model, view.task)), tol, report, plots)
        if judge is not None:
            from kick_study.judged import judge_section

            lines += judge_section(judge, model, runs, model_scores, judge_tasks)
    for title, table in category_breakdown(runs, metric_overrides):
        lines += [f"### {title}", "", table, ""]
    if n_pairs:
        lines += _cost_section(paired_s, n_pairs, fid_all, _cell_seconds(cells))
    failed = _failed_cells(cells)
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


def _adjust(comparisons: dict, multiplicity: str) -> None:
    """Holm (and BH for *worse* with ``bh``) across every decided cell of the report."""
    cells = [c for comp in comparisons.values() for c in comp.cells if c.decision is not None]
    for cell, state in zip(cells, paired.adjusted_verdicts([c.decision for c in cells],
                                                           "bh" if multiplicity == "bh" else "holm")):
        cell.adjusted = state


def _tolerance(value: str, name: str, upper: float | None = None) -> float:
    """A finite number ≥ 0 (and < ``upper``), or kick's one-line refusal naming the option and the value."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (upper is not None and number >= upper):
        accepted = f"a finite number in [0, {upper:g})" if upper is not None else "a finite number >= 0"
        raise ReportError(f"kick-report: invalid --{name} {value}; accepted: {accepted}")
    return number


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
    p.add_argument("--rel_tol", default=str(paired.REL_TOLERANCE),
                   help="relative matching tolerance, LLM-KICK's ε₀ (default 0.05 = 5%% of dense)")
    p.add_argument("--abs_tol", default="0",
                   help="absolute matching tolerance in points (metrics shown × 100) or in the metric's own units "
                        "(perplexity, a 1–10 judge score); the larger of the two applies (default 0)")
    p.add_argument("--chance_corrected", action="store_true",
                   help="relative tolerance of (dense − chance) instead of dense (multiple choice: chance = 1/options)")
    p.add_argument("--multiplicity", choices=("none", "holm", "bh"), default="none",
                   help="adjust verdicts across every cell of the report: holm (both claims) or bh (Holm for "
                        "matches, Benjamini–Hochberg for worse); default none (verdicts are per cell)")
    p.add_argument("--cluster_by_leaf", action="store_true",
                   help="groups: treat leaf tasks (subjects) as clusters, for claims beyond these subjects")
    p.add_argument("--metric", action="append", help="TASK=METRIC to report a task by another metric (repeatable)")
    p.add_argument("--no_plots", action="store_true", help="tables only")
    p.add_argument("--parent", action="append", metavar="RUN=DENSE",
                   help="pair a run made elsewhere (stock lm_eval --model hf|vllm|... --log_samples) with a dense run; "
                        "each side a results file, a folder of results, or a model name as results record it (repeatable)")
    p.add_argument("--parents", metavar="FILE", help="YAML/TOML file of RUN: DENSE pairs, or a list of {run, parent, label}")
    p.add_argument("--judge", action="store_true",
                   help="grade each compressed cell's generated answers pairwise against dense's (both orders) with "
                        "the judge set by KICK_JUDGE_MODEL / KICK_JUDGE_BASE_URL / KICK_JUDGE_API_KEY")
    p.add_argument("--judge_tasks", help="comma-separated tasks to judge against dense (default: kick_instruct, "
                                         "kick_summarization*, kick_mtbench*)")
    args = p.parse_args(argv)
    try:
        tol = Tolerance(abs_points=_tolerance(args.abs_tol, "abs_tol"), rel=_tolerance(args.rel_tol, "rel_tol", 1.0),
                        chance_corrected=args.chance_corrected)
    except ReportError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    judge = None
    if args.judge:
        from kick_tasks.judge.client import JudgeClient, JudgeConfig, JudgeConfigError

        try:
            config = JudgeConfig.from_env()
        except JudgeConfigError as err:
            sys.stderr.write(f"kick-report: --judge: {err}\n")
            return 2
        if config is None:
            sys.stderr.write("kick-report: --judge needs a judge: set KICK_JUDGE_MODEL (and KICK_JUDGE_BASE_URL, "
                             "KICK_JUDGE_API_KEY for the endpoint)\n")
            return 2
        judge = JudgeClient(config)
    tasks = [t.strip() for t in (args.judge_tasks or "").split(",") if t.strip()] or None
    try:
        links = parse_links(args.parent) + (read_mapping(args.parents) if args.parents else [])
        path = build_report(args.results_dir, args.out, tol, _metric_overrides(args.metric), plots=not args.no_plots,
                            judge=judge, judge_tasks=tasks, multiplicity=args.multiplicity, cluster=args.cluster_by_leaf,
                            parents=links)
    except ReportError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    sys.stdout.write(f"kick-report: wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
