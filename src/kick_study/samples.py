"""Per-item records from lm-eval's ``--log_samples`` files, keyed by document, for pairing a cell with dense.

lm-eval 0.4.13 writes ``samples_<task>_<date>.jsonl`` beside ``results_<date>.json``: one line per
(document, filter) with ``doc_id``, ``doc_hash``, ``arguments``, ``resps``, ``filtered_resps`` (for
log-likelihood requests a ``[loglik, is_greedy]`` pair per option, as strings) and every per-item
metric value under its own name.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

RESULTS_RE = re.compile(r"^results_(?P<date>.+)\.json$")


@dataclass
class Item:
    """One document's outcome: metric values, the answer given, and option log-likelihoods if multiple choice."""

    key: tuple[str, int, str]  # (task, doc_id, doc_hash)
    metrics: dict[str, Any]
    answer: Any  # argmax option index, or normalised generated text; None for rolling log-likelihood
    choice_logliks: list[float] | None = None
    prompt: str = ""
    response: str = ""


@dataclass
class TaskSamples:
    """Every item of one task under one filter."""

    task: str
    filter: str
    items: dict[tuple[str, int, str], Item] = field(default_factory=dict)


def samples_files(results_path: Path) -> dict[str, Path]:
    """task → samples file written in the same lm-eval run as ``results_path`` (same folder and date)."""
    match = RESULTS_RE.match(results_path.name)
    if not match:
        return {}
    suffix = f"_{match['date']}.jsonl"
    out = {}
    for path in results_path.parent.glob(f"samples_*{suffix}"):
        out[path.name[len("samples_"): -len(suffix)]] = path
    return out


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _choice_logliks(filtered: Sequence) -> list[float] | None:
    """Per-option log-likelihoods when ``filtered_resps`` is a list of (loglik, is_greedy) pairs."""
    if len(filtered) < 2 or not all(isinstance(r, (list, tuple)) and len(r) == 2 for r in filtered):
        return None
    values = [_float(r[0]) for r in filtered]
    return None if any(v is None for v in values) else values


def _first_text(resps: Sequence) -> str:
    while isinstance(resps, (list, tuple)) and resps:
        resps = resps[0]
    return resps if isinstance(resps, str) else ""


def parse_item(task: str, line: Mapping[str, Any], output_type: str | None = None) -> Item:
    """One samples line → :class:`Item` (answer: argmax option, or the normalised first generated line).

    ``output_type`` is the task's lm-eval request type (from the results file's ``configs``).
    """
    from kick_tasks.normalize import first_line, normalize_answer

    names = line.get("metrics") or []
    metrics = {name: line.get(name) for name in names}
    filtered = line.get("filtered_resps") or []
    logliks = _choice_logliks(filtered)
    args = line.get("arguments") or []
    kind_generate = output_type == "generate_until"
    response = _first_text(filtered) if kind_generate else ""
    if logliks is not None:
        answer: Any = max(range(len(logliks)), key=logliks.__getitem__)
    elif kind_generate:
        answer = normalize_answer(first_line(response))
    else:
        answer = None
    prompt = _first_text(args) if args else ""
    return Item((task, int(line["doc_id"]), str(line.get("doc_hash", ""))), metrics, answer, logliks, prompt, response)


def read_samples(path: Path, task: str, wanted_filter: str = "none", output_type: str | None = None) -> TaskSamples:
    """The items of ``task`` under ``wanted_filter`` from one samples file."""
    out = TaskSamples(task, wanted_filter)
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError as err:
                raise ValueError(f"{path}:{number} is not JSON ({err})") from None
            if str(line.get("filter", "none")) != wanted_filter:
                continue
            item = parse_item(task, line, output_type)
            out.items[item.key] = item
    return out
