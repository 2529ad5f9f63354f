"""Instruction following: Vicuna-80 (pairwise vs GPT-3.5) and two-turn MT-Bench (1-10 single grading).

kick_instruct: the model answers each Vicuna-80 question; the judge compares it with the
shipped gpt-3.5-turbo answer in both orders (win / tie / loss, inconsistency rate).

kick_mtbench: the second question must follow the model's OWN first answer, which lm-eval's
one-shot request model cannot express. `MTBenchTask` therefore generates turn 1 as an ordinary
request and, once per task in ``apply_filters``, builds every turn-2 prompt from the turn-1
prompt + answer (through the same chat template, when one is applied) and calls the running
model's ``generate_until`` for all of them in one batch. The judge then scores each turn 1-10,
seeing GPT-4 reference answers for math, reasoning and coding.

Both tasks also report the "unique content" metrics (distinct-n, 4-gram repetition, self-BLEU).
"""

from __future__ import annotations

import gzip
import json
import logging
from functools import lru_cache
from importlib.resources import files
from typing import Any

from lm_eval.api.instance import Instance

from kick_tasks.diversity import count_true, diversity_metrics, mean_defined, self_bleu_aggregation
from kick_tasks.judge.client import JudgeClient, JudgeRequest
from kick_tasks.judge.grading import PairwiseItem, grade_pairwise, grade_single
from kick_tasks.judge.lmeval import JudgedTask, current_lm
from kick_tasks.judge.prompts import second_turn_messages, single_messages

log = logging.getLogger(__name__)

_DIVERSITY = ("distinct_1", "distinct_2", "distinct_3", "repetition_4")


@lru_cache(maxsize=2)
def _read_jsonl_gz(family: str, name: str) -> tuple[dict, ...]:
    path = files("kick_tasks") / "data" / family / name
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh)


