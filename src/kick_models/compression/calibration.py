"""Calibration token windows (`calib=bundled|c4|wikitext2|<file>`), all drawn with one seeded RNG object so
the same seed gives the same ids (the bundled text and its held-out split live in ``kick_common.bundled``)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import torch

from kick_common.bundled import bundled_documents

log = logging.getLogger(__name__)

C4_SHARD = "en/c4-train.00000-of-01024.json.gz"


class CalibrationError(ValueError):
    """The calibration source cannot supply the requested windows; the message says what to use."""


# --------------------------------------------------------------------------- hub and files
def _hub_failure(name: str, what: str, err: Exception) -> CalibrationError:
    return CalibrationError(
        f"calib={name} needs {what} from the Hugging Face Hub, which failed ({type(err).__name__}: {err}). "
        "Use calib=bundled (calibration text shipped with kick) or calib=<path to a .txt/.jsonl file>."
    )


class _LazyTexts:
    """``text`` of dataset rows, read on demand (the C4 shard holds ~356k documents)."""

    def __init__(self, data):
        self._data = data

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, i: int) -> str:
        return self._data[i]["text"]


def _c4_documents() -> _LazyTexts:
    try:
        import datasets

        data = datasets.load_dataset("allenai/c4", data_files={"train": C4_SHARD}, split="train")
    except Exception as err:  # offline, gated, renamed: all end the same way for the user
        raise _hub_failure("c4", f"allenai/c4 {C4_SHARD}", err) from err
    return _LazyTexts(data)


def _wikitext2_text() -> str:
    try:
        import datasets

        data = datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="train")
    except Exception as err:
        raise _hub_failure("wikitext2", "wikitext-2-raw-v1 (train)", err) from err
    return "\n\n".join(data["text"])


def read_calib_file(path_text: str) -> tuple[str, list[str] | str]:
    """A .jsonl file gives documents (a "text" field per line); any other file is one text.

    Every problem (missing, not UTF-8, a line without a "text" string, nothing to read) is a
    :class:`CalibrationError` naming the file and what is wrong with it.
    """
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise CalibrationError(f"calib={path_text!r} is not a file; "
                               "accepted: bundled | c4 | wikitext2 or a path to a .txt/.jsonl file")
    data = path.read_bytes()
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CalibrationError(f"calib file {path_text} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                               f"{err.start}); accepted: a UTF-8 .txt file or a .jsonl file with a 'text' field") from None
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    text = json.loads(line)["text"]
                except (ValueError, KeyError, TypeError, IndexError) as err:
                    raise CalibrationError(f"calib file {path_text}: line {n} is not a JSON object with a 'text' field") from err
                if not isinstance(text, str):
                    raise CalibrationError(f"calib file {path_text}: line {n}: 'text' is {type(text).__name__}, not a string")
                docs.append(text)
        docs = [d for d in docs if d.strip()]
        if not docs:
            raise CalibrationError(f"calib file {path_text} has no documents")
        return "docs", docs
    if not raw.strip():
        raise CalibrationError(f"calib file {path_text} is empty")
    return "text", raw


def calib_file_shortfall(tokenizer, kind: str, source: list[str] | str, nsamples: int,
                         seqlen: int) -> tuple[str | None, str | None]:
    """(why the file cannot give one ``seqlen``-token window, or None; a note when its windows must
    overlap, or None), counted with the model's own tokenizer, as :func:`calibration_ids` will."""
    if kind == "text":
        have = len(_encode(tokenizer, source))
        if have < seqlen:
            return f"it holds {have} tokens, fewer than seqlen={seqlen}", None
        if have < nsamples * seqlen:
            return None, f"it holds {have} tokens, fewer than nsamples x seqlen = {nsamples * seqlen}; windows will overlap"
        return None, None
    lengths = [len(_encode(tokenizer, doc)) for doc in source]
    usable = sum(n >= seqlen for n in lengths)
    if usable == 0:
        return f"none of its {len(lengths)} documents has seqlen={seqlen} tokens (the longest has {max(lengths)})", None
    if usable < nsamples:
        return None, (f"only {usable} of its documents have seqlen={seqlen} tokens, fewer than nsamples={nsamples}; "
                      "windows will repeat documents")
    return None, None


# --------------------------------------------------------------------------- windows
def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


# (tokenizer fingerprint, corpus name) -> the corpus's token ids, for the last few pairs used in this process
_CORPUS_IDS: dict[tuple[str, str], torch.Tensor] = {}
_CORPUS_IDS_KEPT = 2


