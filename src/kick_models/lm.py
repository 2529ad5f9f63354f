"""``kick-hf``: lm-eval's HFLM that compresses the model right after HFLM has loaded and placed it."""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from kick_common.args import ArgsError, accepted_bools, as_bool
from kick_models.config import CALIB_NAMES, CompressionConfig, ConfigError, build_config, compression_keys

log = logging.getLogger(__name__)

# Arguments kick-hf itself understands besides the compression settings.
KICK_KEYS = ("cache_dir", "no_cache", "keep_grids")

# Keyword arguments commonly forwarded by HFLM to ``from_pretrained``; anything else that is
# neither an HFLM argument nor a kick argument is a typo and is refused before loading.
FROM_PRETRAINED_KEYS = (
    "attn_implementation",
    "device_map",
    "low_cpu_mem_usage",
    "load_in_8bit",
    "load_in_4bit",
    "quantization_config",
    "token",
    "local_files_only",
    "use_safetensors",
    "variant",
    "offload_state_dict",
    "torch_dtype",
)


def _hflm_keys() -> set[str]:
    keys = set(inspect.signature(HFLM.__init__).parameters) | set(inspect.signature(HFLM._create_model).parameters)
    return keys - {"self", "kwargs"}


def split_model_args(kwargs: dict[str, Any]) -> tuple[CompressionConfig, dict[str, Any], dict[str, Any]]:
    """Split raw model_args into (compression config, kick options, HFLM args); refuse unknown keys.

    Pure and cheap, so every bad value is reported before any weight is read.
    """
    hflm_ok = _hflm_keys() | set(FROM_PRETRAINED_KEYS)
    keys = compression_keys()  # kick's own plus every registered method's parameters
    unknown = sorted(k for k in kwargs if k not in keys and k not in KICK_KEYS and k not in hflm_ok)
    if unknown:
        raise ConfigError(
            f"kick-hf: unknown model_arg {unknown[0]!r}"
            + (f" (also {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else "")
            + f"; accepted: compression args {', '.join(keys)}; kick args {', '.join(KICK_KEYS)};"
            " or any lm-eval `hf` model arg (pretrained, dtype, device, batch_size, ...)"
        )
    config = build_config({k: kwargs[k] for k in keys if k in kwargs})
    if config.calib is not None and config.calib not in CALIB_NAMES and config.needs_calibration:
        path = Path(config.calib).expanduser()
        if not path.is_file() or path.stat().st_size == 0:
            raise ConfigError(
                f"kick-hf: invalid model_arg calib={config.calib!r}: no such non-empty file; "
                f"accepted: {' | '.join(CALIB_NAMES)} or a path to a .txt/.jsonl file"
            )
    kick = {k: kwargs[k] for k in KICK_KEYS if k in kwargs}
    for key in ("no_cache", "keep_grids"):
        if key in kick:
            try:
                kick[key] = as_bool(kick[key], key=key)
            except ArgsError:
                raise ConfigError(f"kick-hf: invalid model_arg {key}={kick[key]!r}; accepted: {accepted_bools()}") from None
    if kick.get("keep_grids") and not config.quantizes:
        raise ConfigError("kick-hf: keep_grids=true keeps GPTQ grids, but this config does not quantize; "
                          "accepted with method=gptq or wbits in 2, 3, 4, 8")
    hflm = {k: v for k, v in kwargs.items() if k not in keys and k not in KICK_KEYS}
    return config, kick, hflm


@register_model("kick-hf")
class KickHFLM(HFLM):
    """HFLM plus LLM-KICK compression (pruning and/or GPTQ) applied once the model is loaded.

    With no ``pretrained`` the embedded SmolLM2-135M-Instruct is used (offline).
    """

    def __init__(self, pretrained: Any = None, **kwargs: Any) -> None:
        config, kick, hflm_args = split_model_args(kwargs)
        self.kick_config = config
        self._kick_options = kick
        self._kick_embedded = pretrained is None
        if pretrained is None:
            from kick_models.embedded import embedded_model_path

            pretrained = str(embedded_model_path())
        self._kick_pretrained = pretrained
        self._kick_model_id = pretrained if isinstance(pretrained, str) else type(pretrained).__name__
        self._kick_summary: dict[str, Any] = {"method": "none", "applied": False}
        self._kick_calibration: dict[str, Any] | None = None
        # module name -> GPTQ grid, for a packed export; only with keep_grids=true (see _compress)
        self.kick_quant_grids: dict[str, Any] | None = None
        if not config.is_noop and self._kick_cache_enabled():
            from kick_models.cache import ensure_writable

            ensure_writable(kick.get("cache_dir"))  # an unusable cache fails now, not after loading
        if hflm_args.get("device") is None and not isinstance(pretrained, str):
            hflm_args.pop("device", None)
        elif hflm_args.get("device") is None:
            import torch

            # HFLM's own default is "cuda", which fails on CPU-only machines when built directly
            hflm_args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        super().__init__(pretrained=pretrained, **hflm_args)
        self._compress()

    # ------------------------------------------------------------------ compression
    def _kick_cache_enabled(self) -> bool:
        """The cache needs a model identity (a hub id or folder) and stores weights only, so it is
        off for model objects, with ``no_cache=true``, and with ``keep_grids=true``."""
        options = self._kick_options
        return (isinstance(self._kick_pretrained, str) and not options.get("no_cache", False)
                and not options.get("keep_grids", False))

    def _compress(self) -> None:
        """Compress the loaded model, or load an identical earlier result from the cache.

        On a cache hit even the calibration text is not tokenized again (its token hash is
        remembered). The cache needs a model identity (hub id + commit, or a local folder's content
        hash), so it is off when ``pretrained`` was a ready-made model object.
        """
        config = self.kick_config
        if config.is_noop:
            return
        from kick_models.cache import compress_with_cache
        from kick_models.compression import compress_model
        from kick_models.compression.calibration import calibration_ids
        from kick_models.compression.loop import find_decoder_blocks
        from kick_models.compression.offload import is_offloaded

        start = time.perf_counter()
        device = self.device if str(self.device) != "cpu" else None
        grids: dict[str, Any] | None = {} if self._kick_options.get("keep_grids") else None
        offloaded = any(is_offloaded(block) for block in find_decoder_blocks(self.model))
        if offloaded and self._kick_cache_enabled():
            log.info("kick-hf: some decoder blocks are offloaded (device_map with cpu/disk entries); "
                     "compressing block by block in place, without the compressed-model cache")

        def calibrate():
            return calibration_ids(self.tokenizer, config, embedded_model=self._kick_embedded, max_length=self.max_length)

        summary, _, self._kick_calibration = compress_with_cache(
            self.model,
            pretrained=self._kick_model_id,
            revision=getattr(self, "revision", None),
            config=config,
            calibrate=calibrate if config.needs_calibration else None,
            compress=lambda ids: compress_model(self.model, config, ids, device=device, quant_grids=grids),
            calib_spec={
                "embedded": self._kick_embedded,
                "max_length": self.max_length,
                "resolved_calib": config.resolved_calib(self._kick_embedded),
            },
            cache_dir=self._kick_options.get("cache_dir"),
            enabled=self._kick_cache_enabled() and not offloaded,
        )
        self.kick_quant_grids = grids
        summary = dict(summary)
        summary["applied"] = True
        summary.setdefault("seconds", round(time.perf_counter() - start, 3))
        self._kick_summary = summary
        cached = summary.get("cache", {}).get("hit", False)
        log.info(
            "kick-hf: %s %s sparsity=%.4f wbits=%s (%s in %.1fs)",
            config.method,
            config.pattern_str,
            summary.get("achieved_sparsity", float("nan")),
            config.wbits,
            "loaded from cache" if cached else "compressed",
            summary["cache"]["seconds"] if cached else summary["seconds"],
        )

    # ------------------------------------------------------------------ reporting
    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["kick"] = {
            "model": "embedded:SmolLM2-135M-Instruct" if self._kick_embedded else self._kick_model_id,
            "compression": self.kick_config.to_dict(),
            "calibration": self._kick_calibration,
            "result": self._kick_summary,
        }
        return info
