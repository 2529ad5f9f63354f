"""kick-report --judge: compressed answers graded pairwise against dense's on the same prompts (loopback judge)."""

from __future__ import annotations

import json

import pytest

from kick_study import report as kick_report
from kick_testlib.loopback import LoopbackJudgeServer

STAMP = "2026-01-01T00-00-00.000001"
DENSE = ["a long and careful answer one", "a long and careful answer two", "same", "short"]
WANDA = ["tiny", "tiny", "same", "a much longer answer than dense gave"]


def prefers_longer(body):
    text = body["messages"][-1]["content"]
    a = text.split("<<Answer A>>")[1].split("<</Answer A>>")[0]
    b = text.split("<<Answer B>>")[1].split("<</Answer B>>")[0]
    return "Reasoning...\n" + ("[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]")


def _write(root, writer, name, args, answers):
    path = writer(root / name, {"pretrained": "org/tiny", **args}, {"kick_instruct": {"judge_score": 0.5}}, stamp=STAMP)
    data = json.loads(path.read_text())
    data["configs"] = {"kick_instruct": {"output_type": "generate_until"}}
    path.write_text(json.dumps(data))
    lines = [{"doc_id": i, "doc_hash": f"h{i}", "filter": "none", "metrics": ["judge_score"], "judge_score": 0.5,
              "arguments": [[f"Question {i}?", "{'until': []}"]], "resps": [[a]], "filtered_resps": [a]}
             for i, a in enumerate(answers)]
    (path.parent / f"samples_kick_instruct_{STAMP}.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")


@pytest.fixture
def judged_dir(tmp_path, results_writer):
    root = tmp_path / "results"
    _write(root, results_writer, "dense", {"method": "none"}, DENSE)
    _write(root, results_writer, "wanda", {"method": "wanda", "sparsity": 0.5}, WANDA)
    return root


def test_judged_against_dense_in_both_orders(judged_dir, tmp_path, monkeypatch):
    with LoopbackJudgeServer(prefers_longer) as server:
        monkeypatch.setenv("KICK_JUDGE_MODEL", "judge-x")
        monkeypatch.setenv("KICK_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("KICK_JUDGE_CACHE_DIR", str(tmp_path / "verdicts"))
        monkeypatch.setenv("KICK_JUDGE_API_KEY", "sk-test-secret")
        assert kick_report.main([str(judged_dir), "--judge", "--no_plots"]) == 0
        sent = len(server.requests)
        report = (judged_dir / "report.md").read_text()
        # both orders of every prompt; the identical pair ("same"/"same") is one request
        assert sent == 7
        prompts = [r["messages"][-1]["content"] for r in server.requests]
        assert sum("<<Answer A>>\ntiny" in p for p in prompts) == 2 and sum("<<Answer B>>\ntiny" in p for p in prompts) == 2
        section = report[report.index("### Judged against dense: kick_instruct"):]
        row = next(line for line in section.splitlines() if line.startswith("| wanda |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:7] == ["4/4", "25%", "25%", "50%", "0%"]  # 1 win, 1 tie (identical), 2 losses
        assert cells[7].startswith("0.38 [")
        assert "sk-test-secret" not in report
        assert kick_report.main([str(judged_dir), "--judge", "--no_plots"]) == 0
        assert len(server.requests) == sent  # verdict cache: a rerun asks nothing


def test_judge_without_configuration_is_refused(judged_dir, monkeypatch, capsys):
    monkeypatch.delenv("KICK_JUDGE_MODEL", raising=False)
    assert kick_report.main([str(judged_dir), "--judge"]) == 2
    assert "KICK_JUDGE_MODEL" in capsys.readouterr().err
