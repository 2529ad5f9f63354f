"""FreebaseQA closed-book factoid QA (LLM-KICK's first knowledge test): data, prompt and scoring.

The reference's prompt ends "The answer is " with a trailing space. ``kick_freebase`` leaves the
space out, as lm-eval's prompts do: a trailing space becomes a token of its own in BPE and
SentencePiece vocabularies, and the model must then continue with a space-less word piece it
rarely saw there. ``kick_freebase_reference`` keeps the space for exact reproduction. Neither
stops at the first newline: a generation that opens with a line break would come back empty,
so up to 32 tokens are generated and the first non-empty line is scored.
"""

from __future__ import annotations

import re
from typing import Any

from kick_common.bundled import read_jsonl_gz
from kick_tasks import data_dir
from kick_tasks.normalize import contains, exact_match, first_line

PROMPT = "Please give answer to this question: {question}\nThe answer is"
REFERENCE_PROMPT = PROMPT + " "  # LLM-KICK's exact prompt, trailing space included
CHAT_PROMPT = "Answer this question with just the answer, in a few words.\nQuestion: {question}"
_SENTENCE_END = re.compile(r"([.!?])(?:\s+|$)")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "mt", "ft", "no", "co", "inc", "ltd", "u.s", "u.k"}
_POLITE_LEAD = re.compile(r"^(?:sure|certainly|of course|okay|ok)\b[,!.]?\s*", re.IGNORECASE)
_CHAT_LEAD = re.compile(
    r"^(?:(?:the\s+)?(?:correct\s+|short\s+)?answer(?:\s+(?:to\s+(?:this|the)\s+question\s+)?is)?\b|it\s+(?:is|was)\b)\s*[:\-]?\s*",
    re.IGNORECASE,
)
_ANSWER_LEAD = re.compile(r"^(?:(?:the\s+)?answer(?:\s+is)?\b)?\s*[:\-]?\s*", re.IGNORECASE)


def first_sentence(text: str) -> str:
    """Text up to the first sentence end that is not an abbreviation ("Dr.") or an initial ("J.")."""
    for match in _SENTENCE_END.finditer(text):
        words = text[: match.start()].split()
        last = words[-1].lower().strip("\"'(") if words else ""
        if match.group(1) == "." and (len(last) <= 1 or last in _ABBREVIATIONS):
            continue
        return text[: match.start()]
    return text


def load_freebaseqa(**kwargs: Any):
    """The bundled FreebaseQA v1.1 eval set (4,000 unique questions, all answer aliases), as a DatasetDict."""
    import datasets

    rows = read_jsonl_gz(data_dir() / "freebaseqa" / "eval.jsonl.gz")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_text(doc: dict) -> str:
    return PROMPT.format(question=doc["question"])


def doc_to_text_reference(doc: dict) -> str:
    return REFERENCE_PROMPT.format(question=doc["question"])


def extract_answer(generation: str) -> str:
    """The answer span of a generation: its first line, minus a leading ":" / "The answer is" / "Answer:".

    Base models continue "The answer is" with the answer; chat models tend to restate the lead-in
    ("The answer is Paris.") — both reduce to the same span.
    """
    return _ANSWER_LEAD.sub("", first_line(generation)).strip()


def doc_to_text_chat(doc: dict) -> str:
    return CHAT_PROMPT.format(question=doc["question"])


def extract_chat_answer(generation: str) -> str:
    """Answer span of a chat reply: first line, then its first sentence, minus "The answer is" /
    "It is" / "Sure," lead-ins and surrounding quotes or bold markers.

    Chat models reply in sentences ("The capital of Ghana is Accra."); the first sentence is where
    the answer is, while later sentences add context that would make containment too lenient.
    """
    line = _POLITE_LEAD.sub("", first_line(generation).strip("*_ "))
    return _CHAT_LEAD.sub("", first_sentence(line)).strip(" *_\"'")


def process_results_chat(doc: dict, results: list[str]) -> dict[str, float]:
    """Chat variant: both metrics on the extracted answer span (see :func:`extract_chat_answer`)."""
    answer = extract_chat_answer(results[0])
    return {
        "exact_match": float(exact_match(answer, doc["answers"])),
        "contains": float(contains(answer, doc["answers"])),
    }


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """``exact_match``: the answer span equals an alias (normalised). ``contains``: an alias occurs in
    the generated continuation — only there; the reference code also searched the prompt."""
    generation = results[0]
    answer = extract_answer(generation)
    return {
        "exact_match": float(exact_match(answer, doc["answers"])),
        "contains": float(contains(first_line(generation), doc["answers"])),
    }
