"""Compress once, load many times: a content-keyed, crash-safe, process-safe store of compressed weights.

An entry is a folder ``<cache_dir>/<key>/`` holding ``weights.safetensors`` (only the compressed
Linear weights, as a state-dict subset — never pickle) and ``manifest.json`` (size and sha256 of
every file, the compression summary and the key's inputs). Entries appear atomically: they are
written into a temporary folder beside their final place and renamed into it. A file lock per key
makes concurrent processes (e.g. ``accelerate launch`` ranks) compress exactly once while the
others wait and then load. An entry whose files do not match its manifest is treated as absent
and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from filelock import FileLock
from torch import nn

from kick_common.atomic import staged_dir, write_json
from kick_common.paths import CACHE_ENV, kick_cache_dir

log = logging.getLogger(__name__)

KEY_SCHEMA = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
_CHUNK = 1 << 22

# Files whose bytes define a local model: its config and its weights (tokenizer files do not
# change compressed weights).
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_MODEL_FILE_NAMES = ("config.json",)

# CompressionConfig fields that only matter for some methods; everything else always matters.
_QUANT_FIELDS = ("group_size", "sym", "act_order")
# The calibration settings: they decide the calibration token ids (with the method, which picks the
# default source), and with ``propagate`` they matter only to configs that calibrate.
CALIBRATION_FIELDS = ("calib", "nsamples", "seqlen", "seed")
_OWL_FIELDS = ("owl_m", "owl_lambda")


class CacheError(OSError):
    """The cache directory cannot be used; the message names the path and how to fix or avoid it."""


# --------------------------------------------------------------------------- location
def default_cache_dir() -> Path:
    """``<root>/compressed`` beside the converted embedded model, under kick's cache root
    (``$KICK_CACHE_DIR``, else ``$XDG_CACHE_HOME/kick``, else ``~/.cache/kick``)."""
    return kick_cache_dir() / "compressed"


def ensure_writable(cache_dir: str | os.PathLike | None) -> Path:
    """Create ``cache_dir`` if needed and prove it is writable, before any expensive work."""
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as err:
        raise CacheError(
            f"kick cache: directory {str(path)!r} is not writable ({err.strerror or err}); "
            f"set cache_dir=<writable dir> (or ${CACHE_ENV}), or pass no_cache=true"
        ) from err
    return path


# --------------------------------------------------------------------------- keys
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_fingerprint(folder: str | os.PathLike, memo_dir: Path | None = None) -> str:
    """sha256 over the names and contents of a local model folder's config and weight files.

    Hashing tens of GB is slow, so per-file digests are memoised in ``memo_dir`` keyed by
    (absolute path, size, mtime_ns): an unchanged file is read once per machine.
    """
    root = Path(folder).expanduser().resolve()
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and (p.name in _MODEL_FILE_NAMES or p.suffix in _MODEL_FILE_SUFFIXES)
    )
    if not files:
        raise CacheError(f"kick cache: no config or weight files under {str(root)!r} to fingerprint")
    memo_path = memo_dir / "file_digests.json" if memo_dir is not None else None
    memo: dict[str, str] = {}
    if memo_path is not None and memo_path.is_file():
        with contextlib.suppress(OSError, ValueError):
            memo = json.loads(memo_path.read_text())
    changed = False
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        memo_key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        if memo_key not in memo:
            memo[memo_key] = _sha256_file(path)
            changed = True
        digest.update(f"{path.relative_to(root).as_posix()}\0{memo[memo_key]}\n".encode())
    if changed and memo_path is not None:
        with contextlib.suppress(OSError):
            write_json(memo_path, memo, fsync=True, sort_keys=True)
    return digest.hexdigest()


def model_identity(pretrained: str, revision: str | None = None, model: nn.Module | None = None,
                   memo_dir: Path | None = None) -> dict[str, Any]:
    """What makes a base model unique: a local folder's content hash, or a Hub id + resolved commit.

    The commit comes from ``model.config._commit_hash`` (set by ``from_pretrained``), falling back
    to the requested revision string. The dtype is included because compressing in bf16 and in
    fp32 gives different weights.
    """
    identity: dict[str, Any] = {}
    local = Path(str(pretrained)).expanduser()
    if local.is_dir():
        identity["local_sha256"] = folder_fingerprint(local, memo_dir)
    else:
        commit = getattr(getattr(model, "config", None), "_commit_hash", None)
        identity["model_id"] = str(pretrained)
        identity["revision"] = commit or revision or "main"
    if model is not None:
        param = next(model.parameters(), None)
        identity["dtype"] = str(param.dtype) if param is not None else None
    return identity


def relevant_config(config: Any) -> dict[str, Any]:
    """CompressionConfig.to_dict() without the fields that cannot change this config's weights."""
    d = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    method = d.get("method", "none")
    quantizes = int(d.get("wbits", 16)) < 16 and method != "none"
    drop: set[str] = set()
    if not quantizes:
        drop.update(_QUANT_FIELDS)
        if method not in ("sparsegpt",):
            drop.update(("damp", "blocksize"))
    needs_calib = getattr(config, "needs_calibration", None)
    if needs_calib is None:
        needs_calib = quantizes or method in ("wanda", "sparsegpt")
    if not needs_calib:
        drop.update((*CALIBRATION_FIELDS, "propagate"))
    if d.get("sparsity_profile", "uniform") == "uniform":
        drop.update(_OWL_FIELDS)
    if not d.get("skip_experts", False):
        drop.add("skip_experts")  # the default: keys of configs from before the option stay valid
    if d.get("pattern", "unstructured") != "unstructured":
        drop.add("sparsity")  # N:M fixes it; target_sparsity stays
    return {k: v for k, v in sorted(d.items()) if k not in drop}


