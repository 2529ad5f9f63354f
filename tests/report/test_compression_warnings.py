"""kick-report on runs whose compression did not do what their setting says: listed and flagged, never
reported (table, verdict, plot) as the compressed setting they name."""

from __future__ import annotations

import pytest

from kick_study import report as kick_report
from kick_study.flags import split_flagged
from kick_study.runs import Setting, _unrecorded_gap, load_runs

DENSE_SCORES = {"kick_freebaseqa": {"exact_match": 0.400},
                "kick_ppl_heldout": {"word_perplexity": 20.0, "byte_perplexity": 1.5, "bits_per_byte": 0.6}}
RECORDED = "method=wanda: achieved sparsity 0.1000 over the compressed matrices, target 0.9 (tolerance 0.05)"


def _kick(args: dict, result: dict, warnings: list[str] | None = None) -> dict:
    from kick_models.config import build_config

    kick = {"model": "org/tiny", "compression": build_config(args).to_dict(), "result": result}
    if warnings:
        kick["warnings"] = warnings
    return kick


def _buckets(zeros: int, params: int = 1000) -> dict:
    """The engine's accounting of a run whose compressed matrices hold ``zeros`` of ``params`` zeros."""
    return {"achieved_sparsity": zeros / params,
            "matrices": {"by_kind": {"compressed attention": {"matrices": 4, "params": params, "zeros": zeros},
                                     "dense router (never compressed)": {"matrices": 1, "params": 10, "zeros": 0}}}}


@pytest.fixture
def warned_dir(grid_dir, results_writer):
    # kick-hf recorded a gap; the scores equal dense (the weights barely changed)
    args = {"method": "wanda", "sparsity": 0.9}
    results_writer(grid_dir / "warned", {"pretrained": "org/tiny", **args}, DENSE_SCORES,
                   kick=_kick(args, _buckets(100), [RECORDED]))
    # an older file with no warning whose accounting shows nothing pruned: a no-op filed as sparsegpt 50%
    args = {"method": "sparsegpt", "sparsity": 0.5}
    results_writer(grid_dir / "noop", {"pretrained": "org/tiny", **args}, DENSE_SCORES,
                   kick=_kick(args, _buckets(0)))
    return grid_dir


def _section(report: str, start: str, end: str) -> str:
    return report[report.index(start): report.index(end, report.index(start))]


def test_recorded_and_noop_runs_are_listed_and_kept_out_of_tables_and_verdicts(warned_dir):
    report = kick_report.build_report(warned_dir, plots=False).read_text()
    listed = _section(report, "## Compression warnings", "## org/tiny")
    assert "10 lm-eval runs" in report and "2 run(s) did not compress" in listed
    [wanda] = [line for line in listed.splitlines() if "wanda 90%" in line]
    assert wanda.startswith("| ⚠ |") and RECORDED in wanda
    [noop] = [line for line in listed.splitlines() if "sparsegpt 50%" in line]
    assert noop.startswith("| ⚠ |") and "achieved sparsity 0.0000, target 0.5" in noop
    assert report.index("## Compression warnings") < report.index("## org/tiny")

    body = report[report.index("## org/tiny"):]
    assert "| sparsegpt |" not in body            # never a row, a verdict or a matching sparsity of its own
    matching = _section(body, "### Largest sparsity still matching dense", "### Task")
    assert "⚠ Not counted (see Compression warnings): sparsegpt 50%, wanda 90%." in matching
    # wanda's own line still ends at 50%: the 90% run (dense-like scores) is no column, no point
    freebase = _section(body, "### Task: kick_freebaseqa", "\n\n| setting | sparsity")
    assert "90%" not in freebase


def test_the_plots_never_draw_a_set_aside_run(warned_dir, monkeypatch):
    drawn = []
    monkeypatch.setattr(kick_report, "plot_view", lambda view, *a, **k: drawn.append(view) or (a[0] / "x.png"))
    kick_report.build_report(warned_dir)
    points = {(c.setting, s) for v in drawn for c in v.curves for s, _ in c.points}
    assert (Setting("wanda"), 0.5) in points
    assert (Setting("wanda"), 0.9) not in points and not any(s.method == "sparsegpt" for s, _ in points)


def test_a_clean_grid_has_no_warning_section(grid_dir):
    report = kick_report.build_report(grid_dir, plots=False).read_text()
    assert "Compression warnings" not in report and "Not counted" not in report


def test_a_dense_run_is_never_set_aside(grid_dir, results_writer):
    results_writer(grid_dir / "dense2", {"pretrained": "org/other"}, DENSE_SCORES,
                   kick={"model": "org/other", "compression": {"method": "none"}, "warnings": ["something"]})
    kept, flagged = split_flagged(load_runs(grid_dir))
    assert not flagged and any(r.model == "org/other" for r in kept)


@pytest.mark.parametrize("setting, target, result, said", [
    (Setting("magnitude"), 0.0, None, "compresses nothing"),                    # no sparsity, 16 bits
    (Setting("gptq", wbits=16), 0.0, None, "compresses nothing"),
    (Setting("gptq", wbits=4), 0.0, None, None),                                # quantized: nothing to count
    (Setting("wanda", "2:4"), 0.0, None, None),                                 # a pattern without its target
    (Setting("wanda"), 0.5, _buckets(500), None),
    (Setting("wanda"), 0.5, _buckets(400), "achieved sparsity 0.4000, target 0.5"),
    (Setting("wanda"), 0.5, _buckets(600), "achieved sparsity 0.6000"),         # over, no grid to explain it
    (Setting("wanda", wbits=4), 0.5, _buckets(600), None),                      # rounding to the grid adds zeros
    (Setting("wanda"), 0.5, {"achieved_sparsity": 0.0}, "achieved sparsity 0.0000"),  # whole-block figure only
    (Setting("wanda"), 0.5, {"achieved_sparsity": 0.4}, None),                  # may count skipped matrices
    (Setting("wanda"), 0.5, {"matrices": {"by_kind": {"compressed x": {"params": "a"}}}}, None),  # junk: unknown
    (Setting("none"), 0.0, None, None),
])
def test_the_gap_a_results_file_shows_without_a_recorded_warning(setting, target, result, said):
    text = _unrecorded_gap(setting, target, result)
    assert (text is None) if said is None else (said in text)
