"""TriviaQA closed and open book (LLM-KICK's "in-context retrieval QA"): data from the Hub or the
bundled mini fixture, evidence cut to a token budget, and the official scoring next to the paper's."""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

import datasets

from kick_common.bundled import read_jsonl_gz
from kick_tasks import data_dir
from kick_tasks.base_task import KickTask
from kick_tasks.budget import (
    chat_overhead,
    follow_running_model,
    max_gen_toks,
    metadata_max_length,
    metadata_tokenizer,
)
from kick_tasks.normalize import exact_match as _normalized_equal
from kick_tasks.normalize import first_line, normalize_answer

log = logging.getLogger(__name__)

HUB_PATH, HUB_CONFIG, HUB_SPLIT = "mandarjoshi/trivia_qa", "rc", "validation"
SOURCE_ENV = "KICK_ICRQA_SOURCE"
SOURCES = ("hub", "mini")
CLOSED_INSTRUCTION = "Answer these questions:"
OPEN_INSTRUCTION = "Based on these texts, answer these questions:"
PAPER_EVIDENCE_CHARS = 3072  # the reference cut the evidence at 3,072 characters

# ---------------------------------------------------------------- data


def load_mini() -> datasets.DatasetDict:
    """The bundled open-book fixture (questions written for kick, evidence from Wikipedia)."""
    rows = read_jsonl_gz(data_dir() / "triviaqa" / "mini.jsonl.gz")
    return datasets.DatasetDict({HUB_SPLIT: datasets.Dataset.from_list(rows)})


def load_hub() -> datasets.DatasetDict:
    """TriviaQA ``rc`` validation from the Hub, in the dataset's own (fixed) order, so ``--limit N``
    always takes the same first N questions, as the reference's ``range(num_examples)`` did."""
    try:
        split = datasets.load_dataset(HUB_PATH, HUB_CONFIG, split=HUB_SPLIT)
    except Exception as err:
        raise RuntimeError(
            f"kick_icrqa: cannot load {HUB_PATH!r} (config {HUB_CONFIG!r}, split {HUB_SPLIT!r}) from the "
            f"Hugging Face Hub: {type(err).__name__}: {err}. It needs internet access (about 2.7 GB on first "
            f"use; HF_HUB_OFFLINE must not be set unless it is cached). For the bundled offline fixture use "
            f"the kick_icrqa_mini tasks, or set {SOURCE_ENV}=mini, or pass --metadata "
            "'{\"icrqa_source\": \"mini\"}'."
        ) from err
    return datasets.DatasetDict({HUB_SPLIT: split})


def resolve_source(icrqa_source: str | None = None) -> str:
    """Metadata ``icrqa_source`` wins, then ``$KICK_ICRQA_SOURCE``, then ``hub``."""
    source = icrqa_source or os.environ.get(SOURCE_ENV) or "hub"
    if source not in SOURCES:
        raise ValueError(f"icrqa source must be one of {SOURCES}, got {source!r} (metadata icrqa_source / ${SOURCE_ENV})")
    return source


def load_icrqa(icrqa_source: str | None = None, **_metadata: Any) -> datasets.DatasetDict:
    """``custom_dataset`` of the kick_icrqa tasks; the source is switchable without editing YAML."""
    return load_mini() if resolve_source(icrqa_source) == "mini" else load_hub()


def load_icrqa_mini(**_metadata: Any) -> datasets.DatasetDict:
    """``custom_dataset`` of the kick_icrqa_mini tasks: always the bundled fixture."""
    return load_mini()


# ---------------------------------------------------------------- prompts


def evidence_text(doc: dict) -> str:
    """First Wikipedia page, then first web result (the reference's order), blank-line separated."""
    parts = []
    wiki = (doc.get("entity_pages") or {}).get("wiki_context") or []
    web = (doc.get("search_results") or {}).get("search_context") or []
    if wiki:
        parts.append(wiki[0])
    if web:
        parts.append(web[0])
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def reference_evidence(doc: dict) -> str:
    """The reference's evidence string: first Wikipedia page and first web result glued as they
    are (no separator, nothing stripped); its 3,072-character cut is taken from this."""
    wiki = (doc.get("entity_pages") or {}).get("wiki_context") or []
    web = (doc.get("search_results") or {}).get("search_context") or []
    return (wiki[0] if wiki else "") + (web[0] if web else "")


def closed_book_prompt(doc: dict) -> str:
    return f"{CLOSED_INSTRUCTION}\n\nQ: {doc['question']}\nA:"


