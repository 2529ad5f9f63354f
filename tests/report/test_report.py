"""kick-report on hand-made lm-eval results: numbers in tables, matching statistic, plots, bad input."""

from __future__ import annotations

import re

import pytest

from kick_study import paired, tables
from kick_study import report as kick_report
from kick_study.runs import ReportError, Setting, load_runs


def _row(markdown: str, label: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in\n{markdown}")


def _section(report: str, heading: str) -> str:
    start = report.index(heading)
    nxt = report.find("\n### ", start + 1)
    return report[start: nxt if nxt > 0 else None]


# --------------------------------------------------------------------------- matching on hand-made curves
@pytest.mark.parametrize(
    "points, dense, width, higher, expected",
    [
        ([(0.1, 50.0), (0.3, 49.5), (0.5, 45.0)], 50.0, 1.0, True, 0.3),
        ([(0.1, 48.0), (0.3, 49.5)], 50.0, 1.0, True, None),          # first point already fails
        ([(0.1, 49.5), (0.3, 40.0), (0.5, 49.9)], 50.0, 1.0, True, 0.1),  # no credit after a collapse
        ([(0.5, 49.0), (0.1, 51.0)], 50.0, 1.0, True, 0.5),           # unsorted input, band edge counts
        ([(0.1, 10.1), (0.2, 10.3)], 10.0, 0.2, False, 0.1),          # perplexity: lower is better
        ([], 10.0, 0.2, False, None),
    ],
)
def test_largest_matching_sparsity(points, dense, width, higher, expected):
    assert paired.largest_point_matching(points, dense, width, higher) == expected


def test_tolerance_is_one_point_or_two_percent_whichever_is_larger():
    tol = tables.Tolerance(abs_points=1.0, rel=0.02)  # the rule before LLM-KICK's ε₀ became the default
    assert tol.width(40.0) == 1.0
    assert tol.width(80.0) == pytest.approx(1.6)
    assert tol.width(20.0) == 1.0  # perplexity: the absolute part in its own units, not silently dropped
    assert tables.Tolerance(abs_points=3, rel=0).width(80.0) == 3


# --------------------------------------------------------------------------- fixture grid
def test_runs_are_parsed_from_model_info_and_model_args(grid_dir):
    runs = load_runs(grid_dir)
    settings = {(r.setting, r.sparsity) for r in runs}
    assert (Setting("none"), 0.0) in settings
    assert (Setting("magnitude"), 0.2) in settings          # from a model_args string
    assert (Setting("wanda", "2:4"), 0.5) in settings        # N:M fixes sparsity at 50%
    assert (Setting("gptq", "unstructured", 4), 0.0) in settings
    assert len(runs) == 8


def test_default_tolerance_is_five_percent_of_dense():
    tol = tables.Tolerance()
    assert tol.width(40.0) == pytest.approx(2.0)
    assert tol.width(20.0) == pytest.approx(1.0)
    chance = tables.Tolerance(chance_corrected=True)
    assert chance.width(45.0, chance=25.0) == pytest.approx(1.0)  # 5% of (45 − 25)
    assert chance.width(20.0, chance=25.0) == 0.0  # dense below chance: nothing to lose


def test_default_matching_uses_five_percent(grid_dir):
    report = kick_report.build_report(grid_dir, plots=False).read_text()
    match = _section(report, "### Largest sparsity still matching dense")
    assert _row(match, "wanda") == ["50%", "50%", "50%"]  # mmlu at 50%: 53.5 >= 55 - 2.75
    assert "decided on point estimates" in match  # hand-made results carry no samples


def test_report_tables_hold_the_right_numbers(grid_dir):
    report = kick_report.build_report(grid_dir, tol=tables.Tolerance(abs_points=1.0, rel=0.02)).read_text()
    free = _section(report, "### Task: kick_freebaseqa")
    assert "exact_match (points)" in free
    assert _row(free, "dense") == ["40.0", "—", "—", "—"]           # columns 0%, 20%, 50%, 70%
    assert _row(free, "magnitude") == ["—", "39.5", "30.0", "—"]
    assert _row(free, "wanda") == ["—", "39.8", "39.2", "10.0"]
    assert _row(free, "wanda 2:4") == ["—", "—", "35.0", "—"]
    assert _row(free, "gptq w4") == ["39.0", "—", "—", "—"]
    ppl = _section(report, "### Perplexity (paired by document): kick_ppl_heldout")
    assert _row(ppl, "dense")[0] == "20.00" and _row(ppl, "magnitude")[2] == "40.00"

    match = _section(report, "### Largest sparsity still matching dense")
    header = [c.strip() for c in match.splitlines()[2].strip("|").split("|")]
    assert header[1:] == ["kick_freebaseqa", "kick_mmlu", "kick_ppl_heldout"]
    assert _row(match, "magnitude") == ["20%", "none", "20%"]  # perplexity 20.5 <= 20 + 1 (abs_tol in its units)
    assert _row(match, "wanda") == ["50%", "20%", "50%"]  # mmlu at 50%: 53.5 < 55 - 1.1
    assert _row(match, "wanda 2:4") == ["none", "none", "none"]
    assert _row(match, "gptq w4") == ["matches", "matches", "matches"]


def test_mmlu_category_breakdown(grid_dir):
    report = kick_report.build_report(grid_dir, plots=False).read_text()
    part = _section(report, "### kick_mmlu by category")
    assert "kick_mmlu_stem | kick_mmlu_humanities" in part
    assert _row(part, "dense") == ["0%", "50.0", "60.0"]
    assert "### Task: kick_mmlu_stem" not in report  # categories are not repeated as tasks


def test_plots_exist_one_per_task(grid_dir):
    report = kick_report.build_report(grid_dir)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())
    assert len(images) == 3
    for rel in images:
        png = report.parent / rel
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_draws_dense_line_band_and_one_line_per_setting(grid_dir, monkeypatch):
    import matplotlib.pyplot as plt

    from kick_study import plots

    captured = {}
    real_close = plt.close

    def keep(fig):
        captured["fig"] = fig
        real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    views = tables.build_views(load_runs(grid_dir))
    view = next(v for v in views if v.task == "kick_freebaseqa")
    plots.plot_view(view, grid_dir / "p", tables.Tolerance(abs_points=1.0, rel=0.02))
    ax = captured["fig"].axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0].startswith("dense") and sorted(labels[1:]) == sorted(["magnitude", "wanda", "wanda 2:4", "gptq w4"])
    wanda = next(line for line in ax.get_lines() if line.get_label() == "wanda")
    assert list(wanda.get_xdata()) == [0.0, 20.0, 50.0, 70.0]
    assert list(wanda.get_ydata()) == pytest.approx([40.0, 39.8, 39.2, 10.0])
    band = ax.patches[0]
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((39.0, 41.0))


