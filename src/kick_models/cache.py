"""Compress once, load many times: a content-keyed, crash-safe, process-safe store of compressed models.

An entry is a folder ``<cache_dir>/<key>/`` holding ``weights.safetensors`` (every parameter or
buffer the compression changed, found by comparing the model with its dense snapshot — never
pickle) and ``manifest.json`` (size and sha256 of every file, the tensors' names and zero count,
the compression summary, and the key with everything it was made from). The caller asks a
:class:`Slot` for a valid entry and, on a miss, compresses and stores: the cache runs no
compression itself. Entries appear atomically (written into a temporary folder, renamed into
place). A file lock per key makes concurrent processes compress once while the others wait and
load. An entry that does not match its manifest, its key, this model or its target sparsity is
treated as absent, named in a warning, and rebuilt.
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
from typing import Any, Mapping

import torch
from filelock import FileLock, Timeout
from torch import nn

from kick_common.atomic import staged_dir, write_json
from kick_common.paths import CACHE_ENV, kick_cache_dir
from kick_models.compression import registry

log = logging.getLogger(__name__)

KEY_SCHEMA = 2  # 2: entries hold every changed tensor and name their key
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
# A pruned entry's zero fraction may fall this far below its target (rows whose width does not
# divide evenly round the pruned count down); a dense entry under a pruned key falls far further.
SPARSITY_SLACK = 0.9


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


def _file_stamp(path: Path) -> str:
    """What changes whenever a file's bytes can have changed: its inode, size, mtime and ctime.
    Setting the mtime back (``touch -d``, ``cp -p``, ``os.utime``) still moves the ctime, which no
    user call can set."""
    stat = path.stat()
    return f"{path}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"


def _read_digest_memo(memo_path: Path | None) -> dict[str, str]:
    """The per-file digest memo; anything that is not a mapping of stamps to sha256 digests is dropped."""
    if memo_path is None or not memo_path.is_file():
        return {}
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(memo, dict):
        return {}
    return {k: v for k, v in memo.items() if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)}


def folder_fingerprint(folder: str | os.PathLike, memo_dir: Path | None = None) -> str:
    """sha256 over the names and contents of a local model folder's own config and weight files.

    Only the folder's top level counts: that is all ``from_pretrained`` reads from a local folder
    (a model in a subfolder is named with ``subfolder=``, whose folder is then the one fingerprinted).
    Subfolders — a kick cache or results kept inside the model folder, training checkpoints, other
    exports — never define the loaded model, and one being written to would change the key on every run.

    Hashing tens of GB is slow, so per-file digests are memoised in ``memo_dir`` keyed by
    :func:`_file_stamp` (inode, size, mtime and ctime): an unchanged file is read once per machine,
    and a file rewritten with its old mtime is read again.
    """
    root = Path(folder).expanduser().resolve()
    files = sorted(
        p for p in root.iterdir()
        if p.is_file() and (p.name in _MODEL_FILE_NAMES or p.suffix in _MODEL_FILE_SUFFIXES)
    )
    if not files:
        raise CacheError(f"kick cache: no config or weight files in {str(root)!r} to fingerprint (only a folder's "
                         "top level is read as the model; a model in a subfolder is named with subfolder=NAME)")
    memo_path = memo_dir / "file_digests.json" if memo_dir is not None else None
    memo = _read_digest_memo(memo_path)
    changed = False
    digest = hashlib.sha256()
    for path in files:
        stamp = _file_stamp(path)
        if stamp not in memo:
            memo[stamp] = _sha256_file(path)
            changed = True
        digest.update(f"{path.relative_to(root).as_posix()}\0{memo[stamp]}\n".encode())
    if changed and memo_path is not None:
        with contextlib.suppress(OSError):
            write_json(memo_path, memo, fsync=True, sort_keys=True)
    return digest.hexdigest()


def model_identity(pretrained: str, revision: str | None = None, model: nn.Module | None = None,
                   memo_dir: Path | None = None, subfolder: str | None = None) -> dict[str, Any]:
    """What makes a base model unique: a local folder's content hash, or a Hub id + resolved commit.

    The commit comes from ``model.config._commit_hash`` (set by ``from_pretrained``), falling back
    to the requested revision string. The dtype is included because compressing in bf16 and in
    fp32 gives different weights. ``subfolder`` (lm-eval's model_arg) names where in the folder or
    repository the model lies.
    """
    identity: dict[str, Any] = {}
    local = Path(str(pretrained)).expanduser()
    if local.is_dir():
        identity["local_sha256"] = folder_fingerprint(local / subfolder if subfolder else local, memo_dir)
    else:
        commit = getattr(getattr(model, "config", None), "_commit_hash", None)
        identity["model_id"] = str(pretrained)
        identity["revision"] = commit or revision or "main"
    if subfolder:  # only when given: the keys of models without one stay as they were
        identity["subfolder"] = str(subfolder)
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

    The one key builder: kick-hf (and so kick-compress) uses it too. ``calib_info``
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


# --------------------------------------------------------------------------- what a method changed
def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``model`` by its first name (tied tensors once): all a method can change."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[name] = tensor
    return out


def tensor_digest(tensor: torch.Tensor) -> str:
    """blake2b of a tensor's dtype, shape and bytes: equal digests mean bit-identical tensors."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.blake2b(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode(), digest_size=16)
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def state_digests(model: nn.Module) -> dict[str, str]:
    """:func:`tensor_digest` of every tensor of :func:`state_tensors`: the snapshot a store compares against."""
    return {name: tensor_digest(t) for name, t in state_tensors(model).items()}


def changed_tensors(model: nn.Module, before: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """CPU copies of the tensors whose bytes differ from the ``before`` snapshot: everything the method
    changed (block matrices, AWQ's folded norms, whatever a plug-in's ``prepare_block`` rewrote).

    Raises :class:`EntryInvalid` when tensors appeared or disappeared: a model whose structure changed
    cannot be rebuilt from a dense load plus stored tensors."""
    now = state_tensors(model)
    if set(now) != set(before):
        added, gone = sorted(set(now) - set(before))[:3], sorted(set(before) - set(now))[:3]
        raise EntryInvalid(f"compression changed the model's structure (new {added}, removed {gone})")
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in now.items() if tensor_digest(t) != before[name]}


def zero_count(tensors: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``{"zeros": …, "total": …}`` over ``tensors``: the sparsity an entry really holds."""
    zeros = sum(int((t == 0).sum()) for t in tensors.values())
    return {"zeros": zeros, "total": sum(t.numel() for t in tensors.values())}


def sparsity_shortfall(tensors: Mapping[str, torch.Tensor], target: float | None) -> str | None:
    """Why ``tensors`` cannot be the result of pruning to ``target`` (their zero fraction is far below
    it), or None. The changed tensors of a pruned model are its pruned matrices (plus a few norms),
    so their zero fraction is the achieved sparsity; the slack covers per-row rounding."""
    if not target:
        return None
    counted = zero_count(tensors)
    fraction = counted["zeros"] / counted["total"] if counted["total"] else 0.0
    if fraction < SPARSITY_SLACK * target - 0.005:
        return f"its changed weights are {100 * fraction:.2f}% zeros, far below the {100 * target:.2f}% target"
    return None


class EntryInvalid(ValueError):
    """A cache entry's files are intact but its tensors cannot be used for this model and key."""


def _check_tensors(model: nn.Module, stored: Mapping[str, torch.Tensor]) -> None:
    """Refuse stored tensors that do not fit ``model`` (names, shapes, dtypes) or are not finite."""
    own = state_tensors(model)
    unexpected = sorted(set(stored) - set(own))[:3]
    if unexpected:
        raise EntryInvalid(f"cached tensors do not fit this model (unexpected {unexpected})")
    for name, tensor in stored.items():
        have = own[name]
        if have.shape != tensor.shape:
            raise EntryInvalid(f"cached {name} has shape {tuple(tensor.shape)}, model has {tuple(have.shape)}")
        if have.dtype != tensor.dtype:
            raise EntryInvalid(f"cached {name} is {tensor.dtype}, the model is {have.dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise EntryInvalid(f"cached {name} holds NaN or infinite values")


def _check_zeros(manifest: Mapping[str, Any], stored: Mapping[str, torch.Tensor]) -> None:
    measured = zero_count(stored)
    if manifest.get("zeros") != measured:
        raise EntryInvalid(f"its tensors hold {measured['zeros']} zeros of {measured['total']}, its manifest "
                           f"recorded {manifest.get('zeros')}")


def _check_identity(manifest: Mapping[str, Any], key: str, parts: Mapping[str, Any]) -> None:
    """An entry must name this key and hold this key's configuration: one copied, renamed or
    symlinked from another configuration is refused."""
    if manifest.get("key") != key:
        raise EntryInvalid(f"it names key {str(manifest.get('key'))[:12]}…, not this one (another configuration's entry)")
    recorded = manifest.get("key_parts")
    if not isinstance(recorded, Mapping) or cache_key(recorded) != key or _canonical(recorded) != _canonical(parts):
        raise EntryInvalid("its recorded configuration is not this key's")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _read_tensors(entry: Path, manifest: Mapping[str, Any], key: str) -> dict[str, torch.Tensor]:
    """The entry's tensors, read and checked against what its manifest and header say they are."""
    from safetensors import safe_open

    path = entry / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="pt") as handle:
            header_key = (handle.metadata() or {}).get("kick_key")
            stored = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as err:  # SafetensorError derives from Exception only
        raise EntryInvalid(f"{WEIGHTS_FILE} is not a readable safetensors file ({type(err).__name__}: {err})") from err
    if header_key != key:
        raise EntryInvalid(f"{WEIGHTS_FILE} was written for key {str(header_key)[:12]}…, not this one")
    if sorted(stored) != sorted(manifest.get("tensors") or []):
        raise EntryInvalid(f"{WEIGHTS_FILE} holds other tensors than its manifest lists")
    return stored


def _manifest_problem(entry: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) when every listed file has its recorded size and sha256; (None, why not)
    otherwise; (None, None) when there is no entry at all."""
    if not os.path.lexists(entry):
        return None, None
    if not entry.is_dir():
        return None, "it is a file, not an entry folder"
    if not (entry / MANIFEST_FILE).exists():
        return None, f"it has no {MANIFEST_FILE}"
    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = manifest["files"]
        if WEIGHTS_FILE not in files:
            return None, f"its manifest lists no {WEIGHTS_FILE}"
        for name, meta in files.items():
            path = entry / name
            if path.stat().st_size != meta["size"] or _sha256_file(path) != meta["sha256"]:
                return None, f"{name} does not match its manifest"
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


def write_entry(entry: Path, tensors: Mapping[str, torch.Tensor], summary: Mapping[str, Any],
                parts: Mapping[str, Any]) -> None:
    """Write ``tensors`` and the manifest into a temp folder, then rename it to ``entry``. Any write
    failure (a full disk, a file-size limit: safetensors reports those as its own error) is an OSError."""
    from safetensors.torch import save_file

    with staged_dir(entry, fsync=True) as tmp:
        weights = tmp / WEIGHTS_FILE
        try:
            save_file(dict(tensors), str(weights), metadata={"format": "pt", "kick_key": entry.name})
        except OSError:
            raise
        except Exception as err:  # SafetensorError: the write itself failed
            raise OSError(f"{WEIGHTS_FILE} could not be written ({err})") from err
        with open(weights, "rb+") as handle:
            os.fsync(handle.fileno())
        manifest = {
            "key": entry.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": {WEIGHTS_FILE: {"size": weights.stat().st_size, "sha256": _sha256_file(weights)}},
            "tensors": sorted(tensors),
            "zeros": zero_count(tensors),
            "summary": dict(summary),
            "key_parts": dict(parts),
        }
        write_json(tmp / MANIFEST_FILE, manifest, fsync=True, indent=2, sort_keys=True)
        _same_file_modes(tmp, tmp / MANIFEST_FILE)


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



# --------------------------------------------------------------------------- one key, for one model
class Slot:
    """One key's place in the cache for one loaded model: the caller asks :meth:`load` for a valid
    entry and, on a miss, compresses the model itself and hands the result to :meth:`store`.

    Used as a context manager (:func:`open_slot`). A miss takes the key's lock and holds it until
    the block ends, so racing processes compress once and the others load. On a miss the dense
    state is fingerprinted; :meth:`store` keeps every tensor whose bytes changed. A hit that the
    caller finds wrong (e.g. its fidelity does not re-measure) is undone with :meth:`reject`.
    """

    def __init__(self, model: nn.Module, parts: Mapping[str, Any], root: Path | None, timeout_s: float,
                 expect_sparsity: float | None):
        self.model, self.parts, self.root = model, dict(parts), root
        self.key = cache_key(parts)
        self.entry = root / self.key if root is not None else None
        self.hit = False
        self._timeout, self._expect = timeout_s, expect_sparsity
        self._stack = contextlib.ExitStack()
        self._locked = False
        self._lock_error: str | None = None
        self._missed = False
        self._before: dict[str, str] | None = None  # the dense state's digests, taken on a miss that can store
        self._dense: dict[str, torch.Tensor] = {}  # what a hit replaced, until the caller accepts it
        self._reported: set[str] = set()
        self._start = time.perf_counter()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._dense.clear()
        self._stack.close()

    # -- the two answers
    def load(self) -> dict[str, Any] | None:
        """This key's summary after its tensors were checked and put into the model (hit), else None
        (miss: the model is untouched, and the lock is held if it could be taken). The summary's
        ``achieved_sparsity`` and ``matrices`` accounting are measured on the loaded model, whatever the
        entry's manifest recorded (it is not checksummed, and a hit without fidelity re-checks nothing else)."""
        if self.root is None:
            return None
        manifest = self._try_load()
        if manifest is None:
            self._lock()
            if self._locked:
                manifest = self._try_load()  # another process may have finished meanwhile
        if manifest is None:
            self._miss()
            return None
        from kick_models.compression.blocks import loaded_accounting

        self.hit = True
        summary = dict(manifest.get("summary") or {})
        own = state_tensors(self.model)
        measured = loaded_accounting(self.model, {id(own[name]) for name in self._dense})
        if measured is None:  # no decoder blocks to count over: the stored tensors' zeros (checked on load)
            zeros = manifest["zeros"]
            summary.pop("matrices", None)
            measured = {"achieved_sparsity": zeros["zeros"] / zeros["total"] if zeros["total"] else 0.0}
        summary.update(measured)
        summary["cache"] = self._block(True)
        log.info("kick cache: loaded %s in %.2fs", self.entry, summary["cache"]["seconds"])
        return summary

    def reject(self, reason: str) -> None:
        """Undo a hit the caller found wrong: the dense tensors go back, a warning says why, and the
        slot becomes a miss (the caller compresses; :meth:`store` replaces the entry)."""
        if not self.hit:
            raise RuntimeError("reject() undoes a hit; this slot has none")
        own = state_tensors(self.model)
        with torch.no_grad():
            for name, dense in self._dense.items():
                own[name].data = dense.to(own[name].device)
        self._dense.clear()
        self.hit = False
        log.warning("kick cache: entry %s does not reproduce its recorded result (%s); compressing again and "
                    "replacing it", self.entry, reason)
        self._lock()
        self._miss()

    def store(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """After a miss and the caller's compression: store every tensor that changed. Returns the
        summary with a ``cache`` block; a failure to store is a warning and ``stored: false``."""
        summary = dict(summary)
        if self.root is None:
            return summary
        if not self._missed:
            raise RuntimeError("store() follows a miss (load() returned None)")
        error = self._lock_error
        if error is None:
            try:
                tensors = changed_tensors(self.model, self._before)
                shortfall = sparsity_shortfall(tensors, self._expect)
                if shortfall:
                    raise EntryInvalid(shortfall)
            except EntryInvalid as err:
                log.warning("kick cache: not storing %s: %s", self.entry, err)
                error = f"not cacheable: {err}"
            else:
                error = self._write(tensors, summary)
        summary["cache"] = self._block(False, stored=error is None, **({"error": error} if error else {}))
        return summary

    # -- helpers
    def _block(self, hit: bool, **extra: Any) -> dict[str, Any]:
        return {"key": self.key, "hit": hit, "path": str(self.entry),
                "seconds": round(time.perf_counter() - self._start, 3), **extra}

    def _warn_once(self, problem: str) -> None:
        if problem not in self._reported:
            self._reported.add(problem)
            log.warning("kick cache: entry %s is unusable (%s); compressing again and replacing it", self.entry, problem)

    def _try_load(self) -> dict[str, Any] | None:
        manifest, problem = _manifest_problem(self.entry)
        stored: dict[str, torch.Tensor] = {}
        if manifest is not None:
            try:
                _check_identity(manifest, self.key, self.parts)
                stored = _read_tensors(self.entry, manifest, self.key)
                _check_tensors(self.model, stored)
                _check_zeros(manifest, stored)
                shortfall = sparsity_shortfall(stored, self._expect)
                if shortfall:
                    raise EntryInvalid(shortfall)
            except EntryInvalid as err:
                manifest, problem = None, str(err)
        if problem is not None:
            self._warn_once(problem)
        if manifest is None:
            return None
        own = state_tensors(self.model)
        with torch.no_grad():
            for name, tensor in stored.items():
                target = own[name]
                # the dense tensor is kept (on the CPU) until the caller accepts the hit or rejects it
                self._dense[name] = target.data if target.device.type == "cpu" else target.data.to("cpu")
                target.data = tensor.to(target.device)
        return manifest

    def _lock(self) -> None:
        if self._locked or self._lock_error is not None:
            return
        try:
            self._stack.enter_context(key_lock(self.root, self.key, self._timeout))
            self._locked = True
        except CacheError:
            raise
        except OSError as err:  # no lock file can be made here: a read-only cache
            log.warning("kick cache: cannot lock %s (%s); compressing without storing", self.entry, err.strerror or err)
            self._lock_error = f"{type(err).__name__}: {err.strerror or err}"

    def _miss(self) -> None:
        self._missed = True
        if self._lock_error is not None:  # nothing will be stored: no snapshot to take
            return
        if self._locked:
            _clean_stale_temps(self.root, self.key)
        self._before = state_digests(self.model)

    def _write(self, tensors: Mapping[str, torch.Tensor], summary: Mapping[str, Any]) -> str | None:
        """Write the entry; a failure (read-only cache, full disk) is a warning, not the end of the run."""
        try:
            write_entry(self.entry, tensors, summary, self.parts)
        except OSError as err:
            log.warning("kick cache: could not store %s (%s); going on with the compressed weights in memory",
                        self.entry, err.strerror or err)
            return f"{type(err).__name__}: {err.strerror or err}"
        log.info("kick cache: stored %s (%d changed tensors)", self.entry, len(tensors))
        return None


def open_slot(model: nn.Module, parts: Mapping[str, Any], *, cache_dir: str | os.PathLike | None = None,
              enabled: bool = True, lock_timeout_s: float | None = None,
              expect_sparsity: float | None = None) -> Slot:
    """The :class:`Slot` of ``parts``' key for ``model``. With ``enabled=False`` it never hits and stores
    nothing. ``lock_timeout_s`` (None: ``$KICK_CACHE_LOCK_TIMEOUT``, else forever; < 0: forever) bounds
    the wait for another process compressing the same key. ``expect_sparsity``: a pruning config's
    target, which an entry's zeros must reach (a dense entry under a pruned key is refused)."""
    if not enabled:
        return Slot(model, parts, None, -1.0, expect_sparsity)
    root = ensure_writable(cache_dir)
    clean_stale(root)
    timeout = lock_timeout_from_env() if lock_timeout_s is None else float(lock_timeout_s)
    return Slot(model, parts, root, timeout, expect_sparsity)


# --------------------------------------------------------------------------- calibration memo
def calibration_memo_path(root: Path, pretrained: str, model_id: Mapping[str, Any], config: Any,
                          spec: Mapping[str, Any]) -> Path:
    """Where the calibration token hash of (model + tokenizer files, calibration settings, source text) is kept."""
    parts: dict[str, Any] = {"model": dict(model_id), "spec": dict(spec), "versions": package_versions(),
                             "calib": {k: v for k, v in config.to_dict().items() if k in (*CALIBRATION_FIELDS, "method")}}
    local = Path(str(pretrained)).expanduser() / str(spec.get("subfolder") or "")
    if local.is_dir():  # tokenizer files are not in the weights fingerprint but change token ids
        tok_files = sorted(p for p in local.iterdir() if p.is_file() and ("token" in p.name or p.suffix == ".model"))
        parts["tokenizer"] = [(p.name, p.stat().st_size, _sha256_file(p)) for p in tok_files]
    source = Path(str(spec.get("resolved_calib", ""))).expanduser()
    if source.is_file():
        parts["source_sha256"] = _sha256_file(source)
    return root / "calibration" / f"{cache_key(parts)}.json"


def _memo_problem(memo: Any, path: Path, config: Any) -> str | None:
    if isinstance(memo, Exception):
        return f"unreadable ({type(memo).__name__}: {memo})"
    if not isinstance(memo, dict) or not isinstance(memo.get("info"), dict):
        return f"it holds a {type(memo).__name__}, not a calibration record"
    info = memo["info"]
    if memo.get("memo_key") != path.stem:
        return "it belongs to other calibration settings"
    if memo.get("sha256") != hashlib.sha256(_canonical(info).encode()).hexdigest():
        return "its record does not match its checksum"
    if not re.fullmatch(r"[0-9a-f]{64}", str(info.get("token_sha256"))) or info.get("seed") != config.seed:
        return "its token hash or seed is not this configuration's"
    return None


def read_calibration_memo(path: Path, config: Any) -> dict[str, Any] | None:
    """The remembered calibration info (with its token hash), or None; an unusable memo is warned about."""
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        memo = err
    problem = _memo_problem(memo, path, config)
    if problem is not None:
        log.warning("kick cache: calibration memo %s is unusable (%s); tokenizing the calibration text again", path, problem)
        return None
    return dict(memo["info"])


def calibration_differs(remembered: Mapping[str, Any] | None, real: Mapping[str, Any]) -> bool:
    """True when a remembered calibration record is not the one the calibration text really gives."""
    return remembered is None or _canonical(dict(remembered)) != _canonical(dict(real))


def write_calibration_memo(path: Path, info: Mapping[str, Any]) -> None:
    """Remember ``info``; a read-only or full cache only costs a re-tokenization next time."""
    info = dict(info)
    memo = {"memo_key": path.stem, "info": info, "sha256": hashlib.sha256(_canonical(info).encode()).hexdigest()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, memo, fsync=True, sort_keys=True)
    except OSError as err:
        log.warning("kick cache: could not remember the calibration tokens in %s (%s)", path, err.strerror or err)
