"""`stacking sweep …`: grid file → plan → executor → results table.

    stacking sweep GRID.yaml [--out SWEEP_DIR] [--dry-run] [--executor local|slurm] [--jobs N] [--threads T]
                             [--only PATTERN] [--retries K] [--cluster slurm|local|debug]
    stacking sweep status SWEEP_DIR

Every grid error is one line (``stacking sweep: error: …``, exit status 2) before any compute. A local sweep
exits 0 when every run is done (and evaluated, with a grid's ``eval:``) and 1 when some failed or were skipped or an
evaluation failed (the table says which and why). The parsers
are jsonargparse's (`stacking.cli.parser`): ``--config FILE.yaml`` gives any option, the grid included.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from stacking.cli import parse, parser, run_command


def _parser():
    p = parser(
        "stacking sweep",
        "Run a grid of base → grow → continue runs and their FLOP-matched scratch "
        "baselines; `stacking sweep status SWEEP_DIR` reports.",
    )
    p.add_argument("grid", type=str, help="grid file (YAML, see docs/sweeps.md)")
    p.add_argument("--out", type=str, metavar="SWEEP_DIR", help="sweep dir (default: sweeps/<grid name>)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (runs, tokens, FLOPs, dependencies, estimated wall time) and exit",
    )
    p.add_argument("--executor", choices=["local", "slurm"], default="local", help="where the runs execute")
    p.add_argument(
        "--jobs", type=int, metavar="N", help="local: concurrent runs (default: one per GPU, else cores/4, >= 1)"
    )
    p.add_argument("--threads", type=int, metavar="T", help="local: torch threads per run (default: cores / jobs)")
    p.add_argument(
        "--scale",
        type=str,
        metavar="NAME",
        help="pick one entry of the grid's `scales` (e.g. tiny, "
        "small, paper); the sweep dir defaults to sweeps/<name>-<scale>",
    )
    p.add_argument(
        "--only",
        type=str,
        metavar="PATTERN",
        help="run only the runs whose id matches (glob, or substring), plus their bases",
    )
    p.add_argument(
        "--retries", type=int, default=1, metavar="K", help="retries of a run that raised or was killed (NaN: never)"
    )
    p.add_argument(
        "--cluster",
        default="slurm",
        choices=["slurm", "local", "debug"],
        help="slurm executor: submitit cluster (local/debug run the same job graph without SLURM)",
    )
    return p


def sweep_main(argv: list[str]) -> int:
    if argv and argv[0] == "status":  # reads the sweep dir only: no torch, no litgpt (fast)
        return run_command("stacking sweep status", _status, argv[1:], (FileNotFoundError,))
    from experiments.grid import GridError
    from stacking.errors import DataError, ModelConfigError, RunError

    return run_command("stacking sweep", _sweep, argv, (GridError, DataError, ModelConfigError, RunError))


def _sweep(argv: list[str]) -> int:
    from experiments.grid import GridError, epoch_warnings, expand, load_grid, select
    from experiments.rundir import missing_states

    args = parse(_parser(), argv)
    if args.jobs is not None and args.jobs < 1 or args.threads is not None and args.threads < 1:
        raise GridError("--jobs and --threads must be >= 1")
    if args.retries < 0:
        raise GridError("--retries must be >= 0")
    grid = load_grid(args.grid, scale=args.scale)
    notes: list[str] = []
    runs = expand(grid, where=Path(args.grid).name, notes=notes)
    evaluation = _evaluation(grid, Path(args.grid).name)
    todo = select(runs, args.only) if args.only else runs
    sweep_dir = Path(args.out) if args.out else Path("sweeps") / (grid.name or Path(args.grid).stem)
    for line in epoch_warnings(todo) + notes + missing_states(sweep_dir, todo):
        print(f"[sweep] {line}", file=sys.stderr)
    jobs, threads, gpus = _resources(args, runs)
    if args.dry_run:
        from experiments.dryrun import format_plan

        print(format_plan(todo, sweep_dir, grid_path=args.grid, jobs=jobs, threads=threads, executor=args.executor))
        if evaluation is not None:
            from experiments.evaluation import evaluated

            limit = f"limit {evaluation.limit}" if evaluation.limit is not None else "every document"
            print(
                f"eval: {', '.join(evaluation.tasks)} ({limit}) on the final checkpoint of "
                f"{sum(evaluated(r) for r in todo)} runs (scratch, grown, cooldowns at f = 1)"
            )
        return 0
    return _execute(args, grid, runs, todo, sweep_dir, jobs, threads, gpus, evaluation)


def _evaluation(grid, where: str):
    """The grid's ``eval:`` with absolute include paths, its tasks checked (lm-eval installed, tasks known), or None."""
    if grid.eval is None:
        return None
    from experiments.evaluation import check_tasks, resolve

    evaluation = resolve(grid.eval)
    check_tasks(evaluation, where)
    return evaluation


