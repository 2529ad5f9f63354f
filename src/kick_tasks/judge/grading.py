"""Batch grading protocols on top of `JudgeClient`: pairwise in both orders, and single 1-10 scores.

Pairwise: each item is judged twice, candidate first and reference first. A verdict counts only
when both orders agree (after mapping A/B back to candidate/reference); disagreement is a tie
and is counted as inconsistent. An order that stays unparsed or failed leaves the item without
an outcome and it is counted as such, never dropped silently.

With ``scores=True`` each pairwise review also rates both answers 1-10 (LLM-KICK's form, where
the judge scores the model's answer next to GPT-3.5's); an item's score is the mean over its
orders whose score pair could be read. Summaries get four criteria scores (`grade_criteria`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kick_tasks.judge.client import JudgeClient, JudgeRequest, JudgeResult
from kick_tasks.judge.parsing import CRITERIA
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
    category: str | None = None


def _verdict(result: JudgeResult) -> str | None:
    if result.status != "ok":
        return None
    return result.value["verdict"] if isinstance(result.value, dict) else result.value


def _outcome(order: str, result: JudgeResult) -> str | None:
    verdict = _verdict(result)
    if verdict is None:
        return None
    return "tie" if verdict == "tie" else _OUTCOME[(order, verdict)]


def _role_scores(order: str, result: JudgeResult) -> tuple[float, float] | None:
    """(candidate's score, reference's score) of one review, or None when it has none."""
    pair = result.value.get("scores") if result.status == "ok" and isinstance(result.value, dict) else None
    if not pair:
        return None
    return (pair[0], pair[1]) if order == "candidate_first" else (pair[1], pair[0])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def grade_pairwise(client: JudgeClient, items: list[PairwiseItem], desc: str = "judge pairwise",
                   scores: bool = False) -> list[dict]:
    """One record per item: outcome ('win'|'tie'|'loss'|None), consistent, status, per-order details.

    With ``scores``: also ``candidate_score`` / ``reference_score`` (1-10, mean over the orders
    whose scores were read, None if neither) and ``scored_orders``.
    """
    kind = "review" if scores else "verdict"
    requests = []
    for it in items:
        answers = (it.candidate, it.reference)
        for a, b in ((it.candidate, it.reference), (it.reference, it.candidate)):
            requests.append(JudgeRequest(pairwise_messages(it.question, a, b, it.ground_truth,
                                                           scores=scores, category=it.category),
                                         kind, answers))
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
        if scores:
            read = [s for s in (_role_scores("candidate_first", first),
                                _role_scores("reference_first", second)) if s is not None]
            record.update(candidate_score=_mean([s[0] for s in read]),
                          reference_score=_mean([s[1] for s in read]), scored_orders=len(read))
        records.append(record)
    return records


def grade_criteria(client: JudgeClient, requests: list[JudgeRequest],
                   desc: str = "judge criteria") -> list[dict]:
    """One record per 'criteria' request: ``scores`` per criterion, ``score`` (their mean), status."""
    records = []
    for r in client.run(requests, desc=desc):
        scores = r.value if r.status == "ok" else None
        records.append({"scores": scores,
                        "score": sum(scores[c] for c in CRITERIA) / len(CRITERIA) if scores else None,
                        "status": r.status, "reason": r.reason, "cached": r.cached})
    return records


def grade_single(client: JudgeClient, requests: list[JudgeRequest], desc: str = "judge scores") -> list[dict]:
    """One record per 'score' request: score (float or None), status, reason."""
    return [{"score": r.value if r.status == "ok" else None, "status": r.status,
             "reason": r.reason, "cached": r.cached}
            for r in client.run(requests, desc=desc)]


def _brief(result: JudgeResult) -> dict:
    brief = {"status": result.status, "verdict": _verdict(result), "reason": result.reason,
             "cached": result.cached}
    if isinstance(result.value, dict):
        brief.update(scores=result.value["scores"], scores_reason=result.value["scores_reason"])
    return brief

