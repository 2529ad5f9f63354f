"""What ``kick-hf`` does for a model another library compressed: every check before the weights load
(:func:`prepare`), then, once HFLM has loaded it, the fidelity and measurement (:func:`finish`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kick_common.paths import EMBEDDED_NAME
from kick_models.config import CompressionConfig, ConfigError
from kick_models.external import checkpoint as ckpt
from kick_models.external import loadtime

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_RECORD = f"embedded:{EMBEDDED_NAME}"  # how a dense kick-hf run of the embedded model names it


@dataclass
class Plan:
    """One run of an externally compressed model: its kind, provenance and (if any) the parent's reference."""

    kind: str  # "load-time" | "checkpoint"
    method: str  # registry name, or "checkpoint"
    source: dict[str, Any]
    parent: str | None = None  # the parent's identity string, as a dense run of it records it
    reference: Any = None  # external.reference.DenseReference, computed before the evaluated model loaded
    layers: list[str] = field(default_factory=list)  # quantized Linear layers to measure (block 0)
    folder: Path | None = None
    gguf_file: str | None = None
    quantization_config: Any = None  # transformers config object for a quantize-while-loading method


def _config(path: str, hflm_args: Mapping[str, Any], key: str, gguf_file: str | None = None):
    """AutoConfig of ``path`` (small files only); a clear refusal naming ``key`` when it cannot be read."""
    from transformers import AutoConfig

    kwargs = {"trust_remote_code": bool(hflm_args.get("trust_remote_code") or False)}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        return AutoConfig.from_pretrained(path, **kwargs)
    except Exception as err:  # noqa: BLE001 — any failure means: not a model we can read
        raise ConfigError(f"kick-hf: invalid model_arg {key}={path!r}: cannot read its model config ({err}); "
                          "accepted: an existing local model folder or a Hugging Face Hub id") from None


def _parent_path(parent: str) -> tuple[str, str]:
    """(identity string as a dense kick-hf run records it, what to load) for ``parent=``."""
    from kick_models import preflight

    if parent.strip() in ("", EMBEDDED, EMBEDDED_RECORD):
        from kick_models.embedded import embedded_model_path

        return EMBEDDED_RECORD, str(embedded_model_path())
    if preflight.looks_like_path(parent) and not Path(parent).expanduser().is_dir():
        what = "is a file, not a model folder" if Path(parent).expanduser().exists() else "no such folder"
        raise ConfigError(f"kick-hf: invalid model_arg parent={parent!r}: {what}; accepted: the dense model's local "
                          f"folder, its Hugging Face Hub id, or {EMBEDDED} (the embedded {EMBEDDED_NAME})")
    return parent, parent


def _block0_layers(in_features: Mapping[str, int]) -> list[str]:
    return [name for name in in_features if ".layers.0." in f".{name}." or ".h.0." in f".{name}."]


def _reference(path: str, name: str, model_config, hflm_args: Mapping[str, Any], cache_root):
    from kick_models.external.reference import dense_reference_of

    return dense_reference_of(path, name, model_config=model_config, dtype=hflm_args.get("dtype"),
                              device=str(hflm_args.get("device") or "cpu"), revision=None, cache_root=cache_root,
                              max_length=hflm_args.get("max_length"),
                              trust_remote_code=bool(hflm_args.get("trust_remote_code") or False))


def prepare_load_time(config: CompressionConfig, pretrained: str, hflm_args: dict[str, Any], *,
                      fidelity: bool, cache_root) -> Plan:
    """Refuse what this library cannot do here, then hand a ``quantization_config`` to HFLM where the
    library quantizes while loading (the dense reference is then taken first, from a separate load)."""
    from kick_models import preflight

    name, spec = config.method, config.method_spec.load_time
    for refusal in (loadtime.missing_library(name, spec), loadtime.device_refusal(name, hflm_args.get("device") or "cpu")):
        if refusal:
            raise ConfigError(refusal)
    if spec.at_load is not None and hflm_args.get("quantization_config") is not None:
        raise ConfigError(f"kick-hf: invalid model_arg quantization_config with method={name}: the method builds its "
                          "own; accepted: one of them")
    model_config = _config(pretrained, hflm_args, "pretrained")
    in_features = preflight.matrix_widths(model_config, hflm_args)
    refusal = loadtime.shape_refusal(name, config, in_features)
    if refusal:
        raise ConfigError(refusal)
    plan = Plan(kind=loadtime.KIND, method=name, source=loadtime.source(name, config), layers=_block0_layers(in_features))
    if spec.at_load is not None:
        from kick_models.external.reference import resolve_dtype

        if fidelity:
            plan.reference = _reference(pretrained, pretrained, model_config, hflm_args, cache_root)
        plan.quantization_config = spec.at_load(config, resolve_dtype(hflm_args.get("dtype"), model_config))
    return plan