def _resources(args, runs) -> tuple[int, int, int]:
    """(jobs, threads per job, GPUs to hand out one per job) for the local executor."""
    import os

    from experiments.local import default_jobs, visible_gpus

    n_gpus = len(visible_gpus()) if any(r.config.accelerator != "cpu" for r in runs) else 0
    jobs, threads = default_jobs(n_gpus=n_gpus)
    if args.jobs:
        jobs = args.jobs
        threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    return jobs, args.threads or threads, min(jobs, n_gpus)


def _execute(args, grid, runs, todo, sweep_dir: Path, jobs: int, threads: int, gpus: int, evaluation) -> int:
    from experiments.dryrun import kinds_summary
    from experiments.local import LocalExecutor
    from experiments.provenance import write_plan
    from experiments.table import write_results

    write_plan(sweep_dir, args.grid, grid, runs, evaluation)
    kinds = kinds_summary(todo)
    if args.executor == "slurm":
        from experiments.slurm import submit_slurm

        records = submit_slurm(
            sweep_dir,
            todo,
            grid.slurm,
            cluster=args.cluster,
            retries=args.retries,
            name=grid.name or "sweep",
            evaluation=evaluation,
        )
        for rec in records:
            print(
                f"[sweep] submitted {rec['run_id']} as job {rec['job_id']}"
                + (f" ({rec['dependency']})" if rec["dependency"] else "")
            )
        print(f"[sweep] {len(records)} job(s) submitted ({kinds}); follow with `stacking sweep status {sweep_dir}`")
        return 0
    print(
        f"[sweep] {len(todo)} runs ({kinds}) in {sweep_dir}; local executor, {jobs} job(s) × {threads} "
        f"thread(s), retries {args.retries}",
        flush=True,
    )
    t0 = time.perf_counter()
    ex = LocalExecutor(
        sweep_dir,
        todo,
        jobs=jobs,
        threads=threads,
        retries=args.retries,
        gpus=gpus,
        echo=lambda s: print(s, flush=True),
        on_finished=lambda: write_results(sweep_dir, runs),
        evaluation=evaluation,
    )
    states = ex.run()
    write_results(sweep_dir, runs)
    n = {s: sum(v == s for v in states.values()) for s in ("done", "failed", "skipped")}
    evals = f", {len(ex.eval_failed)} evaluation(s) failed" if ex.eval_failed else ""
    print(
        f"[sweep] finished in {time.perf_counter() - t0:.1f}s: {n['done']} done, {n['failed']} failed, "
        f"{n['skipped']} skipped{evals}; results: {sweep_dir / 'results.csv'}",
        flush=True,
    )
    for rid, why in ex.reason.items():
        print(f"[sweep]   {states[rid]} {rid}: {why}", flush=True)
    for rid, why in ex.eval_failed.items():
        print(f"[sweep]   evaluation failed {rid} {why}", flush=True)
    return 0 if n["done"] == len(todo) and not ex.eval_failed else 1


def _status(argv: list[str]) -> int:
    p = parser("stacking sweep status", "What is done, running, failed (with reasons) and pending in a sweep dir.")
    p.add_argument("sweep_dir", type=str, help="a sweep dir written by `stacking sweep`")
    args = parse(p, argv)
    from experiments.table import format_status

    print(format_status(args.sweep_dir))
    return 0
