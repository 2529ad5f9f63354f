"""FreebaseQA closed-book factoid QA (LLM-KICK's first knowledge test): data, prompt and scoring."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

from kick_tasks import data_dir
from kick_tasks.normalize import contains, exact_match, first_line

PROMPT = "Please give answer to this question: {question}\nThe answer is"
_ANSWER_LEAD = re.compile(r"^(?:(?:the\s+)?answer(?:\s+is)?\b)?\s*[:\-]?\s*", re.IGNORECASE)


def load_freebaseqa(**kwargs: Any):
    """The bundled FreebaseQA v1.1 eval set (4,000 unique questions, all answer aliases), as a DatasetDict."""
    import datasets

    with gzip.open(data_dir() / "freebaseqa" / "eval.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_text(doc: dict) -> str:
    return PROMPT.format(question=doc["question"])


def extract_answer(generation: str) -> str:
    """The answer span of a generation: its first line, minus a leading ":" / "The answer is" / "Answer:".

    Base models continue "The answer is" with the answer; chat models tend to restate the lead-in
    ("The answer is Paris.") — both reduce to the same span.
    """
    return _ANSWER_LEAD.sub("", first_line(generation)).strip()


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """``exact_match``: the answer span equals an alias (normalised). ``contains``: an alias occurs in
    the generated continuation — only there; the reference code also searched the prompt."""
    generation = results[0]
    answer = extract_answer(generation)
    return {
        "exact_match": float(exact_match(answer, doc["answers"])),
        "contains": float(contains(first_line(generation), doc["answers"])),
    }
