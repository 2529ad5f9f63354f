"""The sweep's settings: one frozen, typed :class:`SweepSettings` built once from the defaults, a config file and
the command line, every value checked there (kick-sweep's refusals name the setting, the value and what is
accepted), so the grid and the launchers read attributes, never string keys."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from kick_common.args import ArgsError, as_bool, as_number, parse_kv
from kick_models.compression.methods import SWEEP_DEFAULT_METHODS
from kick_study.cores import machine_cores

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
RAY_ONLY_KEYS = ("address", "gpus_per_cell", "cpus_per_cell")
LAUNCHERS = ("serial", "ray")  # kick_study.launchers and kick_study.ray_launcher


class SweepError(ValueError):
    """A sweep setting is wrong; the message names the value and what is accepted."""


# --------------------------------------------------------------------------- the typed settings
@dataclass(frozen=True)
class MethodEntry:
    """A ``{name: {params}}`` item of ``methods``: one cell with exactly these settings, never crossed with the grid."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExternalEntry:
    """One ``external`` checkpoint, checked: evaluated as it is and paired with (and KL to) its dense parent."""

    path: str  # a folder (a .gguf file's folder) or a Hub id
    parent: str  # one of the sweep's models
    label: str
    gguf_file: str | None = None
    model_args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSettings:
    """Everything a sweep was asked to do, typed and checked (built by :meth:`from_mapping`, whose defaults are
    :data:`DEFAULTS`); the grid, the launchers and the index read its attributes.

    ``methods`` holds plain method names (lower case) and :class:`MethodEntry` items in the order given;
    ``patterns`` holds ``None`` for unstructured and ``(n, m)`` for N:M; ``wikitext`` is ``None`` for
    "when the Hub answers"; ``cpus_per_cell`` is set only under the Ray launcher.
    """

    models: tuple[str, ...]
    methods: tuple[str | MethodEntry, ...]
    sparsities: tuple[float, ...]
    patterns: tuple[tuple[int, int] | None, ...]
    bits: tuple[int, ...]
    tasks: tuple[str, ...]
    limit: int | float | None  # lm-eval's --limit: a count, or a fraction below 1
    batch_size: int | str  # as lm-eval reads it: a count, auto or auto:N
    device: str | None
    model_args: Mapping[str, Any]  # for every cell; each cell gets those its compression uses
    wikitext: bool | None
    prune_and_quantize: bool
    runner: str
    cache_dir: str | None
    include_path: tuple[str, ...]
    seeds: tuple[int, ...]
    launcher: str
    jobs: int  # cells at once on this machine's cores (the serial launcher)
    address: str | None
    gpus_per_cell: float | None
    cpus_per_cell: int | None
    noise_floor: bool
    external: tuple[ExternalEntry, ...]
    out: str | None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, complete: bool = False) -> SweepSettings:
        """The settings of ``raw`` (the defaults updated by a config file and the command line), every value
        checked first. ``complete``: also require what a run needs (a results folder and tasks)."""
        unknown = set(raw) - set(DEFAULTS) - {"out"}
        if unknown:
            raise SweepError(f"kick-sweep: unknown setting(s) {sorted(unknown)}; accepted: {sorted(DEFAULTS)} and out")
        raw = {**DEFAULTS, **raw}
        check_settings(raw)
        if complete and not raw.get("out"):
            raise SweepError("kick-sweep: no results folder; pass --out DIR or set 'out:' in the config")
        if complete and not as_list(raw["tasks"]):
            raise SweepError("kick-sweep: no tasks given; use --tasks name[,name] or 'tasks:' in the config")
        if raw["runner"] not in ("subprocess", "inprocess"):
            raise SweepError(f"kick-sweep: runner={raw['runner']!r}; accepted: subprocess | inprocess")
        launcher, address, gpus, cpus = _launcher_values(raw)
        jobs = resolve_jobs(raw["jobs"])
        if jobs > 1 and launcher == "ray":
            raise SweepError(f"kick-sweep: jobs={jobs} shares this machine's cores among cells; with --launcher "
                             "ray, Ray places the cells (use --cpus-per-cell); accepted: jobs=1 with ray")
        return cls(
            models=tuple(as_list(raw["models"])),
            methods=tuple(_typed_methods(raw["methods"])),
            sparsities=tuple(float(as_number(s)) for s in as_list(raw["sparsities"])),
            patterns=tuple(_patterns(raw["patterns"])),
            bits=tuple(int(as_number(b)) for b in as_list(raw["bits"])),
            tasks=tuple(str(t) for t in as_list(raw["tasks"])),
            limit=_limit(raw["limit"]),
            batch_size=raw["batch_size"],
            device=None if raw["device"] is None else str(raw["device"]),
            model_args=model_args_setting(raw["model_args"]),
            wikitext=_wikitext(raw["wikitext"]),
            prune_and_quantize=_flag("prune_and_quantize", raw["prune_and_quantize"]),
            runner=raw["runner"],
            cache_dir=None if raw["cache_dir"] is None else str(raw["cache_dir"]),
            include_path=tuple(str(p) for p in as_list(raw["include_path"])),
            seeds=tuple(parse_seeds(raw["seeds"])),
            launcher=launcher, jobs=jobs, address=address, gpus_per_cell=gpus, cpus_per_cell=cpus,
            noise_floor=_flag("noise_floor", raw["noise_floor"]),
            external=tuple(checked_external(raw)),
            out=None if raw.get("out") is None else str(raw["out"]),
        )

    def record(self) -> dict[str, Any]:
        """The settings as plain JSON values, in the config file's vocabulary (for ``index.json``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["methods"] = [m if isinstance(m, str) else {m.name: dict(m.params)} for m in self.methods]
        out["patterns"] = [pattern_text(p) for p in self.patterns]
        out["external"] = [{**dataclasses.asdict(e), "model_args": dict(e.model_args)} for e in self.external]
        out["wikitext"] = "auto" if self.wikitext is None else self.wikitext
        out["model_args"] = dict(self.model_args)
        out["include_path"] = ",".join(self.include_path) or None  # the folders as --include_path takes them
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @property
    def method_names(self) -> tuple[str, ...]:
        """The plain names of ``methods`` (what the grid crosses; entries are their own cells)."""
        return tuple(m for m in self.methods if isinstance(m, str))


def pattern_text(pattern: tuple[int, int] | None) -> str:
    return "unstructured" if pattern is None else f"{pattern[0]}:{pattern[1]}"


def _typed_methods(value: Any) -> list[str | MethodEntry]:
    out: list[str | MethodEntry] = []
    for entry in as_list(value):
        if isinstance(entry, Mapping):
            (name, params), = entry.items()
            out.append(MethodEntry(str(name).strip().lower(), dict(params or {})))
        else:
            out.append(str(entry).strip().lower())
    return out


def _patterns(value: Any) -> list[tuple[int, int] | None]:
    from kick_models.config import parse_pattern

    return [parse_pattern(p) for p in as_list(value)] or [None]


def _limit(value: Any) -> int | float | None:
    """lm-eval's --limit: a count (an int, however written) when >= 1, else a fraction."""
    if value is None:
        return None
    number = as_number(value)
    return int(number) if number.is_integer() and number >= 1 else number