def open_book_prompt(doc: dict, evidence: str) -> str:
    question = f"{OPEN_INSTRUCTION}\n\nQ: {doc['question']}\nA:"
    return f"{evidence}\n\n{question}".strip()


def truncate_to_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """Longest prefix of ``text`` that is at most ``max_tokens`` tokens (cut on a token boundary)."""
    if max_tokens <= 0:
        return ""
    text = text[: max_tokens * 32]  # no token is longer; spares tokenizing whole web pages
    if not getattr(tokenizer, "is_fast", False):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= max_tokens:
        return text
    return text[: enc["offset_mapping"][max_tokens - 1][1]]


# ---------------------------------------------------------------- scoring


def _answers(doc: dict) -> list[str]:
    answer = doc["answer"]
    raw = [answer.get("value") or "", *answer.get("aliases", []), *answer.get("normalized_aliases", [])]
    return sorted({n for n in map(normalize_answer, raw) if n})


def exact_match(prediction: str, answers: list[str]) -> float:
    """Official TriviaQA EM: normalized prediction equals some normalized alias (never when empty)."""
    return float(_normalized_equal(prediction, answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    """Token-overlap F1 (SQuAD/TriviaQA), maximised over aliases."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        gold = normalize_answer(answer).split()
        same = sum((Counter(pred) & Counter(gold)).values())
        if same:
            precision, recall = same / len(pred), same / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_paper(prediction: str, answers: list[str]) -> float:
    """The reference's two-way containment, except an empty or article-only prediction never counts."""
    pred = normalize_answer(prediction)
    if not pred:
        return 0.0
    golds = [g for g in map(normalize_answer, answers) if g]
    return float(any(g in pred or pred in g for g in golds))


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    prediction = first_line(results[0])
    answers = _answers(doc)
    return {
        "exact_match": exact_match(prediction, answers),
        "f1": token_f1(prediction, answers),
        "contains_paper": contains_paper(prediction, answers),
    }


# ---------------------------------------------------------------- tasks


class ClosedBookTask(KickTask):
    """Closed book: the question alone."""

    def __init__(self, config: dict | None = None) -> None:
        self._chat: dict = {}
        follow_running_model()
        super().__init__(config=config)

    # lm-eval passes the chat settings here; the open book's evidence budget counts the template.
    def build_all_requests(self, *args, **kwargs):
        self._chat = {k: kwargs.get(k) for k in ("apply_chat_template", "chat_template",
                                                  "system_instruction")}
        return super().build_all_requests(*args, **kwargs)

    def doc_to_text(self, doc: dict, doc_to_text: Any = None) -> str:
        return closed_book_prompt(doc)


class OpenBookTask(ClosedBookTask):
    """Open book: evidence, then the question; the evidence is cut so the prompt fits the model.

    Metadata (``--metadata`` JSON, or ``--model_args``, which lm-eval merges in):
    ``icrqa_evidence_chars`` cuts the reference's evidence string (pages glued, unstripped: see
    `reference_evidence`) to that many characters, so 3072 reproduces the paper's prompt exactly;
    ``icrqa_evidence_tokens`` then caps it in tokens. Without a token cap the budget is the model's
    context (``max_length``, the evaluated model's, or its config) minus the question prompt, the
    chat template's tokens (under ``--apply_chat_template``) and the new tokens (``max_gen_toks``
    as lm-eval resolved it: 32 from the YAML, or a ``--gen_kwargs`` override), so lm-eval never
    has to cut the prompt from the left. Without a tokenizer the paper's 3,072-character cut is
    used.
    """

    def _evidence(self, doc: dict) -> str:
        meta = self.config.metadata or {}
        chars = meta.get("icrqa_evidence_chars")
        if chars is not None:
            evidence = reference_evidence(doc)[: int(chars)]
        else:
            evidence = evidence_text(doc)
        tokenizer = metadata_tokenizer(meta)
        if tokenizer is None:
            return evidence if chars is not None else evidence[:PAPER_EVIDENCE_CHARS]
        budget = meta.get("icrqa_evidence_tokens")
        if budget is None:
            max_length = metadata_max_length(meta)
            if max_length is None:
                return evidence if chars is not None else evidence[:PAPER_EVIDENCE_CHARS]
            frame = open_book_prompt(doc, "x")
            rest = len(tokenizer(frame)["input_ids"]) + chat_overhead(tokenizer, self._chat, frame)
            budget = max_length - max_gen_toks(self.config) - rest - 2  # 2: token merges at the seam
        return truncate_to_tokens(tokenizer, evidence, int(budget))

    def doc_to_text(self, doc: dict, doc_to_text: Any = None) -> str:
        return open_book_prompt(doc, self._evidence(doc))
