"""Compression args a configuration does not use, and why: kick-hf records and warns about them, and kick-sweep
leaves them out of the cells whose method ignores them (its ``model_args`` are for every cell)."""

from __future__ import annotations

from typing import Any

from kick_models.config import CompressionConfig

# why a compression arg can be given and still change nothing, by the fields relevant_config drops
_IGNORED_REASONS = (
    (("calib", "nsamples", "seqlen", "seed", "propagate"), "needs no calibration data"),
    (("group_size", "sym", "act_order"), "quantizes nothing (wbits=16)"),
    (("damp", "blocksize"), "uses neither SparseGPT nor GPTQ"),
    (("owl_m", "owl_lambda"), "uses sparsity_profile=uniform"),
)


def ignored_args(config: CompressionConfig, given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Compression args the user gave that this config does not use (magnitude with ``calib=``, ...),
    each with its value and the reason, so the results file does not record them as if used."""
    from kick_models.cache import relevant_config

    used = relevant_config(config)
    described = f"method={config.method}" + (f" wbits={config.wbits}" if config.wbits < 16 else "")
    reasons = _IGNORED_REASONS
    if config.method_spec is not None and config.method_spec.kind == "load-time":
        # another library quantizes: only the fields the method declares it uses reach it
        reasons = ((tuple(k for keys, _ in _IGNORED_REASONS for k in keys), f"is {config.method_spec.load_time.library}'s "
                    "quantizer, which does not take it"),)
    out = {}
    for keys, reason in reasons:
        for key in keys:
            if key in given and given[key] is not None and key not in used:
                out[key] = {"value": given[key], "reason": f"{described} {reason}"}
    return out
