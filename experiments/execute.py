"""One run, executed in this process: grow the base checkpoint (grown runs), train, record the outcome.

Both executors call `execute(run, sweep_dir, evaluation)` in the process that does the work: it grows the base
checkpoint (grown runs), then `stacking.train.run` trains — resuming the run's own ``last.ckpt`` when there is one —
and records the outcome in ``runs/<id>/status.json`` (+ ``error.txt`` with the traceback on failure), holding the
run's lock (`experiments.rundir.run_lock`) throughout. With a grid's ``eval:`` (``evaluation``), a run it evaluates
is then evaluated (`experiments.evaluation`); a run trained by an earlier sweep is only evaluated.

Failure classes (status.json ``error_class``): ``nan_loss`` (loss went non-finite; never retried: CPU runs are
deterministic and it would recur), ``oom`` (out of memory), ``exception`` (anything raised), ``killed`` (the worker
died from a signal, e.g. the kernel's OOM killer; recorded by the local executor). All but ``nan_loss`` are retried
up to ``retries`` times.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from experiments.evaluation import evaluate_run, needs_eval
from experiments.plan import GrowStep, PlannedRun
from experiments.provenance import git_info
from experiments.rundir import is_done, read_json, run_lock
from experiments.schema import EvalSpec
from stacking.checkpoint import CARRY_FILE
from stacking.fsutil import write_json


def _classify(exc: BaseException) -> str:
    import torch

    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom"
    return "exception"


def execute(run: PlannedRun, sweep_dir: str | Path, evaluation: EvalSpec | None = None) -> dict:
    """Grow (grown runs) and train one run in this process, unless an earlier sweep trained it; then evaluate it
    when ``evaluation`` asks for it. Write and return its status.json. Never raises an Exception.

    Paths in the run's config are relative to the sweep dir, so this runs with the sweep dir as working directory
    (restored afterwards)."""
    sweep_dir = Path(sweep_dir).resolve()
    run_dir = sweep_dir / run.config.out_dir
    with run_lock(run_dir):
        if is_done(sweep_dir, run):  # trained by an earlier sweep: only its evaluation is missing
            status = {**(read_json(run_dir / "status.json") or {"run_id": run.id}), "status": "done"}
        else:
            status = _train(run, sweep_dir, run_dir)
        # needs_eval: a run another process trained and evaluated while this one waited for its lock is not redone
        if status["status"] == "done" and needs_eval(sweep_dir, run, evaluation):
            status["eval"] = evaluate_run(run, sweep_dir, evaluation)
            write_json(run_dir / "status.json", status)
    return status


def _train(run: PlannedRun, sweep_dir: Path, run_dir: Path) -> dict:
    """Grow and train, recording the outcome in status.json (+ error.txt); the caller holds the run's lock."""
    old_cwd = os.getcwd()
    prev = read_json(run_dir / "status.json") or {}
    status: dict[str, Any] = {
        "run_id": run.id,
        "status": "running",
        "error_class": None,
        "reason": None,
        "attempts": int(prev.get("attempts", 0)) + 1,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started_at": time.time(),
        "git": git_info(),
    }
    write_json(run_dir / "status.json", status)
    (run_dir / "error.txt").unlink(missing_ok=True)
    try:
        os.chdir(sweep_dir)
        if run.grow is not None:
            _grow(run)
        from stacking.train import run as train

        summary = train(dataclasses.replace(run.config))
        if summary["status"] == "done":
            status["status"] = "done"
        else:
            status.update(
                status="failed",
                reason=summary["status"].removeprefix("failed: "),
                error_class="nan_loss" if "nan" in summary["status"] else "exception",
            )
    except Exception as e:  # noqa: BLE001 - every failure is recorded, none stops the sweep
        status.update(
            status="failed",
            error_class=_classify(e),
            reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300],
        )
        (run_dir / "error.txt").write_text(traceback.format_exc())
    except BaseException as e:  # Ctrl-C, or submitit's exit after requeueing a preempted job: resumable
        status.update(status="interrupted", reason=type(e).__name__, ended_at=time.time())
        write_json(run_dir / "status.json", status)
        raise
    finally:
        os.chdir(old_cwd)
    status["ended_at"] = time.time()
    write_json(run_dir / "status.json", status)
    return status


def _grow(run: PlannedRun) -> None:
    """The grow step: base checkpoint at d → grown/<id> (skipped when that dir is already complete)."""
    step = run.grow
    assert step is not None
    dst = Path(step.dst)
    if not ((dst / "lit_model.pth").is_file() and (dst / "growth.json").is_file()):
        from stacking.growth import grow_checkpoint

        grow_checkpoint(step.src, step.dst, step.op, direction=step.direction, g=step.g, seed=step.seed, **step.options)
    if step.carry_state and not (dst / CARRY_FILE).is_file():
        carry_optimizer_state(step, dst / CARRY_FILE)


def carry_optimizer_state(step: GrowStep, out: Path) -> None:
    """grown.optimizer: carry — the base's AdamW moments at d (its full state file), keyed by name and mapped
    through the operator's plan onto the grown model's parameters; written atomically to ``out``."""
    import torch
    from litgpt import GPT

    from stacking.checkpoint import load_litgpt_checkpoint
    from stacking.growth import carry_moments
    from stacking.module import named_optimizer_state

    _, base_cfg, _, _ = load_litgpt_checkpoint(step.src)
    state = torch.load(step.carry_state, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        model = GPT(base_cfg)
    named = named_optimizer_state(state["optimizer_states"][0], model)
    grown = carry_moments(named, base_cfg, step.op, direction=step.direction, g=step.g, seed=step.seed, **step.options)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(grown, tmp)
    os.replace(tmp, out)


__all__ = ["carry_optimizer_state", "execute"]