def package_versions() -> dict[str, str]:
    """kick's version and torch/transformers major.minor: changes there may change results."""
    def major_minor(name: str) -> str:
        try:
            return ".".join(metadata.version(name).split(".")[:2])
        except metadata.PackageNotFoundError:
            return "absent"

    try:
        kick = metadata.version("kick")
    except metadata.PackageNotFoundError:
        kick = "0+unknown"
    return {"kick": kick, "torch": major_minor("torch"), "transformers": major_minor("transformers")}


def key_parts(*, pretrained: str, config: Any, calib_info: Mapping[str, Any] | None,
              revision: str | None = None, model: nn.Module | None = None,
              cache_dir: str | os.PathLike | None = None, identity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the compressed weights depend on, as a JSON-able dict (feed it to :func:`cache_key`).

    The one key builder: ``compress_with_cache`` (kick-hf, kick-compress) uses it too. ``calib_info``
    is the dict returned by ``calibration_ids`` (dataset, nsamples, seqlen, seed, token_sha256); it is
    ignored for configs that need no calibration. ``identity``: a :func:`model_identity` already
    computed by the caller (it hashes local folders, so it is not computed twice).
    """
    if identity is None:
        memo = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        identity = model_identity(pretrained, revision, model, memo if memo.is_dir() else None)
    needs_calib = getattr(config, "needs_calibration", True)
    return {
        "schema": KEY_SCHEMA,
        "model": dict(identity),
        "compression": relevant_config(config),
        "calibration": dict(sorted(calib_info.items())) if (calib_info and needs_calib) else None,
        "versions": package_versions(),
    }


def cache_key(parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts`` (sorted keys, no whitespace)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------- weights
def compressed_linear_names(model: nn.Module) -> list[str]:
    """State-dict keys of the weights compression can touch: every Linear but the output head,
    plus the decoder blocks' other matrices (Conv1D weights, fused expert parameters)."""
    from kick_models.compression.blocks import matrix_param_names

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = [
        f"{name}.weight" for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not head
    ]
    return names + [n for n in matrix_param_names(model) if n not in set(names)]


def _weights_subset(model: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters(remove_duplicate=False))
    return {name: params[name].detach().to("cpu").contiguous() for name in compressed_linear_names(model)}


def _load_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    stored = load_file(str(path))
    params = dict(model.named_parameters(remove_duplicate=False))
    expected = set(compressed_linear_names(model))
    if set(stored) != expected:
        missing, extra = sorted(expected - set(stored))[:3], sorted(set(stored) - expected)[:3]
        raise ValueError(f"cached weights do not fit this model (missing {missing}, unexpected {extra})")
    for name, tensor in stored.items():
        if params[name].shape != tensor.shape:
            raise ValueError(f"cached {name} has shape {tuple(tensor.shape)}, model has {tuple(params[name].shape)}")
    with torch.no_grad():
        for name, tensor in stored.items():
            params[name].copy_(tensor)


# --------------------------------------------------------------------------- entries
def read_manifest(entry: Path) -> dict[str, Any] | None:
    """The entry's manifest if every listed file exists with its recorded size and sha256, else None."""
    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = manifest["files"]
        for name, meta in files.items():
            path = entry / name
            if path.stat().st_size != meta["size"] or _sha256_file(path) != meta["sha256"]:
                log.warning("kick cache: %s does not match its manifest; rebuilding", path)
                return None
        if WEIGHTS_FILE not in files:
            return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_entry(entry: Path, model: nn.Module, summary: Mapping[str, Any], parts: Mapping[str, Any]) -> None:
    """Write the compressed weights and manifest into a temp folder, then rename it to ``entry``."""
    from safetensors.torch import save_file

    with staged_dir(entry, fsync=True) as tmp:
        weights = tmp / WEIGHTS_FILE
        save_file(_weights_subset(model), str(weights), metadata={"format": "pt", "kick_key": entry.name})
        with open(weights, "rb+") as handle:
            os.fsync(handle.fileno())
        manifest = {
            "key": entry.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": {WEIGHTS_FILE: {"size": weights.stat().st_size, "sha256": _sha256_file(weights)}},
            "summary": dict(summary),
            "key_parts": dict(parts),
        }
        write_json(tmp / MANIFEST_FILE, manifest, fsync=True, indent=2, sort_keys=True)


def _try_load(model: nn.Module, entry: Path) -> dict[str, Any] | None:
    manifest = read_manifest(entry)
    if manifest is None:
        return None
    try:
        _load_weights(model, entry / WEIGHTS_FILE)
    except (OSError, ValueError, RuntimeError) as err:
        log.warning("kick cache: entry %s unusable (%s); rebuilding", entry, err)
        return None
    return manifest


def _clean_stale_temps(cache_dir: Path, key: str, max_age_s: float = 0.0) -> None:
    """Remove temp folders of writers that died (called while holding the key's lock)."""
    now = time.time()
    for stale in cache_dir.glob(f".tmp-{key}-*"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime >= max_age_s:
                shutil.rmtree(stale, ignore_errors=True)


def load_or_compress(model: nn.Module, parts: Mapping[str, Any], compress_fn: Callable[[], Mapping[str, Any]],
                     cache_dir: str | os.PathLike | None = None, enabled: bool = True,
                     lock_timeout_s: float = -1) -> tuple[dict[str, Any], bool]:
    """Load this key's compressed weights into ``model`` (hit), or run ``compress_fn`` and store them (miss).

    ``compress_fn()`` compresses ``model`` in place and returns its JSON-able summary. Returns
    ``(summary, hit)``; the summary gains a ``"cache"`` block (key, hit, seconds, path). With
    ``enabled=False`` this only runs ``compress_fn``. ``lock_timeout_s < 0`` waits forever for
    another process that is compressing the same key.
    """
    if not enabled:
        return dict(compress_fn()), False
    root = ensure_writable(cache_dir)
    key = cache_key(parts)
    entry = root / key
    start = time.perf_counter()

    manifest = _try_load(model, entry)
    if manifest is None:
        with FileLock(str(root / f"{key}.lock"), timeout=lock_timeout_s):
            manifest = _try_load(model, entry)  # another process may have finished meanwhile
            if manifest is None:
                _clean_stale_temps(root, key)
                summary = dict(compress_fn())
                write_entry(entry, model, summary, parts)
                summary["cache"] = {"key": key, "hit": False, "path": str(entry),
                                    "seconds": round(time.perf_counter() - start, 3)}
                log.info("kick cache: stored %s", entry)
                return summary, False
    summary = dict(manifest.get("summary", {}))
    summary["cache"] = {"key": key, "hit": True, "path": str(entry),
                        "seconds": round(time.perf_counter() - start, 3)}
    log.info("kick cache: loaded %s in %.2fs", entry, summary["cache"]["seconds"])
    return summary, True



# --------------------------------------------------------------------------- one call for kick-hf
def _calibration_memo_key(pretrained: str, model_id: Mapping[str, Any], config: Any, spec: Mapping[str, Any],
                          memo_dir: Path) -> str:
    """What the calibration token ids depend on: model + tokenizer files, calibration settings, source text."""
    parts: dict[str, Any] = {"model": dict(model_id), "spec": dict(spec), "versions": package_versions(),
                             "calib": {k: v for k, v in config.to_dict().items() if k in (*CALIBRATION_FIELDS, "method")}}
    local = Path(str(pretrained)).expanduser()
    if local.is_dir():  # tokenizer files are not in the weights fingerprint but change token ids
        tok_files = sorted(p for p in local.iterdir() if p.is_file() and ("token" in p.name or p.suffix == ".model"))
        parts["tokenizer"] = [(p.name, p.stat().st_size, _sha256_file(p)) for p in tok_files]
    source = Path(str(spec.get("resolved_calib", ""))).expanduser()
    if source.is_file():
        parts["source_sha256"] = _sha256_file(source)
    return cache_key(parts)


def compress_with_cache(model: nn.Module, *, pretrained: str, config: Any,
                        calibrate: Callable[[], tuple[Any, dict]] | None,
                        compress: Callable[[Any], Mapping[str, Any]], revision: str | None = None,
                        calib_spec: Mapping[str, Any] | None = None, cache_dir: str | os.PathLike | None = None,
                        enabled: bool = True) -> tuple[dict[str, Any], bool, dict | None]:
    """Compress ``model`` through the cache without tokenizing calibration data on a hit.

    ``calibrate()`` returns ``(ids, info)`` (``calibration_ids``); ``compress(ids)`` compresses in
    place and returns the summary. The calibration ``info`` (with its token hash) is memoised per
    (model, tokenizer, calibration settings, ``calib_spec``) so a second run goes straight to the
    stored weights. Returns ``(summary, hit, calib_info)``.
    """
    needs_calib = bool(getattr(config, "needs_calibration", calibrate is not None)) and calibrate is not None
    if not enabled:
        ids, info = calibrate() if needs_calib else (None, None)
        return dict(compress(ids)), False, info
    root = ensure_writable(cache_dir)
    identity = model_identity(pretrained, revision, model, root)
    held: dict[str, Any] = {}
    info = None
    if needs_calib:
        memo = root / "calibration" / f"{_calibration_memo_key(pretrained, identity, config, calib_spec or {}, root)}.json"
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(memo.read_text(encoding="utf-8"))
        if info is None:
            held["ids"], info = calibrate()
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_json(memo, info, fsync=True, sort_keys=True)

    def run() -> Mapping[str, Any]:
        if needs_calib and "ids" not in held:
            held["ids"], _ = calibrate()
        return compress(held.get("ids"))

    parts = key_parts(pretrained=pretrained, config=config, calib_info=info if needs_calib else None,
                      identity=identity)
    summary, hit = load_or_compress(model, parts, run, cache_dir=root, enabled=True)
    return summary, hit, info
