"""Offline perplexity contrast: bundled held-out Wikipedia articles scored with lm-eval's rolling log-likelihood.

LLM-KICK's point is that perplexity barely moves while knowledge collapses; this task gives the
perplexity side of that picture without network access (``wikitext`` needs the Hub). The text is
the held-out split of the bundled Wikipedia articles (``kick_common.bundled``), which calibration
never draws from.
"""

from __future__ import annotations

import re
from typing import Any

from kick_common.bundled import bundled_documents

MIN_CHARS = 400  # the held-out split also holds one-line stubs; they say little about perplexity


def heldout_documents() -> list[dict[str, str]]:
    """``{"id", "text"}`` for every held-out article of at least ``MIN_CHARS`` characters, in file order."""
    docs = [text for text in bundled_documents("heldout") if len(text) >= MIN_CHARS]
    return [{"id": str(i), "text": text} for i, text in enumerate(docs)]


def load_heldout(**kwargs: Any):
    """``datasets.DatasetDict`` with a single ``test`` split (lm-eval's ``custom_dataset`` hook)."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(heldout_documents())})


def process_results(doc: dict, results: list) -> dict:
    """Per-document (loglikelihood, weight) pairs; lm-eval's weighted perplexity aggregations do the rest."""
    (loglikelihood,) = results
    text = doc["text"]
    words = len(re.split(r"\s+", text.strip()))
    n_bytes = len(text.encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, words),
        "byte_perplexity": (loglikelihood, n_bytes),
        "bits_per_byte": (loglikelihood, n_bytes),
    }
