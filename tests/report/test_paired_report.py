"""Dense-vs-compressed pairing on hand-made lm-eval results + samples files: flips, retention, agreement, KL, reasons."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kick_study import comparison, paired, tables
from kick_study.paired import Tolerance
from kick_study.runs import Setting, load_runs

STAMP = "2026-01-01T00-00-00.000001"
# dense / compressed outcomes of 8 generated answers (exact_match) and 6 four-option questions (acc)
QA_DENSE = [1, 1, 1, 1, 0, 0, 0, 1]
QA_WANDA = {0: [1, 0, 1, 0, 1, 0, 0, 1], 1: [1, 1, 0, 0, 0, 0, 0, 1]}
MC_DENSE = [[-1.0, -2.0, -3.0, -4.0]] * 3 + [[-3.0, -1.0, -2.0, -5.0]] * 3  # argmax 0 x3, 1 x3
MC_WANDA = [[-1.0, -2.0, -3.0, -4.0]] * 2 + [[-2.0, -1.5, -3.0, -4.0]] + [[-3.0, -1.0, -2.0, -5.0]] * 3
MC_GOLD = [0, 0, 0, 1, 1, 0]


def _qa_line(doc_id: int, correct: int, answer: str) -> dict:
    return {"doc_id": doc_id, "doc": {"q": f"q{doc_id}"}, "target": "x", "arguments": [[f"Question {doc_id}?", "{'until': []}"]],
            "resps": [[answer]], "filtered_resps": [answer], "filter": "none", "metrics": ["exact_match"],
            "doc_hash": f"h{doc_id}", "prompt_hash": "p", "target_hash": "t", "exact_match": float(correct)}


def _mc_line(doc_id: int, logliks: list[float], gold: int) -> dict:
    acc = float(int(np.argmax(logliks)) == gold)
    return {"doc_id": doc_id, "doc": {}, "target": gold, "arguments": [["ctx", f" {c}"] for c in "ABCD"],
            "resps": [[[str(x), "False"]] for x in logliks], "filtered_resps": [[str(x), "False"] for x in logliks],
            "filter": "none", "metrics": ["acc"], "doc_hash": f"m{doc_id}", "prompt_hash": "p", "target_hash": "t",
            "acc": acc}


def _write(root, writer, name, args, qa, mc, *, samples=True, qa_ids=None, fidelity=None):
    qa_score = sum(qa) / len(qa)
    mc_acc = [float(int(np.argmax(x)) == g) for x, g in zip(mc, MC_GOLD)]
    scores = {"kick_freebaseqa": {"exact_match": qa_score}, "kick_mmlu": {"acc": float(np.mean(mc_acc))},
              "kick_mmlu_physics": {"acc": float(np.mean(mc_acc))}}
    from kick_models.config import build_config

    comp = build_config({k: v for k, v in args.items()}).to_dict()
    kick = {"model": "org/tiny", "compression": comp, "result": {"fidelity": fidelity} if fidelity else {}}
    path = writer(root / name, {"pretrained": "org/tiny", **args}, scores, kick=kick,
                  groups={"kick_mmlu": ["kick_mmlu_physics"]}, stamp=STAMP)
    data = json.loads(path.read_text())
    data["configs"] = {"kick_freebaseqa": {"output_type": "generate_until"},
                       "kick_mmlu_physics": {"output_type": "multiple_choice"}}
    path.write_text(json.dumps(data))
    if samples:
        ids = qa_ids or list(range(len(qa)))
        answers = ["paris" if c else "rome" for c in qa]
        (path.parent / f"samples_kick_freebaseqa_{STAMP}.jsonl").write_text(
            "\n".join(json.dumps(_qa_line(i, c, a)) for i, c, a in zip(ids, qa, answers)) + "\n")
        (path.parent / f"samples_kick_mmlu_physics_{STAMP}.jsonl").write_text(
            "\n".join(json.dumps(_mc_line(i, x, g)) for i, (x, g) in enumerate(zip(mc, MC_GOLD))) + "\n")
    return path


def _fid(kl: list[float], top1: list[float]) -> dict:
    return {"kl_mean": float(np.mean(kl)), "top1_agreement": float(np.mean(top1)), "kl_windows": kl,
            "top1_windows": top1, "ppl_dense": 10.0, "ppl_compressed": 12.0, "tokens": 1024, "top_k": 64,
            "seconds": 1.5, "positions": 1020, "seqlen": 256, "kl_format": 2}


@pytest.fixture
def paired_dir(tmp_path, results_writer):
    root = tmp_path / "results"
    _write(root, results_writer, "dense", {"method": "none"}, QA_DENSE, MC_DENSE,
           fidelity=_fid([0.0] * 4, [1.0] * 4))
    for seed, qa in QA_WANDA.items():
        _write(root, results_writer, f"wanda{seed}", {"method": "wanda", "sparsity": 0.5, "seed": seed}, qa, MC_WANDA,
               fidelity=_fid([0.1 + seed * 0.01, 0.2, 0.15, 0.12], [0.8, 0.7, 0.75, 0.8]))
    _write(root, results_writer, "magnitude", {"method": "magnitude", "sparsity": 0.5}, QA_WANDA[0], MC_WANDA,
           samples=False)
    _write(root, results_writer, "sparsegpt", {"method": "sparsegpt", "sparsity": 0.5}, QA_DENSE, MC_DENSE,
           qa_ids=[0, 1, 2, 3, 4, 5, 6, 9])
    return root


def _compare(root, task):
    runs = load_runs(root)
    view = next(v for v in tables.build_views(runs) if v.task == task)
    return comparison.compare_view(view, runs, Tolerance())


def _cell(result, method):
    return next(c for c in result.cells if c.setting.method == method)


def test_seeds_are_separate_runs_of_one_cell(paired_dir):
    runs = load_runs(paired_dir)
    assert sorted(r.seed for r in runs if r.setting.method == "wanda") == [0, 1]
    assert next(r for r in runs if r.setting.method == "magnitude").seed is None  # magnitude calibrates on nothing


def test_flips_retention_agreement_on_generated_answers(paired_dir):
    result = _compare(paired_dir, "kick_freebaseqa")
    assert result.n == 8 and result.dense == pytest.approx(62.5)
    wanda = _cell(result, "wanda")
    assert wanda.seeds == [0, 1]
    assert wanda.score == pytest.approx(np.mean([50.0, 37.5])) and wanda.score_sd == pytest.approx(np.std([50.0, 37.5], ddof=1))
    f = wanda.flips  # seed 0: 2 r→w, 1 w→r; seed 1: 2 r→w, 0 w→r — per seed, never summed
    assert (f.right_to_wrong, f.wrong_to_right, f.dense_right) == ((2, 2), (1, 0), 5)
    assert wanda.retention.estimate == pytest.approx(0.6) and wanda.retention.method == "Clopper–Pearson"
    # seed-averaged items: two items lost in both seeds (−1), one gained in one seed (+½): not McNemar on 4 vs 1
    assert wanda.p_value == pytest.approx(paired.sign_flip_p([-1, -1, 0.5, 0, 0, 0, 0, 0]))
    # answers are "paris" when right, "rome" when wrong: agreement = share of unchanged outcomes
    assert wanda.agreement == pytest.approx(np.mean([5 / 8, 6 / 8]))
    expected = paired.paired_binary_interval(QA_DENSE, [QA_WANDA[0], QA_WANDA[1]]).scaled(100)
    assert wanda.diff == expected
    assert wanda.verdict == paired.TOO_FEW  # 8 items: below the minimum, whatever the interval says
    assert wanda.choice_kl is None


def test_multiple_choice_group_pools_leaves_and_gets_choice_kl(paired_dir):
    result = _compare(paired_dir, "kick_mmlu")
    wanda = _cell(result, "wanda")
    assert wanda.n == 6
    assert wanda.agreement == pytest.approx(5 / 6)  # the third question's argmax moved from A to B
    kl = paired.choice_kl(MC_DENSE, MC_WANDA).mean()
    assert wanda.choice_kl == pytest.approx(kl) and kl > 0
    p = np.exp(MC_DENSE[2]) / np.exp(MC_DENSE[2]).sum()
    q = np.exp(MC_WANDA[2]) / np.exp(MC_WANDA[2]).sum()
    assert kl == pytest.approx(float(np.sum(p * np.log(p / q))) / 6)
    assert _cell(result, "sparsegpt").choice_kl == pytest.approx(0.0, abs=1e-15)  # same logliks as dense


def test_missing_samples_and_mismatched_items_say_why_and_how_to_rerun(paired_dir):
    result = _compare(paired_dir, "kick_freebaseqa")
    magnitude = _cell(result, "magnitude")
    assert magnitude.score == pytest.approx(50.0) and magnitude.diff is None
    assert "no per-item samples" in magnitude.reason and "rerun kick-sweep" in magnitude.reason
    sparsegpt = _cell(result, "sparsegpt")  # docs 7 and 9 differ: paired on the 7 common items, saying so
    assert sparsegpt.n == 7 and sparsegpt.dropped == (1, 1) and sparsegpt.verdict == paired.TOO_FEW
    assert "paired on the 7 items defined in both runs; dropped 1 of dense's and 1 of this cell's" in sparsegpt.reason
    assert _cell(_compare(paired_dir, "kick_mmlu"), "sparsegpt").dropped == (0, 0)  # its MC items do match


def test_without_a_dense_run_the_cells_say_so(paired_dir):
    for path in (paired_dir / "dense").rglob("*"):
        if path.is_file():
            path.unlink()
    result = _compare(paired_dir, "kick_freebaseqa")
    assert result.dense is None
    assert all(c.diff is None and "no dense run" in c.reason for c in result.cells)


def test_fidelity_rows_pool_windows_and_seeds(paired_dir):
    rows = comparison.fidelity_rows(load_runs(paired_dir), "org/tiny")
    dense = next(r for r in rows if r.setting == Setting("none"))
    assert dense.kl.estimate == 0.0 and dense.kl.half_width == 0.0 and dense.top1.estimate == 1.0
    wanda = next(r for r in rows if r.setting.method == "wanda")
    assert wanda.seeds == 2 and wanda.windows == 4
    assert wanda.kl.estimate == pytest.approx(np.mean([0.1, 0.2, 0.15, 0.12, 0.11, 0.2, 0.15, 0.12]))
    assert wanda.kl.low < wanda.kl.estimate < wanda.kl.high
    magnitude = next(r for r in rows if r.setting.method == "magnitude")
    assert magnitude.kl is None and "not measured" in magnitude.missing
    assert math.isclose(wanda.ppl_compressed, 12.0)


def _row(markdown: str, *labels: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if tuple(cells[: len(labels)]) == labels:
            return cells[len(labels):]
    raise AssertionError(f"no row {labels!r} in\n{markdown}")


def test_report_shows_intervals_verdicts_paired_columns_and_reasons(paired_dir):
    from kick_study import report as kick_report

    report_path = kick_report.build_report(paired_dir)
    report = report_path.read_text()
    runs = load_runs(paired_dir)
    wanda = _cell(_compare(paired_dir, "kick_freebaseqa"), "wanda")
    table = report[report.index("### Task: kick_freebaseqa"):]
    own = wanda.score_interval  # the score's own interval, over the 8 items averaged over both seeds
    assert own == paired.clopper_pearson(3.5, 8).scaled(100)
    assert _row(table, "wanda")[-1] == f"43.8 [{own.low:.1f}, {own.high:.1f}] too few items"
    assert _row(table, "magnitude")[-1] == "50.0"  # no samples: the point value only
    paired_row = _row(table, "wanda", "50%")
    assert paired_row[:3] == ["2", "8", f"43.8 [{own.low:.1f}, {own.high:.1f}] (8.8)"]
    assert paired_row[4] == "too few items" and paired_row[9] == "2.0 ± 0.0 / 0.5 ± 0.7"
    assert paired_row[10] == f"{wanda.p_value:.3g}" and paired_row[11].startswith("69% (κ ")
    assert "magnitude 50%: no per-item samples" in table and "sparsegpt 50%: paired on the 7 items" in table
    assert "wanda 50%: too few items — 8 paired items; a verdict needs at least 10" in table
    mmlu = report[report.index("### Task: kick_mmlu"):]
    assert _row(mmlu, "wanda", "50%")[-1] == f"{paired.choice_kl(MC_DENSE, MC_WANDA).mean():.3g}"
    fid = report[report.index("### Fidelity to dense"):]
    assert _row(fid, "dense", "0%")[1].startswith("0.0000 [0.0000, 0.0000]")
    assert _row(fid, "wanda", "50%")[0] == "2" and "10.00 → 12.00 ± 0.00" in _row(fid, "wanda", "50%")[3]
    assert "magnitude 50%: not measured" in fid
    assert "## Cost of the paired statistics" in report
    images = [line[line.index("(") + 1:-1] for line in report.splitlines() if line.startswith("![")]
    assert any("retention" in i for i in images) and any("fidelity" in i for i in images)
    for rel in images:
        assert (report_path.parent / rel).read_bytes()[:4] == b"\x89PNG"
    assert len(runs) == 5


def test_score_plot_has_error_bars_and_n(paired_dir, monkeypatch):
    import matplotlib.pyplot as plt

    from kick_study import plots

    captured = {}
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (captured.setdefault("fig", fig), real_close(fig)))
    runs = load_runs(paired_dir)
    view = next(v for v in tables.build_views(runs) if v.task == "kick_freebaseqa")
    comp = comparison.compare_view(view, runs, Tolerance())
    plots.plot_view(view, paired_dir / "p", Tolerance(), comp)
    ax = captured["fig"].axes[0]
    assert "n = 8 items, 95% interval of each score" in ax.get_title()
    assert len(ax.containers) == 2  # wanda and sparsegpt (own samples) have error bars; magnitude has none
    wanda = _cell(comp, "wanda")
    (segments,) = [c for c in ax.collections if hasattr(c, "get_segments")][:1]
    (seg,) = segments.get_segments()  # the score's own interval, not dense + the paired difference's
    assert seg[0][1] == pytest.approx(wanda.score_interval.low) and seg[1][1] == pytest.approx(wanda.score_interval.high)
    assert seg[0][1] != pytest.approx(62.5 + wanda.diff.low)
    dense_line = ax.get_lines()[0].get_label()
    assert dense_line == f"dense (62.5 [{comp.dense_interval.low:.3g}, {comp.dense_interval.high:.3g}])"


def test_report_without_dense_says_why(paired_dir):
    from kick_study import report as kick_report

    for path in (paired_dir / "dense").rglob("*"):
        if path.is_file():
            path.unlink()
    report = kick_report.build_report(paired_dir, plots=False).read_text()
    assert "no dense run of this model" in report
