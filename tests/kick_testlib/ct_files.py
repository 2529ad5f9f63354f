"""A compressed-tensors checkpoint made by the tests with that library's own API: quantization config applied,
round-to-nearest scales from each group's min/max, then packed and saved by its ModelCompressor."""

from __future__ import annotations

from pathlib import Path


def write_compressed_tensors(dense_dir: Path, out_dir: Path, *, bits: int = 4, group_size: int = 32,
                             symmetric: bool = True) -> Path:
    """``dense_dir`` (a saved model + tokenizer) as a pack-quantized W``bits`` g``group_size`` folder in ``out_dir``."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config, preset_name_to_scheme
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(dense_dir, dtype=torch.float32)
    scheme = preset_name_to_scheme(f"W{bits}A16", ["Linear"])
    scheme.weights.group_size, scheme.weights.symmetric = group_size, symmetric
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    for module in model.modules():
        if hasattr(module, "weight_scale") and getattr(module, "quantization_scheme", None) is not None:
            args = module.quantization_scheme.weights
            grouped = module.weight.data.reshape(module.weight.shape[0], -1, args.group_size)  # [out, groups, g]
            scale, zero = calculate_qparams(grouped.amin(-1), grouped.amax(-1), args)
            module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
            if hasattr(module, "weight_zero_point"):
                module.weight_zero_point.data.copy_(zero.reshape(module.weight_zero_point.shape))
    compressor = ModelCompressor.from_pretrained_model(model, "pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out_dir)
    compressor.update_config(str(out_dir))
    AutoTokenizer.from_pretrained(dense_dir).save_pretrained(out_dir)
    return Path(out_dir)