def _tokenizer_fingerprint(tokenizer) -> str | None:
    """Hash of a fast tokenizer's whole definition (vocabulary, merges, normalizer, added tokens), or None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{backend.to_str()}".encode()).hexdigest()


def encode_corpus(tokenizer, name: str, read) -> torch.Tensor:
    """Token ids of the named bundled/downloaded corpus ``read()``, remembered per tokenizer definition in this
    process: in-process sweeps and the test suite calibrate many models with one tokenizer, and tokenizing
    the corpus (about 2 MB of text) costs seconds each time, for windows of a few thousand tokens."""
    fingerprint = _tokenizer_fingerprint(tokenizer)
    key = (fingerprint, name)
    if fingerprint is None or key not in _CORPUS_IDS:
        ids = torch.tensor(_encode(tokenizer, read()), dtype=torch.long)
        if fingerprint is None:
            return ids
        while len(_CORPUS_IDS) >= _CORPUS_IDS_KEPT:
            del _CORPUS_IDS[next(iter(_CORPUS_IDS))]
        _CORPUS_IDS[key] = ids
    return _CORPUS_IDS[key]


def windows_from_text(ids: list[int] | torch.Tensor, nsamples: int, seqlen: int, rng: random.Random) -> torch.Tensor:
    """WikiText way: ``nsamples`` random windows of ``seqlen`` tokens from one long token stream."""
    if len(ids) < seqlen:
        raise CalibrationError(
            f"seqlen={seqlen} is longer than the whole calibration text ({len(ids)} tokens); use a smaller seqlen")
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    starts = [rng.randint(0, len(ids) - seqlen) for _ in range(nsamples)]
    return torch.stack([ids_t[s : s + seqlen] for s in starts])


def windows_from_documents(tokenizer, docs, nsamples: int, seqlen: int, rng: random.Random) -> torch.Tensor:
    """C4 way: pick a random document; if it has at least ``seqlen`` tokens take a random window
    of it, else draw again. Fails once every document has proved too short."""
    too_short: set[int] = set()
    out = []
    while len(out) < nsamples:
        i = rng.randint(0, len(docs) - 1)
        if i in too_short:
            continue
        ids = _encode(tokenizer, docs[i])
        if len(ids) < seqlen:
            too_short.add(i)
            if len(too_short) == len(docs):
                raise CalibrationError(f"seqlen={seqlen} is longer than every calibration document; use a smaller seqlen")
            continue
        s = rng.randint(0, len(ids) - seqlen)
        out.append(torch.tensor(ids[s : s + seqlen], dtype=torch.long))
    return torch.stack(out)


def token_sha256(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.to(torch.int64).contiguous().numpy().astype("<i8").tobytes()).hexdigest()


def calibration_ids(tokenizer, config, *, embedded_model: bool, max_length: int | None) -> tuple[torch.Tensor, dict]:
    """[nsamples, seqlen] token ids from ``config.resolved_calib(embedded_model)`` with seqlen capped
    at ``max_length``; one ``random.Random(config.seed)`` draws every window. Returns (ids, info)."""
    name = config.resolved_calib(embedded_model)
    if config.nsamples <= 0:
        raise CalibrationError(f"nsamples={config.nsamples}; accepted: a positive integer")
    if config.seqlen <= 0:
        raise CalibrationError(f"seqlen={config.seqlen}; accepted: a positive integer")
    seqlen = min(config.seqlen, max_length) if max_length else config.seqlen
    rng = random.Random(config.seed)
    if name == "bundled":
        corpus = encode_corpus(tokenizer, name, lambda: "\n\n".join(bundled_documents()))
        ids = windows_from_text(corpus, config.nsamples, seqlen, rng)
    elif name == "c4":
        ids = windows_from_documents(tokenizer, _c4_documents(), config.nsamples, seqlen, rng)
    elif name == "wikitext2":
        ids = windows_from_text(encode_corpus(tokenizer, name, _wikitext2_text), config.nsamples, seqlen, rng)
    else:
        kind, source = read_calib_file(name)
        if kind == "docs":
            ids = windows_from_documents(tokenizer, source, config.nsamples, seqlen, rng)
        else:
            ids = windows_from_text(_encode(tokenizer, source), config.nsamples, seqlen, rng)
    info = {"dataset": name, "nsamples": int(ids.shape[0]), "seqlen": int(ids.shape[1]), "seed": config.seed,
            "token_sha256": token_sha256(ids)}
    log.info("calibration: %s, %d x %d tokens, seed %d", name, ids.shape[0], ids.shape[1], config.seed)
    return ids, info
