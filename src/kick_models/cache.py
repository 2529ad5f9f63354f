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
import re
import shutil
import socket
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from filelock import FileLock, Timeout
from torch import nn

from kick_common.atomic import staged_dir, write_json
from kick_common.paths import CACHE_ENV, kick_cache_dir
from kick_models.compression import registry

log = logging.getLogger(__name__)

KEY_SCHEMA = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
LOCK_TIMEOUT_ENV = "KICK_CACHE_LOCK_TIMEOUT"
STALE_GRACE_S = 3600.0  # temp files not tied to a key's lock are removed once this old
_LOCK_NOTICE_S = 60.0  # while waiting for another process's lock, say so this often
_STAGED = re.compile(r"^\.(?:tmp|trash)-([0-9a-f]{64})-[0-9a-f]{32}$")
_CHUNK = 1 << 22
_READ_ONLY_REPORTED: set[str] = set()  # read-only cache folders already warned about in this process

# Files whose bytes define a local model: its config and its weights (tokenizer files do not
# change compressed weights).
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_MODEL_FILE_NAMES = ("config.json",)

# CompressionConfig fields that only matter for some methods; everything else always matters.
_METHOD_FIELDS = ("group_size", "sym", "act_order", "damp", "blocksize")  # kept only where a method uses them
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
    """Create ``cache_dir`` if needed and check it can be used, before any expensive work.

    A folder that exists but cannot be written (a shared read-only cache) is usable: its entries
    are loaded, new ones are computed and kept in memory only (a warning says so). A folder that
    cannot be created or read is a :class:`CacheError`.
    """
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as err:
        if path.is_dir() and os.access(path, os.R_OK | os.X_OK):
            if str(path) in _READ_ONLY_REPORTED:
                return path
            _READ_ONLY_REPORTED.add(str(path))
            log.warning("kick cache: %s is read-only (%s); entries already there are used, new ones are "
                        "not stored", path, err.strerror or err)
            return path
        raise CacheError(
            f"kick cache: directory {str(path)!r} is not writable ({err.strerror or err}); "
            f"set cache_dir=<writable dir> (or ${CACHE_ENV}), or pass no_cache=true"
        ) from err
    return path


def lock_timeout_from_env(env: Mapping[str, str] | None = None) -> float:
    """Seconds to wait for another process's lock: ``$KICK_CACHE_LOCK_TIMEOUT``, else -1 (forever)."""
    env = os.environ if env is None else env
    text = (env.get(LOCK_TIMEOUT_ENV) or "").strip()
    if not text:
        return -1.0
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 or value == -1):
        raise CacheError(f"kick cache: ${LOCK_TIMEOUT_ENV}={text!r}; accepted: seconds >= 0, or -1 to wait forever")
    return value


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
    from kick_models.config import METHOD_NONE

    d = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    method = d.get("method", METHOD_NONE)
    quantizes = int(d.get("wbits", 16)) < 16 and method != METHOD_NONE
    # the fields the method (and a quantizer composed with it) declares it reads; the version and
    # parameters of the method stay in d (to_dict), so a new plug-in release gets new entries
    used: set[str] = set()
    if method != METHOD_NONE:
        spec = registry.get_method(method)
        used |= spec.uses
        if quantizes and spec.prunes:
            used |= registry.composing_quantizer().uses
    drop: set[str] = set(_METHOD_FIELDS) - used
    needs_calib = getattr(config, "needs_calibration", None)
    if needs_calib is None:
        needs_calib = method != METHOD_NONE and bool(registry.required_stats(registry.get_method(method), quantizes))
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


class EntryInvalid(ValueError):
    """A cache entry's files are intact but its weights cannot be used for this model."""


