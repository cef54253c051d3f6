"""`stacking sweep …`: grid file → plan → executor → results table.

    stacking sweep GRID.yaml [--out SWEEP_DIR] [--dry-run] [--executor local|slurm] [--jobs N] [--threads T]
                             [--only PATTERN] [--retries K] [--cluster slurm|local|debug]
    stacking sweep status SWEEP_DIR

Every grid error is one line (``stacking sweep: error: …``, exit status 2) before any compute. A local sweep
exits 0 when every run is done and 1 when some failed or were skipped (the table says which and why).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stacking sweep", description="Run a grid of base → grow → continue runs and "
                                "their FLOP-matched scratch baselines; `stacking sweep status SWEEP_DIR` reports.")
    p.add_argument("grid", help="grid file (YAML, see docs/sweeps.md)")
    p.add_argument("--out", help="sweep dir (default: sweeps/<grid name>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs, tokens, FLOPs, dependencies, "
                   "estimated wall time) and exit")
    p.add_argument("--executor", choices=["local", "slurm"], default="local")
    p.add_argument("--jobs", type=int, help="local: concurrent runs (default: one per GPU, else cores/4, >= 1)")
    p.add_argument("--threads", type=int, help="local: torch threads per run (default: cores / jobs)")
    p.add_argument("--scale", help="pick one entry of the grid's `scales` (e.g. tiny, small, paper); the sweep dir "
                   "defaults to sweeps/<name>-<scale>")
    p.add_argument("--only", help="run only the runs whose id matches (glob, or substring), plus their bases")
    p.add_argument("--retries", type=int, default=1, help="retries of a run that raised or was killed (NaN: never)")
    p.add_argument("--cluster", default="slurm", choices=["slurm", "local", "debug"],
                   help="slurm executor: submitit cluster (local/debug run the same job graph without SLURM)")
    return p


def sweep_main(argv: list[str]) -> int:
    if argv and argv[0] == "status":
        return _status(argv[1:])
    args = _parser().parse_args(argv)
    from experiments.grid import GridError, epoch_warnings, expand, load_grid, select
    from stacking.data import DataError
    from stacking.models import ModelConfigError
    from stacking.train import RunError

    try:
        if args.jobs is not None and args.jobs < 1 or args.threads is not None and args.threads < 1:
            raise GridError("--jobs and --threads must be >= 1")
        if args.retries < 0:
            raise GridError("--retries must be >= 0")
        grid = load_grid(args.grid, scale=args.scale)
        runs = expand(grid, where=Path(args.grid).name)
        todo = select(runs, args.only) if args.only else runs
    except (GridError, DataError, ModelConfigError, RunError) as e:
        print(f"stacking sweep: error: {e}", file=sys.stderr)
        return 2
    sweep_dir = Path(args.out) if args.out else Path("sweeps") / (grid.name or Path(args.grid).stem)
    for line in epoch_warnings(todo):
        print(f"[sweep] {line}", file=sys.stderr)
    jobs, threads, gpus = _resources(args, runs)
    if args.dry_run:
        print(format_plan(todo, sweep_dir, grid_path=args.grid, jobs=jobs, threads=threads,
                          executor=args.executor))
        return 0
    return _execute(args, grid, runs, todo, sweep_dir, jobs, threads, gpus)


def _kinds(runs) -> str:
    return ", ".join(f"{n} {k}" for k in ("base", "grown", "scratch", "cooldown")
                     if (n := sum(r.kind == k for r in runs)) or k != "cooldown")


def _resources(args, runs) -> tuple[int, int, int]:
    """(jobs, threads per job, GPUs to hand out one per job) for the local executor."""
    import os

    from experiments.runner import default_jobs, visible_gpus

    n_gpus = len(visible_gpus()) if any(r.config.accelerator != "cpu" for r in runs) else 0
    jobs, threads = default_jobs(n_gpus=n_gpus)
    if args.jobs:
        jobs = args.jobs
        threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    return jobs, args.threads or threads, min(jobs, n_gpus)


def _execute(args, grid, runs, todo, sweep_dir: Path, jobs: int, threads: int, gpus: int) -> int:
    from experiments.results import write_results
    from experiments.runner import LocalExecutor, submit_slurm, write_plan

    write_plan(sweep_dir, args.grid, grid, runs)
    kinds = _kinds(todo)
    if args.executor == "slurm":
        records = submit_slurm(sweep_dir, todo, grid.slurm, cluster=args.cluster, retries=args.retries,
                               name=grid.name or "sweep")
        for rec in records:
            print(f"[sweep] submitted {rec['run_id']} as job {rec['job_id']}"
                  + (f" ({rec['dependency']})" if rec["dependency"] else ""))
        print(f"[sweep] {len(records)} job(s) submitted ({kinds}); follow with `stacking sweep status {sweep_dir}`")
        return 0
    print(f"[sweep] {len(todo)} runs ({kinds}) in {sweep_dir}; local executor, {jobs} job(s) × {threads} "
          f"thread(s), retries {args.retries}", flush=True)
    t0 = time.perf_counter()
    ex = LocalExecutor(sweep_dir, todo, jobs=jobs, threads=threads, retries=args.retries, gpus=gpus,
                       echo=lambda s: print(s, flush=True))
    states = ex.run()
    write_results(sweep_dir, runs)
    n = {s: sum(v == s for v in states.values()) for s in ("done", "failed", "skipped")}
    print(f"[sweep] finished in {time.perf_counter() - t0:.1f}s: {n['done']} done, {n['failed']} failed, "
          f"{n['skipped']} skipped; results: {sweep_dir / 'results.csv'}", flush=True)
    for rid, why in ex.reason.items():
        print(f"[sweep]   {states[rid]} {rid}: {why}", flush=True)
    return 0 if n["done"] == len(todo) else 1


def _status(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="stacking sweep status", description="What is done, running, failed (with "
                                "reasons) and pending in a sweep dir.")
    p.add_argument("sweep_dir")
    args = p.parse_args(argv)
    from experiments.results import format_status

    try:
        print(format_status(args.sweep_dir))
    except FileNotFoundError as e:
        print(f"stacking sweep status: error: {e}", file=sys.stderr)
        return 2
    return 0


# --------------------------------------------------------------------------------------------------------------
# Dry run: the plan, with an estimated wall time from throughput measured on this machine


def measure_throughput(runs, sweep_dir: Path, threads: int) -> tuple[dict[str, float], float, str]:
    """(tokens/s per model label, FLOP/s for other models, where the numbers come from).

    Finished runs in the sweep dir when there are any (their summary.json tokens_per_s: tokens over wall time,
    evaluation and checkpoints included); otherwise a few timed optimizer steps of the plan's smallest model here.
    """
    from experiments.runner import read_json

    per_model: dict[str, list[float]] = {}
    flop_rates = []
    for r in runs:
        s = read_json(sweep_dir / r.config.out_dir / "summary.json") or {}
        if s.get("status") == "done" and s.get("tokens_per_s"):
            per_model.setdefault(r.model, []).append(s["tokens_per_s"])
            flop_rates.append(s["tokens_per_s"] * r.flops_per_token)
    if flop_rates:
        med = sorted(flop_rates)[len(flop_rates) // 2]
        return ({m: sorted(v)[len(v) // 2] for m, v in per_model.items()}, med,
                f"tokens_per_s of {len(flop_rates)} finished run(s) in {sweep_dir} (wall time incl. evaluation); "
                f"other models at their median {med / 1e9:.3g} GFLOP/s")
    small = min(runs, key=lambda r: r.flops_per_token)
    tps, device = benchmark(small, threads)
    return ({small.model: tps}, tps * small.flops_per_token,
            f"measured here: 3 timed optimizer steps of {small.model} (the smallest model) on {device} with "
            f"{threads} thread(s): {tps:,.0f} tokens/s = {tps * small.flops_per_token / 1e9:.3g} GFLOP/s; other "
            "models at the same FLOP/s (training steps only: evaluation and start-up not included)")


def benchmark(run, threads: int, steps: int = 3) -> tuple[float, str]:
    """Tokens/s of a few forward+backward+AdamW steps of one run's model and micro-batch (one warm-up step)."""
    import torch
    import torch.nn.functional as F
    from litgpt import GPT

    from stacking import models
    from stacking.data import read_meta

    cfg = run.config
    device = "cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu"
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        vocab = read_meta(cfg.data_dir)["vocab_size"]
        mc = models.model_config(cfg.model, vocab_size=vocab, block_size=cfg.seq_len, **cfg.model_overrides)
        torch.manual_seed(0)
        model = GPT(mc).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randint(0, vocab, (cfg.micro_batch_size, cfg.seq_len + 1), device=device)
        for i in range(steps + 1):
            if i == 1:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            logits = model(x[:, :-1])
            F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return steps * cfg.micro_batch_size * cfg.seq_len / (time.perf_counter() - t0), device
    finally:
        torch.set_num_threads(old)


