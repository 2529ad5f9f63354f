"""kick_mtbench: the 80 two-turn MT-Bench questions, the second turn conditioned on the model's OWN
first answer, each turn judged 1-10 (GPT-4 references shown for math, reasoning and coding).

lm-eval's one-shot request model cannot express a second turn that depends on the first answer.
`MTBenchTask` therefore generates turn 1 as an ordinary request and, once per task in
``apply_filters``, builds every turn-2 prompt from the turn-1 prompt + answer (through the same
chat template, when one is applied) and calls the running model's ``generate_until`` for all of
them in one batch. The running model comes from ``kick_tasks.judge.lmeval.current_lm`` (an explicit
registry filled around lm-eval's ``evaluate``; see that module for how and its limits). Also reports
the "unique content" metrics (distinct-n, repetition, self-BLEU).
"""

from __future__ import annotations

import logging
from typing import Any

from lm_eval.api.instance import Instance

from kick_common.bundled import read_jsonl_gz
from kick_tasks import data_dir
from kick_tasks.chat import ChatAwareTask, plain_turn
from kick_tasks.judge.client import JudgeClient, JudgeRequest
from kick_tasks.judge.grading import grade_single
from kick_tasks.judge.lmeval import current_lm, install_evaluate_hook
from kick_tasks.judge.prompts import second_turn_messages, single_messages

log = logging.getLogger(__name__)


def load_mt_bench(**kwargs: Any):
    """DatasetDict ``test``: 80 two-turn questions; ``reference_turns`` (GPT-4) for math/reasoning/coding."""
    import datasets

    rows = [{**r, "reference_turns": r["reference_turns"] or []}
            for r in read_jsonl_gz(data_dir() / "mt_bench" / "mt_bench.jsonl.gz")]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


class MTBenchTask(ChatAwareTask):
    """kick_mtbench: two turns, the second conditioned on the model's own first answer; 1-10 per turn."""

    def __init__(self, config: dict | None = None, **kwargs: Any):
        install_evaluate_hook()  # the second turn needs the running model (kick_tasks.judge.lmeval)
        super().__init__(config=config, **kwargs)

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
                "running evaluation recorded it; run this task through lm_eval / simple_evaluate, or "
                "wrap a direct evaluate() call in kick_tasks.judge.lmeval.running_model(lm)")
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
