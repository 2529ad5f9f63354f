"""A third-party-format checkpoint made offline: the embedded model's GGUF re-quantized with the ``gguf`` package.

The Table-2 example needs one pre-compressed model that kick did not compress. The ``gguf``
package (llama.cpp's own Python writer, already a dependency) quantizes a tensor to Q8_0 or Q4_0
exactly as llama.cpp defines those formats; this module copies the embedded GGUF's metadata and
tokenizer unchanged and re-quantizes every transformer-block weight matrix. The token embedding and
the norms keep the source's types (llama.cpp's mixes also keep them apart). The embedded file is
itself Q4_1, so the "dense" parent is its de-quantized float32 form and a checkpoint made here is
compared against that.

``python -m kick_study.checkpoints OUT_DIR --type q4_0`` (or ``kick-make-checkpoint``) writes
``OUT_DIR/<name>.gguf``; a sweep lists the folder under ``external:`` with ``gguf_file: <name>.gguf``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

TYPES = ("q8_0", "q4_0")
BLOCK_PREFIX = "blk."  # transformer-block tensors; token_embd / output_norm keep their source type
_SKIP_FIELDS = ("GGUF.", "general.file_type")  # written by the writer itself, or changed here


class CheckpointError(ValueError):
    """The checkpoint cannot be written; the message names the argument and what is accepted."""


def gguf_name(qtype: str) -> str:
    return f"SmolLM2-135M-Instruct.{qtype.upper()}.gguf"


def _qtype(name: str):
    import gguf

    key = name.strip().lower()
    if key not in TYPES:
        raise CheckpointError(f"kick-make-checkpoint: invalid --type {name!r}; accepted: {' | '.join(TYPES)}")
    return getattr(gguf.GGMLQuantizationType, key.upper())


def _copy_fields(reader, writer, file_type: int) -> None:
    """Every metadata field of the source (architecture, hyper-parameters, tokenizer, chat template)."""
    import gguf

    for name, field in reader.fields.items():
        if name.startswith(_SKIP_FIELDS) or name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub)
    writer.add_file_type(file_type)


def _requantize(tensor, qtype):
    """(data as stored, stored type) of one source tensor under ``qtype``."""
    import gguf
    import numpy as np

    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists ne0 first; numpy wants it last
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if not tensor.name.startswith(BLOCK_PREFIX) or len(shape) != 2 or shape[-1] % block:
        return tensor.data, tensor.tensor_type
    weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32)
    return gguf.quants.quantize(weights, qtype), qtype


def write_gguf(source: Path, out_dir: Path, qtype_name: str = "q4_0") -> Path:
    """``out_dir/<name>.gguf``: ``source`` with its block weights re-quantized to ``qtype_name``.

    The file is written whole or not at all (a temporary file, then renamed); an existing one is kept.
    """
    import gguf

    qtype = _qtype(qtype_name)
    target = out_dir / gguf_name(qtype_name)
    if target.is_file():
        return target
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"kick-make-checkpoint: {str(out_dir)!r} is a file; accepted: a folder path")
    reader = gguf.GGUFReader(str(source))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[qtype_name.lower()]
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{target.name}.{uuid.uuid4().hex}.partial"  # renamed into place only when complete
    try:
        writer = gguf.GGUFWriter(str(partial), arch)
        _copy_fields(reader, writer, int(file_type))
        for tensor in reader.tensors:
            data, stored = _requantize(tensor, qtype)
            writer.add_tensor(tensor.name, data, raw_dtype=stored)  # the writer reads the shape off the bytes
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("kick-make-checkpoint: wrote %s (%s block weights)", target, qtype_name.upper())
    return target


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="kick-make-checkpoint", description=__doc__.split("\n")[0])
    p.add_argument("out_dir", help="folder to write the .gguf file into (created if missing)")
    p.add_argument("--type", default="q4_0", help=f"GGUF type of the block weights: {' | '.join(TYPES)} (default q4_0)")
    args = p.parse_args(argv)
    from kick_models.embedded import EmbeddedModelMissing, embedded_gguf_path

    try:
        _qtype(args.type)
        path = write_gguf(embedded_gguf_path(), Path(args.out_dir).expanduser(), args.type)
    except (CheckpointError, EmbeddedModelMissing) as err:
        sys.stderr.write(f"{err}\n")
        return 2
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