def test_a_grid_of_quantizers_gets_one_column_per_setting(tmp_path, monkeypatch):
    """Table 2: nothing is pruned, so every point is at 0% sparsity; each setting gets its own x position."""
    import matplotlib.pyplot as plt

    from kick_study import plots

    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), real_close(fig)))
    settings = [Setting("gptq", wbits=8), Setting("awq", wbits=4), Setting("checkpoint", source="gguf-q4_0 · gguf 0.19.0")]
    view = tables.TaskView("embedded", "kick_icrqa_mini_open", "contains_paper", True, True, 25.0,
                           [tables.Curve(s, [(0.0, v)]) for s, v in zip(settings, (25.0, 20.0, 15.0))])
    plots.plot_view(view, tmp_path, tables.Tolerance())
    ax = figures[0].axes[0]
    drawn = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines() if not line.get_label().startswith("dense")}
    assert drawn == {"gptq w8": [0], "awq w4": [1], "gguf-q4_0 · gguf 0.19.0": [2]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gptq w8", "awq w4", "gguf-q4_0 · gguf 0.19.0"]
    pruned = tables.TaskView("m", "t", "acc", True, True, 25.0, [tables.Curve(Setting("wanda"), [(0.5, 20.0)]),
                                                                 tables.Curve(settings[0], [(0.0, 24.0)])])
    plots.plot_view(pruned, tmp_path, tables.Tolerance())
    assert figures[1].axes[0].get_xlabel() == "sparsity (%)"  # a pruned point: the axis stays sparsity


def test_the_fidelity_figure_gives_each_setting_one_colour_and_column_in_all_panels(tmp_path, monkeypatch):
    """The fidelity rows and the perplexity curves come in different orders: colours and columns follow the setting."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from kick_study import plots

    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), real_close(fig)))
    w8, w4 = Setting("awq", wbits=8), Setting("awq", wbits=4)
    interval = SimpleNamespace(estimate=0.1, low=0.05, high=0.15)
    rows = [SimpleNamespace(setting=s, sparsity=0.0, kl=interval, top1=interval, tokens=2048, windows=8, top_k=256)
            for s in (w4, w8)]
    ppl = tables.TaskView("m", "kick_ppl_heldout", "word_perplexity", False, False, 91.0,
                          [tables.Curve(w8, [(0.0, 92.0)]), tables.Curve(w4, [(0.0, 130.0)])])
    plots.plot_fidelity("m", rows, ppl, tmp_path)
    kl_ax, _, ppl_ax = figures[0].axes
    kl = {c.get_label(): (to_hex(c.lines[0].get_color()), list(c.lines[0].get_xdata())) for c in kl_ax.containers}
    pp = {ln.get_label(): (to_hex(ln.get_color()), list(ln.get_xdata())) for ln in ppl_ax.get_lines()
          if not ln.get_label().startswith("dense")}
    assert kl == pp and kl["awq w8"][1] == [0] and kl["awq w4"][1] == [1]


def test_tolerance_is_configurable_from_the_command_line(grid_dir, capsys):
    assert kick_report.main([str(grid_dir), "--abs_tol", "15", "--rel_tol", "0", "--no_plots"]) == 0
    report = (grid_dir / "report.md").read_text()
    match = _section(report, "### Largest sparsity still matching dense")
    assert _row(match, "magnitude")[0] == "50%"  # 30.0 is within 15 points of 40.0


def test_metric_override(grid_dir):
    report = kick_report.build_report(grid_dir, plots=False, metric_overrides={"kick_ppl_heldout": "bits_per_byte"}).read_text()
    assert "kick_ppl_heldout — bits_per_byte" in report
    with pytest.raises(ReportError, match="no metric 'nope'.*accepted"):
        kick_report.build_report(grid_dir, plots=False, metric_overrides={"kick_ppl_heldout": "nope"})


def test_failed_cells_from_the_sweep_index_are_listed(grid_dir):
    (grid_dir / "index.json").write_text('{"cells": {"c1": {"cell_id": "c1", "status": "failed", "error": "CellFailed: boom"}}}')
    report = kick_report.build_report(grid_dir, plots=False).read_text()
    assert "## Failed cells" in report and "| c1 | CellFailed: boom |" in report


# --------------------------------------------------------------------------- bad input
def test_results_dir_with_no_runs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert kick_report.main([str(tmp_path / "empty")]) == 2
    assert "no lm-eval results" in capsys.readouterr().err
    assert kick_report.main([str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_broken_results_files_are_skipped(grid_dir):
    (grid_dir / "junk").mkdir()
    (grid_dir / "junk" / "results_bad.json").write_text("{not json")
    (grid_dir / "junk" / "results_other.json").write_text('{"foo": 1}')
    assert len(load_runs(grid_dir)) == 8


def test_bad_flags(grid_dir, capsys):
    assert kick_report.main([str(grid_dir), "--metric", "nonsense"]) == 2
    assert "TASK=METRIC" in capsys.readouterr().err
    assert kick_report.main([str(grid_dir), "--abs_tol", "-1"]) == 2
