"""The audit's small-n cases through kick-report: too few items, seeds as replicates, paired perplexity, dropped items."""

from __future__ import annotations

import json
import logging
import math

import pytest

from kick_study import comparison, paired, tables
from kick_study import report as kick_report
from kick_study.paired import Tolerance
from kick_study.runs import load_runs

STAMP = "2026-01-01T00-00-00.000001"


def _qa(doc_id: int, value, metric: str = "exact_match") -> dict:
    return {"doc_id": doc_id, "doc": {}, "target": "x", "arguments": [[f"Q{doc_id}?", "{}"]], "resps": [["a"]],
            "filtered_resps": ["a"], "filter": "none", "metrics": [metric], "doc_hash": f"h{doc_id}",
            "prompt_hash": "p", "target_hash": "t", metric: value}


def _ppl(doc_id: int, loglik: float, words: int) -> dict:
    pair = [loglik, words]
    return {"doc_id": doc_id, "doc": {}, "target": "", "arguments": [["", "{}"]], "resps": [[loglik]],
            "filtered_resps": [loglik], "filter": "none", "metrics": ["word_perplexity"], "doc_hash": f"d{doc_id}",
            "prompt_hash": "p", "target_hash": "t", "word_perplexity": pair}


def _write(root, writer, name, args, task, lines, score, output_type="generate_until"):
    from kick_models.config import build_config

    metric = lines[0]["metrics"][0]
    kick = {"model": "org/tiny", "compression": build_config(dict(args)).to_dict(), "result": {}}
    path = writer(root / name, {"pretrained": "org/tiny", **args}, {task: {metric: score}}, kick=kick, stamp=STAMP)
    data = json.loads(path.read_text())
    data["configs"] = {task: {"output_type": output_type}}
    path.write_text(json.dumps(data))
    (path.parent / f"samples_{task}_{STAMP}.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _compare(root, task):
    runs = load_runs(root)
    view = next(v for v in tables.build_views(runs) if v.task == task)
    return comparison.compare_view(view, runs, Tolerance())


def _row(markdown: str, *labels: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if tuple(cells[: len(labels)]) == labels:
            return cells[len(labels):]
    raise AssertionError(f"no row {labels!r} in\n{markdown}")


def _task(report) -> str:
    text = report if isinstance(report, str) else report.read_text()
    return text[text.index("### Task: kick_freebaseqa"):]


def _binary(root, writer, dense, cells):
    _write(root, writer, "dense", {"method": "none"}, "kick_freebaseqa", [_qa(i, v) for i, v in enumerate(dense)],
           sum(dense) / len(dense))
    for name, args, values in cells:
        _write(root, writer, name, args, "kick_freebaseqa", [_qa(i, v) for i, v in enumerate(values)],
               sum(values) / len(values))


def test_four_losses_in_three_identical_seeds_give_the_one_seed_p(tmp_path, results_writer):
    dense = [1.0] * 10 + [0.0] * 10
    comp = [0.0] * 4 + [1.0] * 6 + [0.0] * 10  # b = 4, c = 0
    _binary(tmp_path, results_writer, dense,
            [(f"wanda{s}", {"method": "wanda", "sparsity": 0.5, "seed": s}, comp) for s in range(3)]
            + [("sparsegpt", {"method": "sparsegpt", "sparsity": 0.5, "seed": 0}, comp)])
    result = _compare(tmp_path, "kick_freebaseqa")
    three = next(c for c in result.cells if c.setting.method == "wanda")
    one = next(c for c in result.cells if c.setting.method == "sparsegpt")
    assert three.p_value == one.p_value == pytest.approx(0.125)  # was 0.00049 with flips summed over seeds
    assert three.diff == one.diff and three.flips.right_to_wrong == (4, 4, 4)
    report = _task(kick_report.build_report(tmp_path, plots=False))
    row = _row(report, "wanda", "50%")
    assert row[9] == "4.0 ± 0.0 / 0.0 ± 0.0" and row[10] == "0.125"


def test_zero_of_twelve_retention_prints_an_interval_reaching_26_percent(tmp_path, results_writer):
    dense = [1.0] * 12 + [0.0] * 8
    _binary(tmp_path, results_writer, dense, [("magnitude", {"method": "magnitude", "sparsity": 0.9}, [0.0] * 20)])
    report = _task(kick_report.build_report(tmp_path, plots=False))
    row = _row(report, "magnitude", "90%")
    assert row[7] == "0% [0, 26]"  # Clopper–Pearson; the old bootstrap printed 0% [0, 0]
    assert row[8] == "0% [0, 37]"  # accuracy on the 8 dense-wrong items: the chance baseline beside it
    assert row[4] == "worse" and row[1] == "20"


def test_one_agreeing_item_is_too_few_items_in_the_report(tmp_path, results_writer):
    _binary(tmp_path, results_writer, [1.0], [("magnitude", {"method": "magnitude", "sparsity": 0.1}, [1.0])])
    report = kick_report.build_report(tmp_path, plots=False).read_text()
    assert _row(_task(report), "magnitude", "10%")[4] == "too few items"
    assert "1 paired item; a verdict needs at least 10" in report
    summary = report[report.index("### Largest sparsity still matching dense"):]
    assert _row(summary, "magnitude") == ["none (too few items at 10%)"]


def test_different_limits_pair_on_common_items_and_say_how_many(tmp_path, results_writer):
    _binary(tmp_path, results_writer, [1.0, 1.0, 0.0], [("magnitude", {"method": "magnitude", "sparsity": 0.5}, [1.0, 1.0])])
    cell = _compare(tmp_path, "kick_freebaseqa").cells[0]
    assert cell.n == 2 and cell.dropped == (1, 0) and cell.verdict == paired.TOO_FEW
    report = kick_report.build_report(tmp_path, plots=False).read_text()
    assert "paired on the 2 items defined in both runs; dropped 1 of dense's and 0 of this cell's" in report
    assert "on the same 3 items" not in report


def test_perplexity_is_paired_by_document_with_a_ratio_interval_and_a_verdict(tmp_path, results_writer):
    words = [100 + 7 * i for i in range(40)]
    dense = [-3.0 * w + (i % 5) for i, w in enumerate(words)]
    comp = [ll - 0.01 * w * (1 + (i % 3)) for i, (ll, w) in enumerate(zip(dense, words))]  # ≈ 2% more nats per word
    ppl = [math.exp(-sum(x) / sum(words)) for x in (dense, comp)]
    _write(tmp_path, results_writer, "dense", {"method": "none"}, "kick_ppl_heldout",
           [_ppl(i, ll, w) for i, (ll, w) in enumerate(zip(dense, words))], ppl[0], "loglikelihood_rolling")
    _write(tmp_path, results_writer, "wanda", {"method": "wanda", "sparsity": 0.5, "seed": 0}, "kick_ppl_heldout",
           [_ppl(i, ll, w) for i, (ll, w) in enumerate(zip(comp, words))], ppl[1], "loglikelihood_rolling")
    cell = _compare(tmp_path, "kick_ppl_heldout").cells[0]
    assert cell.ratio.estimate == pytest.approx(ppl[1] / ppl[0])
    assert cell.ratio.low < cell.ratio.estimate < cell.ratio.high and cell.ratio.high < 1.05
    assert cell.diff.estimate == pytest.approx(ppl[1] - ppl[0]) and cell.verdict == paired.MATCHES
    report = kick_report.build_report(tmp_path, plots=False).read_text()
    section = report[report.index("### Perplexity (paired by document): kick_ppl_heldout"):]
    assert _row(section, "wanda", "50%")[4] == "matches" and "(× 1.0" in _row(section, "wanda", "50%")[3]


JUDGE_DENSE = [7.0, 8.0, 6.0, 9.0, 7.0, 5.0, 8.0, 7.0, 6.0, 8.0, 7.0, 9.0]
JUDGE_COMP = [6.0, 8.0, 5.0, 9.0, None, 5.0, 7.0, 7.0, 6.0, 7.0, 7.0, 8.0]  # one reply the judge could not parse


def _write_judged_pair(tmp_path, results_writer, comp_score: float) -> None:
    """Dense and Wanda 50% judged on 12 MT-Bench items, one of Wanda's replies unparsed."""
    _write(tmp_path, results_writer, "dense", {"method": "none"}, "kick_mtbench",
           [_qa(i, v, "judge_score") for i, v in enumerate(JUDGE_DENSE)], 7.25)
    _write(tmp_path, results_writer, "wanda", {"method": "wanda", "sparsity": 0.5, "seed": 0}, "kick_mtbench",
           [_qa(i, v, "judge_score") for i, v in enumerate(JUDGE_COMP)], comp_score)


def test_one_unparsed_judge_item_keeps_the_paired_columns_and_says_it_was_dropped(tmp_path, results_writer):
    _write_judged_pair(tmp_path, results_writer, 6.8)
    cell = _compare(tmp_path, "kick_mtbench").cells[0]
    assert cell.n == 11 and cell.dropped == (1, 1) and cell.diff is not None and cell.diff.method == "t (10 df)"
    report = kick_report.build_report(tmp_path, plots=False, tol=Tolerance(abs_points=1.0)).read_text()
    assert "dropped 1 of dense's and 1 of this cell's" in report
    assert "tolerance 1 " in report  # --abs_tol in the judge score's own units, not silently ignored


def test_a_nan_item_is_refused_with_a_reason(tmp_path, results_writer):
    _binary(tmp_path, results_writer, [1.0] * 12, [("magnitude", {"method": "magnitude", "sparsity": 0.5},
                                                    [1.0] * 11 + [float("nan")])])
    cell = _compare(tmp_path, "kick_freebaseqa").cells[0]
    assert cell.verdict is None and "metric 'exact_match' is nan for item kick_freebaseqa doc 11" in cell.reason


def test_nan_metrics_and_absurd_sparsity_in_results_files_are_refused(tmp_path, results_writer, caplog):
    _binary(tmp_path, results_writer, [1.0] * 12, [("magnitude", {"method": "magnitude", "sparsity": 0.5}, [1.0] * 12)])
    path = next((tmp_path / "magnitude").rglob("results_*.json"))
    data = json.loads(path.read_text())
    data["results"]["kick_freebaseqa"]["exact_match,none"] = float("nan")
    path.write_text(json.dumps(data))
    other = next((tmp_path / "dense").rglob("results_*.json"))
    bad = json.loads(other.read_text())
    bad["config"]["kick"]["compression"]["target_sparsity"] = 1e308
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results_2026-02-01T00-00-00.json").write_text(json.dumps(bad))
    with caplog.at_level(logging.WARNING):
        runs = load_runs(tmp_path)
    assert "refusing non-finite metric values kick_freebaseqa exact_match,none=nan" in caplog.text
    assert "invalid target_sparsity 1e+308; accepted: a number in [0, 1]" in caplog.text
    assert len(runs) == 2 and all(math.isfinite(v) for r in runs for v in r.results["kick_freebaseqa"].values()
                                  if isinstance(v, float))


@pytest.mark.parametrize("argv, message", [
    (["--rel_tol", "nan"], "invalid --rel_tol nan; accepted: a finite number in [0, 1)"),
    (["--abs_tol", "inf"], "invalid --abs_tol inf; accepted: a finite number >= 0"),
    (["--rel_tol", "-0.1"], "invalid --rel_tol -0.1"),
])
def test_meaningless_tolerances_are_refused(tmp_path, capsys, argv, message):
    assert kick_report.main([str(tmp_path / "nowhere"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_holm_adjustment_and_pooled_decision_appear(tmp_path, results_writer):
    dense = [1.0] * 300 + [0.0] * 100
    _binary(tmp_path, results_writer, dense, [("magnitude", {"method": "magnitude", "sparsity": 0.1}, dense)])
    report = kick_report.build_report(tmp_path, plots=False, multiplicity="holm").read_text()
    assert "adjusted across every cell of the report (Holm)" in report
    assert _row(_task(report), "magnitude", "10%")[4] == "matches"
    pooled = report[report.index("### One decision per cell across tasks"):]
    assert _row(pooled, "magnitude", "10%") == ["1", "matches"]


def _mc(doc_id: int, leaf: str, correct: bool) -> dict:
    logliks = [-1.0, -2.0, -3.0, -4.0] if correct else [-2.0, -1.0, -3.0, -4.0]  # gold is option 0
    return {"doc_id": doc_id, "doc": {}, "target": 0, "arguments": [["ctx", f" {c}"] for c in "ABCD"],
            "resps": [[[str(x), "False"]] for x in logliks], "filtered_resps": [[str(x), "False"] for x in logliks],
            "filter": "none", "metrics": ["acc"], "doc_hash": f"{leaf}{doc_id}", "prompt_hash": "p",
            "target_hash": "t", "acc": float(correct)}


def _write_group(root, writer, name, args, outcomes):
    from kick_models.config import build_config

    leaves = list(outcomes)
    acc = {leaf: sum(v) / len(v) for leaf, v in outcomes.items()}
    scores = {"kick_mmlu": {"acc": sum(map(sum, outcomes.values())) / sum(map(len, outcomes.values()))},
              **{leaf: {"acc": a} for leaf, a in acc.items()}}
    kick = {"model": "org/tiny", "compression": build_config(dict(args)).to_dict(), "result": {}}
    path = writer(root / name, {"pretrained": "org/tiny", **args}, scores, kick=kick, groups={"kick_mmlu": leaves},
                  stamp=STAMP)
    data = json.loads(path.read_text())
    data["configs"] = {leaf: {"output_type": "multiple_choice"} for leaf in leaves}
    path.write_text(json.dumps(data))
    for leaf, values in outcomes.items():
        (path.parent / f"samples_{leaf}_{STAMP}.jsonl").write_text(
            "\n".join(json.dumps(_mc(i, leaf, bool(v))) for i, v in enumerate(values)) + "\n")


def test_groups_get_a_heterogeneity_line_a_cluster_option_and_a_chance_baseline(tmp_path, results_writer):
    dense = {"kick_mmlu_physics": [1] * 20 + [0] * 20, "kick_mmlu_history": [1] * 20 + [0] * 20}
    comp = {"kick_mmlu_physics": [0] * 10 + [1] * 10 + [0] * 20, "kick_mmlu_history": dense["kick_mmlu_history"]}
    _write_group(tmp_path, results_writer, "dense", {"method": "none"}, dense)
    _write_group(tmp_path, results_writer, "wanda", {"method": "wanda", "sparsity": 0.5, "seed": 0}, comp)
    runs = load_runs(tmp_path)
    view = next(v for v in tables.build_views(runs) if v.task == "kick_mmlu")
    pooled = comparison.compare_view(view, runs, Tolerance()).cells[0]
    q, df, p, _ = pooled.heterogeneity  # physics lost 10 of 40, history nothing
    assert df == 1 and p < 0.01
    clustered = comparison.compare_view(view, runs, Tolerance(), cluster=True).cells[0]
    assert clustered.diff.method == "t (1 df)" and clustered.diff.high - clustered.diff.low > \
        pooled.diff.high - pooled.diff.low  # two subjects say little about subjects in general
    chance = comparison.compare_view(view, runs, Tolerance(chance_corrected=True))
    assert chance.chance == pytest.approx(25.0) and chance.width == pytest.approx(0.05 * (50.0 - 25.0))
    report = kick_report.build_report(tmp_path, plots=False, tol=Tolerance(chance_corrected=True)).read_text()
    assert "heterogeneity across leaf tasks Q = " in report and "chance 25" in report
    assert "5% of (dense − chance)" in report


def test_dense_at_chance_is_said(tmp_path, results_writer):
    dense = {"kick_mmlu_physics": [1] * 6 + [0] * 14, "kick_mmlu_history": [1] * 5 + [0] * 15}  # 27.5% vs 25%
    _write_group(tmp_path, results_writer, "dense", {"method": "none"}, dense)
    _write_group(tmp_path, results_writer, "wanda", {"method": "wanda", "sparsity": 0.5, "seed": 0}, dense)
    report = kick_report.build_report(tmp_path, plots=False).read_text()
    assert "dense is at chance: nothing to lose, no margin" in report


# --------------------------------------------------------------------------- each score carries its own interval
def _score_table(report: str, kind: str = "Task", task: str = "kick_freebaseqa") -> str:
    part = report[report.index(f"### {kind}"):]
    part = part[part.index(task):]
    return part[: part.index("\n\n", part.index("| setting |"))]


def test_a_cells_score_carries_its_own_clopper_pearson_interval_and_the_delta_stays_in_its_column(tmp_path,
                                                                                                  results_writer):
    from scipy.stats import binomtest

    dense = [1.0] * 12 + [0.0] * 40  # 12 of 52, the demo's dense score
    comp = [0.0] * 10 + [1.0] * 4 + [0.0] * 38  # 10 lost, 2 gained: 4 of 52
    _binary(tmp_path, results_writer, dense, [("wanda", {"method": "wanda", "sparsity": 0.5, "seed": 0}, comp)])
    cell = _compare(tmp_path, "kick_freebaseqa").cells[0]
    exact = binomtest(4, 52).proportion_ci(confidence_level=0.95, method="exact")
    assert cell.score_n == 52 and cell.score_interval.method == "Clopper–Pearson"
    assert (cell.score_interval.low, cell.score_interval.high) == pytest.approx((100 * exact.low, 100 * exact.high))
    assert cell.score_interval.low >= 0 > 100 * 12 / 52 + cell.diff.low  # dense + Δ's interval leaves [0, 100]
    report = kick_report.build_report(tmp_path, plots=False).read_text()
    scores = _score_table(report)
    assert _row(scores, "wanda")[-1] == f"7.7 [{100 * exact.low:.1f}, {100 * exact.high:.1f}] worse"
    dense_ci = binomtest(12, 52).proportion_ci(method="exact")
    assert _row(scores, "dense")[0] == f"23.1 [{100 * dense_ci.low:.1f}, {100 * dense_ci.high:.1f}]"
    assert f"{23.1 + cell.diff.low:.1f}" not in scores  # dense + the paired interval is no interval of the score
    row = _row(_task(report), "wanda", "50%")
    assert row[2] == f"7.7 [{100 * exact.low:.1f}, {100 * exact.high:.1f}]"
    assert row[3] == f"{cell.diff.estimate:+.1f} [{cell.diff.low:+.1f}, {cell.diff.high:+.1f}]"


def test_seeds_are_averaged_before_a_scores_own_interval(tmp_path, results_writer):
    dense = [1.0] * 10 + [0.0] * 10
    comp = [1.0] * 6 + [0.0] * 14
    _binary(tmp_path, results_writer, dense,
            [(f"wanda{s}", {"method": "wanda", "sparsity": 0.5, "seed": s}, comp) for s in range(3)]
            + [("sparsegpt", {"method": "sparsegpt", "sparsity": 0.5, "seed": 0}, comp)])
    cells = _compare(tmp_path, "kick_freebaseqa").cells
    three, one = (next(c for c in cells if c.setting.method == m) for m in ("wanda", "sparsegpt"))
    assert three.score_interval == one.score_interval and three.score_n == one.score_n == 20


def test_a_judge_score_on_fewer_items_gets_its_own_t_interval_and_says_its_n(tmp_path, results_writer):
    from scipy import stats

    _write_judged_pair(tmp_path, results_writer, 6.91)
    comp = JUDGE_COMP
    cell = _compare(tmp_path, "kick_mtbench").cells[0]
    own = [v for v in comp if v is not None]
    low, high = stats.t.interval(0.95, len(own) - 1, loc=sum(own) / len(own), scale=stats.sem(own))
    assert cell.score_n == 11 and cell.score_interval.method == "t (10 df)"
    assert (cell.score_interval.low, cell.score_interval.high) == pytest.approx((low, high))
    report = kick_report.build_report(tmp_path, plots=False).read_text()
    assert _row(_score_table(report, task="kick_mtbench"), "wanda")[-1].startswith(f"6.91 [{low:.2f}, {high:.2f}] (n = 11) ")


def test_perplexity_scores_carry_their_own_interval_over_documents(tmp_path, results_writer):
    words = [100 + 7 * i for i in range(12)]
    dense = [-3.0 * w + (i % 5) for i, w in enumerate(words)]
    comp = [ll - 0.5 * w * (1 + (i % 3)) for i, (ll, w) in enumerate(zip(dense, words))]
    ppl = [math.exp(-sum(x) / sum(words)) for x in (dense, comp)]
    _write(tmp_path, results_writer, "dense", {"method": "none"}, "kick_ppl_heldout",
           [_ppl(i, ll, w) for i, (ll, w) in enumerate(zip(dense, words))], ppl[0], "loglikelihood_rolling")
    _write(tmp_path, results_writer, "wanda", {"method": "wanda", "sparsity": 0.5, "seed": 0}, "kick_ppl_heldout",
           [_ppl(i, ll, w) for i, (ll, w) in enumerate(zip(comp, words))], ppl[1], "loglikelihood_rolling")
    result = _compare(tmp_path, "kick_ppl_heldout")
    for own, value in ((result.dense_interval, ppl[0]), (result.cells[0].score_interval, ppl[1])):
        assert own.estimate == pytest.approx(value) and own.low < value < own.high
    rate = paired.ratio_interval([-x for x in comp], words)  # nats per word, the delta-method t below 30 documents
    assert result.cells[0].score_interval.low == pytest.approx(math.exp(rate.low))
    report = kick_report.build_report(tmp_path, plots=False).read_text()
    own = result.cells[0].score_interval
    assert _row(_score_table(report, "Perplexity", "kick_ppl_heldout"), "wanda")[-1].startswith(
        f"{ppl[1]:.2f} [{own.low:.2f}, {own.high:.2f}] ")
