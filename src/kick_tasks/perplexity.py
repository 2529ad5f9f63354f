"""Offline perplexity contrast: bundled held-out Wikipedia articles scored with lm-eval's rolling log-likelihood.

LLM-KICK's point is that perplexity barely moves while knowledge collapses; this task gives the
perplexity side of that picture without network access (``wikitext`` needs the Hub).
"""

from __future__ import annotations

import gzip
import json
import re
from importlib.resources import files
from typing import Any

DATA_FILE = "wiki_heldout.jsonl.gz"


def load_heldout(**kwargs: Any):
    """``datasets.DatasetDict`` with a single ``test`` split of ``{"id", "title", "text"}`` articles."""
    import datasets

    path = files("kick_tasks") / "data" / "perplexity" / DATA_FILE
    with gzip.open(path.open("rb"), "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


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
