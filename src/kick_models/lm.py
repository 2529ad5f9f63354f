"""``kick-hf``: lm-eval's HFLM that compresses the model right after HFLM has loaded and placed it."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from kick_common.stops import FIRST_LINE
from kick_models.config import CALIB_NAMES, CompressionConfig, ConfigError, build_config, compression_keys
from kick_models.ignored import ignored_args
from kick_models.options import FLOOR_ACCEPTED, KICK_KEYS, read_options

log = logging.getLogger(__name__)

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
    kick = read_options({k: kwargs[k] for k in KICK_KEYS if k in kwargs})
    if "floor" in kick and (kick["floor"] == "dense") != config.is_noop:  # dense re-runs dense, recompressed a method
        raise ConfigError(f"kick-hf: invalid model_arg floor={kwargs['floor']!r}; accepted: {FLOOR_ACCEPTED}")
    if kick.get("keep_grids") and (not config.quantizes or config.method_spec.kind == "load-time"):
        raise ConfigError(f"kick-hf: invalid model_arg keep_grids=true with method={config.method}: it keeps GPTQ "
                          "grids, but this config does not quantize; accepted: false, or true with a quantizer "
                          "(method=gptq|rtn|awq) or a pruner with wbits in 2, 3, 4, 8")
    hflm = {k: v for k, v in kwargs.items() if k not in keys and k not in KICK_KEYS}
    return config, kick, hflm


def check_environment_early() -> dict[str, Any]:
    """kick's environment variables, checked with the model args; a judge that is set but does not answer is
    said now (as a warning: kick-hf cannot tell whether the tasks use it), not after the model has loaded."""
    from kick_common.env import check_environment, endpoint_answers, judge_is_configured

    values = check_environment()
    if judge_is_configured(values):
        import os

        url = values.get("KICK_JUDGE_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        problem = endpoint_answers(url)
        if problem:
            from urllib.parse import urlsplit

            parts = urlsplit(url)  # host and port only: a URL may carry credentials
            log.warning("kick-hf: the judge at %s://%s does not answer (%s); judged tasks will fail after the "
                        "model loads. Start it, fix KICK_JUDGE_BASE_URL, or set KICK_JUDGE_DISABLE=1",
                        parts.scheme, parts.netloc.rsplit("@", 1)[-1], problem)
    return values


def numerics(batch_size: Any, device: Any, dtype: Any, floor: str | None) -> dict[str, Any]:
    """What can change a run's floats besides its settings: two runs that differ here may differ in their results."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "batch_size": batch_size, "device": str(device),
            "dtype": str(dtype), "torch": torch.__version__, "floor": floor}


@contextlib.contextmanager
def refusals_logged() -> Iterator[None]:
    """Log a kick refusal at ERROR before it propagates: the stock ``lm_eval`` CLI does not catch it,
    so without this the user reads a long traceback before kick's one-line message."""
    from kick_common.env import EnvError
    from kick_models.cache import CacheError
    from kick_models.compression.calibration import CalibrationError

    try:
        yield
    except (ConfigError, CacheError, CalibrationError, EnvError) as err:
        log.error("%s", err)
        _short_traceback(err)
        raise


def _short_traceback(err: BaseException) -> None:
    """In an ``lm_eval`` process, print this refusal as one line instead of lm-eval's 40-line traceback (lm-eval
    does not catch it; Python's excepthook is the one place left). Every other exception keeps its traceback."""
    import sys

    from kick_models.registration import in_lm_eval_cli

    if not in_lm_eval_cli():
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if value is err:
            sys.stderr.write(f"{kind.__name__}: {value}\n(refused before loading; nothing was written)\n")
            return
        previous(kind, value, tb)

    sys.excepthook = hook


class _Embedded:
    """The default of ``pretrained``: no model named, so the embedded one (unlike a hand-typed ``None``)."""

    def __repr__(self) -> str:
        return "embedded"


EMBEDDED = _Embedded()


