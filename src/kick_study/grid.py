"""The sweep's grid: settings (defaults, config files), the cells they expand to, and the task list.

A grid is models × methods × sparsities × patterns × bits, evaluated on a list of tasks. The dense
model and the perplexity contrast (``kick_ppl_heldout``, plus ``wikitext`` when the Hub is reachable)
are always part of it; every cell's compression is checked before anything runs. Beside the grid, a
``methods`` entry written as ``{name: {params}}`` is one cell with exactly those settings (a load-time
quantizer, or one bit width of a kick method), and each ``external`` entry is one cell that evaluates a
checkpoint kick did not make against its dense parent (``pretrained=PATH,parent=MODEL``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from kick_common.args import ArgsError, as_bool, as_number, format_kv, parse_kv
from kick_common.env import hub_reachable
from kick_models.compression.methods import SWEEP_DEFAULT_METHODS
from kick_models.compression.registry import is_quantizer, param_owners
from kick_study.cores import threads_per_job

log = logging.getLogger(__name__)

PPL_TASK = "kick_ppl_heldout"
WIKITEXT_TASK = "wikitext"
GRID_KEYS = ("models", "methods", "sparsities", "patterns", "bits", "tasks")
DEFAULTS: dict[str, Any] = {
    "models": [],
    "methods": list(SWEEP_DEFAULT_METHODS),
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
    "seeds": [],
    "launcher": "serial",
    "jobs": 1,
    "address": None,
    "gpus_per_cell": None,
    "cpus_per_cell": None,
    "noise_floor": False,
    "external": [],
}
EXTERNAL_KEYS = ("path", "label", "parent", "gguf_file", "model_args")
EXTERNAL_METHOD = "checkpoint"  # Cell.method of an external checkpoint (the name kick-hf records for it)
RAY_ONLY_KEYS = ("address", "gpus_per_cell", "cpus_per_cell")


class SweepError(ValueError):
    """A sweep setting is wrong; the message names the value and what is accepted."""


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


def as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _model_fragment(model: str) -> str:
    """``org/name`` → ``pretrained=org/name``; ``embedded`` → kick-hf's built-in SmolLM2 (no pretrained);
    a full ``key=value,...`` string passes through."""
    if model.strip().lower() == "embedded":
        return ""
    return model if "=" in model else f"pretrained={model}"


def _compression_settings(settings: Mapping[str, Any]) -> Iterable[tuple[str, float, str, int]]:
    """(method, sparsity, pattern, wbits) for every cell: the dense baseline first, then the grid.

    Pruning methods cross unstructured sparsities and N:M patterns (N:M fixes its own sparsity),
    at 16 bits unless ``prune_and_quantize`` crosses them with ``bits`` too; a quantization method
    (the registry's kind ``quantize``: GPTQ, RTN, AWQ, plug-ins) takes the ``bits`` below 16.
    """
    from kick_models.config import parse_pattern

    yield "none", 0.0, "unstructured", 16
    patterns = [parse_pattern(p) for p in as_list(settings["patterns"]) or ["unstructured"]]
    bits = [int(b) for b in as_list(settings["bits"]) or [16]]
    for method in as_list(settings["methods"]):
        if isinstance(method, Mapping) or _loads_quantized(str(method)):  # one cell of its own (_method_entries)
            continue
        method = str(method).strip().lower()
        if method == "none":
            continue
        if is_quantizer(method):
            for b in bits:
                if b < 16:
                    yield method, 0.0, "unstructured", b
            continue
        crossed = as_bool(settings.get("prune_and_quantize"), key="prune_and_quantize", lenient=True, default=False)
        for b in (bits if crossed else [16]):
            for pattern in patterns:
                if pattern is None:
                    for s in as_list(settings["sparsities"]):
                        if float(s) > 0:
                            yield method, float(s), "unstructured", b
                else:
                    yield method, 1.0 - pattern[0] / pattern[1], f"{pattern[0]}:{pattern[1]}", b


def plan_cells(settings: Mapping[str, Any], tasks: Sequence[str]) -> list[Cell]:
    """Every cell of the grid, each one's compression checked with ``build_config`` up front."""
    models = as_list(settings["models"])
    if not models:
        raise SweepError("kick-sweep: no models given; use --models org/name[,path,...] or 'models:' in the config")
    extra = dict(settings.get("model_args") or {})
    if settings.get("cache_dir"):
        extra.setdefault("cache_dir", settings["cache_dir"])
    try:
        grid = list(_compression_settings(settings))
    except ValueError as err:  # ConfigError from a pattern, or a non-number sparsity / bits
        raise SweepError(f"kick-sweep: bad grid setting: {err}") from None
    seeds = parse_seeds(settings.get("seeds"))
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

    common = {"limit": settings.get("limit"), "batch_size": settings.get("batch_size", 1), "device": settings.get("device")}
    for model in models:
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
    if as_bool(settings.get("noise_floor"), key="noise_floor", lenient=True, default=False):
        from kick_study.floor import floor_cells

        cells += floor_cells(cells, sweep_threads(settings), settings.get("batch_size", 1))
    for cell in external_cells(settings, extra, tasks, common):
        add(cell)
    return cells


def _seeded_cells(model: Any, comp: dict[str, Any], own: Mapping[str, Any], seeds: list[int], tasks: Sequence[str],
                  common: Mapping[str, Any], shape: tuple[float, str, int] | None = None) -> list[Cell]:
    """The cells of one compression of one model (one per seed for the methods that calibrate), checked now."""
    from kick_models.config import ConfigError, build_config

    try:
        config = build_config({**{k: v for k, v in own.items() if k in _compression_keys()}, **comp})
    except ConfigError as err:
        raise SweepError(f"kick-sweep: grid cell {comp} is invalid: {err}") from None
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


def _method_entries(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``{name: {params}}`` entries of ``methods`` and the load-time quantizers named plainly, as compression
    dicts (one cell each, never crossed with the grid)."""
    out = []
    for entry in as_list(settings.get("methods")):
        if isinstance(entry, Mapping):
            (name, params), = entry.items()
            out.append({"method": str(name).strip().lower(), **dict(params or {})})
        elif _loads_quantized(str(entry)):
            out.append({"method": str(entry).strip().lower()})
    return out


def _loads_quantized(name: str) -> bool:
    """A registered load-time quantizer (another library quantizes as the model loads): one cell, no grid axis."""
    from kick_models.compression.registry import get_method

    try:
        return get_method(name.strip().lower()).kind == "load-time"
    except KeyError:
        return False


def _is_local(path: str) -> bool:
    """A path on this machine (or meant to be) rather than a Hub id ``org/name``."""
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists() or not _HUB_ID.match(path)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _parent_value(model: str) -> str:
    """What kick-hf's ``parent=`` gets for a sweep model: ``embedded``, a Hub id, or a folder's absolute path."""
    args = parse_kv(model, strict=False) if "=" in model else {"pretrained": model}
    name = str(args.get("pretrained") or "embedded")
    return str(Path(name).expanduser().resolve()) if name != "embedded" and Path(name).expanduser().exists() else name


def external_cells(settings: Mapping[str, Any], extra: Mapping[str, Any], tasks: Sequence[str],
                   common: Mapping[str, Any]) -> list[Cell]:
    """One kick-hf cell per ``external`` checkpoint: evaluated as it is, paired with (and KL to) its parent."""
    keys = set(_compression_keys())
    shared = {k: v for k, v in extra.items() if k not in keys}  # never re-compressed: kick's method settings do not apply
    cells = []
    for entry in checked_external(settings):
        path = entry["path"]
        pretrained = str(Path(path).expanduser().resolve()) if _is_local(path) else path
        # the label travels in the results file too, so the row keeps its name away from the sweep's index
        args = {"pretrained": pretrained, "parent": _parent_value(entry["parent"]), "label": entry["label"], **shared,
                **dict(entry.get("model_args") or {})}
        if entry.get("gguf_file"):
            args["gguf_file"] = entry["gguf_file"]
        cells.append(Cell(model=str(entry["parent"]), method=EXTERNAL_METHOD, sparsity=0.0, pattern="unstructured",
                          wbits=16, tasks=tuple(tasks), model_args=format_kv(args), label=entry["label"], **common))
    return cells


def sweep_threads(settings: Mapping[str, Any]) -> int:
    """The torch thread count the grid's cells run with: Ray's CPUs per cell, the cores shared out among
    ``jobs`` cells at once, else this process's."""
    if settings.get("launcher") == "ray":
        return int(settings.get("cpus_per_cell") or 1)
    import torch

    if int(settings.get("jobs") or 1) > 1:
        return threads_per_job(int(settings["jobs"]), torch.get_num_threads())
    return torch.get_num_threads()


def parse_seeds(value: Any) -> list[int]:
    """``seeds``: calibration seeds, e.g. ``[0, 1, 2]`` or ``"0,1,2"`` (LLM-KICK averages three runs)."""
    seeds = []
    for item in as_list(value):
        try:
            seed = int(str(item).strip())
        except ValueError:
            seed = -1
        if seed < 0 or str(item).strip().lstrip("+") != str(seed):
            raise SweepError(f"kick-sweep: seeds item {item!r} is not a non-negative integer; accepted: e.g. seeds: [0, 1, 2]")
        if seed not in seeds:
            seeds.append(seed)
    return seeds


def _compression_keys() -> tuple[str, ...]:
    from kick_models.config import compression_keys

    return compression_keys()  # kick's own plus every registered method's parameters


# --------------------------------------------------------------------------- tasks
def task_manager(include_path: str | None = None, tasks: Sequence[str] = ()):
    """lm-eval's TaskManager that also sees kick's task YAMLs (and ``include_path`` if given); only those
    when they hold every one of ``tasks``."""
    from kick_study.runners import task_index

    return task_index(None, include_path, tuple(tasks))


def check_tasks(tasks: Sequence[str], manager) -> None:
    """Fail before any compression when a task or group name is unknown to lm-eval."""
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise SweepError(
            f"kick-sweep: unknown task(s) {', '.join(map(repr, unknown))}; accepted: any name listed by "
            "`lm_eval ls tasks` (kick tasks start with 'kick_'; add --include_path DIR for your own YAMLs)"
        )


def grid_tasks(settings: Mapping[str, Any], online: Callable[[], bool] = hub_reachable) -> list[str]:
    """The grid's tasks plus the perplexity contrast: bundled held-out text always, wikitext when online."""
    tasks = [str(t) for t in as_list(settings["tasks"])]
    if PPL_TASK not in tasks:
        tasks.append(PPL_TASK)
    wikitext = settings.get("wikitext", "auto")
    if str(wikitext).strip().lower() == "auto":
        wanted = None
    else:
        try:
            wanted = as_bool(wikitext, key="wikitext", lenient=True)
        except ArgsError:
            raise SweepError(f"kick-sweep: wikitext={str(wikitext).strip().lower()!r}; accepted: auto | true | false") from None
    if WIKITEXT_TASK not in tasks and (wanted or (wanted is None and online())):
        tasks.append(WIKITEXT_TASK)
    return tasks



# --------------------------------------------------------------------------- checking settings
_WBITS = (2, 3, 4, 8, 16)


def _items(key: str, value: Any, accepted: str) -> list:
    """A list setting as a list: a comma-separated string, a list of plain values, or one value."""
    nested = isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value)
    if isinstance(value, Mapping) or nested:
        raise SweepError(f"kick-sweep: invalid {key}={value!r}; accepted: {accepted}, as a list or a comma-separated string")
    return as_list(value)


def _number(key: str, item: Any, accepted: str) -> float:
    """``item`` as a number, or the sweep's refusal naming ``key``."""
    value = as_number(item)
    if value is None:
        raise SweepError(f"kick-sweep: invalid {key} value {item!r}; accepted: {accepted}")
    return value


def model_args_setting(value: Any) -> dict[str, Any]:
    """``model_args`` from a config file: a mapping, or a ``key=value,...`` string as on the command line."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            return parse_kv(value, what="kick-sweep: model_args")
        except ArgsError as err:
            raise SweepError(str(err)) from None
    raise SweepError(f"kick-sweep: invalid model_args={value!r}; accepted: a mapping of kick-hf model_args or a "
                     "key=value,... string")


def _method_items(value: Any, methods: Sequence[str]) -> list:
    """The method names of ``methods``: plain names, and the name of each ``{name: {params}}`` entry."""
    if isinstance(value, (list, tuple)):
        names = []
        for entry in value:
            if isinstance(entry, Mapping):
                params = next(iter(entry.values()), None) if len(entry) == 1 else None
                if len(entry) != 1 or not (params is None or isinstance(params, Mapping)):
                    raise SweepError(f"kick-sweep: invalid methods entry {dict(entry)!r}; accepted: one method name "
                                     "mapped to its model_args, e.g. {awq: {wbits: 4}} or {bnb8: {}}")
                entry = next(iter(entry))
            names.append(entry)
        value = names
    return _items("methods", value, " | ".join(methods))


def _external_error(i: int, key: str, value: Any, accepted: str) -> SweepError:
    return SweepError(f"kick-sweep: invalid external[{i}].{key}={value!r}; accepted: {accepted}")


def checked_external(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``external`` checkpoints, each checked (keys, path on disk, GGUF file, parent among ``models``, label)."""
    value = settings.get("external") or []
    if not isinstance(value, (list, tuple)):
        raise SweepError(f"kick-sweep: invalid external={value!r}; accepted: a list of {{path, label, parent, gguf_file}}")
    models = [str(m) for m in as_list(settings.get("models"))]
    labels: set[str] = set()
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise _external_error(i, "", entry, "a mapping with path, parent, and optionally label, gguf_file, model_args")
        unknown = sorted(set(entry) - set(EXTERNAL_KEYS))
        if unknown:
            raise _external_error(i, unknown[0], entry[unknown[0]], f"keys {', '.join(EXTERNAL_KEYS)}")
        path = entry.get("path")
        if not isinstance(path, str) or not path.strip():
            raise _external_error(i, "path", path, "a checkpoint folder, a .gguf file, or a Hub id (org/name)")
        path, gguf_file = path.strip(), entry.get("gguf_file")
        if gguf_file is not None and (not isinstance(gguf_file, str) or not gguf_file.endswith(".gguf")):
            raise _external_error(i, "gguf_file", gguf_file, "a file name ending in .gguf, inside path")
        if _is_local(path):
            local = Path(path).expanduser()
            if local.is_file() and local.suffix == ".gguf" and gguf_file is None:
                path, gguf_file = str(local.parent), local.name  # a .gguf file: its folder plus gguf_file
            elif not local.is_dir():
                raise _external_error(i, "path", path, "an existing checkpoint folder or .gguf file (no such folder "
                                      "here), or a Hub id (org/name)")
            if gguf_file is not None and not (Path(path).expanduser() / gguf_file).is_file():
                raise _external_error(i, "gguf_file", gguf_file, f"a .gguf file inside {path} (it has none of that name)")
        parent = entry.get("parent")
        if not isinstance(parent, str) or parent not in models:
            raise _external_error(i, "parent", parent, f"one of models ({', '.join(models) or 'none given'}): the parent "
                                  "must be in the sweep so its dense cell runs")
        label = entry.get("label") or (gguf_file or Path(path.rstrip("/")).name)
        if not isinstance(label, str) or label in labels or "," in label or not label.strip():
            raise _external_error(i, "label", label, "a short label without commas (it is passed in kick-hf's "
                                  "model_args) used by no other external entry")
        labels.add(label)
        if not isinstance(entry.get("model_args") or {}, Mapping):
            raise _external_error(i, "model_args", entry["model_args"], "a mapping of extra kick-hf model_args")
        out.append({**entry, "path": path, "gguf_file": gguf_file, "label": label})
    return out


def check_settings(settings: Mapping[str, Any]) -> None:
    """Every grid value checked up front, so a bad one stops the sweep before any cell (none is dropped silently)."""
    from kick_models.config import method_choices, parse_pattern

    methods = method_choices()

    _items("models", settings.get("models"), "Hub ids, local folders or kick-hf model_args strings")
    _items("tasks", settings.get("tasks"), "lm-eval task or group names")
    for method in _method_items(settings.get("methods"), methods):
        if not isinstance(method, str) or method.strip().lower() not in methods:
            raise SweepError(f"kick-sweep: invalid methods value {method!r}; accepted: {' | '.join(methods)}, "
                             "or {name: {params}} for one cell with those settings")
    checked_external(settings)
    accepted = "numbers in [0, 1) (0 is the dense model, which every grid includes)"
    for item in _items("sparsities", settings.get("sparsities"), accepted):
        if not 0.0 <= _number("sparsities", item, accepted) < 1.0:
            raise SweepError(f"kick-sweep: invalid sparsities value {item!r}; accepted: {accepted}")
    accepted = "weight bits " + ", ".join(map(str, _WBITS)) + " (16 = none)"
    for item in _items("bits", settings.get("bits"), accepted):
        if _number("bits", item, accepted) not in _WBITS:
            raise SweepError(f"kick-sweep: invalid bits value {item!r}; accepted: {accepted}")
    for item in _items("patterns", settings.get("patterns"), "unstructured or N:M"):
        try:
            parse_pattern(item)
        except ValueError as err:
            raise SweepError(f"kick-sweep: invalid patterns value {item!r}: {err}") from None
    limit = settings.get("limit")
    if limit is not None and _number("limit", limit, "a count >= 1 or a fraction in (0, 1)") <= 0:
        raise SweepError(f"kick-sweep: invalid limit={limit!r}; accepted: a count >= 1 or a fraction in (0, 1)")
    try:
        as_bool(settings.get("noise_floor"), key="noise_floor", lenient=True, default=False)
    except ArgsError:
        raise SweepError(f"kick-sweep: invalid noise_floor={settings.get('noise_floor')!r}; accepted: true | false") from None
    for key in ("out", "device", "cache_dir", "include_path"):
        value = settings.get(key)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise SweepError(f"kick-sweep: invalid {key}={value!r}; accepted: a string")
    _check_models(settings.get("models"))
    _check_sparsity_labels(settings.get("sparsities"))
    _check_paths(settings)
    _check_cell_args(settings)


def _check_models(value: Any) -> None:
    """Every model a non-empty string; one that names a local folder (or a full model_args string's
    ``pretrained``) passes kick-hf's own folder checks now, not when its first cell starts."""
    from kick_models.config import ConfigError
    from kick_models.preflight import check_pretrained

    accepted = "Hub ids, local model folders, embedded, or kick-hf model_args strings"
    for model in as_list(value):
        if not isinstance(model, str) or not model.strip():
            raise SweepError(f"kick-sweep: invalid models item {model!r}; accepted: {accepted}")
        if model.strip().lower() == "embedded":
            continue
        pretrained = parse_kv(model, strict=False).get("pretrained") if "=" in model else model.strip()
        try:
            check_pretrained(pretrained)
        except ConfigError as err:
            raise SweepError(f"kick-sweep: invalid models item {model!r}: {err}") from None


def sparsity_label(sparsity: float) -> str:
    """How a cell's sparsity is written in its id (and so in folders and the report's cell names)."""
    return f"s{sparsity:.2f}"


def _check_sparsity_labels(value: Any) -> None:
    seen: dict[str, Any] = {}
    for item in as_list(value):
        label = sparsity_label(float(item))
        if label in seen and float(seen[label]) != float(item):
            raise SweepError(f"kick-sweep: sparsities {seen[label]!r} and {item!r} share the label {label} (cells are "
                             "named at two decimals), so their cells would collide; accepted: sparsities that differ "
                             "at the second decimal")
        seen.setdefault(label, item)


def _check_paths(settings: Mapping[str, Any]) -> None:
    """Folders the sweep reads or writes: include_path must exist (lm-eval skips a missing one without a word,
    and the sweep then runs every cell without those tasks); cache_dir must not be a file."""
    paths = as_list(settings.get("include_path"))
    for path in paths:
        if not Path(path).expanduser().is_dir():
            what = "a file, not a folder" if Path(path).expanduser().exists() else "no such folder"
            raise SweepError(f"kick-sweep: invalid include_path={path!r}: {what} ({Path(path).expanduser().absolute()}); "
                             "accepted: an existing folder of task YAMLs")
    serial = str(settings.get("launcher") or "serial").strip().lower() != "ray"
    if len(paths) > 1 and serial and settings.get("runner", "subprocess") == "subprocess":
        raise SweepError(f"kick-sweep: include_path={settings['include_path']!r} names {len(paths)} folders, but "
                         "lm_eval's --include_path (each subprocess cell) takes one; accepted: one folder, or several "
                         "with --runner inprocess or --launcher ray")
    cache = settings.get("cache_dir")
    if cache is not None and Path(cache).expanduser().exists() and not Path(cache).expanduser().is_dir():
        raise SweepError(f"kick-sweep: invalid cache_dir={cache!r}: a file, not a folder; accepted: a folder "
                         "(created when missing)")


def _check_cell_args(settings: Mapping[str, Any]) -> None:
    """batch_size and device as every cell's lm-eval will read them (device only where cells run here)."""
    from kick_models.config import ConfigError
    from kick_models.preflight import batch_size_ok, check_device

    batch = settings.get("batch_size")
    if batch is not None and not batch_size_ok(batch):
        raise SweepError(f"kick-sweep: invalid batch_size={batch!r}; accepted: a positive integer, auto or auto:N")
    device = settings.get("device")
    if device is not None and str(settings.get("launcher") or "serial").strip().lower() != "ray":
        try:
            check_device(device)
        except ConfigError as err:
            raise SweepError(f"kick-sweep: invalid device={device!r}: {str(err).split(': ', 2)[-1]}") from None


def check_every_method_has_cells(settings: Mapping[str, Any], cells: Sequence[Cell]) -> None:
    """A method named in ``methods`` whose grid gives it no cell is an error, not a silently shorter sweep."""
    have = {c.method for c in cells}
    for method in as_list(settings.get("methods")):
        if isinstance(method, Mapping):  # {name: {params}} is always its own cell
            continue
        name = str(method).strip().lower()
        if name == "none" or name in have:
            continue
        if is_quantizer(name):
            need = f"bits below 16 (bits={settings.get('bits')!r}); accepted: e.g. bits: [4] or --bits 4,16"
        else:
            need = (f"a sparsity above 0 or an N:M pattern (sparsities={settings.get('sparsities')!r}, "
                    f"patterns={settings.get('patterns')!r}); accepted: e.g. --sparsities 0.5 or --patterns 2:4")
        raise SweepError(f"kick-sweep: methods item {name!r} has no cell in this grid: it needs {need}")


# --------------------------------------------------------------------------- config files
def _parse_config_text(path: Path) -> Any:
    """The file's YAML or TOML document; unreadable text is a :class:`SweepError` naming the file and the place."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SweepError(f"kick-sweep: config file {str(path)!r} is not UTF-8 text (byte offset {err.start})") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SweepError(f"kick-sweep: config file {str(path)!r} is not valid TOML ({err})") from None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            place = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
            raise SweepError(f"kick-sweep: config file {str(path)!r} is not valid YAML{place} "
                             f"({getattr(err, 'problem', None) or err})") from None
    raise SweepError(f"kick-sweep: config file {str(path)!r} must end in .yaml, .yml or .toml")


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) mapping of sweep settings."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"kick-sweep: config file {str(path)!r} does not exist")
    data = _parse_config_text(path)
    if not isinstance(data, dict):
        raise SweepError(f"kick-sweep: config file {str(path)!r} must hold a mapping of settings")
    unknown = set(data) - set(DEFAULTS) - {"out"}
    if unknown:
        raise SweepError(f"kick-sweep: unknown setting(s) {sorted(unknown)} in {path}; accepted: {sorted(DEFAULTS)} and out")
    if "model_args" in data:
        data["model_args"] = model_args_setting(data["model_args"])
    return data