def prepare_checkpoint(pretrained: str, parent: str | None, hflm_args: Mapping[str, Any], *, method: str,
                       fidelity: bool, cache_root) -> Plan | None:
    """A checkpoint that declares compression (or any model given ``parent=``): read its provenance, check that
    it pairs with the parent and that its loader is installed, and take the parent's reference — all before loading."""
    if parent is not None and method != "none":
        raise ConfigError(f"kick-hf: invalid model_arg method={method!r} with parent={parent!r}: a checkpoint is "
                          "evaluated as it is, never compressed again; accepted: method=none with parent=, "
                          "or no parent= to compress pretrained with kick")
    gguf_file = hflm_args.get("gguf_file")
    folder = Path(pretrained).expanduser() if Path(pretrained).expanduser().is_dir() else None
    if parent is None and method != "none":
        return None
    try:
        model_config = _config(pretrained, hflm_args, "pretrained", gguf_file)
    except ConfigError:
        if parent is not None:
            raise
        return None  # a plain run: the load reports an unreadable model in its own words
    source = ckpt.checkpoint_source(pretrained, folder, model_config, gguf_file)
    qc = ckpt.quantization_config(model_config) if not gguf_file else None
    refusal = ckpt.needed_loader(source, qc.get("quant_method") if qc else None)
    if refusal:
        raise ConfigError(refusal)
    if parent is None:
        if source is not None:
            log.warning("kick-hf: %s is a compressed checkpoint (%s) but no parent= was given: it cannot be paired with "
                        "a dense model and no KL can be measured; pass parent=<dense model> to judge it",
                        pretrained, source["label"])
            source["measured"] = None
            return Plan(kind="checkpoint", method="checkpoint", source=source, folder=folder, gguf_file=gguf_file)
        return None
    if source is None:
        source = {"kind": "checkpoint", "label": "unquantized checkpoint", "library": None, "version": None,
                  "format": None, "checkpoint": pretrained, "declared": {}, "measured": None}
    name, path = _parent_path(parent)
    parent_config = _config(path, hflm_args, "parent")
    _check_pairing(pretrained, gguf_file, model_config, path, parent_config, parent, hflm_args)
    plan = Plan(kind="checkpoint", method="checkpoint", source=source, parent=name, folder=folder, gguf_file=gguf_file)
    if fidelity:
        plan.reference = _reference(path, name, parent_config, hflm_args, cache_root)
    return plan


def _check_pairing(pretrained, gguf_file, model_config, parent_path, parent_config, parent, hflm_args) -> None:
    """KL compares the two models token by token: refuse a parent whose vocabulary differs."""
    from transformers import AutoTokenizer

    sizes = (getattr(model_config, "vocab_size", None), getattr(parent_config, "vocab_size", None))
    why = None
    if None not in sizes and sizes[0] != sizes[1]:
        why = f"its vocab_size is {sizes[1]}, the checkpoint's {sizes[0]}"
    else:
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer_src = hflm_args.get("tokenizer") if isinstance(hflm_args.get("tokenizer"), str) else pretrained
        if hflm_args.get("tokenizer"):
            kwargs = {}
        try:
            mine = AutoTokenizer.from_pretrained(tokenizer_src, **kwargs)
            theirs = AutoTokenizer.from_pretrained(parent_path)
        except Exception as err:  # noqa: BLE001 — an unreadable tokenizer cannot be compared
            raise ConfigError(f"kick-hf: invalid model_arg parent={parent!r}: cannot compare the tokenizers ({err}); "
                              "accepted: a parent whose tokenizer loads") from None
        why = ckpt.same_vocabulary(mine, theirs)
    if why:
        raise ConfigError(f"kick-hf: invalid model_arg parent={parent!r}: {why}, so KL between them is undefined; "
                          "accepted: the dense model this checkpoint was made from (same tokenizer)")