def zero_count(tensors: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``{"zeros": …, "total": …}`` over ``tensors``: the sparsity an entry really holds."""
    zeros = sum(int((t == 0).sum()) for t in tensors.values())
    return {"zeros": zeros, "total": sum(t.numel() for t in tensors.values())}


def _check_weights(model: nn.Module, stored: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Refuse stored weights that do not fit ``model`` (names, shapes, dtypes) or are not finite;
    returns their :func:`zero_count` (one pass over the weights)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    expected = set(compressed_linear_names(model))
    if set(stored) != expected:
        missing, extra = sorted(expected - set(stored))[:3], sorted(set(stored) - expected)[:3]
        raise EntryInvalid(f"cached weights do not fit this model (missing {missing}, unexpected {extra})")
    zeros = total = 0
    for name, tensor in stored.items():
        param = params[name]
        if param.shape != tensor.shape:
            raise EntryInvalid(f"cached {name} has shape {tuple(tensor.shape)}, model has {tuple(param.shape)}")
        if param.dtype != tensor.dtype:
            raise EntryInvalid(f"cached {name} is {tensor.dtype}, the model is {param.dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise EntryInvalid(f"cached {name} holds NaN or infinite values")
        zeros += int((tensor == 0).sum())
        total += tensor.numel()
    return {"zeros": zeros, "total": total}


def _check_zeros(manifest: Mapping[str, Any], measured: Mapping[str, int]) -> None:
    """The zeros the weights hold must be the zeros the entry recorded when it was written (entries
    without that record are compared with their summary's ``achieved_sparsity``)."""
    recorded = manifest.get("zeros")
    fraction = measured["zeros"] / measured["total"] if measured["total"] else 0.0
    if isinstance(recorded, Mapping):
        if dict(recorded) != dict(measured):
            raise EntryInvalid(f"its weights hold {measured['zeros']} zeros of {measured['total']}, its manifest "
                               f"recorded {recorded.get('zeros')} of {recorded.get('total')}")
        return
    claimed = (manifest.get("summary") or {}).get("achieved_sparsity")
    if isinstance(claimed, (int, float)) and measured["total"] and abs(float(claimed) - fraction) > 5e-3:
        raise EntryInvalid(f"its weights are {100 * fraction:.2f}% zeros, its summary says {100 * float(claimed):.2f}%")


def _load_weights(model: nn.Module, path: Path, manifest: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Copy an entry's weights into ``model`` after every check passed (nothing is copied otherwise);
    returns the measured :func:`zero_count`. Any failure is an :class:`EntryInvalid`."""
    from safetensors.torch import load_file

    try:
        stored = load_file(str(path))
    except Exception as err:  # SafetensorError derives from Exception only
        raise EntryInvalid(f"{path.name} is not a readable safetensors file ({type(err).__name__}: {err})") from err
    measured = _check_weights(model, stored)
    if manifest is not None:
        _check_zeros(manifest, measured)
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, tensor in stored.items():
            params[name].copy_(tensor)
    return measured


# --------------------------------------------------------------------------- entries
def _manifest_problem(entry: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) when every listed file has its recorded size and sha256; (None, why not)
    otherwise; (None, None) when there is no entry at all."""
    if not (entry / MANIFEST_FILE).exists():
        return None, None
    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = manifest["files"]
        for name, meta in files.items():
            path = entry / name
            if path.stat().st_size != meta["size"] or _sha256_file(path) != meta["sha256"]:
                return None, f"{name} does not match its manifest"
        if WEIGHTS_FILE not in files:
            return None, f"its manifest lists no {WEIGHTS_FILE}"
        return manifest, None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return None, f"unreadable manifest or files ({type(err).__name__}: {err})"


def read_manifest(entry: Path) -> dict[str, Any] | None:
    """The entry's manifest if every listed file exists with its recorded size and sha256, else None."""
    return _manifest_problem(entry)[0]


def _same_file_modes(folder: Path, reference: Path) -> None:
    """Give every file of ``folder`` the mode of ``reference`` (a file made with ``open``, so the
    user's umask decides); safetensors writes its file owner-only."""
    mode = reference.stat().st_mode & 0o777
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, mode)


def write_entry(entry: Path, model: nn.Module, summary: Mapping[str, Any], parts: Mapping[str, Any]) -> None:
    """Write the compressed weights and manifest into a temp folder, then rename it to ``entry``."""
    from safetensors.torch import save_file

    with staged_dir(entry, fsync=True) as tmp:
        weights = tmp / WEIGHTS_FILE
        tensors = _weights_subset(model)
        save_file(tensors, str(weights), metadata={"format": "pt", "kick_key": entry.name})
        with open(weights, "rb+") as handle:
            os.fsync(handle.fileno())
        manifest = {
            "key": entry.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": {WEIGHTS_FILE: {"size": weights.stat().st_size, "sha256": _sha256_file(weights)}},
            "zeros": zero_count(tensors),
            "summary": dict(summary),
            "key_parts": dict(parts),
        }
        write_json(tmp / MANIFEST_FILE, manifest, fsync=True, indent=2, sort_keys=True)
        _same_file_modes(tmp, tmp / MANIFEST_FILE)


def _try_load(model: nn.Module, entry: Path, reported: set[str] | None = None) -> dict[str, Any] | None:
    """The entry's manifest after its weights were checked and copied into ``model``, else None.

    Any problem (files not matching the manifest, unreadable safetensors, wrong names, shapes or
    dtypes, non-finite values, zeros other than recorded) is logged once per ``reported`` set and
    makes the entry count as absent, so it is rebuilt and atomically replaced. The returned
    summary's ``achieved_sparsity`` is measured on the loaded weights, not read from the manifest.
    """
    manifest, problem = _manifest_problem(entry)
    measured = None
    if manifest is not None:
        try:
            measured = _load_weights(model, entry / WEIGHTS_FILE, manifest)
        except EntryInvalid as err:
            manifest, problem = None, str(err)
    if problem is not None and (reported is None or problem not in reported):
        log.warning("kick cache: entry %s is unusable (%s); compressing again and replacing it", entry, problem)
        if reported is not None:
            reported.add(problem)
    if manifest is None:
        return None
    manifest = dict(manifest)
    summary = dict(manifest.get("summary") or {})
    if measured and measured["total"]:
        from kick_models.compression.blocks import block_sparsity

        counted = block_sparsity(model)  # over the same matrices as the compression's own accounting
        summary["achieved_sparsity"] = counted if counted is not None else measured["zeros"] / measured["total"]
    manifest["summary"] = summary
    return manifest


def _remove(path: Path) -> bool:
    try:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    except OSError:
        return False
    return True


def _key_is_free(root: Path, key: str) -> bool:
    """True when no live process holds ``key``'s lock (a dead holder's lock is released by the OS)."""
    lock_path = root / f"{key}.lock"
    if not lock_path.exists():
        return True
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return False
    lock.release()
    return True


def clean_stale(root: Path, grace_s: float = STALE_GRACE_S) -> list[Path]:
    """Remove what dead writers left in the cache, on any use of it (not only of the same key).

    A staged entry (``.tmp-<key>-…``) or a replaced one (``.trash-<key>-…``) only exists while its
    writer holds ``<key>.lock``, so it is removed when that lock is free; other temp and probe
    files are removed once older than ``grace_s`` seconds. Returns what was removed.
    """
    removed = []
    now = time.time()
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith((".tmp-", ".trash-", ".probe-"))
                      or (p.name.startswith(".") and p.name.endswith(".tmp"))]
    except OSError:
        return removed
    for path in candidates:
        staged = _STAGED.match(path.name)
        try:
            old = now - path.lstat().st_mtime >= grace_s
        except OSError:
            continue
        if (_key_is_free(root, staged.group(1)) if staged else old) and _remove(path):
            removed.append(path)
    if removed:
        log.info("kick cache: removed %d leftover(s) of interrupted writers in %s", len(removed), root)
    return removed


def _clean_stale_temps(cache_dir: Path, key: str, max_age_s: float = 0.0) -> None:
    """Remove this key's temp folders (called while holding the key's lock, so their writers died)."""
    now = time.time()
    for pattern in (f".tmp-{key}-*", f".trash-{key}-*"):
        for stale in cache_dir.glob(pattern):
            with contextlib.suppress(OSError):
                if now - stale.stat().st_mtime >= max_age_s:
                    shutil.rmtree(stale, ignore_errors=True)


def _lock_holder(info_path: Path) -> str:
    """Who holds a key's lock, from the info file its holder wrote (pid, host, since when)."""
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that left no details"


@contextlib.contextmanager
def key_lock(root: Path, key: str, timeout_s: float = -1):
    """Hold ``key``'s lock; while another process holds it, say who and that we wait.

    ``timeout_s < 0`` waits forever (a notice every minute); after ``timeout_s`` seconds a
    :class:`CacheError` names the holder. The holder's pid, host and start time are written to
    ``<key>.lock.json`` while it holds the lock.
    """
    lock = FileLock(str(root / f"{key}.lock"))
    info_path = root / f"{key}.lock.json"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _lock_holder(info_path)
        log.warning("kick cache: %s is compressing this model and config into %s; waiting %s for it "
                    "(cache_lock_timeout=<seconds> or $%s to change)", holder, root / key,
                    "as long as it takes" if timeout_s < 0 else f"up to {timeout_s:g}s", LOCK_TIMEOUT_ENV)
        start = time.monotonic()
        while True:
            left = None if timeout_s < 0 else timeout_s - (time.monotonic() - start)
            if left is not None and left <= 0:
                raise CacheError(
                    f"kick cache: gave up after {timeout_s:g}s waiting for {root / key}.lock, held by "
                    f"{_lock_holder(info_path)}; if that process is frozen, stop it (its lock goes with it), "
                    f"or raise cache_lock_timeout (or ${LOCK_TIMEOUT_ENV}), or pass no_cache=true"
                ) from None
            try:
                lock.acquire(timeout=_LOCK_NOTICE_S if left is None else min(left, _LOCK_NOTICE_S))
                break
            except Timeout:
                log.warning("kick cache: still waiting for %s (%.0fs so far)", _lock_holder(info_path),
                            time.monotonic() - start)
    try:
        with contextlib.suppress(OSError):
            write_json(info_path, {"pid": os.getpid(), "host": socket.gethostname(),
                                   "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        yield
    finally:
        with contextlib.suppress(OSError):
            info_path.unlink()
        lock.release()


def _store(entry: Path, model: nn.Module, summary: Mapping[str, Any], parts: Mapping[str, Any]) -> str | None:
    """Write the entry; a failure (read-only cache, full disk) is a warning, not the end of the run.
    Returns the error text, or None when the entry was stored."""
    try:
        write_entry(entry, model, summary, parts)
    except OSError as err:
        log.warning("kick cache: could not store %s (%s); going on with the compressed weights in memory",
                    entry, err.strerror or err)
        return f"{type(err).__name__}: {err.strerror or err}"
    log.info("kick cache: stored %s", entry)
    return None


def load_or_compress(model: nn.Module, parts: Mapping[str, Any], compress_fn: Callable[[], Mapping[str, Any]],
                     cache_dir: str | os.PathLike | None = None, enabled: bool = True,
                     lock_timeout_s: float | None = None) -> tuple[dict[str, Any], bool]:
    """Load this key's compressed weights into ``model`` (hit), or run ``compress_fn`` and store them (miss).

    ``compress_fn()`` compresses ``model`` in place and returns its JSON-able summary. Returns
    ``(summary, hit)``; the summary gains a ``"cache"`` block (key, hit, seconds, path, and on a
    miss whether the entry was stored). With ``enabled=False`` this only runs ``compress_fn``.
    ``lock_timeout_s`` (None: ``$KICK_CACHE_LOCK_TIMEOUT``, else forever; < 0: forever) bounds the
    wait for another process that is compressing the same key. A cache that cannot be written
    still serves hits; on a miss the weights stay in memory.
    """
    if not enabled:
        return dict(compress_fn()), False
    root = ensure_writable(cache_dir)
    timeout = lock_timeout_from_env() if lock_timeout_s is None else float(lock_timeout_s)
    key = cache_key(parts)
    entry = root / key
    start = time.perf_counter()
    clean_stale(root)

    def block(hit: bool, **extra: Any) -> dict[str, Any]:
        return {"key": key, "hit": hit, "path": str(entry), "seconds": round(time.perf_counter() - start, 3), **extra}

    reported: set[str] = set()
    manifest = _try_load(model, entry, reported)
    if manifest is None:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(key_lock(root, key, timeout))
            except CacheError:
                raise
            except OSError as err:  # no lock file can be made here: a read-only cache
                log.warning("kick cache: cannot lock %s (%s); compressing without storing", entry, err.strerror or err)
                summary = dict(compress_fn())
                summary["cache"] = block(False, stored=False, error=f"{type(err).__name__}: {err.strerror or err}")
                return summary, False
            manifest = _try_load(model, entry, reported)  # another process may have finished meanwhile
            if manifest is None:
                _clean_stale_temps(root, key)
                summary = dict(compress_fn())
                error = _store(entry, model, summary, parts)
                summary["cache"] = block(False, stored=error is None, **({"error": error} if error else {}))
                return summary, False
    summary = dict(manifest.get("summary", {}))
    summary["cache"] = block(True)
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
                        enabled: bool = True, lock_timeout_s: float | None = None) -> tuple[dict[str, Any], bool, dict | None]:
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
            try:
                memo.parent.mkdir(parents=True, exist_ok=True)
                write_json(memo, info, fsync=True, sort_keys=True)
            except OSError as err:  # a read-only or full cache only costs a re-tokenization next time
                log.warning("kick cache: could not remember the calibration tokens in %s (%s)", memo, err.strerror or err)

    def run() -> Mapping[str, Any]:
        if needs_calib and "ids" not in held:
            held["ids"], _ = calibrate()
        return compress(held.get("ids"))

    parts = key_parts(pretrained=pretrained, config=config, calib_info=info if needs_calib else None,
                      identity=identity)
    summary, hit = load_or_compress(model, parts, run, cache_dir=root, enabled=True, lock_timeout_s=lock_timeout_s)
    return summary, hit, info
