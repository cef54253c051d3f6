"""The SLURM executor (submitit): one job per run.

Level 0 (bases, scratch) is one job array per resource shape, throttled by ``slurm.array_parallelism``; each grown
or cooldown run is a job with ``--dependency=afterok:<its source's job id>`` and ``--kill-on-invalid-dep=yes``. The
job's callable is a ``submitit.helpers.Checkpointable``: on preemption or timeout submitit resubmits it and the run
resumes from ``last.ckpt``. With a grid's ``eval:`` a job evaluates its run after training it (and a run an earlier
sweep trained that lacks its evaluation gets a job that only evaluates). Every job rebuilds the results table when it
ends.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import submitit

from experiments.evaluation import needs_eval
from experiments.execute import execute
from experiments.grid import EvalSpec, PlannedRun, SlurmSpec
from experiments.rundir import is_done, read_json
from experiments.table import write_results
from stacking.fsutil import write_json


class SlurmRun(submitit.helpers.Checkpointable):
    """The callable of one run's SLURM job. On preemption/timeout submitit calls ``checkpoint()``, which resubmits
    this same callable (Checkpointable's default); the run then resumes from its ``last.ckpt``.

    A multi-GPU run is one task per device (srun starts this callable on each; Lightning reads the SLURM
    environment): rank 0 grows, locks and records; the other ranks wait for the grown dir and join the fit. Such
    jobs are not retried in-job (the ranks would have to agree); SLURM's requeue and a re-sweep cover them."""

    def __init__(self, spec: dict, sweep_dir: str, retries: int = 1, evaluation: EvalSpec | None = None):
        self.spec, self.sweep_dir, self.retries, self.evaluation = spec, sweep_dir, retries, evaluation

    def __call__(self) -> dict:
        run = PlannedRun.from_json(self.spec)
        sweep = Path(self.sweep_dir)
        for dep in run.deps:  # afterok guarantees this on SLURM; other submitit clusters do not order jobs
            if not is_done(sweep, PlannedRun.from_json(_plan_entry(sweep, dep))):
                st = {
                    "run_id": run.id,
                    "status": "skipped",
                    "error_class": None,
                    "reason": f"dependency {dep} is not done",
                    "attempts": 0,
                }
                write_json(sweep / run.config.out_dir / "status.json", st)
                return st
        if int(os.environ.get("SLURM_PROCID", "0")) > 0:
            return _follow(run, sweep)
        retries = self.retries if int(os.environ.get("SLURM_NTASKS", "1")) == 1 else 0
        for _ in range(retries + 1):
            status = execute(run, sweep, self.evaluation)
            if status["status"] == "done" or status["error_class"] == "nan_loss":
                break
        try:
            write_results(sweep)
        except Exception as e:  # noqa: BLE001 - the table is rebuilt again by `stacking sweep status`
            print(f"[sweep] could not rebuild the results table: {e}", flush=True)
        return status


def _follow(run: PlannedRun, sweep: Path, wait_s: float = 3600) -> dict:
    """A DDP rank > 0: wait for rank 0's grow step, then take part in the fit (rank 0 records the outcome)."""
    from stacking.train import run as train

    if run.grow is not None:
        deadline = time.time() + wait_s
        while not (sweep / run.grow.dst / "growth.json").is_file():
            if time.time() > deadline:
                raise TimeoutError(f"rank {os.environ.get('SLURM_PROCID')}: {run.grow.dst} never appeared")
            time.sleep(2)
    old = os.getcwd()
    os.chdir(sweep)
    try:
        return train(dataclasses.replace(run.config))
    finally:
        os.chdir(old)


def _tasks(run: PlannedRun) -> dict:
    """One SLURM task per device (what Lightning expects under SLURM), on num_nodes nodes."""
    devices = run.config.devices if isinstance(run.config.devices, int) else 1
    return {"tasks_per_node": devices, "nodes": run.config.num_nodes}


def _by_resources(runs: list[PlannedRun]) -> list[list[PlannedRun]]:
    groups: dict[tuple, list[PlannedRun]] = {}
    for r in runs:
        groups.setdefault(tuple(sorted(_tasks(r).items())), []).append(r)
    return list(groups.values())


def _plan_entry(sweep_dir: Path, run_id: str) -> dict:
    plan = json.loads((sweep_dir / "plan.json").read_text())
    return next(r for r in plan["runs"] if r["id"] == run_id)


def submit_slurm(
    sweep_dir: Path,
    runs: list[PlannedRun],
    slurm: SlurmSpec,
    *,
    cluster: str | None = "slurm",
    retries: int = 1,
    name: str | None = None,
    evaluation: EvalSpec | None = None,
) -> list[dict]:
    """Submit every run that is not done, or done but not evaluated (``evaluation``: the grid's ``eval:``); return
    one record per job: run_id, job_id, dependency, job.

    ``cluster``: "slurm", or submitit's "local"/"debug" (tests: the same job graph without a cluster). Job names
    are ``<name>`` (the level-0 array) and ``<name>:<run name>``; ``name`` defaults to the plan's sweep name."""
    name = name or (read_json(Path(sweep_dir) / "plan.json") or {}).get("name") or "sweep"
    executor = submitit.AutoExecutor(
        folder=str(Path(sweep_dir).resolve() / ".submitit" / "%j"),
        cluster=cluster,
        slurm_max_num_timeout=slurm.max_num_timeout,
    )
    common = {
        "timeout_min": slurm.timeout_min,
        "gpus_per_node": slurm.gpus_per_node,
        "cpus_per_task": slurm.cpus_per_task,
        "mem_gb": slurm.mem_gb,
        "slurm_partition": slurm.partition,
        "slurm_array_parallelism": slurm.array_parallelism,
        "name": name,
    }
    todo = [r for r in runs if not is_done(sweep_dir, r) or needs_eval(sweep_dir, r, evaluation)]
    records: list[dict] = []
    job_of: dict[str, str] = {}
    first = [r for r in todo if not any(d in {t.id for t in todo} for d in r.deps)]
    rest = [r for r in todo if r not in first]
    for group in _by_resources(first):  # one job array per resource shape, throttled by array_parallelism
        executor.update_parameters(**common, **_tasks(group[0]), slurm_additional_parameters=dict(slurm.additional))
        with executor.batch():
            jobs = [executor.submit(SlurmRun(r.to_json(), str(sweep_dir), retries, evaluation)) for r in group]
        for r, job in zip(group, jobs, strict=True):
            job_of[r.id] = job.job_id
            records.append({"run_id": r.id, "job_id": job.job_id, "dependency": None, "job": job})
    for r in rest:  # in plan order, so a dependency is always submitted before its dependents
        dep = "afterok:" + ":".join(job_of[d] for d in r.deps if d in job_of)
        executor.update_parameters(
            **{**common, "name": f"{name}:{r.name}"},
            **_tasks(r),
            slurm_additional_parameters={**slurm.additional, "dependency": dep, "kill-on-invalid-dep": "yes"},
        )
        job = executor.submit(SlurmRun(r.to_json(), str(sweep_dir), retries, evaluation))
        job_of[r.id] = job.job_id
        records.append({"run_id": r.id, "job_id": job.job_id, "dependency": dep, "job": job})
    write_json(
        Path(sweep_dir) / "slurm_jobs.json",
        {
            "cluster": cluster,
            "submitted_at": time.time(),
            "jobs": [{k: v for k, v in rec.items() if k != "job"} for rec in records],
        },
    )
    return records


__all__ = ["SlurmRun", "submit_slurm"]
