"""``kick-sweep``: one lm-eval run per (model × compression) cell of a grid, resumable, failure-tolerant.

A grid is models × methods × sparsities × patterns × bits, evaluated on a list of tasks. Every
cell runs ``lm_eval --model kick-hf`` once (in a subprocess by default, so a crash or a leak in
one cell cannot take the sweep down) and keeps lm-eval's own results JSON under
``<out>/cells/<cell id>/``. ``<out>/index.json`` records every cell's settings, status, results
file or error; a rerun skips the cells already done. The dense model and the perplexity contrast
(``kick_ppl_heldout``, plus ``wikitext`` when the Hub is reachable) are always part of the grid.
``--launcher ray`` runs the cells as Ray tasks instead, in parallel on free CPUs / GPUs of one
machine or a cluster (:mod:`kick_study.ray_launcher`); this process still writes the index alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from kick_common.args import ArgsError, parse_kv
from kick_common.env import EnvError, check_environment
from kick_study.cores import machine_cores, threads_per_job
from kick_study.grid import check_every_method_has_cells, check_tasks, grid_tasks, plan_cells, sweep_threads, task_manager
from kick_study.index import load_index, run_sweep
from kick_study.runners import Runner, inprocess_runner, subprocess_runner
from kick_study.settings import GRID_KEYS, LAUNCHERS, RAY_ONLY_KEYS, SweepError, SweepSettings, load_config_file

log = logging.getLogger(__name__)


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
    p.add_argument("--wikitext", choices=["auto", "true", "false"],
                   help="add lm-eval's wikitext (needs the Hub); auto = when reachable")
    p.add_argument("--runner", choices=["subprocess", "inprocess"], help="serial launcher: subprocess isolates cells (default); "
                   "under --launcher ray every cell runs in-process in a Ray worker")
    p.add_argument("--include_path", help="extra folder(s) of task YAMLs")
    p.add_argument("--launcher", choices=list(LAUNCHERS),
                   help="serial: one cell after another here (default); ray: cells as Ray tasks, in parallel")
    p.add_argument("--address", help="with --launcher ray: the Ray cluster to join (auto | HOST:PORT); "
                   "default: start a local Ray instance for this sweep and stop it after")
    p.add_argument("--gpus-per-cell", "--gpus_per_cell", dest="gpus_per_cell",
                   help="with --launcher ray: GPUs each cell asks for (default 1 when the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-cell", "--cpus_per_cell", dest="cpus_per_cell",
                   help="with --launcher ray: CPUs each cell asks for, also its torch / OpenMP threads (default 1)")
    p.add_argument("--seeds", help="comma-separated calibration seeds, e.g. 0,1,2: one cell per seed for the methods "
                                  "that calibrate (the report shows mean ± sd and folds seed variance into intervals)")
    p.add_argument("--noise_floor", choices=["true", "false"],
                   help="also run dense and the cheapest calibrating cell again under another thread count and batch "
                        "size (the second without the cache): the report shows what numerics alone change")
    p.add_argument("--jobs", help="cells at once on this machine's CPU cores, each in its own process with its share of "
                   "the cores (a whole number, or auto: one per core; default 1). Cells needing more threads than "
                   "their share (noise-floor cells) run alone after")
    p.add_argument("--dry_run", action="store_true", help="list the cells and exit")
    return p


def resolve_settings(args: argparse.Namespace) -> SweepSettings:
    """The sweep's settings: the defaults, then the config file, then the flags given; checked once, here."""
    raw: dict[str, Any] = {}
    if args.config:
        raw.update(load_config_file(args.config))
    for key in (*GRID_KEYS, "limit", "batch_size", "device", "cache_dir", "wikitext", "runner", "include_path", "out",
                "prune_and_quantize", "seeds", "launcher", "noise_floor", "jobs", *RAY_ONLY_KEYS):
        value = getattr(args, key, None)
        if value is not None:
            raw[key] = value
    if args.model_args:
        try:
            extra = parse_kv(args.model_args, what="kick-sweep: --model_args")
        except ArgsError as err:
            raise SweepError(str(err)) from None
        raw["model_args"] = {**(raw.get("model_args") or {}), **extra}
    return SweepSettings.from_mapping(raw, complete=True)


