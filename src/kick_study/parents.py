"""Pair runs made elsewhere (stock ``lm_eval --model hf|vllm|…``) with their dense parent: ``kick-report --parent RUN=DENSE``.

A stock run of a compressed checkpoint records only ``pretrained=…``: nothing says which dense model
it came from, so the report would show it as an unrelated dense model. A link names the run (its
results file or folder, or its model as it appears in results) and the parent (the same kinds of
names, resolving to one dense run); the run is then reported as a row of the parent's model, labelled
by where it came from, and paired item by item with the parent's dense run (verdicts, flips, McNemar).
Such a run has no next-token distributions, so it has no KL to dense; the report says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from kick_study.runs import ReportError, Run, Setting, read_runs

EXTERNAL_METHOD = "external"  # Setting.method of a run paired by a link
NO_KL = ("a run made elsewhere (paired by --parent): lm-eval kept no next-token distributions, so there is no KL to "
         "dense; evaluate the checkpoint with `lm_eval --model kick-hf --model_args pretrained=CHECKPOINT,parent=DENSE` "
         "to measure it")


@dataclass(frozen=True)
class ParentLink:
    """RUN=DENSE: each side a results file, a folder of them, or a model name as results record it."""

    run: str
    parent: str
    label: str | None = None
    origin: str = "--parent"  # where the link was given, for error messages


def parse_links(items: Sequence[str] | None) -> list[ParentLink]:
    """``--parent RUN=DENSE`` values (split at the first ``=``)."""
    links = []
    for item in items or []:
        run, sep, parent = str(item).partition("=")
        if not sep or not run.strip() or not parent.strip():
            raise ReportError(f"kick-report: invalid --parent {item!r}; accepted: RUN=DENSE, each a results file, a "
                              "folder of results, or a model name as it appears in results")
        links.append(ParentLink(run.strip(), parent.strip(), origin=f"--parent {item}"))
    return links


def read_mapping(path: str | Path) -> list[ParentLink]:
    """``--parents FILE``: YAML ``RUN: DENSE`` pairs, or a list of ``{run, parent, label}``; relative paths
    are read from the file's folder."""
    from kick_study.settings import SweepError, _parse_config_text

    file = Path(path).expanduser()
    if not file.is_file():
        raise ReportError(f"kick-report: --parents {str(path)!r} is not a file; accepted: a YAML or TOML mapping file")
    try:
        data = _parse_config_text(file)
    except SweepError as err:
        raise ReportError(str(err).replace("kick-sweep", "kick-report")) from None
    entries = [{"run": k, "parent": v} for k, v in data.items()] if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ReportError(f"kick-report: --parents {str(file)!r} holds {type(data).__name__}; accepted: a mapping "
                          "RUN: DENSE, or a list of {run, parent, label}")
    links = []
    for i, entry in enumerate(entries):
        bad = not isinstance(entry, dict) or set(entry) - {"run", "parent", "label"} or not all(
            isinstance(entry.get(k), str) and entry[k].strip() for k in ("run", "parent"))
        if bad:
            raise ReportError(f"kick-report: --parents {str(file)!r} entry {i}: {entry!r}; accepted: RUN: DENSE, or "
                              "{run: RUN, parent: DENSE, label: LABEL} with non-empty strings")
        side = {k: _beside(file.parent, entry[k].strip()) for k in ("run", "parent")}
        links.append(ParentLink(side["run"], side["parent"], entry.get("label"), origin=f"--parents {file} entry {i}"))
    return links


def _beside(folder: Path, name: str) -> str:
    """A relative path that exists beside the mapping file, as a path; anything else unchanged (a model name)."""
    candidate = folder / Path(name).expanduser()
    return str(candidate) if not Path(name).expanduser().is_absolute() and candidate.exists() else name


def _norm(text: str) -> str:
    """A name compared across runs: an existing path resolved; otherwise the text without a trailing slash."""
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text.rstrip("/")


