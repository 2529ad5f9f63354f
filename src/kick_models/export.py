"""``kick-compress``: compress once and write a plain Hugging Face checkpoint any stack can load.

The export is what makes multi-GPU and other back-ends work: compress with ``kick-compress``
(through exactly the code ``kick-hf`` uses, cache included), then evaluate the folder with stock
``lm_eval --model hf``, ``accelerate launch -m lm_eval``, vLLM or transformers. Sparse weights are
stored dense with their zeros; ``kick_compression.json`` records what was done. The folder
appears atomically (written beside its destination, then renamed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from kick_common.args import format_value
from kick_common.atomic import staged_dir
from kick_models.external.checkpoint import EXPORT_RECORD

log = logging.getLogger(__name__)

COMPRESSION_FILE = EXPORT_RECORD  # kick_models.external.checkpoint reads it back (parent= credits kick)
_ARG_FLAGS = ("method", "sparsity", "pattern", "wbits", "group_size", "sym", "act_order", "damp", "blocksize",
              "calib", "nsamples", "seqlen", "seed", "sparsity_profile", "owl_m", "owl_lambda", "propagate",
              "true_sequential", "skip_experts", "revision", "dtype", "cache_dir", "no_cache")


class ExportError(ValueError):
    """The export cannot be written; the message names the path or value and what is accepted."""


def write_atomically(out_dir: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Run ``write(tmp)`` on a fresh sibling folder of ``out_dir``, then rename it into place."""
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and not overwrite:
        raise ExportError(f"kick-compress: {str(out_dir)!r} already exists; pass --overwrite or choose another --out")
    with staged_dir(out_dir) as tmp:
        write(tmp)
    log.info("kick-compress: wrote %s", out_dir)
    return out_dir


def check_destination(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse an ``--out`` that cannot be created, before anything is loaded: one that exists (unless
    ``overwrite``) or is a file, one under a regular file, one whose nearest existing folder cannot
    be written."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ExportError(f"kick-compress: --out {str(out)!r} is a file; accepted: a folder path that does not exist yet")
    if out.exists() and not overwrite:
        raise ExportError(f"kick-compress: {str(out)!r} already exists; pass --overwrite or choose another --out")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"kick-compress: --out {str(out)!r} is under {str(parent)!r}, which is a file, not a folder; "
                          "accepted: a path whose existing parents are folders")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"kick-compress: --out {str(out)!r} cannot be created: {str(parent)!r} is not writable; "
                          "accepted: a path in a folder you can write to")
    return out


