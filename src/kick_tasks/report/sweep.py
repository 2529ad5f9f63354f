"""``kick-sweep``: one lm-eval run per (model × compression) cell of a grid, resumable, failure-tolerant.

A grid is models × methods × sparsities × patterns × bits, evaluated on a list of tasks. Every
cell runs ``lm_eval --model kick-hf`` once (in a subprocess by default, so a crash or a leak in
one cell cannot take the sweep down) and keeps lm-eval's own results JSON under
``<out>/cells/<cell id>/``. ``<out>/index.json`` records every cell's settings, status, results
file or error; a rerun skips the cells already done. The dense model and the perplexity contrast
(``kick_ppl_heldout``, plus ``wikitext`` when the Hub is reachable) are always part of the grid.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

PPL_TASK = "kick_ppl_heldout"
WIKITEXT_TASK = "wikitext"
INDEX_FILE = "index.json"
PRUNING_METHODS = ("magnitude", "wanda", "sparsegpt")
GRID_KEYS = ("models", "methods", "sparsities", "patterns", "bits", "tasks")
DEFAULTS: dict[str, Any] = {
    "models": [],
    "methods": ["magnitude", "wanda", "sparsegpt"],
    "sparsities": [0.1, 0.2, 0.3, 0.4, 0.5],
    "patterns": ["unstructured"],
    "bits": [16],
    "tasks": [],
    "limit": None,
    "batch_size": 1,
    "device": None,
    "model_args": {},
    "wikitext": "auto",
    "prune_and_quantize": False,
    "runner": "subprocess",
    "cache_dir": None,
    "include_path": None,
}


class SweepError(ValueError):
    """A sweep setting is wrong; the message names the value and what is accepted."""


class CellFailed(RuntimeError):
    """One cell's lm-eval run failed; the sweep records it and goes on."""


