"""Read lm-eval results files back into (model, compression setting) → task scores, whoever ran them.

Works on any ``results_*.json`` lm-eval 0.4.13 writes: from ``kick-sweep``, from a hand-run
``lm_eval --model kick-hf`` (its own methods, load-time quantizers, checkpoints with ``parent=``),
from stock ``--model hf`` on a ``kick-compress`` export (its ``kick_compression.json`` says how it
was compressed), or from any other run that :mod:`kick_study.parents` pairs with a dense parent.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from kick_common.args import parse_kv
from kick_models.achieved import SPARSITY_TOLERANCE, compressed_sparsity
from kick_models.compression.registry import calibrates

log = logging.getLogger(__name__)

EXPORT_RECORD = "kick_compression.json"


class ReportError(ValueError):
    """The results folder cannot be reported on; the message names the folder and what was expected."""


@dataclass(frozen=True)
class Setting:
    """One compression setting: what a table row and a plot line are made of (sparsity aside)."""

    method: str = "none"
    pattern: str = "unstructured"
    wbits: int = 16
    # a model kick did not compress itself (a library's checkpoint, a load-time quantizer, a run made
    # elsewhere): its label and library, so two "GPTQ W4" rows from two libraries stay apart; "" for kick's own
    source: str = ""

    @property
    def is_dense(self) -> bool:
        return self.method == "none"

    @property
    def is_external(self) -> bool:
        return bool(self.source)

    @property
    def label(self) -> str:
        if self.is_dense:
            return "dense"
        if self.source:
            return self.source
        parts = [self.method]
        if self.pattern != "unstructured":
            parts.append(self.pattern)
        if self.wbits < 16:
            parts.append(f"w{self.wbits}")
        return " ".join(parts)


@dataclass
class Run:
    """One lm-eval results file: a model under one compression, with every task's metrics."""

    model: str
    setting: Setting
    sparsity: float
    results: dict[str, dict[str, Any]]
    higher_is_better: dict[str, dict[str, bool]]
    group_subtasks: dict[str, list[str]]
    path: Path
    date: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # calibration seed; None for settings that calibrate on nothing
    floor: str | None = None  # "dense" / "recompressed": a noise-floor re-run (kick_study.floor), kept apart
    warnings: tuple[str, ...] = ()  # compression did not do what the setting says (kick_study.flags)


def _model_args(config: Mapping[str, Any]) -> dict[str, Any]:
    args = config.get("model_args") or {}
    if isinstance(args, str):
        return parse_kv(args, strict=False)
    return dict(args) if isinstance(args, Mapping) else {}


SOURCE_KINDS = ("checkpoint", "load-time")  # config.kick["source"]["kind"] values that are not kick's own compression


def source_tag(source: Mapping[str, Any]) -> str:
    """The row label of a model kick did not compress: its short label, then library and version."""
    label = str(source.get("label") or source.get("checkpoint") or source.get("kind") or "external")
    library = " ".join(str(source[k]) for k in ("library", "version") if source.get(k))
    return f"{label} · {library}" if library and library.split()[0].lower() not in label.lower() else label


def _external_setting(kick: Mapping[str, Any], comp: Mapping[str, Any]) -> tuple[Setting, float] | None:
    """(setting, sparsity) of a kick-hf run whose ``config.kick["source"]`` is a checkpoint or a load-time quantizer."""
    source = kick.get("source")
    if not isinstance(source, Mapping) or source.get("kind") not in SOURCE_KINDS:
        return None
    declared = source.get("declared") if isinstance(source.get("declared"), Mapping) else {}
    bits = declared.get("bits", comp.get("wbits", 16))
    wbits = int(bits) if isinstance(bits, (int, float)) and not isinstance(bits, bool) and 0 < bits < 16 else 16
    sparsity = declared.get("sparsity", comp.get("target_sparsity", 0.0))
    sparsity = float(sparsity) if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool) else 0.0
    method = str(kick.get("method") or source.get("kind"))
    pattern = str(declared.get("pattern") or comp.get("pattern") or "unstructured")
    return Setting(method=method, pattern=pattern, wbits=wbits, source=source_tag(source)), sparsity


