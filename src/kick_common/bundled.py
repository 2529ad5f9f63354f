"""Readers for the data kick ships (gzip text, JSON, JSON Lines) and the split of the bundled text into
calibration documents and held-out documents (the held-out part is never used for calibration)."""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from typing import Any

from kick_common.paths import calibration_data_dir

HELDOUT_FRACTION = 0.1  # last 10% of the bundled Wikipedia articles: never used for calibration
SPLITS = ("calibration", "heldout")


def read_text_gz(path: str | os.PathLike) -> str:
    """The whole UTF-8 text of a gzip file."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return fh.read()


def read_json_gz(path: str | os.PathLike) -> Any:
    """One JSON document from a gzip file."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def read_jsonl_gz(path: str | os.PathLike) -> list[dict]:
    """Every non-blank line of a gzip JSON Lines file, parsed, in file order."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_json(path: str | os.PathLike) -> Any:
    """One JSON document from a plain UTF-8 file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# --------------------------------------------------------------------------- bundled text
def bundled_text(name: str) -> str:
    """``c4`` (one document per line) or ``wiki`` (``<doc …>``-wrapped articles), as shipped."""
    return read_text_gz(calibration_data_dir() / f"{name}.utf8.gz")


@lru_cache(maxsize=1)
def wiki_articles() -> tuple[str, ...]:
    """Bundled Wikipedia articles, ``<doc …>`` wrappers removed, in file order."""
    articles = []
    for chunk in bundled_text("wiki").split("</doc>"):
        start = chunk.find(">", chunk.find("<doc "))
        text = chunk[start + 1 :].strip() if "<doc " in chunk else chunk.strip()
        if text:
            articles.append(text)
    return tuple(articles)


def bundled_documents(split: str = "calibration") -> list[str]:
    """``calibration``: the 118 bundled C4 documents + the first 90% of the Wikipedia articles;
    ``heldout``: the last 10% of the Wikipedia articles."""
    articles = wiki_articles()
    cut = len(articles) - int(len(articles) * HELDOUT_FRACTION)
    if split == "calibration":
        c4 = [line.strip() for line in bundled_text("c4").splitlines() if line.strip()]
        return c4 + list(articles[:cut])
    if split == "heldout":
        return list(articles[cut:])
    raise ValueError(f"split={split!r}; accepted: {' | '.join(SPLITS)}")


def heldout_text() -> str:
    """Bundled text never used for calibration (the last 10% of the Wikipedia articles)."""
    return "\n\n".join(bundled_documents("heldout"))