# --------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Cell:
    """One lm-eval run: a model under one compression setting, on all the grid's tasks."""

    model: str
    method: str
    sparsity: float
    pattern: str
    wbits: int
    tasks: tuple[str, ...]
    model_args: str
    limit: float | None = None
    batch_size: Any = 1
    device: str | None = None

    @property
    def cell_id(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", self.model.split("=")[-1].rstrip("/").split("/")[-1])[:40] or "model"
        spec = f"{self.method}-{self.pattern.replace(':', 'of')}-s{self.sparsity:.2f}-w{self.wbits}"
        digest = hashlib.sha256(
            json.dumps([self.model_args, sorted(self.tasks), self.limit], sort_keys=True).encode()
        ).hexdigest()[:8]
        return f"{slug}__{spec}__{digest}"

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": list(self.tasks), "cell_id": self.cell_id}


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _model_fragment(model: str) -> str:
    """``org/name`` → ``pretrained=org/name``; ``embedded`` → kick-hf's built-in SmolLM2 (no pretrained);
    a full ``key=value,...`` string passes through."""
    if model.strip().lower() == "embedded":
        return ""
    return model if "=" in model else f"pretrained={model}"


def _args_string(args: Mapping[str, Any]) -> str:
    def text(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)
    return ",".join(f"{k}={text(v)}" for k, v in args.items() if v is not None)


def _compression_settings(settings: Mapping[str, Any]) -> Iterable[tuple[str, float, str, int]]:
    """(method, sparsity, pattern, wbits) for every cell: the dense baseline first, then the grid.

    Pruning methods cross unstructured sparsities and N:M patterns (N:M fixes its own sparsity),
    at 16 bits unless ``prune_and_quantize`` crosses them with ``bits`` too; ``gptq`` takes the
    ``bits`` below 16.
    """
    from kick_models.config import parse_pattern

    yield "none", 0.0, "unstructured", 16
    patterns = [parse_pattern(p) for p in _as_list(settings["patterns"]) or ["unstructured"]]
    bits = [int(b) for b in _as_list(settings["bits"]) or [16]]
    for method in _as_list(settings["methods"]):
        method = str(method).strip().lower()
        if method == "none":
            continue
        if method == "gptq":
            for b in bits:
                if b < 16:
                    yield "gptq", 0.0, "unstructured", b
            continue
        for b in (bits if _truthy(settings.get("prune_and_quantize")) else [16]):
            for pattern in patterns:
                if pattern is None:
                    for s in _as_list(settings["sparsities"]):
                        if float(s) > 0:
                            yield method, float(s), "unstructured", b
                else:
                    yield method, 1.0 - pattern[0] / pattern[1], f"{pattern[0]}:{pattern[1]}", b


def plan_cells(settings: Mapping[str, Any], tasks: Sequence[str]) -> list[Cell]:
    """Every cell of the grid, each one's compression checked with ``build_config`` up front."""
    from kick_models.config import ConfigError, build_config

    models = _as_list(settings["models"])
    if not models:
        raise SweepError("kick-sweep: no models given; use --models org/name[,path,...] or 'models:' in the config")
    extra = dict(settings.get("model_args") or {})
    if settings.get("cache_dir"):
        extra.setdefault("cache_dir", settings["cache_dir"])
    try:
        grid = list(_compression_settings(settings))
    except ValueError as err:  # ConfigError from a pattern, or a non-number sparsity / bits
        raise SweepError(f"kick-sweep: bad grid setting: {err}") from None
    cells, seen = [], set()
    for model in models:
        for method, sparsity, pattern, wbits in grid:
            comp: dict[str, Any] = {"method": method}
            if pattern != "unstructured":
                comp["pattern"] = pattern
            elif sparsity > 0:
                comp["sparsity"] = sparsity
            if wbits < 16:
                comp["wbits"] = wbits
            try:
                build_config({**{k: v for k, v in extra.items() if k in _compression_keys()}, **comp})
            except ConfigError as err:
                raise SweepError(f"kick-sweep: grid cell {comp} is invalid: {err}") from None
            args = _args_string({**comp, **{k: v for k, v in extra.items() if k not in comp}})
            cell = Cell(model=str(model), method=method, sparsity=round(sparsity, 6), pattern=pattern, wbits=wbits,
                        tasks=tuple(tasks), model_args=",".join(p for p in (_model_fragment(str(model)), args) if p),
                        limit=settings.get("limit"), batch_size=settings.get("batch_size", 1),
                        device=settings.get("device"))
            if cell.cell_id not in seen:
                seen.add(cell.cell_id)
                cells.append(cell)
    return cells


def _compression_keys() -> tuple[str, ...]:
    from kick_models.config import COMPRESSION_KEYS

    return COMPRESSION_KEYS


# --------------------------------------------------------------------------- tasks
def task_manager(include_path: str | None = None):
    """lm-eval's TaskManager that also sees kick's task YAMLs (and ``include_path`` if given)."""
    from kick_models.registration import task_manager as kick_task_manager

    return kick_task_manager(_as_list(include_path) or None)


def check_tasks(tasks: Sequence[str], manager) -> None:
    """Fail before any compression when a task or group name is unknown to lm-eval."""
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise SweepError(
            f"kick-sweep: unknown task(s) {', '.join(map(repr, unknown))}; accepted: any name listed by "
            "`lm_eval ls tasks` (kick tasks start with 'kick_'; add --include_path DIR for your own YAMLs)"
        )


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """False when offline mode is set or huggingface.co does not answer quickly."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def grid_tasks(settings: Mapping[str, Any], online: Callable[[], bool] = hub_reachable) -> list[str]:
    """The grid's tasks plus the perplexity contrast: bundled held-out text always, wikitext when online."""
    tasks = [str(t) for t in _as_list(settings["tasks"])]
    if PPL_TASK not in tasks:
        tasks.append(PPL_TASK)
    wikitext = str(settings.get("wikitext", "auto")).strip().lower()
    if wikitext not in ("auto", "true", "false", "on", "off"):
        raise SweepError(f"kick-sweep: wikitext={wikitext!r}; accepted: auto | true | false")
    if WIKITEXT_TASK not in tasks and (wikitext in ("true", "on") or (wikitext == "auto" and online())):
        tasks.append(WIKITEXT_TASK)
    return tasks


# --------------------------------------------------------------------------- runners
Runner = Callable[[Cell, Path], Path]


def _newest_results(cell_dir: Path) -> Path:
    found = sorted(cell_dir.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CellFailed(f"lm-eval finished but wrote no results_*.json under {cell_dir}")
    return found[-1]


def subprocess_runner(include_path: str | None = None, timeout_s: float | None = None) -> Runner:
    """Run each cell as ``python -m lm_eval ...``: isolated memory, crashes confined to the cell."""

    def run(cell: Cell, cell_dir: Path) -> Path:
        cmd = [sys.executable, "-m", "lm_eval", "--model", "kick-hf", "--model_args", cell.model_args,
               "--tasks", ",".join(cell.tasks), "--output_path", str(cell_dir),
               "--batch_size", str(cell.batch_size)]
        if cell.limit is not None:
            cmd += ["--limit", str(cell.limit)]
        if cell.device:
            cmd += ["--device", cell.device]
        if include_path:
            cmd += ["--include_path", include_path]
        log_path = cell_dir / "lm_eval.log"
        with open(log_path, "w", encoding="utf-8") as out:
            out.write(shlex.join(cmd) + "\n")
            out.flush()
            try:
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired:
                raise CellFailed(f"lm_eval timed out after {timeout_s}s (log: {log_path})") from None
        if proc.returncode != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
            raise CellFailed(f"lm_eval exited with {proc.returncode} (log: {log_path}):\n" + "\n".join(tail))
        return _newest_results(cell_dir)

    return run


def inprocess_runner(include_path: str | None = None, manager=None) -> Runner:
    """Run each cell with ``lm_eval.simple_evaluate`` in this process (no start-up cost per cell).

    One TaskManager per base model, carrying ``pretrained`` as task metadata as the ``lm_eval``
    CLI does (tasks that fit prompts to the model's context read the tokenizer from it).
    """
    managers: dict[Any, Any] = {}

    def run(cell: Cell, cell_dir: Path) -> Path:
        import lm_eval
        from lm_eval.loggers import EvaluationTracker
        from lm_eval.utils import simple_parse_args_string

        args = cell.model_args if isinstance(cell.model_args, dict) else simple_parse_args_string(cell.model_args)
        pretrained = args.get("pretrained")
        if manager is not None:
            cell_manager = manager
        else:
            if pretrained not in managers:
                from kick_models.registration import task_manager as kick_task_manager

                metadata = {"pretrained": pretrained} if isinstance(pretrained, str) else None
                managers[pretrained] = kick_task_manager(_as_list(include_path) or None, metadata=metadata)
            cell_manager = managers[pretrained]
        tracker = EvaluationTracker(output_path=str(cell_dir))
        results = lm_eval.simple_evaluate(
            model="kick-hf", model_args=cell.model_args, tasks=list(cell.tasks), limit=cell.limit,
            batch_size=cell.batch_size, device=cell.device, task_manager=cell_manager,
            evaluation_tracker=tracker, log_samples=False,
        )
        if results is None:
            raise CellFailed("lm_eval.simple_evaluate returned no results")
        results.pop("samples", None)
        tracker.save_results_aggregated(results=results, samples=None)
        return _newest_results(cell_dir)

    return run


# --------------------------------------------------------------------------- index
def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load_index(out_dir: Path) -> dict[str, Any]:
    path = out_dir / INDEX_FILE
    if not path.is_file():
        return {"version": 1, "cells": {}}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise SweepError(f"kick-sweep: {path} is not valid JSON ({err}); move it away to start over") from None
    index.setdefault("cells", {})
    return index


def is_done(entry: Mapping[str, Any] | None, out_dir: Path) -> bool:
    return bool(entry) and entry.get("status") == "ok" and (out_dir / entry.get("results_file", "")).is_file()


@dataclass
class SweepOutcome:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def run_sweep(cells: Sequence[Cell], out_dir: Path, runner: Runner, settings: Mapping[str, Any] | None = None,
              progress: bool = True) -> SweepOutcome:
    """Run the cells not yet done, recording each one in ``index.json`` as soon as it ends."""
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    index = load_index(out_dir)
    if settings is not None:
        index["settings"] = dict(settings)
    outcome = SweepOutcome()
    todo = []
    for cell in cells:
        entry = index["cells"].get(cell.cell_id)
        if is_done(entry, out_dir):
            outcome.skipped.append(cell.cell_id)
        else:
            todo.append(cell)
            index["cells"][cell.cell_id] = {**cell.describe(), "status": "pending"}
    _write_json_atomic(out_dir / INDEX_FILE, index)
    log.info("kick-sweep: %d cells, %d already done, %d to run", len(cells), len(outcome.skipped), len(todo))
    bar = tqdm(total=len(cells), initial=len(outcome.skipped), desc="kick-sweep cells", unit="cell",
               disable=not progress, smoothing=0)
    try:
        for cell in todo:
            bar.set_postfix_str(cell.cell_id[:48])
            cell_dir = out_dir / "cells" / cell.cell_id
            cell_dir.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            entry = {**cell.describe(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            try:
                results_file = runner(cell, cell_dir)
                entry.update(status="ok", results_file=Path(results_file).resolve().relative_to(out_dir.resolve()).as_posix())
                outcome.ran.append(cell.cell_id)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # noqa: BLE001 — any cell failure is recorded, the sweep goes on
                entry.update(status="failed", error=f"{type(err).__name__}: {err}")
                outcome.failed.append(cell.cell_id)
                log.error("kick-sweep: cell %s failed: %s", cell.cell_id, err)
            entry["seconds"] = round(time.perf_counter() - start, 2)
            index["cells"][cell.cell_id] = entry
            _write_json_atomic(out_dir / INDEX_FILE, index)
            bar.update(1)
    finally:
        bar.close()
    return outcome


# --------------------------------------------------------------------------- config + CLI
def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) mapping of sweep settings."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"kick-sweep: config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        import tomllib

        data = tomllib.loads(text)
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        raise SweepError(f"kick-sweep: config file {str(path)!r} must end in .yaml, .yml or .toml")
    if not isinstance(data, dict):
        raise SweepError(f"kick-sweep: config file {str(path)!r} must hold a mapping of settings")
    unknown = set(data) - set(DEFAULTS) - {"out"}
    if unknown:
        raise SweepError(f"kick-sweep: unknown setting(s) {sorted(unknown)} in {path}; accepted: {sorted(DEFAULTS)} and out")
    return data


def _parse_model_args(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise SweepError(f"kick-sweep: --model_args item {part!r} is not key=value")
        key, value = part.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kick-sweep", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML or TOML file with any of the settings below")
    p.add_argument("--out", help="results folder (index.json + one folder per cell)")
    p.add_argument("--models", help="comma-separated Hub ids or local folders (or full kick-hf model_args strings in the config)")
    p.add_argument("--methods", help="comma-separated: magnitude, wanda, sparsegpt, gptq")
    p.add_argument("--sparsities", help="comma-separated unstructured sparsities, e.g. 0.1,0.3,0.5")
    p.add_argument("--patterns", help="comma-separated: unstructured and/or N:M, e.g. unstructured,2:4")
    p.add_argument("--bits", help="comma-separated weight bits (16 = none); gptq uses those below 16")
    p.add_argument("--tasks", help="comma-separated lm-eval task or group names")
    p.add_argument("--limit", type=float, help="lm-eval --limit per task (count if >= 1, else fraction)")
    p.add_argument("--batch_size", help="lm-eval --batch_size")
    p.add_argument("--device", help="lm-eval --device")
    p.add_argument("--model_args", help="extra kick-hf model_args for every cell, e.g. nsamples=32,seqlen=512")
    p.add_argument("--cache_dir", help="compressed-weight cache folder (default $KICK_CACHE_DIR or ~/.cache/kick)")
    p.add_argument("--prune_and_quantize", choices=["true", "false"], help="also cross pruning cells with --bits < 16")
    p.add_argument("--wikitext", choices=["auto", "true", "false"], help="add lm-eval's wikitext (needs the Hub); auto = when reachable")
    p.add_argument("--runner", choices=["subprocess", "inprocess"], help="subprocess isolates cells (default)")
    p.add_argument("--include_path", help="extra folder(s) of task YAMLs")
    p.add_argument("--dry_run", action="store_true", help="list the cells and exit")
    return p


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    if args.config:
        settings.update(load_config_file(args.config))
    for key in (*GRID_KEYS, "limit", "batch_size", "device", "cache_dir", "wikitext", "runner", "include_path", "out",
                "prune_and_quantize"):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if args.model_args:
        settings["model_args"] = {**(settings.get("model_args") or {}), **_parse_model_args(args.model_args)}
    if isinstance(settings.get("limit"), float) and settings["limit"].is_integer() and settings["limit"] >= 1:
        settings["limit"] = int(settings["limit"])
    if not settings.get("out"):
        raise SweepError("kick-sweep: no results folder; pass --out DIR or set 'out:' in the config")
    if not _as_list(settings["tasks"]):
        raise SweepError("kick-sweep: no tasks given; use --tasks name[,name] or 'tasks:' in the config")
    if settings["runner"] not in ("subprocess", "inprocess"):
        raise SweepError(f"kick-sweep: runner={settings['runner']!r}; accepted: subprocess | inprocess")
    return settings


def main(argv: Sequence[str] | None = None, runner: Runner | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = resolve_settings(args)
        tasks = grid_tasks(settings)
        cells = plan_cells(settings, tasks)
        if args.dry_run:
            for cell in cells:
                sys.stdout.write(f"{cell.cell_id}\t{cell.model_args}\n")
            return 0
        manager = task_manager(settings.get("include_path"))
        check_tasks(tasks, manager)
    except SweepError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    if runner is None and settings["runner"] == "inprocess":
        runner = inprocess_runner(settings.get("include_path"), manager)
    elif runner is None:
        runner = subprocess_runner(settings.get("include_path"))
    out_dir = Path(settings["out"]).expanduser()
    try:
        outcome = run_sweep(cells, out_dir, runner, settings=settings)
    except (SweepError, OSError) as err:  # unreadable index.json, unwritable --out
        sys.stderr.write(f"{err}\n")
        return 2
    sys.stdout.write(
        f"kick-sweep: {len(outcome.ran)} ran, {len(outcome.skipped)} already done, {len(outcome.failed)} failed; "
        f"results in {out_dir} (report: kick-report {out_dir})\n"
    )
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