def _wikitext(value: Any) -> bool | None:
    if str(value).strip().lower() == "auto":
        return None
    try:
        return as_bool(value, key="wikitext", lenient=True)
    except ArgsError:
        raise SweepError(f"kick-sweep: wikitext={str(value).strip().lower()!r}; accepted: auto | true | false") from None


def _flag(key: str, value: Any) -> bool:
    try:
        return as_bool(value, key=key, lenient=True, default=False)
    except ArgsError:
        raise SweepError(f"kick-sweep: invalid {key}={value!r}; accepted: true | false") from None


def resolve_jobs(value: Any) -> int:
    """``jobs``: a whole number >= 1, or ``auto`` (one cell per core)."""
    if value is None:
        return 1
    if str(value).strip().lower() == "auto":
        return machine_cores()
    jobs = as_number(value)
    if jobs is None or jobs < 1 or not float(jobs).is_integer():
        raise SweepError(f"kick-sweep: invalid jobs={value!r}; accepted: a whole number >= 1, or auto (one cell per core)")
    return int(jobs)


def _launcher_values(raw: Mapping[str, Any]) -> tuple[str, str | None, float | None, int | None]:
    """(launcher, address, gpus_per_cell, cpus_per_cell), checked (CPUs are whole: they are thread counts)."""
    launcher = str(raw.get("launcher") or "serial").strip().lower()
    if launcher not in LAUNCHERS:
        raise SweepError(f"kick-sweep: launcher={raw['launcher']!r}; accepted: {' | '.join(LAUNCHERS)}")
    if launcher != "ray":
        given = [k for k in RAY_ONLY_KEYS if raw.get(k) is not None]
        if given:
            raise SweepError(f"kick-sweep: {', '.join(given)} only apply with --launcher ray (launcher={launcher!r})")
        return launcher, None, None, None
    gpus = None
    if raw.get("gpus_per_cell") is not None:
        gpus = as_number(raw["gpus_per_cell"])
        if gpus is None or gpus < 0:
            raise SweepError(f"kick-sweep: gpus_per_cell={raw['gpus_per_cell']!r}; accepted: a number >= 0 "
                             "(a fraction such as 0.5 lets cells share a GPU)")
    cpus = 1.0 if raw.get("cpus_per_cell") is None else as_number(raw["cpus_per_cell"])
    if cpus is None or cpus < 1 or not cpus.is_integer():
        raise SweepError(f"kick-sweep: cpus_per_cell={raw['cpus_per_cell']!r}; accepted: a whole number >= 1")
    address = None if raw.get("address") is None else (str(raw["address"]).strip() or None)
    return launcher, address, gpus, int(cpus)


# --------------------------------------------------------------------------- reading raw values
def as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def is_local(path: str) -> bool:
    """A path on this machine (or meant to be) rather than a Hub id ``org/name``."""
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists() or not _HUB_ID.match(path)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


def checked_external(settings: Mapping[str, Any]) -> list[ExternalEntry]:
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
        if is_local(path):
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
        out.append(ExternalEntry(path=path, parent=parent, label=label, gguf_file=gguf_file,
                                 model_args=dict(entry.get("model_args") or {})))
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

