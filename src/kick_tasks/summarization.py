"""In-context summarization of the 90 CNN/DailyMail stories LLM-KICK selected (small / mid / large).

The prompt is the reference's: "Summarize the given story|news in less than 150 words while
preserving high coherence, consistency, fluency, and relevance." (story for the small group,
news for mid and large), a blank line, then the text (``summarization_prompt: kick`` in the
metadata selects kick's own wording with ``Article:`` / ``Summary:`` scaffolding instead).
Fixes over the reference: the ``@highlight`` bullets are cut from the input and become the
reference summary; paragraphs and highlights are joined with proper spacing; a story that does
not fit the model's context (chat template counted) is truncated by tokens, keeping the
instruction, and flagged, instead of silently overflowing. Metrics: ROUGE-1/2/L against the
highlights, summary length, distinct-n / repetition, and, with a judge configured, the
reference's four criteria (coherence, consistency, fluency, relevance; 1-10 each) and their mean.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from kick_common.bundled import read_jsonl_gz
from kick_tasks import data_dir
from kick_tasks.budget import (
    chat_overhead,
    count_tokens,
    follow_running_model,
    max_gen_toks,
    metadata_max_length,
    metadata_tokenizer,
)
from kick_tasks.diversity import count_true, diversity_metrics, mean_defined
from kick_tasks.judge.client import JudgeClient, JudgeRequest
from kick_tasks.judge.grading import grade_criteria
from kick_tasks.judge.lmeval import JudgedTask, judge_metrics
from kick_tasks.judge.parsing import CRITERIA
from kick_tasks.judge.prompts import summary_messages

log = logging.getLogger(__name__)

GROUPS = ("small", "mid", "large")
# LLM-KICK's instruction; the reference says "story" for its small group and "news" otherwise.
REFERENCE_INSTRUCTION = ("Summarize the given {kind} in less than 150 words while preserving high "
                         "coherence, consistency, fluency, and relevance.")
# kick's own wording (``summarization_prompt: kick``), the default of task version 1.
INSTRUCTION = (
    "Summarize the news article below in fewer than 150 words. The summary must stay faithful "
    "to the article (no invented facts), keep its most important points, read as one coherent "
    "piece, and be written in fluent, well-formed sentences."
)
PROMPT_STYLES = ("reference", "kick")
# Token merges at the seam between instruction and article; a few tokens of slack.
_SEAM_SLACK = 4


def parse_story(text: str) -> tuple[str, list[str]]:
    """(article, highlights) from a CNN/DM ``.story`` file; no ``@highlight`` text stays in the article."""
    body, marker, tail = text.partition("@highlight")
    paragraphs = [" ".join(p.split()) for p in body.split("\n\n")]
    highlights = [" ".join(h.split()) for h in tail.split("@highlight")] if marker else []
    return "\n\n".join(p for p in paragraphs if p), [h for h in highlights if h]


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in ".!?\"'" else text + "."


@lru_cache(maxsize=1)
def _records() -> tuple[dict, ...]:
    return tuple(read_jsonl_gz(data_dir() / "cnndm" / "stories.jsonl.gz"))


def _doc(rec: dict, group: str) -> dict:
    article, highlights = parse_story(rec["text"])
    return {"id": f"{group}/{rec['name']}", "name": rec["name"], "group": group,
            "article": article, "highlights": highlights,
            "reference": " ".join(_sentence(h) for h in highlights),
            "article_words": len(article.split()),
            "duplicate_of_small": group == "mid" and "small" in rec["groups"]}


def load_cnndm(**kwargs: Any):
    """DatasetDict: small / mid / large (30 stories each, as the paper) and mid_unique (the 12
    mid stories that are not copies of small ones). lm-eval passes metadata here; unused."""
    import datasets

    splits = {g: [_doc(r, g) for r in _records() if g in r["groups"]] for g in GROUPS}
    splits["mid_unique"] = [d for d in splits["mid"] if not d["duplicate_of_small"]]
    return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})


def build_prompt(article: str, group: str = "mid", style: str = "reference") -> str:
    """The prompt for one story: the reference's instruction (or kick's wording), then the text."""
    if style == "kick":
        return f"{INSTRUCTION}\n\nArticle:\n{article}\n\nSummary:"
    if style != "reference":
        raise ValueError(f"summarization_prompt must be one of {PROMPT_STYLES}, got {style!r}")
    kind = "story" if group == "small" else "news"
    return f"{REFERENCE_INSTRUCTION.format(kind=kind)}\n\n{article}"


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F1 (rouge-score, Porter stemming) of a summary against the highlights."""
    from rouge_score import rouge_scorer

    scorer = _scorer(rouge_scorer)
    scores = scorer.score(reference, prediction)
    return {name: scores[name].fmeasure for name in ("rouge1", "rouge2", "rougeL")}


