"""MMLU as LLM-KICK evaluates it: the bundled Hendrycks et al. data, 5-shot prompts that drop shots
(last first) until they fit the model's context, and the one-token generative answer parser."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

import datasets

from kick_common.bundled import read_json, read_json_gz
from kick_tasks import data_dir
from kick_tasks.base_task import KickTask
from kick_tasks.budget import (
    count_tokens,
    follow_running_model,
    max_gen_toks,
    metadata_max_length,
    metadata_tokenizer,
)

log = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
# A standalone capital A-D: " B", "B.", "(C)" count, the B of " Both" does not.
_LETTER_RE = re.compile(r"\b([ABCD])\b")


@functools.cache
def _archive() -> dict[str, Any]:
    return read_json_gz(data_dir() / "mmlu" / "mmlu.json.gz")


@functools.cache
def _categories() -> dict[str, Any]:
    return read_json(data_dir() / "mmlu" / "categories.json")


def subjects() -> list[str]:
    """The 57 MMLU subjects, sorted (file-name spelling, e.g. ``abstract_algebra``)."""
    return sorted(_archive()["subjects"])


def subject_category(subject: str) -> str:
    """One of ``STEM``, ``humanities``, ``social sciences``, ``other (business, health, misc.)``."""
    cats = _categories()
    try:
        return cats["subcategory_to_category"][cats["subject_to_subcategory"][subject]]
    except KeyError:
        raise ValueError(f"unknown MMLU subject {subject!r}; expected one of {subjects()}") from None


def _rows_to_dataset(subject: str, rows: list[list[str]]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "question": [r[0] for r in rows],
            "subject": [subject] * len(rows),
            "choices": [r[1:5] for r in rows],
            "answer": [LETTERS.index(r[5]) for r in rows],
        }
    )


def load_mmlu(subject: str | None = None, **_metadata: Any) -> datasets.DatasetDict:
    """``custom_dataset`` for one subject: ``dev`` (5 few-shot rows, in file order) and ``test``.

    Rows have the ``cais/mmlu`` schema (question, subject, choices, answer index) so lm-eval's own
    MMLU templates apply unchanged. Extra keyword arguments (task metadata) are ignored.
    """
    table = _archive()["subjects"]
    if subject not in table:
        raise ValueError(f"unknown MMLU subject {subject!r}; expected one of {sorted(table)}")
    return datasets.DatasetDict({split: _rows_to_dataset(subject, table[subject][split]) for split in ("dev", "test")})


def parse_choice(continuation: str) -> str | None:
    """First standalone A-D letter of the generated text, or None (unparsed: empty, EOS, other text)."""
    match = _LETTER_RE.search(continuation)
    return match.group(1) if match else None


def process_results_gen(doc: dict, results: list[str]) -> dict[str, float]:
    """``acc``: parsed letter equals the gold letter; ``unparsed``: no letter found (counted, scored wrong)."""
    letter = parse_choice(results[0])
    return {
        "acc": float(letter == LETTERS[doc["answer"]]),
        "unparsed": float(letter is None),
    }


class KickMMLUTask(KickTask):
    """lm-eval task that drops few-shot examples, last first, while the prompt exceeds the context.

    The context length and tokenizer come from the task metadata (``max_length``, ``tokenizer`` /
    ``pretrained``; lm-eval merges ``--model_args`` into it). Without them prompts are left whole
    and the model's own left-truncation applies, as in stock lm-eval.
    """

    def __init__(self, config: dict | None = None) -> None:
        follow_running_model()
        super().__init__(config=config)
        self.shots_dropped = 0

    def _reserved_tokens(self) -> int:
        if self.OUTPUT_TYPE == "generate_until":
            return max_gen_toks(self.config)
        return 1  # the answer letter

    def fewshot_context(self, doc: dict, num_fewshot: int, **kwargs: Any):
        context = super().fewshot_context(doc, num_fewshot, **kwargs)
        if num_fewshot == 0 or not isinstance(context, str):
            return context
        max_length = metadata_max_length(self.config.metadata)
        tokenizer = metadata_tokenizer(self.config.metadata) if max_length else None
        if tokenizer is None:
            return context
        budget = max_length - self._reserved_tokens()
        shots = num_fewshot
        while shots > 0 and count_tokens(tokenizer, context) > budget:
            shots -= 1
            context = super().fewshot_context(doc, shots, **kwargs)
        if shots < num_fewshot:
            self.shots_dropped += num_fewshot - shots
            log.debug("%s: %d of %d shots kept to fit %d tokens", self.config.task, shots, num_fewshot, max_length)
        return context