def simulate(runs, seconds: dict[str, float], jobs: int) -> float:
    """Wall time of the DAG on ``jobs`` slots, starting ready runs in the executor's order (list scheduling)."""
    from experiments.runner import KIND_ORDER

    ids = {r.id for r in runs}
    order = sorted(runs, key=lambda r: KIND_ORDER[r.kind])
    finish: dict[str, float] = {}
    running: list[tuple[float, str]] = []
    now, started = 0.0, set()
    while len(finish) < len(runs):
        for r in order:
            if len(running) >= jobs:
                break
            if r.id not in started and all(d in finish or d not in ids for d in r.deps):
                started.add(r.id)
                running.append((now + seconds[r.id], r.id))
        running.sort()
        now, rid = running.pop(0)
        finish[rid] = now
    return now


def format_plan(runs, sweep_dir: Path, *, grid_path: str, jobs: int, threads: int, executor: str) -> str:
    from experiments.runner import is_done

    from experiments.grid import epoch_warnings

    rates, flop_rate, source = measure_throughput(runs, sweep_dir, threads)
    secs = {r.id: r.trained_tokens / rates[r.model] if r.model in rates
            else r.trained_tokens * r.flops_per_token / flop_rate for r in runs}
    by_id = {r.id: r for r in runs}
    w = max(len(r.id) for r in runs)
    lines = [f"plan: {grid_path} → {sweep_dir}: {len(runs)} runs ({_kinds(runs)}); executor {executor}"
             + (f", {jobs} job(s) × {threads} thread(s)" if executor == "local" else ""),
             f"  {'run id':<{w}}  {'kind':<8} {'model':<14} {'tokens':>11} {'FLOPs':>9} {'tok/param':>9} "
             f"{'epochs':>6} {'evals':>5}  {'est. time':>9}  after"]
    for r in runs:
        # tokens per non-embedding parameter: a base at each d it is grown at, every other run at its end
        if r.kind == "base":
            tpp = "/".join(f"{d / r.params_non_embedding:.3g}" for d in r.config.save_at_tokens)
        else:
            tpp = f"{r.tokens / r.params_non_embedding:.3g}" if r.params_non_embedding else "?"
        if r.kind == "grown":
            base = by_id.get(r.parent)
            at_d = f", base {r.grow_at_tokens / base.params_non_embedding:.3g} tok/param at d" if base else ""
            after = f"{r.parent} @ d={r.grow_at_tokens:,} ({r.op} {r.direction} g={r.g}; FLOPs incl. " \
                    f"{r.flops_offset:.3g} of the base{at_d})"
        elif r.kind == "cooldown":
            after = f"{r.branch_of} @ {r.tokens - r.decay_tokens:,} (decay {r.decay_tokens:,} tokens to " \
                    f"{r.anneal_fraction:g} of its budget)"
        else:
            after = "-"
        done = "  [done]" if is_done(sweep_dir, r) else ""
        lines.append(f"  {r.id:<{w}}  {r.kind:<8} {r.model:<14} {r.tokens:>11,} {r.flops:>9.3g} {tpp:>9} "
                     f"{r.epochs:>6.2f} {r.n_evals:>5}  {_fmt_time(secs[r.id]):>9}  {after}{done}")
    todo = [r for r in runs if not is_done(sweep_dir, r)]
    total = sum(secs[r.id] for r in todo)
    wall = simulate(todo, secs, jobs) if todo else 0.0
    trained = sum(r.trained_tokens * r.flops_per_token for r in runs)
    lines.append(f"total: {sum(r.trained_tokens for r in runs):,} tokens, {trained:.3g} FLOPs trained; "
                 f"{len(todo)} run(s) to do: est. {_fmt_time(total)} of compute, {_fmt_time(wall)} wall with "
                 f"{jobs} job(s)")
    lines.append(f"throughput: {source}")
    lines += epoch_warnings(runs)
    return "\n".join(lines)


def _fmt_time(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"
