"""The sweep's grid: the cells its settings (:mod:`kick_study.settings`) expand to, and the task list.

A grid is models × methods × sparsities × patterns × bits, evaluated on a list of tasks. The dense
model and the perplexity contrast (``kick_ppl_heldout``, plus ``wikitext`` when the Hub is reachable)
are always part of it; every cell's compression is checked before anything runs. Beside the grid, a
``methods`` entry written as ``{name: {params}}`` is one cell with exactly those settings (a load-time
quantizer, or one bit width of a kick method), and each ``external`` entry is one cell that evaluates a
checkpoint kick did not make against its dense parent (``pretrained=PATH,parent=MODEL``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from kick_common.args import format_kv, parse_kv
from kick_common.env import hub_reachable
from kick_models.compression.registry import is_quantizer, param_owners
from kick_study.cores import threads_per_job
from kick_study.settings import MethodEntry, SweepError, SweepSettings, as_list, is_local, pattern_text, sparsity_label

log = logging.getLogger(__name__)

PPL_TASK = "kick_ppl_heldout"
WIKITEXT_TASK = "wikitext"
EXTERNAL_METHOD = "checkpoint"  # Cell.method of an external checkpoint (the name kick-hf records for it)


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
    seed: int | None = None  # calibration seed, for the methods that calibrate
    threads: int | None = None  # torch threads for this cell (None: the sweep's own); set for noise-floor cells
    floor: str | None = None  # "dense" / "recompressed" for the noise-floor cells (kick_study.floor)
    label: str | None = None  # an external checkpoint's label

    @property
    def cell_id(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", self.model.split("=")[-1].rstrip("/").split("/")[-1])[:40] or "model"
        spec = f"{self.method}-{self.pattern.replace(':', 'of')}-{sparsity_label(self.sparsity)}-w{self.wbits}"
        if self.label:
            spec = f"{self.method}-{re.sub(r'[^A-Za-z0-9.]+', '-', self.label)[:40]}"
        if self.seed is not None:
            spec += f"-seed{self.seed}"
        if self.floor is not None:
            spec += "-floor"
        digest = hashlib.sha256(
            json.dumps([self.model_args, sorted(self.tasks), self.limit], sort_keys=True).encode()
        ).hexdigest()[:8]
        return f"{slug}__{spec}__{digest}"

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": list(self.tasks), "cell_id": self.cell_id}


def _model_fragment(model: str) -> str:
    """``org/name`` → ``pretrained=org/name``; ``embedded`` → kick-hf's built-in SmolLM2 (no pretrained);
    a full ``key=value,...`` string passes through."""
    if model.strip().lower() == "embedded":
        return ""
    return model if "=" in model else f"pretrained={model}"


def _compression_settings(settings: SweepSettings) -> Iterable[tuple[str, float, str, int]]:
    """(method, sparsity, pattern, wbits) for every cell: the dense baseline first, then the grid.

    Pruning methods cross unstructured sparsities and N:M patterns (N:M fixes its own sparsity),
    at 16 bits unless ``prune_and_quantize`` crosses them with ``bits`` too; a quantization method
    (the registry's kind ``quantize``: GPTQ, RTN, AWQ, plug-ins) takes the ``bits`` below 16.
    """
    yield "none", 0.0, "unstructured", 16
    bits = settings.bits or (16,)
    for method in settings.method_names:
        if method == "none" or _loads_quantized(method):  # a load-time quantizer is one cell of its own
            continue
        if is_quantizer(method):
            for b in bits:
                if b < 16:
                    yield method, 0.0, "unstructured", b
            continue
        for b in (bits if settings.prune_and_quantize else (16,)):
            for pattern in settings.patterns or (None,):
                if pattern is None:
                    for s in settings.sparsities:
                        if s > 0:
                            yield method, s, "unstructured", b
                else:
                    yield method, 1.0 - pattern[0] / pattern[1], pattern_text(pattern), b


def plan_cells(settings: SweepSettings, tasks: Sequence[str]) -> list[Cell]:
    """Every cell of the grid, each one's compression checked with ``build_config`` up front."""
    if not settings.models:
        raise SweepError("kick-sweep: no models given; use --models org/name[,path,...] or 'models:' in the config")
    extra = dict(settings.model_args)
    if settings.cache_dir:
        extra.setdefault("cache_dir", settings.cache_dir)
    grid = list(_compression_settings(settings))
    seeds = list(settings.seeds)
    if seeds and "seed" in extra:
        raise SweepError("kick-sweep: seed is set both in model_args and as seeds; accepted: one of the two")
    owners = param_owners()  # a method's own model_args go only to that method's cells
    in_grid = {m for m, *_ in grid} | {c["method"] for c in _method_entries(settings)}
    stray = sorted(k for k in extra if k in owners and not in_grid & set(owners[k]))
    if stray:
        raise SweepError(f"kick-sweep: model_args {stray[0]}={extra[stray[0]]!r} belongs to method "
                         f"{' | '.join(owners[stray[0]])}, which is not in the grid's methods")
    cells, seen = [], set()

    def add(cell: Cell) -> None:
        if cell.cell_id not in seen:
            seen.add(cell.cell_id)
            cells.append(cell)

    common = {"limit": settings.limit, "batch_size": settings.batch_size, "device": settings.device}
    for model in settings.models:
        for method, sparsity, pattern, wbits in grid:
            own = {k: v for k, v in extra.items() if k not in owners or method in owners[k]}
            comp: dict[str, Any] = {"method": method}
            if pattern != "unstructured":
                comp["pattern"] = pattern
            elif sparsity > 0:
                comp["sparsity"] = sparsity
            if wbits < 16:
                comp["wbits"] = wbits
            for cell in _seeded_cells(model, comp, own, seeds, tasks, common, (sparsity, pattern, wbits)):
                add(cell)
        for comp in _method_entries(settings):
            own = {k: v for k, v in extra.items() if k not in owners or comp["method"] in owners[k]}
            for cell in _seeded_cells(model, comp, own, seeds, tasks, common):
                add(cell)
    if settings.noise_floor:
        from kick_study.floor import floor_cells

        cells += floor_cells(cells, sweep_threads(settings), settings.batch_size)
    for cell in external_cells(settings, extra, tasks, common):
        add(cell)
    return cells


def _seeded_cells(model: Any, comp: dict[str, Any], own: Mapping[str, Any], seeds: list[int], tasks: Sequence[str],
                  common: Mapping[str, Any], shape: tuple[float, str, int] | None = None) -> list[Cell]:
    """The cells of one compression of one model (one per seed for the methods that calibrate), checked now. The
    sweep's ``model_args`` are for every cell: a cell gets only those its compression uses."""
    from kick_models.config import ConfigError, build_config
    from kick_models.ignored import ignored_args

    try:
        config = build_config({**{k: v for k, v in own.items() if k in _compression_keys()}, **comp})
    except ConfigError as err:
        raise SweepError(f"kick-sweep: grid cell {comp} is invalid: {err}") from None
    unused = ignored_args(config, dict(own))  # e.g. nsamples for dense: kick-hf would warn that it ignores them
    own = {k: v for k, v in own.items() if k not in unused}
    load_time = getattr(config.method_spec, "load_time", None)  # a load-time quantizer: its library must be here
    if load_time is not None and not load_time.installed():
        raise SweepError(f"kick-sweep: invalid methods value {config.method!r}: it needs {load_time.library}, which is "
                         f"not installed; accepted: pip install 'kick[{load_time.extra}]', or another method")
    sparsity, pattern, wbits = shape or (config.target_sparsity, config.pattern_str, config.wbits)
    out = []
    # the seed only changes the calibration draw: dense and magnitude run once
    for seed in (seeds if seeds and config.needs_calibration else [None]):
        with_seed = comp if seed is None else {**comp, "seed": seed}
        args = format_kv({**with_seed, **{k: v for k, v in own.items() if k not in with_seed}})
        out.append(Cell(model=str(model), method=config.method, sparsity=round(sparsity, 6),
                        pattern=pattern, wbits=wbits, tasks=tuple(tasks),
                        model_args=",".join(p for p in (_model_fragment(str(model)), args) if p), seed=seed, **common))
    return out


def _method_entries(settings: SweepSettings) -> list[dict[str, Any]]:
    """The ``{name: {params}}`` entries of ``methods`` and the load-time quantizers named plainly, as compression
    dicts (one cell each, never crossed with the grid)."""
    out = []
    for entry in settings.methods:
        if isinstance(entry, MethodEntry):
            out.append({"method": entry.name, **dict(entry.params)})
        elif _loads_quantized(entry):
            out.append({"method": entry})
    return out


def _loads_quantized(name: str) -> bool:
    """A registered load-time quantizer (another library quantizes as the model loads): one cell, no grid axis."""
    from kick_models.compression.registry import get_method

    try:
        return get_method(name.strip().lower()).kind == "load-time"
    except KeyError:
        return False


def _parent_value(model: str) -> str:
    """What kick-hf's ``parent=`` gets for a sweep model: ``embedded``, a Hub id, or a folder's absolute path."""
    args = parse_kv(model, strict=False) if "=" in model else {"pretrained": model}
    name = str(args.get("pretrained") or "embedded")
    return str(Path(name).expanduser().resolve()) if name != "embedded" and Path(name).expanduser().exists() else name


def external_cells(settings: SweepSettings, extra: Mapping[str, Any], tasks: Sequence[str],
                   common: Mapping[str, Any]) -> list[Cell]:
    """One kick-hf cell per ``external`` checkpoint: evaluated as it is, paired with (and KL to) its parent."""
    keys = set(_compression_keys())
    shared = {k: v for k, v in extra.items() if k not in keys}  # never re-compressed: kick's method settings do not apply
    cells = []
    for entry in settings.external:
        pretrained = str(Path(entry.path).expanduser().resolve()) if is_local(entry.path) else entry.path
        # the label travels in the results file too, so the row keeps its name away from the sweep's index
        args = {"pretrained": pretrained, "parent": _parent_value(entry.parent), "label": entry.label, **shared,
                **dict(entry.model_args)}
        if entry.gguf_file:
            args["gguf_file"] = entry.gguf_file
        cells.append(Cell(model=entry.parent, method=EXTERNAL_METHOD, sparsity=0.0, pattern="unstructured",
                          wbits=16, tasks=tuple(tasks), model_args=format_kv(args), label=entry.label, **common))
    return cells


def sweep_threads(settings: SweepSettings) -> int:
    """The torch thread count the grid's cells run with: Ray's CPUs per cell, the cores shared out among
    ``jobs`` cells at once, else this process's."""
    if settings.launcher == "ray":
        return settings.cpus_per_cell or 1
    import torch

    if settings.jobs > 1:
        return threads_per_job(settings.jobs, torch.get_num_threads())
    return torch.get_num_threads()


def _compression_keys() -> tuple[str, ...]:
    from kick_models.config import compression_keys

    return compression_keys()  # kick's own plus every registered method's parameters


# --------------------------------------------------------------------------- tasks
def task_manager(include_path: Sequence[str] | None = None, tasks: Sequence[str] = ()):
    """lm-eval's TaskManager that also sees kick's task YAMLs (and ``include_path`` if given); only those
    when they hold every one of ``tasks``."""
    return task_index(None, include_path, tuple(tasks))


@functools.lru_cache(maxsize=8)
def task_index(pretrained: str | None, include_path: Sequence[str] | None, tasks: tuple[str, ...]):
    """A TaskManager for these tasks, kept for this process's next cell: kick's tasks only when that suffices
    (3 s instead of 15 s to index all of lm-eval's), carrying ``pretrained`` as task metadata as the ``lm_eval``
    CLI does (tasks that fit prompts to the model's context read the tokenizer from it)."""
    from kick_models.registration import task_manager as kick_task_manager

    metadata = {"pretrained": pretrained} if isinstance(pretrained, str) else None
    paths = as_list(include_path) or None
    manager = kick_task_manager(paths, include_defaults=False, metadata=metadata)
    if not set(tasks) <= set(manager.all_tasks):  # lm-eval's own tasks: index them too
        manager = kick_task_manager(paths, metadata=metadata)
    return manager


def check_tasks(tasks: Sequence[str], manager) -> None:
    """Fail before any compression when a task or group name is unknown to lm-eval."""
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise SweepError(
            f"kick-sweep: unknown task(s) {', '.join(map(repr, unknown))}; accepted: any name listed by "
            "`lm_eval ls tasks` (kick tasks start with 'kick_'; add --include_path DIR for your own YAMLs)"
        )


def grid_tasks(settings: SweepSettings, online: Callable[[], bool] = hub_reachable) -> list[str]:
    """The grid's tasks plus the perplexity contrast: bundled held-out text always, wikitext when online."""
    tasks = list(settings.tasks)
    if PPL_TASK not in tasks:
        tasks.append(PPL_TASK)
    wanted = settings.wikitext  # None: when the Hub answers
    if WIKITEXT_TASK not in tasks and (wanted or (wanted is None and online())):
        tasks.append(WIKITEXT_TASK)
    return tasks


def check_every_method_has_cells(settings: SweepSettings, cells: Sequence[Cell]) -> None:
    """A method named in ``methods`` whose grid gives it no cell is an error, not a silently shorter sweep."""
    have = {c.method for c in cells}
    for name in settings.method_names:  # a {name: {params}} entry is always its own cell
        if name == "none" or name in have:
            continue
        if is_quantizer(name):
            need = f"bits below 16 (bits={list(settings.bits)!r}); accepted: e.g. bits: [4] or --bits 4,16"
        else:
            need = (f"a sparsity above 0 or an N:M pattern (sparsities={list(settings.sparsities)!r}, "
                    f"patterns={[pattern_text(p) for p in settings.patterns]!r}); accepted: e.g. --sparsities 0.5 "
                    "or --patterns 2:4")
        raise SweepError(f"kick-sweep: methods item {name!r} has no cell in this grid: it needs {need}")