def _compression_of(data: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(model name, compression dict) from kick-hf's model info, model_args, or an export record."""
    config = data.get("config") if isinstance(data.get("config"), Mapping) else {}
    args = _model_args(config)
    kick = config.get("kick") if isinstance(config.get("kick"), dict) else None
    pretrained = args.get("pretrained")
    model = (kick or {}).get("model") or pretrained or ("embedded" if config.get("model") == "kick-hf" else "unknown")
    if kick and isinstance(kick.get("compression"), dict):
        return str(model), dict(kick["compression"])
    if kick and isinstance(kick.get("source"), Mapping):  # a checkpoint or load-time quantizer: its source says it all
        return str(model), {}
    record = Path(str(pretrained)) / EXPORT_RECORD if pretrained else None
    if record is not None and record.is_file():
        try:
            exported = json.loads(record.read_text(encoding="utf-8"))
            comp = ((exported.get("summary") or {}).get("compression")) or {}
            return str(exported.get("source_model", model)), dict(comp)
        except (OSError, ValueError):
            log.warning("kick-report: unreadable %s; treating %s as dense", record, pretrained)
    from kick_models.config import ConfigError, build_config, compression_keys

    keys = compression_keys()
    try:
        cfg = build_config({k: v for k, v in args.items() if k in keys})
    except ConfigError as err:
        log.warning("kick-report: %s", err)
        return str(model), {}
    return str(model), cfg.to_dict()


def _field(data: Mapping[str, Any], key: str, path: Path, inner: type) -> dict[str, Any]:
    """``data[key]`` as a mapping whose values are ``inner`` (``dict`` or ``list``); a field of the wrong
    shape is left out with one warning, entries of the wrong shape are dropped with one warning."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        log.warning("kick-report: %s: '%s' is %s, not a mapping; ignoring it", path, key, type(value).__name__)
        return {}
    good = {k: v for k, v in value.items() if isinstance(v, inner)}
    if len(good) < len(value):
        bad = sorted(str(k) for k in value if k not in good)
        log.warning("kick-report: %s: '%s' entries %s are not %s; ignoring them", path, key, bad[:3],
                    "mappings" if inner is dict else "lists")
    return good


def _nested(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...``, or None as soon as a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _sparsity(comp: Mapping[str, Any], path: Path) -> float:
    """The target sparsity, refused (the file is skipped with this reason) unless a number in [0, 1]."""
    key = "target_sparsity" if "target_sparsity" in comp else "sparsity"
    raw = comp.get(key, 0.0)
    try:
        value = float(raw or 0.0)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ReportError(f"kick-report: {path}: invalid {key} {raw!r}; accepted: a number in [0, 1]")
    return value


def _finite_metrics(results: dict[str, dict[str, Any]], path: Path) -> dict[str, dict[str, Any]]:
    """Drop NaN / infinite metric values with one warning naming them: they would give meaningless verdicts."""
    bad = []
    for task, metrics in results.items():
        for key, value in list(metrics.items()):
            if isinstance(value, float) and not math.isfinite(value) and "_stderr," not in key:
                bad.append(f"{task} {key}={value}")
                del metrics[key]
    if bad:
        log.warning("kick-report: %s: refusing non-finite metric values %s; those cells show no score and no verdict",
                    path, ", ".join(bad[:5]) + (" …" if len(bad) > 5 else ""))
    return results


def _unrecorded_gap(setting: Setting, target: float, result: Any) -> str | None:
    """What kick-hf's own check (kick_models.achieved) would have said, for files written without it.

    A compressed setting with no sparsity and 16-bit weights is a no-op. With the engine's per-bucket
    accounting the check is kick-hf's; with only the whole-block figure (which counts matrices left dense
    on request) just "nothing was pruned" is said, so a skipped expert is not taken for a failure."""
    if setting.is_dense:
        return None
    if target == 0 and setting.wbits >= 16 and setting.pattern == "unstructured":
        return (f"method={setting.method} with no sparsity, no pattern and 16-bit weights compresses nothing; "
                "the model is dense")
    if target == 0 or not isinstance(result, Mapping):
        return None
    try:
        achieved = compressed_sparsity(result)
    except (AttributeError, KeyError, TypeError):
        achieved = None
    whole = result.get("achieved_sparsity")
    if achieved is None and isinstance(whole, (int, float)) and whole <= SPARSITY_TOLERANCE < target:
        achieved = float(whole)
    elif achieved is None:
        return None
    short = achieved < target - SPARSITY_TOLERANCE
    over = achieved > target + SPARSITY_TOLERANCE and setting.wbits >= 16  # rounding to a grid adds zeros
    if short or over:
        return (f"method={setting.method}: achieved sparsity {achieved:.4f}, target {target:g} (tolerance "
                f"{SPARSITY_TOLERANCE}); the results are not those of the setting recorded")
    return None


def _warnings(data: Mapping[str, Any], setting: Setting, target: float) -> tuple[str, ...]:
    """kick-hf's recorded compression warnings (``config.kick.warnings``), else the gap the file itself shows."""
    recorded = _nested(data, "config", "kick", "warnings")
    if isinstance(recorded, list) and recorded:
        return tuple(str(w) for w in recorded)
    if setting.is_external:  # another library compressed it: only kick-hf's own checks of it apply
        return ()
    gap = _unrecorded_gap(setting, target, _nested(data, "config", "kick", "result"))
    return (gap,) if gap else ()