def use_all_cores(jobs: int = 1) -> int:
    """torch threads for in-process cells: ``$OMP_NUM_THREADS`` when the user set it, else every core
    this process may run on (one thread per cell is the test suite's constraint, not a user's); with
    ``jobs`` cells at once, each gets its share of the cores (this process keeps them all for the
    cells that run alone after)."""
    import torch

    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    cores = int(given) if given.isdigit() and int(given) > 0 else machine_cores()
    torch.set_num_threads(cores)
    if jobs > 1:
        share = threads_per_job(jobs, cores)
        log.info("kick-sweep: up to %d in-process cells at once, %d torch thread(s) each", jobs, share)
        return share
    log.info("kick-sweep: in-process cells use %d torch thread(s)%s", cores,
             "" if given else " (all cores; set OMP_NUM_THREADS to use fewer)")
    return cores


def check_judge(tasks: Sequence[str]) -> None:
    """With judged tasks in the grid and a judge configured, ask the judge now: an endpoint that is down or
    refuses the key stops the sweep before the first cell compresses, not after its first generation."""
    from kick_study.judged import JUDGED_PREFIXES

    if not any(str(t).startswith(JUDGED_PREFIXES) for t in tasks):
        return
    from kick_tasks.judge.client import JudgeConfig, JudgeConfigError, check_endpoint

    try:
        config = JudgeConfig.from_env()
        if config is not None:
            check_endpoint(config)
    except JudgeConfigError as err:
        raise SweepError(f"kick-sweep: the judge for the judged tasks cannot be used: {err}") from None


def main(argv: Sequence[str] | None = None, runner: Runner | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = resolve_settings(args)
        if settings.launcher == "ray":
            from kick_study.ray_launcher import require_ray

            require_ray()  # before any task index, cell or compression
        if runner is None and settings.runner == "inprocess" and settings.launcher != "ray":
            use_all_cores(settings.jobs)  # before planning: the noise-floor cells are planned with other threads
        tasks = grid_tasks(settings)
        cells = plan_cells(settings, tasks)
        check_every_method_has_cells(settings, cells)
        if args.dry_run:
            for cell in cells:
                sys.stdout.write(f"{cell.cell_id}\t{cell.model_args}\n")
            return 0
        check_environment()
        load_index(Path(settings.out).expanduser())  # a resumed index that cannot be read stops us now
        manager = task_manager(settings.include_path, tasks)
        check_tasks(tasks, manager)
        check_judge(tasks)
    except (SweepError, EnvError) as err:
        sys.stderr.write(f"{err}\n")
        return 2
    launcher = None
    if settings.launcher == "ray":
        from kick_study.ray_launcher import RayLauncher

        launcher = RayLauncher(address=settings.address, gpus_per_cell=settings.gpus_per_cell,
                               cpus_per_cell=settings.cpus_per_cell, include_path=settings.include_path or None,
                               runner=runner)
    else:  # absolute, so a cell reads the same folders whatever its working directory
        include = tuple(str(Path(p).expanduser().resolve()) for p in settings.include_path) or None
        # a subprocess cell's lm_eval takes one folder (several are refused with the subprocess runner)
        make_runner = partial(inprocess_runner, include) if settings.runner == "inprocess" else \
            partial(subprocess_runner, include[0] if include else None)
        if runner is None and settings.jobs > 1:
            from kick_study.pool import pool_launcher

            launcher = pool_launcher(settings.jobs, sweep_threads(settings), make_runner, make_runner())
        elif runner is None:
            runner = make_runner()
    out_dir = Path(settings.out).expanduser()
    try:
        outcome = run_sweep(cells, out_dir, runner, settings=settings.record(), launcher=launcher)
    except (SweepError, OSError) as err:  # unreadable index.json, unwritable --out, a second sweep on it
        sys.stderr.write(f"{err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"kick-sweep: interrupted; finished cells are recorded in {out_dir / 'index.json'}, "
                         "rerun the same command to run the rest\n")
        return 130
    sys.stdout.write(
        f"kick-sweep: {len(outcome.ran)} ran, {len(outcome.skipped)} already done, {len(outcome.failed)} failed; "
        f"results in {out_dir} (report: kick-report {out_dir})\n"
    )
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