def _matching(name: str, runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(runs already loaded that ``name`` names, runs read now from a path outside the report's folder)."""
    path = Path(name).expanduser()
    if path.exists():
        target = path.resolve()
        hit = [r for r in runs if r.path.resolve() == target or target in r.path.resolve().parents]
        if hit:
            return hit, []
        if path.is_file() or path.is_dir() and any(path.rglob("results_*.json")):
            return [], read_runs(path)
    wanted = _norm(name)
    return [r for r in runs if _norm(r.model) == wanted], []


def _dense_parent(link: ParentLink, runs: list[Run]) -> tuple[Run, list[Run]]:
    """The one dense run ``link.parent`` names (and any runs read from outside the folder)."""
    hit, outside = _matching(link.parent, runs)
    dense = [r for r in hit + outside if r.setting.is_dense]
    models = sorted({r.model for r in dense})
    if not dense:
        known = ", ".join(sorted({r.model for r in runs if r.setting.is_dense})) or "none"
        raise ReportError(f"kick-report: {link.origin}: DENSE {link.parent!r} names no dense run; accepted: a results "
                          f"file or folder of a dense run, or a model with a dense run here ({known})")
    if len(models) > 1:
        raise ReportError(f"kick-report: {link.origin}: DENSE {link.parent!r} holds dense runs of {len(models)} models "
                          f"({', '.join(models)}); accepted: a results file or folder of one model's dense run")
    return max(dense, key=lambda r: r.date), outside


def _default_label(run: Run) -> str:
    args = run.extra.get("model_args") or {}
    name = Path(str(args.get("pretrained") or run.model).rstrip("/")).name or run.model
    return f"{name}/{args['gguf_file']}" if args.get("gguf_file") else name


def checkpoint_declared(model_args: dict[str, Any]) -> dict[str, Any]:
    """What a local checkpoint folder declares about its compression (``quantization_config`` of its
    config.json, or a GGUF file): format, bits, group size; empty when it is not a readable local folder."""
    folder = Path(str(model_args.get("pretrained") or "")).expanduser()
    if model_args.get("gguf_file"):
        return {"format": "gguf", "checkpoint": str(folder / str(model_args["gguf_file"]))}
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(quant, dict):
        return {"format": "safetensors (no quantization_config)", "checkpoint": str(folder)}
    groups = quant.get("config_groups") if isinstance(quant.get("config_groups"), dict) else {}
    weights = next((g.get("weights") for g in groups.values() if isinstance(g, dict) and g.get("weights")), {}) or {}
    declared = {"bits": quant.get("bits", weights.get("num_bits")), "group_size": quant.get("group_size",
                weights.get("group_size")), "symmetric": quant.get("sym", weights.get("symmetric"))}
    return {"format": str(quant.get("quant_method") or quant.get("format") or "quantization_config"),
            "checkpoint": str(folder), "declared": {k: v for k, v in declared.items() if v is not None}}


def _source(run: Run, label: str) -> dict[str, Any]:
    """The provenance record of a run made elsewhere, in the shape kick-hf writes for checkpoints."""
    args = run.extra.get("model_args") or {}
    found = checkpoint_declared(args)
    return {"kind": "run", "label": label, "library": f"lm_eval --model {run.extra.get('lm_eval_model') or '?'}",
            "checkpoint": found.get("checkpoint") or str(args.get("pretrained") or run.model),
            "format": found.get("format"), "declared": found.get("declared", {}), "results": str(run.path),
            "measured": {"note": NO_KL}}


def _rehome(run: Run, model: str, label: str) -> Run:
    if not run.setting.is_dense:  # already compressed by kick (or a checkpoint kick-hf read): keep its row
        return replace(run, model=model)
    source = _source(run, label)
    wbits = source["declared"].get("bits")
    wbits = int(wbits) if isinstance(wbits, int) and 0 < wbits < 16 else 16
    setting = Setting(method=EXTERNAL_METHOD, wbits=wbits, source=f"{label} · {source['library']}")
    return replace(run, model=model, setting=setting, seed=None,
                   extra={**run.extra, "source": source, "paired_by": "--parent", "no_kl": NO_KL})


def apply_links(runs: list[Run], links: Sequence[ParentLink]) -> list[Run]:
    """``runs`` with every linked run moved under its parent's model (and runs read from outside the folder added)."""
    runs = list(runs)
    labels: dict[str, str] = {}  # row label → the run model it came from: two checkpoints may not share one
    for link in links:
        dense, outside = _dense_parent(link, runs)
        known = {r.path.resolve() for r in runs}
        runs += [r for r in outside if r.path.resolve() not in known]
        hit, outside = _matching(link.run, runs)
        runs += outside
        targets = {id(r) for r in hit + outside if r.path.resolve() != dense.path.resolve()}
        if not targets:
            raise ReportError(f"kick-report: {link.origin}: RUN {link.run!r} names no run other than the parent's; "
                              "accepted: a results file, a folder of results, or a model name as it appears in results")
        moved = []
        for run in runs:
            if id(run) in targets:
                label = link.label or _default_label(run)
                if labels.setdefault(label, run.model) != run.model:
                    raise ReportError(f"kick-report: {link.origin}: label {label!r} is already used by "
                                      f"{labels[label]!r}; accepted: a distinct label per checkpoint (give one in "
                                      "--parents FILE)")
                run = _rehome(run, dense.model, label)
            moved.append(run)
        runs = moved
    return runs


def looks_compressed(run: Run) -> str | None:
    """Why a run that reads as dense may be a compressed checkpoint (its folder says so), or None."""
    found = checkpoint_declared(run.extra.get("model_args") or {})
    if found.get("format") == "gguf":
        return f"it loads a GGUF file ({os.path.basename(found['checkpoint'])})"
    if found.get("declared") or (found.get("format") and "no quantization_config" not in found["format"]):
        bits = found.get("declared", {}).get("bits")
        return f"its config.json declares quantization_config ({found['format']}{f', {bits} bits' if bits else ''})"
    return None
