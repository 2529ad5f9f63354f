"""Batch grading protocols on top of `JudgeClient`: pairwise in both orders, and single 1-10 scores.

Pairwise: each item is judged twice, candidate first and reference first. A verdict counts only
when both orders agree (after mapping A/B back to candidate/reference); disagreement is a tie
and is counted as inconsistent. An order that stays unparsed or failed leaves the item without
an outcome and it is counted as such, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from kick_tasks.judge.client import JudgeClient, JudgeRequest, JudgeResult
from kick_tasks.judge.prompts import pairwise_messages

_OUTCOME = {("candidate_first", "A"): "win", ("candidate_first", "B"): "loss",
            ("reference_first", "A"): "loss", ("reference_first", "B"): "win"}


@dataclass(frozen=True)
class PairwiseItem:
    """A question, the model's answer, the reference model's answer, optional ground truth for the judge."""

    question: str
    candidate: str
    reference: str
    ground_truth: str | None = None


def _outcome(order: str, result: JudgeResult) -> str | None:
    if result.status != "ok":
        return None
    return "tie" if result.value == "tie" else _OUTCOME[(order, result.value)]


def grade_pairwise(client: JudgeClient, items: list[PairwiseItem], desc: str = "judge pairwise") -> list[dict]:
    """One record per item: outcome ('win'|'tie'|'loss'|None), consistent, status, per-order details."""
    requests = []
    for it in items:
        answers = (it.candidate, it.reference)
        requests.append(JudgeRequest(pairwise_messages(it.question, it.candidate, it.reference,
                                                       it.ground_truth), "verdict", answers))
        requests.append(JudgeRequest(pairwise_messages(it.question, it.reference, it.candidate,
                                                       it.ground_truth), "verdict", answers))
    results = client.run(requests, desc=desc)
    records = []
    for k in range(len(items)):
        first, second = results[2 * k], results[2 * k + 1]
        a, b = _outcome("candidate_first", first), _outcome("reference_first", second)
        record = {"orders": {"candidate_first": _brief(first), "reference_first": _brief(second)}}
        if a is None or b is None:
            bad = first if a is None else second
            record.update(outcome=None, consistent=None, status=bad.status, reason=bad.reason)
        else:
            record.update(outcome=a if a == b else "tie", consistent=a == b, status="ok", reason="")
        records.append(record)
    return records


def grade_single(client: JudgeClient, requests: list[JudgeRequest], desc: str = "judge scores") -> list[dict]:
    """One record per 'score' request: score (float or None), status, reason."""
    return [{"score": r.value if r.status == "ok" else None, "status": r.status,
             "reason": r.reason, "cached": r.cached}
            for r in client.run(requests, desc=desc)]


def _brief(result: JudgeResult) -> dict:
    return {"status": result.status, "verdict": result.value, "reason": result.reason,
            "cached": result.cached}

