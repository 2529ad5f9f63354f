"""kick_instruct: the model answers each Vicuna-80 question; the judge compares it with the shipped
gpt-3.5-turbo answer in both orders (win / tie / loss, inconsistency rate) and, in the same
reviews, rates both answers 1-10 as LLM-KICK's judge did: ``judge_rating`` (the model's, mean over
the reviews whose scores were read; also per question category) next to ``judge_rating_reference``
(gpt-3.5-turbo's). Beside them the "unique content" metrics (distinct-n, 4-gram repetition,
self-BLEU)."""

from __future__ import annotations

from typing import Any

from kick_common.bundled import read_jsonl_gz
from kick_tasks import data_dir
from kick_tasks.chat import ChatAwareTask
from kick_tasks.diversity import mean_defined
from kick_tasks.judge.client import JudgeClient
from kick_tasks.judge.grading import PairwiseItem, grade_pairwise

# Vicuna-80's question categories (metric names use "_" for "-")
VICUNA_CATEGORIES = ("generic", "knowledge", "roleplay", "common-sense", "fermi", "counterfactual",
                     "coding", "math", "writing")


def _category_metric(category: str) -> str:
    return "judge_rating_" + category.replace("-", "_")


def load_vicuna80(**kwargs: Any):
    """DatasetDict ``test``: 80 questions with the gpt-3.5-turbo reference answer."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(
        read_jsonl_gz(data_dir() / "vicuna80" / "vicuna80.jsonl.gz"))})


class InstructTask(ChatAwareTask):
    """kick_instruct: Vicuna-80, judged pairwise against gpt-3.5-turbo in both orders."""

    def question(self, doc):
        return doc["question"]

    def judge_batch(self, client: JudgeClient, docs: list[dict], outputs: list[dict]) -> list[dict]:
        items = [PairwiseItem(d["question"], o["text"].strip(), d["reference_answer"],
                              category=d["category"]) for d, o in zip(docs, outputs, strict=True)]
        return grade_pairwise(client, items, desc=f"judge {self.config.task}", scores=True)

    def process_results(self, doc, results):
        out = results[0]
        text = out["text"].strip()
        metrics = {**self._diversity([text]), "self_bleu": text}
        rec = out.get("judge")
        if rec is not None:
            outcome = rec["outcome"]
            known = outcome is not None
            metrics.update(
                judge_win_rate=float(outcome == "win") if known else None,
                judge_tie_rate=float(outcome == "tie") if known else None,
                judge_loss_rate=float(outcome == "loss") if known else None,
                judge_score=({"win": 1.0, "tie": 0.5, "loss": 0.0}[outcome] if known else None),
                judge_inconsistency_rate=float(not rec["consistent"]) if known else None,
                judge_unparsed=rec["status"] == "unparsed", judge_failed=rec["status"] == "failed")
            rating = rec.get("candidate_score")
            metrics.update(judge_rating=rating, judge_rating_reference=rec.get("reference_score"))
            metrics.update({_category_metric(c): rating if c == doc["category"] else None
                            for c in VICUNA_CATEGORIES})
        return metrics

    def aggregation(self):
        ratings = ("judge_rating", "judge_rating_reference", *map(_category_metric, VICUNA_CATEGORIES))
        return {**super().aggregation(), **{m: mean_defined for m in ratings}}