def _within(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def protected_folders(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """Folders an export must never replace, contain or be written into: the source model, kick's caches,
    the working folder and the home folder (an ``--overwrite`` of one of them would delete it)."""
    from kick_common.args import parse_kv
    from kick_common.paths import embedded_model_dir, kick_cache_dir

    folders: list[tuple[str, Path]] = []
    model = args.model.strip()
    if model.lower() == "embedded":
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):  # then it lies in the cache root anyway
            folders.append(("the embedded source model", embedded_model_dir()))
    elif Path(model).expanduser().exists():
        folders.append(("the source model folder", Path(model).expanduser()))
    folders.append(("kick's cache root", kick_cache_dir()))
    extra = parse_kv(args.model_args, strict=False) if args.model_args else {}
    for cache in (getattr(args, "cache_dir", None), extra.get("cache_dir")):
        if cache:
            folders.append(("the compressed-weight cache (--cache_dir)", Path(cache).expanduser()))
    return [(what, path.resolve()) for what, path in folders]


def check_out_is_safe(out_dir: str | os.PathLike, args: argparse.Namespace) -> None:
    """Refuse an ``--out`` that is, contains or lies inside the source model or a cache, that is or contains the
    working or home folder, or that lies in a kick-sweep results folder -- even with ``--overwrite``."""
    out = Path(out_dir).expanduser().resolve()
    for what, folder in protected_folders(args):
        if _within(out, folder) or _within(folder, out):
            relation = "is" if out == folder else "lies inside" if _within(out, folder) else "contains"
            raise ExportError(f"kick-compress: --out {str(out)!r} {relation} {what} ({folder}); writing there would "
                              "replace or mix with it; accepted: a folder outside it that does not contain it")
    for what, folder in (("the working folder", Path.cwd().resolve()), ("the home folder", Path.home().resolve())):
        if _within(folder, out):
            raise ExportError(f"kick-compress: --out {str(out)!r} is or contains {what} ({folder}); accepted: a new "
                              "folder inside it, e.g. --out ./compressed")
    for parent in (out, *out.parents):
        if (parent / "index.json").is_file() and (parent / "cells").is_dir():
            raise ExportError(f"kick-compress: --out {str(out)!r} lies in the kick-sweep results folder {parent}; "
                              "accepted: a folder outside it (the report reads every file there)")


def check_flag_conflicts(args: argparse.Namespace) -> None:
    """A setting given both as a flag (``--model``, ``--sparsity``, ...) and inside ``--model_args`` is refused,
    as is a key repeated inside ``--model_args``: the run must not pick one of two values silently."""
    from kick_common.args import parse_kv
    from kick_models.lm import refuse_duplicates

    if not args.model_args:
        return
    refuse_duplicates(args.model_args)
    extra = parse_kv(args.model_args, strict=False)
    if "pretrained" in extra:
        raise ExportError(f"kick-compress: --model_args pretrained={extra['pretrained']} conflicts with --model "
                          f"{args.model}; accepted: the model named once, with --model")
    for key in (*_ARG_FLAGS, "device"):
        value = getattr(args, key, None)
        if key in extra and value is not None and value is not False:
            raise ExportError(f"kick-compress: --{key} {format_value(value)} and --model_args {key}={extra[key]} "
                              f"both set {key}; accepted: one of the two")


def _write_record(folder: Path, compression: Mapping[str, Any], fmt: str) -> None:
    record = {"format": fmt, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **dict(compression)}
    (folder / COMPRESSION_FILE).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")


def export_model(model, tokenizer, out_dir: str | os.PathLike, compression: Mapping[str, Any], *,
                 overwrite: bool = False) -> Path:
    """Write ``model`` (config + safetensors), ``tokenizer`` and ``kick_compression.json`` to ``out_dir`` atomically."""

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        _write_record(tmp, compression, "hf-dense")

    return write_atomically(out_dir, write, overwrite=overwrite)


def export_gptq(lm, out_dir: str | os.PathLike, compression: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Packed GPTQ checkpoint (gptqmodel layout) from a ``kick-hf`` model built with ``keep_grids=true``."""
    grids = getattr(lm, "kick_quant_grids", None)
    config = lm.kick_config
    if not config.quantizes or not grids:
        raise ExportError("kick-compress: --format gptq needs a quantizing config (method=gptq or wbits<16) "
                          "loaded with keep_grids=true, so that kick-hf kept the GPTQ grids")
    from kick_models.export_gptq import save_gptq_checkpoint

    def write(tmp: Path) -> None:
        save_gptq_checkpoint(lm.model, grids, tmp, bits=config.wbits, group_size=config.group_size,
                             sym=config.sym, tokenizer=lm.tokenizer)
        _write_record(tmp, compression, "gptq-packed")

    return write_atomically(out_dir, write, overwrite=overwrite)


def model_args_string(args: argparse.Namespace) -> str:
    """The ``kick-hf`` model_args equivalent to the command line (``--model_args`` extras last)."""
    parts = [] if args.model.strip().lower() == "embedded" else [f"pretrained={args.model}"]
    for key in _ARG_FLAGS:
        value = getattr(args, key, None)
        if value is None or value is False:
            continue
        parts.append(f"{key}={format_value(value)}")
    if args.model_args:
        parts.append(args.model_args)
    return ",".join(parts)


def _gptq_export_args(arg_string: str) -> str:
    """Check a ``--format gptq`` request before any weight loads; returns the args with ``keep_grids``.

    The packed layout needs each layer's scales and zeros, which the cache does not store, so
    the model is quantized afresh (``keep_grids=true`` turns the cache off).
    """
    from lm_eval.utils import simple_parse_args_string

    from kick_models.export_gptq import check_packer
    from kick_models.lm import split_model_args

    config, _, _ = split_model_args(simple_parse_args_string(arg_string))
    if not config.quantizes:
        raise ExportError(f"kick-compress: --format gptq writes quantized layers, but method={config.method} "
                          f"wbits={config.wbits} does not quantize; accepted: --method gptq, or --wbits 2|3|4|8")
    check_packer()
    return f"{arg_string},keep_grids=true"


def load_compressed(arg_string: str, device: str | None = None):
    """Build ``kick-hf`` exactly as lm-eval would, so the export equals what ``kick-hf`` evaluates."""
    from kick_models.lm import KickHFLM

    return KickHFLM.create_from_arg_string(arg_string, {"batch_size": 1, "device": device})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kick-compress", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="Hub id, local folder, or `embedded` (the built-in SmolLM2)")
    p.add_argument("--out", required=True, help="folder to create (must not exist unless --overwrite)")
    p.add_argument("--method", required=True, help="none or any registered method (kick-hf's method=; plug-ins included)")
    p.add_argument("--sparsity", help="unstructured sparsity in [0, 1)")
    p.add_argument("--pattern", help="unstructured or N:M, e.g. 2:4")
    p.add_argument("--wbits", help="weight bits: 2, 3, 4, 8 or 16 (none)")
    for key in ("group_size", "damp", "blocksize", "calib", "nsamples", "seqlen", "seed",
                "sparsity_profile", "owl_m", "owl_lambda", "propagate", "revision", "dtype", "cache_dir"):
        p.add_argument(f"--{key}", help=f"kick-hf model_arg {key}")
    p.add_argument("--sym", action="store_true", default=None, help="symmetric quantization")
    p.add_argument("--act_order", action="store_true", default=None, help="GPTQ act-order")
    p.add_argument("--true_sequential", action="store_true", default=None,
                   help="refit each layer group to the outputs of the already-compressed groups before it")
    p.add_argument("--skip_experts", action="store_true", default=None,
                   help="leave the routed experts of mixture-of-experts models dense (recorded)")
    p.add_argument("--no_cache", action="store_true", default=None, help="do not use the compressed-weight cache")
    p.add_argument("--model_args", help="any further kick-hf model_args, key=value,...")
    p.add_argument("--device", help="torch device for compression, e.g. cuda:0 (default: kick-hf's)")
    p.add_argument("--format", choices=["hf", "gptq"], default="hf",
                   help="hf: dense safetensors (default); gptq: packed GPTQ (needs the gptq-export extra)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out).expanduser()
    try:
        check_out_is_safe(out_dir, args)
        check_destination(out_dir, overwrite=args.overwrite)
        check_flag_conflicts(args)
    except ValueError as err:  # ExportError, or ConfigError for a repeated model_arg
        sys.stderr.write(f"{err}\n")
        return 2
    arg_string = model_args_string(args)
    try:
        if args.format == "gptq":
            arg_string = _gptq_export_args(arg_string)
        lm = load_compressed(arg_string, args.device)
        record = {"source_model": args.model, "kick_model_args": arg_string,
                  "summary": dict(lm.get_model_info().get("kick", {}))}
        if args.format == "gptq":
            export_gptq(lm, out_dir, record, overwrite=args.overwrite)
        else:
            export_model(lm.model, lm.tokenizer, out_dir, record, overwrite=args.overwrite)
    except (ValueError, ImportError) as err:  # ConfigError, ExportError, missing gptqmodel extra
        sys.stderr.write(f"{err}\n")
        return 2
    if args.format == "gptq":
        hint = (f"load with gptqmodel (GPTQModel.load({str(out_dir)!r})), vLLM, or transformers "
                "with optimum + gptqmodel installed")
    else:
        hint = f"evaluate with: lm_eval --model hf --model_args pretrained={out_dir} --tasks ..."
    sys.stdout.write(f"kick-compress: wrote {out_dir}\n  {hint}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