def duplicate_keys(arg_string: str) -> list[str]:
    """Keys given more than once in a ``key=value,...`` string (lm-eval keeps the last one without a word)."""
    seen: set[str] = set()
    twice: list[str] = []
    for part in (arg_string or "").split(","):
        key = part.split("=", 1)[0].strip()
        if "=" in part and key in seen and key not in twice:
            twice.append(key)
        seen.add(key)
    return twice


def refuse_duplicates(arg_string: str, where: str = "--model_args") -> None:
    twice = duplicate_keys(arg_string)
    if twice:
        values = [p.split("=", 1)[1].strip() for p in arg_string.split(",") if p.split("=", 1)[0].strip() == twice[0]]
        raise ConfigError(f"kick-hf: model_arg {twice[0]} is given {len(values)} times in {where} "
                          f"({', '.join(f'{twice[0]}={v}' for v in values)}); accepted: each key once")


def command_line_model_args(argv: list[str]) -> str:
    """The ``--model_args``/``-a`` text of an ``lm_eval`` command line, every value joined (JSON values left out)."""
    texts, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(("--model_args=", "-a=")):
            texts.append(arg.split("=", 1)[1])
        elif arg in ("--model_args", "-a"):
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                texts.append(argv[i])
                i += 1
            continue
        i += 1
    return ",".join(t for t in texts if not t.lstrip().startswith("{"))


