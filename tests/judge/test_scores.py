"""LLM-KICK's judge scores: four summary criteria, and 1-10 scores of both answers inside a
pairwise review (both orders, mean over the reviews read)."""

import threading

import pytest

from kick_tasks.judge.client import JudgeClient, JudgeConfig, JudgeRequest
from kick_tasks.judge.grading import PairwiseItem, grade_criteria, grade_pairwise
from kick_tasks.judge.parsing import parse_criteria, parse_review, parse_score_pair
from kick_tasks.judge.prompts import summary_messages
from kick_testlib.loopback import LoopbackJudgeServer

FOUR = "Fine.\nCoherence: [[7]]\nConsistency: [[8]]\nFluency: [[9]]\nRelevance: [[6]]"


@pytest.mark.parametrize("text, value", [
    (FOUR, {"coherence": 7.0, "consistency": 8.0, "fluency": 9.0, "relevance": 6.0}),
    ("coherence [[7/10]] consistency: [[ 8 ]] FLUENCY - [[9]] relevance=[[6.5]]",
     {"coherence": 7.0, "consistency": 8.0, "fluency": 9.0, "relevance": 6.5}),
])
def test_criteria_ok(text, value):
    assert parse_criteria(text).value == value


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("Coherence: [[7]]\nConsistency: [[8]]", "fluency, relevance"),
    (FOUR + "\nCoherence: [[3]]", "conflicting scores for coherence"),
    (FOUR.replace("[[6]]", "[[11]]"), "outside"),
    ("[[7]]", "no [[score]] for coherence"),
])
def test_criteria_none(text, reason):
    parsed = parse_criteria(text)
    assert parsed.value is None and reason in parsed.reason


@pytest.mark.parametrize("text, value", [
    ("Scores: [[8, 5]]\n[[A]]", [8.0, 5.0]),
    ("[[7 4]]", [7.0, 4.0]),
    ("[[6.5,9]]", [6.5, 9.0]),
    ("[[8, 5]] [[5, 8]]", None),
    ("[[0, 5]]", None),
    ("[[A]]", None),
])
def test_score_pair(text, value):
    assert parse_score_pair(text).value == value


def test_review_keeps_the_verdict_when_scores_are_missing():
    assert parse_review("Scores: [[8, 5]]\n[[A]]").value == {"verdict": "A", "scores": [8.0, 5.0],
                                                             "scores_reason": ""}
    review = parse_review("[[C]]").value
    assert review["verdict"] == "tie" and review["scores"] is None and "pair" in review["scores_reason"]
    assert parse_review("Scores: [[8, 5]]").value is None


def client(server, tmp_path):
    return JudgeClient(JudgeConfig(model="j", base_url=server.base_url, concurrency=2, backoff=0.01,
                                   cache_dir=str(tmp_path / "c")))


def test_review_scores_map_back_to_candidate_and_reference_in_both_orders(tmp_path):
    """A judge that gives the longer answer 9 and the shorter 3; then one order without scores."""
    def responder(body):
        text = body["messages"][-1]["content"]
        assert "Scores: [[score of A, score of B]]" in text
        a = text.split("<<Answer A>>")[1].split("<</Answer A>>")[0]
        b = text.split("<<Answer B>>")[1].split("<</Answer B>>")[0]
        if "q2" in text and len(a) < len(b):
            return "[[B]]"                              # this order gives no scores
        return f"Scores: [[{9 if len(a) > len(b) else 3}, {9 if len(b) > len(a) else 3}]]\n" + \
            ("[[A]]" if len(a) > len(b) else "[[B]]")

    items = [PairwiseItem("q1", "a long candidate answer", "short"),
             PairwiseItem("q2", "a long candidate answer", "short"),
             PairwiseItem("q3", "tiny", "a longer reference answer", category="math")]
    with LoopbackJudgeServer(responder) as server:
        records = grade_pairwise(client(server, tmp_path), items, scores=True)
    assert [r["outcome"] for r in records] == ["win", "win", "loss"]
    assert (records[0]["candidate_score"], records[0]["reference_score"], records[0]["scored_orders"]) == (9.0, 3.0, 2)
    assert (records[1]["candidate_score"], records[1]["scored_orders"]) == (9.0, 1)
    assert (records[2]["candidate_score"], records[2]["reference_score"]) == (3.0, 9.0)
    assert records[0]["orders"]["reference_first"]["scores"] == [3.0, 9.0]   # as the judge wrote them
    math = [r for r in server.requests if "q3" in r["messages"][-1]["content"]]
    assert all("solve it yourself first" in r["messages"][-1]["content"] for r in math)


def test_summary_criteria_graded_with_one_reminder(tmp_path):
    replies = iter(["Good summary. [[7]]", FOUR])
    lock = threading.Lock()

    def responder(body):
        with lock:
            return next(replies)

    request = JudgeRequest(summary_messages("The story.", "The summary.", "Key point."), "criteria",
                           ("The summary.",))
    with LoopbackJudgeServer(responder) as server:
        [record] = grade_criteria(client(server, tmp_path), [request])
    assert record["scores"] == {"coherence": 7.0, "consistency": 8.0, "fluency": 9.0, "relevance": 6.0}
    assert record["score"] == 7.5 and record["status"] == "ok"
    assert "Coherence: [[N]]" in server.requests[1]["messages"][-1]["content"]
    system = server.requests[0]["messages"][0]["content"]
    assert all(c in system for c in ("coherence", "consistency", "fluency", "relevance"))