def parse_run(path: Path) -> Run:
    """A :class:`Run` from one lm-eval results file (a :class:`ReportError` if it is not one)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ReportError(f"kick-report: {path} is not an lm-eval results file (no 'results' mapping)")
    if not isinstance(data.get("config") or {}, Mapping):
        raise ReportError(f"kick-report: {path}: 'config' is not a mapping")
    model, comp = _compression_of(data)
    kick = _nested(data, "config", "kick")
    kick = kick if isinstance(kick, Mapping) else {}
    method = str(comp.get("method", "none"))
    pattern = str(comp.get("pattern") or "unstructured")
    wbits = int(comp.get("wbits", 16))
    sparsity = _sparsity(comp, path)
    if method == "none":
        pattern, wbits, sparsity = "unstructured", 16, 0.0
    seed = comp.get("seed") if method != "none" and (calibrates(method) or wbits < 16) else None
    setting = Setting(method=method, pattern=pattern, wbits=wbits)
    external = _external_setting(kick, comp)
    if external is not None:
        (setting, sparsity), seed = external, None
    results = _finite_metrics(_field(data, "results", path, dict), path)
    if not results:
        raise ReportError(f"kick-report: {path} holds no task results")
    for name, values in _field(data, "groups", path, dict).items():
        results.setdefault(name, values)
    try:
        date = float(data.get("date") or path.stat().st_mtime)
    except (TypeError, ValueError):
        date = path.stat().st_mtime
    return Run(
        model=model,
        setting=setting,
        sparsity=round(sparsity, 6),
        results=results,
        higher_is_better={k: dict(v) for k, v in _field(data, "higher_is_better", path, dict).items()},
        group_subtasks={k: [str(t) for t in v] for k, v in _field(data, "group_subtasks", path, list).items()},
        path=path,
        date=date,
        extra={"achieved_sparsity": _nested(kick, "result", "achieved_sparsity"),
               "achieved_bits": _nested(kick, "result", "achieved_bits"),
               "fidelity": _nested(kick, "result", "fidelity") or kick.get("fidelity"),
               "numerics": kick.get("numerics"),
               "compression": comp, "source": kick.get("source"), "lm_eval_model": _nested(data, "config", "model"),
               "model_args": _model_args(data.get("config") or {})},
        seed=int(seed) if seed is not None else None,
        floor=_nested(data, "config", "kick", "numerics", "floor"),
        warnings=_warnings(data, setting, sparsity),
    )


def read_runs(root: Path) -> list[Run]:
    """Every results file under ``root`` (a folder, or one results file); junk is skipped with one warning."""
    paths = [root] if root.is_file() else sorted(root.rglob("results_*.json"))
    runs = []
    for path in paths:
        try:
            run = parse_run(path)
        except Exception as err:  # noqa: BLE001 — one junk file must not stop the report
            log.warning("kick-report: skipping %s (%s)", path, err)
            continue
        if not run.floor:  # noise-floor re-runs are read by kick_study.floor
            runs.append(run)
    return runs


def newest(runs: list[Run]) -> list[Run]:
    """One run per (model, setting, sparsity, seed, tasks): the newest, when a setting was run twice."""
    kept: dict[tuple, Run] = {}
    for run in runs:
        key = (run.model, run.setting, run.sparsity, run.seed, tuple(sorted(run.results)))
        if key not in kept or kept[key].date <= run.date:
            kept[key] = run
    return list(kept.values())


def _with_label(run: Run, label: str) -> Run:
    source = {**run.extra["source"], "label": label}
    setting = Setting(run.setting.method, run.setting.pattern, run.setting.wbits, source_tag(source))
    return replace(run, setting=setting, extra={**run.extra, "source": source})


def relabel(runs: list[Run], labels: Mapping[Path, str]) -> list[Run]:
    """Models kick did not compress, labelled as the sweep config named them (results file → label)."""
    wanted = {path.resolve(): label for path, label in labels.items()}
    return [_with_label(r, wanted[r.path.resolve()]) if r.setting.is_external and r.path.resolve() in wanted else r
            for r in runs]


def distinct_sources(runs: list[Run]) -> list[Run]:
    """Two checkpoints that read as the same row (same label, library and bits) get their checkpoint's name added,
    so they are never pooled as if they were calibration seeds of one setting."""
    groups: dict[tuple, set[str]] = {}
    for run in runs:
        if run.setting.is_external:
            groups.setdefault((run.model, run.setting), set()).add(str((run.extra.get("source") or {}).get("checkpoint")))
    names = {key: _short_names(paths) for key, paths in groups.items() if len(paths) > 1}
    out = []
    for run in runs:
        key = (run.model, run.setting)
        if run.setting.is_external and key in names:
            source = run.extra.get("source") or {}
            name = names[key][str(source.get("checkpoint"))]
            run = _with_label(run, f"{source.get('label') or run.setting.method} [{name}]")
        out.append(run)
    return out


def _short_names(paths: set[str]) -> dict[str, str]:
    """Each path's shortest tail (last part, then last two, …) that no other path in the set shares."""
    parts = {p: Path(p.rstrip("/")).parts for p in paths}
    for k in range(1, max(len(v) for v in parts.values()) + 1):
        tails = {p: "/".join(v[-k:]) for p, v in parts.items()}
        if len(set(tails.values())) == len(tails):
            return tails
    return {p: p for p in paths}