def harness_device_fallback(additional_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The harness's own ``device`` (``--device``, whose default is ``cuda:0``) on a machine without CUDA
    becomes ``cpu`` with one warning, as lm-eval's ``hf`` falls back; a device given in ``--model_args``
    is still checked strictly before loading."""
    if not additional_config or additional_config.get("device") is None:
        return additional_config
    import torch

    device = str(additional_config["device"]).strip().lower()
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("kick-hf: device %s is not available on this machine (no CUDA GPU); running on cpu", device)
        return {**additional_config, "device": "cpu"}
    return additional_config


@register_model("kick-hf")
class KickHFLM(HFLM):
    """HFLM plus LLM-KICK compression (pruning and/or GPTQ) applied once the model is loaded.

    With no ``pretrained`` the embedded SmolLM2-135M-Instruct is used (offline).
    """

    def __init__(self, pretrained: Any = EMBEDDED, **kwargs: Any) -> None:
        from kick_models.registration import follow_lm_eval_logging

        follow_lm_eval_logging()
        with refusals_logged():
            if pretrained is None:  # lm-eval turns the text "None" into None: never the embedded model by accident
                raise ConfigError("kick-hf: invalid model_arg pretrained=None; accepted: a Hub id or a local model "
                                  "folder, or no pretrained at all for the embedded model")
            hflm_args = self._kick_setup(None if pretrained is EMBEDDED else pretrained, kwargs)
        super().__init__(pretrained=self._kick_pretrained, **hflm_args)
        self._kick_numerics = numerics(getattr(self, "batch_size_per_gpu", hflm_args.get("batch_size")), self.device,
                                       getattr(self.model, "dtype", None), self._kick_options.get("floor"))
        with refusals_logged():
            self._compress()

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """lm-eval's constructor from text, refusing a key given twice (lm-eval keeps the last silently)."""
        with refusals_logged():
            refuse_duplicates(arg_string)
        return super().create_from_arg_string(arg_string, harness_device_fallback(additional_config))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None):
        """lm-eval's constructor from a dict (what its CLI calls); see :func:`harness_device_fallback`."""
        return super().create_from_arg_obj(arg_dict, harness_device_fallback(additional_config))

    def _kick_setup(self, pretrained: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Every check that needs no weights (args, environment, cache folder, model folder, calibration source,
        then the model's config and tokenizer), in that order; returns the HFLM arguments."""
        import sys

        from kick_models import preflight
        from kick_models.registration import in_lm_eval_cli

        self._kick_external = None  # set last, once every check has passed (read by _get_config)
        if in_lm_eval_cli():  # lm-eval's CLI merges repeated keys before kick sees them
            refuse_duplicates(command_line_model_args(sys.argv))
        config, kick, hflm_args = split_model_args(kwargs)
        check_environment_early()
        preflight.check_hflm_args(hflm_args)
        self.kick_config = config
        self._kick_options = kick
        self._kick_ignored = ignored_args(config, kwargs)
        for key, why in self._kick_ignored.items():
            log.warning("kick-hf: %s=%s is ignored: %s", key, why["value"], why["reason"])
        self._kick_embedded = pretrained is None
        self._kick_pretrained = "embedded" if pretrained is None else pretrained
        if not config.is_noop and self._kick_cache_enabled():
            from kick_models.cache import ensure_writable

            ensure_writable(kick.get("cache_dir"))  # an unusable cache fails now, not after loading
        preflight.check_pretrained(pretrained, hflm_args.get("gguf_file"))
        calib_source = preflight.check_calib_file_text(config)
        preflight.check_hub_calibration(config, embedded=pretrained is None)
        if pretrained is None:
            from kick_models.embedded import embedded_model_path

            pretrained = str(embedded_model_path())
        load_time = config.method_spec is not None and config.method_spec.kind == "load-time"
        if isinstance(pretrained, str) and not load_time:
            preflight.check_against_model(config, pretrained, hflm_args, calib_source)
        self._kick_pretrained = pretrained
        self._kick_model_id = pretrained if isinstance(pretrained, str) else type(pretrained).__name__
        self._kick_subfolder = str(hflm_args.get("subfolder") or "")  # where in the folder or repo the model lies
        self._kick_summary: dict[str, Any] = {"method": "none", "applied": False}
        self._kick_warnings: list[str] = []
        self._kick_calibration: dict[str, Any] | None = None
        # module name -> GPTQ grid, for a packed export; only with keep_grids=true (see _compress)
        self.kick_quant_grids: dict[str, Any] | None = None
        if hflm_args.get("device") is None and not isinstance(pretrained, str):
            hflm_args.pop("device", None)
        elif hflm_args.get("device") is None:
            import torch

            # HFLM's own default is "cuda", which fails on CPU-only machines when built directly
            hflm_args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        external = self._kick_external_plan(config, pretrained, kick.get("parent"), hflm_args)
        if "label" in kick:
            if external is None:  # no weights have loaded yet: a plan is what takes a parent's reference
                raise ConfigError(f"kick-hf: invalid model_arg label={kick['label']!r} with method={config.method}: it "
                                  "names a model kick did not compress, and kick's own methods are named by their "
                                  "settings; accepted: label= with parent=, a load-time method (bnb8, bnb4, torchao, "
                                  "hqq, quanto) or a checkpoint that declares its compression")
            external.source["label"] = kick["label"]
        self._kick_external = external
        return hflm_args

    def _kick_external_plan(self, config: CompressionConfig, pretrained: Any, parent: str | None,
                            hflm_args: dict[str, Any]):
        """A plan for a model another library compresses (a load-time method, or a checkpoint, above all one
        given ``parent=``); None for kick's own methods on a dense model. Every check runs before loading."""
        from kick_models.external import plan

        if not isinstance(pretrained, str):
            if parent is not None:
                raise ConfigError("kick-hf: invalid model_arg parent= with a model object as pretrained; "
                                  "accepted: pretrained=<checkpoint folder or Hub id> with parent=")
            return None
        root = None
        if self._kick_cache_enabled():
            from kick_models.cache import ensure_writable

            root = ensure_writable(self._kick_options.get("cache_dir"))
        fidelity = self._kick_fidelity_enabled()
        spec = config.method_spec
        if spec is not None and spec.kind == "load-time" and parent is None:
            return plan.prepare_load_time(config, pretrained, hflm_args, fidelity=fidelity, cache_root=root)
        return plan.prepare_checkpoint(pretrained, parent, hflm_args, method=config.method, fidelity=fidelity,
                                       cache_root=root)

    # ------------------------------------------------------------------ compression
    def _kick_cache_enabled(self) -> bool:
        """The cache needs a model identity (a hub id or folder) and stores weights only, so it is
        off for model objects, with ``no_cache=true``, and with ``keep_grids=true``."""
        options = self._kick_options
        return (isinstance(self._kick_pretrained, str) and not options.get("no_cache", False)
                and not options.get("keep_grids", False))

    def _compress(self) -> None:
        """Compress the loaded model, or load an identical earlier result from the cache.

        The dense fidelity reference is taken first (the model is still dense). On a cache hit even
        the calibration text is not tokenized again (its token hash is remembered), and the hit is
        checked by re-measuring one held-out window. The cache needs a model identity (hub id +
        commit, or a local folder's content hash), so it is off when ``pretrained`` was a ready-made
        model object.
        """
        config = self.kick_config
        if self._kick_external is not None:
            self._kick_summary = self._kick_finish_external()
            return
        windows = self._kick_fidelity_windows() if self._kick_fidelity_enabled() else None
        reference = self._kick_reference(windows) if windows is not None else None
        if config.is_noop:
            if windows is not None:
                self._kick_summary["fidelity"] = self._kick_measure(windows, reference)
            return
        from kick_models.compression.blocks import find_decoder_blocks
        from kick_models.compression.offload import is_offloaded

        start = time.perf_counter()
        offloaded = any(is_offloaded(block) for block in find_decoder_blocks(self.model))
        if offloaded and self._kick_cache_enabled():
            log.info("kick-hf: some decoder blocks are offloaded (device_map with cpu/disk entries); "
                     "compressing block by block in place, without the compressed-model cache")
        summary = self._kick_load_or_compress(self._kick_cache_enabled() and not offloaded, windows, reference)
        summary["applied"] = True
        summary.setdefault("seconds", round(time.perf_counter() - start, 3))
        self._kick_summary = summary
        self._kick_check_achieved(summary)
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

    def _kick_load_or_compress(self, enabled: bool, windows, reference) -> dict[str, Any]:
        """Ask the cache for this key's entry; on a miss (or a hit that does not re-measure) calibrate,
        compress, measure and store. A calibration memo whose token hash the real tokens contradict
        is replaced, and the lookup repeated under the right key."""
        from kick_models import cache

        config = self.kick_config
        root = cache.ensure_writable(self._kick_options.get("cache_dir")) if enabled else None
        identity = cache.model_identity(self._kick_model_id, getattr(self, "revision", None), self.model, root,
                                        self._kick_subfolder) if enabled else {}
        memo = ids = info = None
        if enabled and config.needs_calibration:
            memo = cache.calibration_memo_path(root, self._kick_model_id, identity, config, self._kick_calib_spec())
            info = cache.read_calibration_memo(memo, config)
        for _ in range(2):
            if memo is not None and info is None:
                ids, info = self._kick_calibrate()
                cache.write_calibration_memo(memo, info)
            parts = cache.key_parts(pretrained=self._kick_model_id, config=config, calib_info=info,
                                    identity=identity) if enabled else {}
            with cache.open_slot(self.model, parts, cache_dir=root, enabled=enabled,
                                 lock_timeout_s=self._kick_options.get("cache_lock_timeout"),
                                 expect_sparsity=config.target_sparsity if config.prunes else None) as slot:
                summary = slot.load()
                if summary is not None:
                    summary = self._kick_check_hit(slot, summary, windows, reference)
                if summary is None:
                    if config.needs_calibration and ids is None:
                        ids, real = self._kick_calibrate()
                        if memo is not None and cache.calibration_differs(info, real):
                            log.warning("kick cache: calibration memo %s names token hash %s, but the calibration "
                                        "text hashes to %s; replacing the memo", memo, info.get("token_sha256"),
                                        real.get("token_sha256"))
                            cache.write_calibration_memo(memo, real)
                            info = real
                            continue
                        info = real
                    summary = slot.store(self._kick_compress_now(ids, windows, reference))
            self._kick_calibration = info
            return summary
        raise AssertionError("unreachable: the second lookup has the real calibration tokens")

    def _kick_calib_spec(self) -> dict[str, Any]:
        spec = {"embedded": self._kick_embedded, "max_length": self.max_length,
                "resolved_calib": self.kick_config.resolved_calib(self._kick_embedded)}
        return {**spec, "subfolder": self._kick_subfolder} if self._kick_subfolder else spec

    def _kick_calibrate(self):
        from kick_models.compression.calibration import calibration_ids

        return calibration_ids(self.tokenizer, self.kick_config, embedded_model=self._kick_embedded,
                               max_length=self.max_length)

    def _kick_compress_now(self, ids, windows, reference) -> dict[str, Any]:
        """Compress in place; with fidelity on, measure the result against the dense reference."""
        from kick_models.compression import compress_model

        device = self.device if str(self.device) != "cpu" else None
        grids: dict[str, Any] | None = {} if self._kick_options.get("keep_grids") else None
        summary = dict(compress_model(self.model, self.kick_config, ids, device=device, quant_grids=grids))
        self.kick_quant_grids = grids
        if windows is not None:
            summary["fidelity"] = self._kick_measure(windows, reference)
        return summary

    def _kick_check_hit(self, slot, summary: dict[str, Any], windows, reference) -> dict[str, Any] | None:
        """A hit reports only a fidelity it re-measured: with fidelity on, its first window must give
        the stored KL and top-1 agreement (else the hit is rejected, None); with fidelity off, the
        stored fidelity is dropped."""
        from kick_models.fidelity import fits, recheck

        stored = summary.pop("fidelity", None)
        if windows is None:
            return summary
        if not fits(stored, windows, reference):  # stored without (or with other) fidelity: measure it all now
            summary["fidelity"] = self._kick_measure(windows, reference)
            return summary
        check = recheck(self.model, reference, windows, stored)
        if check["problem"] is not None:
            slot.reject(check["problem"])
            return None
        log.info("kick cache: hit verified on one held-out window (KL %.4g, stored %.4g; %.2fs)",
                 check["kl"], stored["kl_windows"][0], check["seconds"])
        summary["fidelity"] = {**stored, "verified": {k: v for k, v in check.items() if k != "problem"}}
        return summary

    def _get_config(self, pretrained: str, **kwargs: Any) -> None:
        """HFLM hands the config's ``quantization_config`` to ``from_pretrained``: a quantize-while-loading
        method (bitsandbytes) puts its own there, since lm-eval's command line cannot pass such an object."""
        super()._get_config(pretrained, **kwargs)
        external = getattr(self, "_kick_external", None)
        if external is not None and external.quantization_config is not None:
            self._config.quantization_config = external.quantization_config

    def _kick_finish_external(self) -> dict[str, Any]:
        from kick_models.external.plan import finish

        def reference_of_loaded():
            windows = self._kick_fidelity_windows()
            return windows, self._kick_reference(windows)

        fidelity = self._kick_fidelity_enabled() and self._kick_external.kind == "load-time"
        return finish(self._kick_external, self.model, self.kick_config,
                      reference_of_loaded=reference_of_loaded if fidelity else None)

    def _kick_check_achieved(self, summary: dict[str, Any]) -> None:
        """Measure what compression did against what was asked; a gap is logged and recorded in the results."""
        from kick_models.achieved import bits_warning, measured_levels, sparsity_warning

        levels = measured_levels(self.kick_config, self.model)
        summary.pop("achieved_bits", None)  # whatever a cache entry's record says
        if levels is not None:  # what the weights hold, on a miss and on a hit alike
            summary["achieved_bits"] = levels["bits"]
        for warning in (sparsity_warning(self.kick_config, summary), bits_warning(self.kick_config, levels)):
            if warning:
                log.warning("kick-hf: %s", warning)
                self._kick_warnings.append(warning)

    # ------------------------------------------------------------------ fidelity
    def _kick_fidelity_enabled(self) -> bool:
        return bool(self._kick_options.get("fidelity", True))

    def _kick_fidelity_windows(self):
        from kick_models.fidelity import fidelity_windows

        return fidelity_windows(self.tokenizer, max_length=self.max_length)

    def _kick_reference(self, windows):
        """The dense model's top-k on ``windows``: computed now (the model is still dense), or loaded
        from the cache, where the first cell of a base model leaves it for the others. A reference
        that cannot be trusted is measured again; one that cannot be stored is only warned about."""
        from kick_models.cache import CacheError, ensure_writable, model_identity
        from kick_models.fidelity import dense_reference, load_reference, reference_key, save_reference

        if not self._kick_cache_enabled():
            return dense_reference(self.model, windows)
        try:
            root = ensure_writable(self._kick_options.get("cache_dir"))
        except CacheError as err:
            log.warning("%s; measuring the dense reference without keeping it", err)
            return dense_reference(self.model, windows)
        identity = model_identity(self._kick_model_id, getattr(self, "revision", None), self.model, root, self._kick_subfolder)
        key = reference_key(identity, windows)
        path = root / "fidelity" / f"{key}.safetensors"
        reference, problem = load_reference(path, key, windows, self.model.config.vocab_size)
        if problem is not None:
            log.warning("kick-hf: fidelity reference %s is unusable (%s); measuring the dense model again", path, problem)
        if reference is None:
            reference = dense_reference(self.model, windows)
            try:
                save_reference(reference, path, key)
            except OSError as err:
                log.warning("kick-hf: could not keep the fidelity reference in %s (%s); measured without caching it",
                            path, err.strerror or err)
        return reference

    def _kick_measure(self, windows, reference) -> dict[str, Any]:
        from kick_models.fidelity import compare

        fidelity = compare(self.model, reference, windows)
        if not math.isfinite(fidelity["kl_mean"]):
            log.warning("kick-hf: the compressed model's KL to the dense one is %s: its outputs hold NaN or "
                        "infinite values", fidelity["kl_mean"])
        log.info("kick-hf: KL(dense||compressed)=%.4g nats/token, top-1 agreement %.3f, perplexity %.2f -> %.2f "
                 "(%d held-out tokens, %.1fs)", fidelity["kl_mean"], fidelity["top1_agreement"],
                 fidelity["ppl_dense"], fidelity["ppl_compressed"], fidelity["tokens"], fidelity["seconds"])
        return fidelity

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """lm-eval's answers, by continuous batching where it is on and reproduces them (kick_models.generation)."""
        from kick_models import generation

        if generation.wanted(self._kick_options.get("continuous_batching", "auto"), self.device):
            answers = generation.generate_until(self, requests, disable_tqdm=disable_tqdm)
            if answers is not None:
                self._kick_summary["generation"] = "continuous batching"
                return answers
        self._kick_summary["generation"] = "lm-eval batches"
        return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        """HFLM's generation; a task whose ``until`` names ``FIRST_LINE`` stops at its first line's end."""
        if FIRST_LINE not in stop:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        from transformers import StoppingCriteriaList

        from kick_models.stopping import FirstLineStop

        first_line = FirstLineStop(self.tokenizer, context.shape[1])
        generate = self.model.generate

        def generate_to_first_line(*args, stopping_criteria, **kwargs):
            return generate(*args, stopping_criteria=StoppingCriteriaList([*stopping_criteria, first_line]), **kwargs)

        # HFLM builds its stop-string criteria inside; adding ours to that call keeps its sampling logic
        self.model.generate = generate_to_first_line
        try:
            return super()._model_generate(context, max_length, [s for s in stop if s != FIRST_LINE], **generation_kwargs)
        finally:
            del self.model.generate

    # ------------------------------------------------------------------ reporting
    def get_model_info(self) -> dict:
        info = super().get_model_info()
        from kick_models.external.plan import EMBEDDED_RECORD, compression_record, kick_source

        external = self._kick_external
        model = EMBEDDED_RECORD if self._kick_embedded else self._kick_model_id
        info["kick"] = {
            "model": external.parent if external is not None and external.parent else model,
            "method": external.method if external is not None else self.kick_config.method,
            "source": external.source if external is not None else kick_source(self.kick_config, self._kick_summary),
            "compression": compression_record(external) if external is not None and external.kind == "checkpoint"
            else self.kick_config.to_dict(),
            "calibration": self._kick_calibration,
            "result": self._kick_summary,
            "numerics": self._kick_numerics,
        }
        if self._kick_ignored:
            info["kick"]["ignored"] = self._kick_ignored
        if self._kick_warnings:
            info["kick"]["warnings"] = list(self._kick_warnings)
        return info