def finish(plan: Plan, model, config: CompressionConfig, *, reference_of_loaded=None) -> dict[str, Any]:
    """After HFLM has loaded the model: apply an after-load quantizer, measure the weights, compare with the reference.

    ``reference_of_loaded()`` gives the dense reference of the model as loaded (for quantizers that act
    after loading it is taken before they run; None: no fidelity)."""
    from kick_models.external.measure import probe_weights, summarize
    from kick_models.fidelity import compare

    summary: dict[str, Any] = {"method": plan.method, "applied": plan.kind == loadtime.KIND}
    reference = plan.reference
    windows = reference.windows if reference is not None else None
    if plan.kind == loadtime.KIND:
        spec = config.method_spec.load_time
        if spec.after_load is not None:
            if reference_of_loaded is not None:
                windows, ref = reference_of_loaded()
                reference = _Loaded(ref, windows)
            start = time.perf_counter()
            spec.after_load(model, config, model.get_output_embeddings())
            summary["seconds"] = round(time.perf_counter() - start, 3)
        group = _group(spec, config, model, plan.layers)
        plan.source["declared"]["group_size"] = ({name: group(name) for name in plan.layers} if callable(group)
                                                 else group if group is not None else "per-row")
        plan.source["measured"] = summarize(probe_weights(model, plan.layers), group, symmetric=spec.symmetric(config),
                                            what="effective weights (module output on the identity) of block 0")
        summary["cache"] = {"enabled": False, "reason": "load-time quantizers run at every load; their quantized "
                                                        "state is the library's own and is not cached"}
    else:
        plan.source["measured"] = ckpt.measure_checkpoint(plan.source, plan.folder, plan.gguf_file)
    if reference is not None:
        fidelity = compare(model, reference.reference, windows)
        if getattr(reference, "info", None):
            fidelity["reference"] = reference.info
        log.info("kick-hf: KL(dense||%s)=%.4g nats/token, top-1 agreement %.3f, perplexity %.2f -> %.2f (%d tokens)",
                 plan.source["label"], fidelity["kl_mean"], fidelity["top1_agreement"], fidelity["ppl_dense"],
                 fidelity["ppl_compressed"], fidelity["tokens"])
        summary["fidelity"] = fidelity
    elif plan.kind == "checkpoint" and plan.parent is None:
        summary["fidelity"] = None
        summary["unpaired"] = "no parent= given: no dense model to pair with, so no KL"
    return summary


@dataclass
class _Loaded:
    reference: Any
    windows: Any
    info: dict | None = None


def _group(spec, config, model, layers):
    """The group the library really used: quanto picks its own per layer (stored on each module)."""
    if spec.library == "optimum-quanto" and layers:
        modules = dict(model.named_modules())
        return lambda name: getattr(modules[name], "weight_group_size", None)
    return spec.group(config)


def compression_record(plan: Plan) -> dict[str, Any]:
    """``config.kick["compression"]`` for a checkpoint: what the report's setting is made of (never "none")."""
    declared = plan.source.get("declared") or {}
    bits = declared.get("bits")
    return {"method": "checkpoint", "pattern": "unstructured", "wbits": bits if isinstance(bits, int) and bits < 16 else 16,
            "sparsity": 0.0, "target_sparsity": 0.0, "label": plan.source.get("label")}


def kick_source(config: CompressionConfig, summary: Mapping[str, Any]) -> dict[str, Any]:
    """``config.kick["source"]`` for kick's own methods (and the dense model), in the same shape as the others."""
    from importlib import metadata

    from kick_models.compression.registry import is_quantizer

    try:
        version = metadata.version("kick")
    except metadata.PackageNotFoundError:
        version = None
    if config.is_noop:
        return {"kind": "kick", "label": "dense", "library": None, "version": None, "format": None, "checkpoint": None,
                "declared": {}, "measured": None}
    label = f"{config.method} W{config.wbits}" if is_quantizer(config.method) else config.method
    if config.prunes:
        label += f" {config.pattern_str if config.pattern else f'{config.target_sparsity:g}'}"
        if config.quantizes:
            label += f" W{config.wbits}"
    declared = {"bits": config.wbits, "sparsity": config.target_sparsity, "pattern": config.pattern_str}
    if config.quantizes:
        declared.update(group_size=config.group_size, symmetric=config.sym)
    measured = {"sparsity": summary["achieved_sparsity"]} if "achieved_sparsity" in summary else None
    return {"kind": "kick", "label": label, "library": "kick", "version": version, "format": None, "checkpoint": None,
            "declared": declared, "measured": measured}