@lru_cache(maxsize=1)
def _scorer(rouge_scorer):
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


class SummarizationTask(JudgedTask):
    """kick_summarization_*: prompt fitting by tokens, ROUGE / length / diversity, batched 1-10 judge."""

    def __init__(self, config: dict | None = None, **kwargs: Any):
        self._fit: tuple | None = None  # (tokenizer, article token budget); set by build_all_requests
        self.truncated: set[str] = set()
        follow_running_model()
        super().__init__(config=config, **kwargs)

    def prompt_style(self) -> str:
        style = str((self.config.metadata or {}).get("summarization_prompt", "reference"))
        if style not in PROMPT_STYLES:
            raise ValueError(f"{self.config.task}: metadata summarization_prompt={style!r}; "
                             f"accepted: {', '.join(PROMPT_STYLES)}")
        return style

    def build_all_requests(self, *args, **kwargs):
        meta = self.config.metadata or {}
        style = self.prompt_style()
        chat = {k: kwargs.get(k) for k in ("apply_chat_template", "chat_template", "system_instruction")}
        tokenizer, max_length = metadata_tokenizer(meta), metadata_max_length(meta)
        if tokenizer is not None and max_length:
            max_gen = max_gen_toks(self.config)
            frame = max(count_tokens(tokenizer, build_prompt("", g, style)) for g in GROUPS)
            overhead = chat_overhead(tokenizer, chat, build_prompt("", "small", style))
            budget = max_length - max_gen - frame - overhead - _SEAM_SLACK
            if budget <= 0:
                raise ValueError(f"{self.config.task}: context {max_length} tokens leaves no room for an "
                                 f"article after {max_gen} new tokens; lower max_gen_toks")
            self._fit = (tokenizer, budget)
        else:
            log.info("%s: model tokenizer/context unknown from metadata; articles are not fitted "
                     "to the context (pass pretrained=/tokenizer= and max_length= in model args)",
                     self.config.task)
        return super().build_all_requests(*args, **kwargs)

    def doc_to_text(self, doc, doc_to_text=None):
        article = doc["article"]
        if self._fit is not None:
            tokenizer, budget = self._fit
            ids = tokenizer(article, add_special_tokens=False)["input_ids"]
            if len(ids) > budget:
                article = tokenizer.decode(ids[:budget], skip_special_tokens=True).rstrip() + " [...]"
                self.truncated.add(doc["id"])
        return build_prompt(article, doc["group"], self.prompt_style())

    def judge_batch(self, client: JudgeClient, docs: list[dict], outputs: list[dict]) -> list[dict]:
        requests = [JudgeRequest(summary_messages(d["article"], o["text"], d["reference"]), "criteria",
                                 (o["text"],)) for d, o in zip(docs, outputs, strict=True)]
        return grade_criteria(client, requests, desc=f"judge {self.config.task}")

    def process_results(self, doc, results):
        out = results[0]
        text = out["text"].strip()
        metrics = {**rouge_scores(text, doc["reference"]), **diversity_metrics(text),
                   "truncated": doc["id"] in self.truncated}
        metrics["summary_words"] = metrics.pop("words")
        record = out.get("judge")
        metrics.update(judge_metrics(record))
        if record is not None:
            scores = record.get("scores") or {}
            metrics.update({f"judge_{c}": scores.get(c) for c in CRITERIA})
        return metrics

    def aggregation(self):
        from lm_eval.api.metrics import mean

        agg = {m: mean for m in ("rouge1", "rouge2", "rougeL", "summary_words")}
        agg.update({m: mean_defined for m in ("distinct_1", "distinct_2", "distinct_3",
                                              "repetition_4", "judge_score",
                                              *(f"judge_{c}" for c in CRITERIA))})
        agg.update({m: count_true for m in ("truncated", "judge_unparsed", "judge_failed")})
        return agg

    def higher_is_better(self):
        return {"rouge1": True, "rouge2": True, "rougeL": True, "summary_words": True,
                "distinct_1": True, "distinct_2": True, "distinct_3": True, "repetition_4": False,
                "judge_score": True, "truncated": False, "judge_unparsed": False, "judge_failed": False,
                **{f"judge_{c}": True for c in CRITERIA}}
