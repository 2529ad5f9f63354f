"""GGUF checkpoints made by the tests: a GGUF file re-quantized to another type with the ``gguf`` package's own
quantize functions, every metadata field (tokenizer, chat template) copied over."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _copy_fields(reader, writer, file_type: int) -> None:
    import gguf

    for field in reader.fields.values():
        # the writer adds the architecture and the GGUF header itself
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = file_type if field.name == gguf.Keys.General.FILE_TYPE else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)


def requantize_gguf(src: Path, dst: Path, qtype: str) -> Path:
    """Write ``src`` with every 2-D weight quantized to ``qtype`` (e.g. "Q8_0", "Q4_0"); 1-D tensors stay F32."""
    import gguf

    target = gguf.GGMLQuantizationType[qtype]
    reader = gguf.GGUFReader(str(src))
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    _copy_fields(reader, writer, getattr(gguf.LlamaFileType, f"MOSTLY_{qtype}"))
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if values.ndim == 2:
            writer.add_tensor(tensor.name, gguf.quants.quantize(values, target), raw_dtype=target)
        else:
            writer.add_tensor(tensor.name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
