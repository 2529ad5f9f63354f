"""What kick_instruct and kick_mtbench share: the question as the user turn under a chat template (a
``User:``/``Assistant:`` transcript otherwise), diversity metrics per answer, and their aggregations."""

from __future__ import annotations

from kick_tasks.diversity import count_true, diversity_metrics, mean_defined, self_bleu_aggregation
from kick_tasks.judge.lmeval import JudgedTask

DIVERSITY = ("distinct_1", "distinct_2", "distinct_3", "repetition_4")


def plain_turn(question: str) -> str:
    """Prompt format without a chat template (base models); ``User:`` is a stop sequence."""
    return f"User: {question.strip()}\nAssistant:"


class ChatAwareTask(JudgedTask):
    """Question as the user message under a chat template; a User/Assistant transcript otherwise."""

    def question(self, doc: dict) -> str:
        raise NotImplementedError

    def doc_to_text(self, doc, doc_to_text=None):
        question = self.question(doc)
        return question if self._chat.get("apply_chat_template") else plain_turn(question)

    def _diversity(self, texts: list[str]) -> dict:
        per_turn = [diversity_metrics(t) for t in texts]
        out = {}
        for name in (*DIVERSITY, "words"):
            values = [m[name] for m in per_turn if m[name] is not None]
            out[name] = sum(values) / len(values) if values else None
        out["answer_words"] = out.pop("words")
        return out

    def aggregation(self):
        from lm_eval.api.metrics import mean

        agg = {m: mean_defined for m in (*DIVERSITY, "judge_score", "judge_score_turn1",
                                         "judge_score_turn2", "judge_win_rate", "judge_tie_rate",
                                         "judge_loss_rate", "judge_inconsistency_rate")}
        agg.update(answer_words=mean, self_bleu=self_bleu_aggregation,
                   judge_unparsed=count_true, judge_failed=count_true)
        return agg

    def higher_is_better(self):
        lower = {"repetition_4", "self_bleu", "judge_loss_rate", "judge_inconsistency_rate",
                 "judge_unparsed", "judge_failed"}
        return {m: m not in lower for m in self.aggregation()}