def load_runs(results_dir: str | Path) -> list[Run]:
    """Every results file under ``results_dir`` (newest wins when a setting was run twice); a file
    that cannot be read is skipped with one warning. Noise-floor re-runs are left to :mod:`kick_study.floor`."""
    root = Path(results_dir).expanduser()
    if not root.is_dir():
        raise ReportError(
            f"kick-report: {str(root)!r} is not a folder; pass the --out folder of kick-sweep or lm_eval --output_path")
    runs = newest(distinct_sources(read_runs(root)))
    if not runs:
        raise ReportError(
            f"kick-report: no lm-eval results (results_*.json) under {str(root)!r}; run kick-sweep --out {root} first"
        )
    return runs


def metric_keys(task_results: Mapping[str, Any]) -> list[str]:
    """The task's ``metric,filter`` keys in lm-eval's order, without stderr entries."""
    return [k for k in task_results if "," in k and "_stderr," not in k]


def primary_metric(task: str, runs: list[Run], overrides: Mapping[str, str] | None = None) -> str | None:
    """The metric a task is reported by: an override, else the first metric lm-eval lists for it."""
    for run in runs:
        if task in run.results:
            keys = metric_keys(run.results[task])
            wanted = (overrides or {}).get(task)
            if wanted:
                match = [k for k in keys if k == wanted or k.split(",")[0] == wanted]
                if not match:
                    raise ReportError(f"kick-report: task {task!r} has no metric {wanted!r}; accepted: {', '.join(keys)}")
                return match[0]
            return keys[0] if keys else None
    return None


def score(run: Run, task: str, metric: str) -> float | None:
    value = run.results.get(task, {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def higher_is_better(runs: list[Run], task: str, metric: str) -> bool:
    name = metric.split(",")[0]
    for run in runs:
        flag = run.higher_is_better.get(task, {}).get(name)
        if flag is not None:
            return bool(flag)
    return not any(word in name for word in ("perplexity", "bits_per_byte", "bpb", "loss"))


def top_level_tasks(runs: list[Run]) -> list[str]:
    """Tasks and groups that are nobody's subtask, in first-seen order."""
    children = {c for run in runs for subs in run.group_subtasks.values() for c in subs}
    seen: list[str] = []
    for run in runs:
        for task in run.results:
            if task not in children and task not in seen:
                seen.append(task)
    return seen
