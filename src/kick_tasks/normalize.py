"""Answer normalisation shared by every short-answer metric (TriviaQA's official rules)."""

from __future__ import annotations

import re
import string
import unicodedata

_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u00b4", "`", "\u201c", "\u201d"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case; underscores and punctuation become spaces; drop articles; collapse whitespace.

    These are the TriviaQA evaluation script's rules (punctuation, with ‘ ’ ´ ` added to ASCII's,
    is replaced, not deleted, so "u.s.a." and "u s a" agree), plus two additions: Unicode is
    NFKC-normalised first (ligatures, full-width forms, non-breaking spaces), and the curly
    double quotes “ ” count as punctuation too. Both only make equal what was meant equal.
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("_", " ")
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, aliases: list[str]) -> bool:
    """Normalised prediction equals a normalised alias; an empty prediction never matches."""
    pred = normalize_answer(prediction)
    return bool(pred) and any(pred == normalize_answer(a) for a in aliases if normalize_answer(a))


def contains(prediction: str, aliases: list[str]) -> bool:
    """A normalised alias occurs, on word boundaries, inside the normalised prediction."""
    pred = f" {normalize_answer(prediction)} "
    return any(f" {alias} " in pred for alias in map(normalize_answer, aliases) if alias)


def first_line(text: str) -> str:
    """The generation up to its first line break, stripped."""
    return text.strip().split("\n", 1)[0].strip()