def load_vicuna80(**kwargs: Any):
    """DatasetDict ``test``: 80 questions with the gpt-3.5-turbo reference answer."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(
        list(_read_jsonl_gz("vicuna80", "vicuna80.jsonl.gz")))})


def load_mt_bench(**kwargs: Any):
    """DatasetDict ``test``: 80 two-turn questions; ``reference_turns`` (GPT-4) for math/reasoning/coding."""
    import datasets

    rows = [{**r, "reference_turns": r["reference_turns"] or []}
            for r in _read_jsonl_gz("mt_bench", "mt_bench.jsonl.gz")]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def plain_turn(question: str) -> str:
    """Prompt format without a chat template (base models); ``User:`` is a stop sequence."""
    return f"User: {question.strip()}\nAssistant:"


class _ChatAwareTask(JudgedTask):
    """Question as the user message under a chat template; a User/Assistant transcript otherwise."""

    def question(self, doc: dict) -> str:
        raise NotImplementedError

    def doc_to_text(self, doc, doc_to_text=None):
        question = self.question(doc)
        return question if self._chat.get("apply_chat_template") else plain_turn(question)

    def _diversity(self, texts: list[str]) -> dict:
        per_turn = [diversity_metrics(t) for t in texts]
        out = {}
        for name in (*_DIVERSITY, "words"):
            values = [m[name] for m in per_turn if m[name] is not None]
            out[name] = sum(values) / len(values) if values else None
        out["answer_words"] = out.pop("words")
        return out

    def aggregation(self):
        from lm_eval.api.metrics import mean

        agg = {m: mean_defined for m in (*_DIVERSITY, "judge_score", "judge_score_turn1",
                                         "judge_score_turn2", "judge_win_rate", "judge_tie_rate",
                                         "judge_loss_rate", "judge_inconsistency_rate")}
        agg.update(answer_words=mean, self_bleu=self_bleu_aggregation,
                   judge_unparsed=count_true, judge_failed=count_true)
        return agg

    def higher_is_better(self):
        lower = {"repetition_4", "self_bleu", "judge_loss_rate", "judge_inconsistency_rate",
                 "judge_unparsed", "judge_failed"}
        return {m: m not in lower for m in self.aggregation()}


class InstructTask(_ChatAwareTask):
    """kick_instruct: Vicuna-80, judged pairwise against gpt-3.5-turbo in both orders."""

    def question(self, doc):
        return doc["question"]

    def judge_batch(self, client: JudgeClient, docs: list[dict], outputs: list[dict]) -> list[dict]:
        items = [PairwiseItem(d["question"], o["text"].strip(), d["reference_answer"])
                 for d, o in zip(docs, outputs, strict=True)]
        return grade_pairwise(client, items, desc=f"judge {self.config.task}")

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
        return metrics


class MTBenchTask(_ChatAwareTask):
    """kick_mtbench: two turns, the second conditioned on the model's own first answer; 1-10 per turn."""

    def question(self, doc):
        return doc["turns"][0]

    def _turn2_context(self, instance, answer1: str) -> str:
        doc = instance.doc
        if self._chat.get("apply_chat_template") and self._chat.get("chat_template"):
            history = []
            if self._chat.get("system_instruction"):
                history.append({"role": "system", "content": self._chat["system_instruction"]})
            history += [{"role": "user", "content": doc["turns"][0]},
                        {"role": "assistant", "content": answer1.strip()},
                        {"role": "user", "content": doc["turns"][1]}]
            return self._chat["chat_template"](history)
        return f"{instance.args[0]} {answer1.strip()}\n{plain_turn(doc['turns'][1])}"

    def after_generation(self, instances: list, outputs: list[dict]) -> list[dict]:
        lm = current_lm()
        if lm is None:
            raise RuntimeError(
                f"{self.config.task}: the second turn needs the model that answered the first, but no "
                "running lm_eval evaluate() call was found; run this task through lm_eval / "
                "simple_evaluate / evaluate")
        requests = [Instance(request_type="generate_until", doc=inst.doc,
                             arguments=(self._turn2_context(inst, out["text"]), inst.args[1]),
                             idx=1, metadata=(self.config.task, inst.doc_id, 1))
                    for inst, out in zip(instances, outputs, strict=True)]
        log.info("%s: generating %d second turns", self.config.task, len(requests))
        answers = lm.generate_until(requests)
        return [{**out, "turns": [out["text"], answer], "turn2_prompt": req.args[0]}
                for out, answer, req in zip(outputs, answers, requests, strict=True)]

    def judge_batch(self, client: JudgeClient, docs: list[dict], outputs: list[dict]) -> list[dict]:
        requests = []
        for doc, out in zip(docs, outputs, strict=True):
            refs = tuple(doc["reference_turns"]) if doc["reference_turns"] else None
            a1, a2 = (t.strip() for t in out["turns"])
            requests.append(JudgeRequest(single_messages(doc["turns"][0], a1, refs[0] if refs else None),
                                         "score", (a1,)))
            requests.append(JudgeRequest(second_turn_messages(tuple(doc["turns"]), (a1, a2), refs),
                                         "score", (a1, a2)))
        records = grade_single(client, requests, desc=f"judge {self.config.task}")
        return [{"turn1": records[2 * k], "turn2": records[2 * k + 1]} for k in range(len(docs))]

    def process_results(self, doc, results):
        out = results[0]
        turns = [t.strip() for t in out.get("turns", [out["text"]])]
        metrics = {**self._diversity(turns), "self_bleu": "\n".join(turns)}
        rec = out.get("judge")
        if rec is not None:
            s1, s2 = rec["turn1"]["score"], rec["turn2"]["score"]
            statuses = [rec["turn1"]["status"], rec["turn2"]["status"]]
            metrics.update(judge_score_turn1=s1, judge_score_turn2=s2,
                           judge_score=(s1 + s2) / 2 if s1 is not None and s2 is not None else None,
                           judge_unparsed="unparsed" in statuses, judge_failed="failed" in statuses)
        return metrics
