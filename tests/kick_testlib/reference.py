"""Reference implementations kept only to check kick against them: the LLM-KICK reference code's
scoring bugs (so the tests show they are fixed), a one-shot Hessian for the streaming statistics,
and a summary of pairwise judge records."""

from __future__ import annotations

import torch

from kick_tasks.normalize import normalize_answer


def reference_parse_choice(prompt: str, continuation: str) -> str:
    """LLM-KICK's parser, kept to show its bug: the last character of prompt + output.

    With an EOS (decoded as nothing) the "answer" is the ``:`` of ``Answer:``.
    """
    return (prompt + continuation)[-1:]


def reference_contains(prediction: str, answers: list[str]) -> float:
    """LLM-KICK's "exact_match", kept to show its bug: two-way substring containment, so an empty
    (or article-only) prediction is contained in every alias and counts as correct."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(a) in pred or pred in normalize_answer(a) for a in answers))


def hessian(x: torch.Tensor) -> torch.Tensor:
    """One-shot H = 2XᵀX/n for activations x [..., in] (reference for the streaming version)."""
    x = x.reshape(-1, x.shape[-1]).double()
    return (2.0 * x.T @ x / x.shape[0]).float()


def pairwise_summary(records: list[dict]) -> dict:
    """Rates over judged items plus counts of the items without an outcome."""
    judged = [r for r in records if r["outcome"] is not None]
    n = len(judged)

    def rate(pred) -> float | None:
        return sum(1 for r in judged if pred(r)) / n if n else None

    return {"items": len(records), "judged": n,
            "win_rate": rate(lambda r: r["outcome"] == "win"),
            "tie_rate": rate(lambda r: r["outcome"] == "tie"),
            "loss_rate": rate(lambda r: r["outcome"] == "loss"),
            "inconsistency_rate": rate(lambda r: not r["consistent"]),
            "unparsed": sum(1 for r in records if r["status"] == "unparsed"),
            "failed": sum(1 for r in records if r["status"] == "failed")}
