"""Downstream evaluation inside a sweep (a grid's ``eval:``; docs/evaluation.md, "In sweeps"): which runs are
evaluated, the step that evaluates a finished run, and where its result lies.

Evaluated: the final checkpoint of every scratch and grown run and of every cooldown run at fraction 1.0 — the two
checkpoints the loss table reads, "mid" and "annealed". The step runs in the process that executed the run, holding
its lock (`experiments.execute.execute`): right after training, or alone for a run an earlier sweep trained, so
adding ``eval:`` to a finished sweep evaluates it without retraining. The result is `stacking eval`'s JSON, under
the name it gives by default (``runs/<id>/eval/tokens-N_<tasks>[_limitN][_Kshot].json``); the outcome goes into
status.json's ``eval`` ({state: done | failed, tasks, file or reason, val_docs, wall_time_s}). After the scores it
writes the run's per-document validation losses (``eval/val_docs.json``, `stacking.val_docs`; ``val_docs``: "done"
or why not, never failing the evaluation), which the report's doc bootstrap reads. A failed evaluation leaves the
training results as they are, writes its traceback to ``eval_error.txt`` and is tried again by the next sweep. The
settings are recorded in plan.json's ``eval``, never in a run's config: run ids do not depend on them.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import replace
from pathlib import Path

from experiments.plan import PlannedRun
from experiments.rundir import read_json
from experiments.schema import EvalSpec, GridError
from stacking.eval_records import find_result, metrics, read_result

ERROR_FILE = "eval_error.txt"
"""Traceback of a run's last failed evaluation (removed when one succeeds)."""


def evaluated(run: PlannedRun) -> bool:
    """Whether a sweep with ``eval:`` evaluates this run: scratch and grown runs, and cooldowns at fraction 1.0."""
    if run.kind == "cooldown":
        return run.anneal_fraction is not None and math.isclose(run.anneal_fraction, 1.0)
    return run.kind in ("scratch", "grown")


def resolve(spec: EvalSpec) -> EvalSpec:
    """The spec with its include paths absolute (read from the working dir, like data_dir)."""
    return replace(spec, include_path=[str(Path(p).resolve()) for p in spec.include_path])


def check_tasks(spec: EvalSpec, where: str) -> None:
    """Before any compute: lm-eval is installed, every include path is a dir, every task is known (lm-eval's own
    task index is read only for a task that is not in the include paths)."""
    for path in spec.include_path:
        if not Path(path).is_dir():
            raise GridError(
                f"{where}: eval.include_path {path!r} is not a dir; build the offline tasks with "
                f"`stacking eval-tasks --data_dir DATA --out {path}`"
            )
    from stacking.errors import EvalError
    from stacking.evaluate import require_lm_eval, task_manager

    try:
        require_lm_eval()
        task_manager(spec.tasks, spec.include_path or None)
    except EvalError as e:  # its wording is the command line's: name the grid's field instead
        raise GridError(f"{where}: eval: {str(e).replace('--include_path', 'eval.include_path')}") from None


def spec_from_plan(sweep_dir: str | Path) -> EvalSpec | None:
    """The evaluation settings a sweep dir's plan.json records (None: the sweep evaluates nothing)."""
    entry = (read_json(Path(sweep_dir) / "plan.json") or {}).get("eval")
    return EvalSpec(**entry) if entry else None


def result_path(sweep_dir: str | Path, run: PlannedRun, spec: EvalSpec) -> Path | None:
    """The run's result for these settings at its final checkpoint, or None when it has none yet."""
    return find_result(
        Path(sweep_dir) / run.config.out_dir, run.config.max_tokens, spec.tasks, spec.limit, spec.num_fewshot
    )


def needs_eval(sweep_dir: str | Path, run: PlannedRun, spec: EvalSpec | None) -> bool:
    """Whether the sweep still has to evaluate this run (its training may be done or not)."""
    return spec is not None and evaluated(run) and result_path(sweep_dir, run, spec) is None


def _device(run: PlannedRun) -> str:
    """The run's own device: cuda where it trained on a GPU and one is visible (a local worker's, a job's)."""
    import torch

    return "cuda" if run.config.accelerator != "cpu" and torch.cuda.is_available() else "cpu"


def evaluate_run(run: PlannedRun, sweep_dir: str | Path, spec: EvalSpec) -> dict:
    """Evaluate a finished run's final checkpoint on the spec's tasks, write the result JSON and return
    status.json's ``eval`` record. Never raises an Exception: a failure is the record's reason."""
    from stacking.evaluate import default_out, evaluate
    from stacking.fsutil import write_json

    run_dir = Path(sweep_dir) / run.config.out_dir
    t0 = time.perf_counter()
    out: dict = {"tasks": list(spec.tasks)}
    try:
        record = evaluate(
            run_dir,
            list(spec.tasks),
            include_path=spec.include_path or None,
            limit=spec.limit,
            num_fewshot=spec.num_fewshot,
            data_dir=run.config.data_dir,
            batch_size=spec.batch_size,
            device=_device(run),
        )
        path = default_out(record)
        write_json(path, record)
        if result_path(sweep_dir, run, spec) != path:
            raise RuntimeError(f"evaluated {path.name}, not the checkpoint at the run's {run.config.max_tokens} tokens")
    except Exception as e:  # noqa: BLE001 - recorded; the training results stay as they are
        (run_dir / ERROR_FILE).write_text(traceback.format_exc())
        line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return {
            **out,
            "state": "failed",
            "reason": f"{type(e).__name__}: {line}"[:300],
            "wall_time_s": round(time.perf_counter() - t0, 3),
        }
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    return {
        **out,
        "state": "done",
        "file": str(path.relative_to(run_dir)),
        "val_docs": _val_docs(run_dir, run),
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }


def _val_docs(run_dir: Path, run: PlannedRun) -> str:
    """The run's per-document validation losses beside its scores (`stacking val-docs`: the report's doc CI),
    unless current: "done", or "failed: <why>" — never a failed evaluation (e.g. a run trained under bf16 autocast,
    whose float32 re-evaluation misses final_val_loss by more than the check allows)."""
    from stacking.val_docs import is_current, write_val_docs

    try:
        if not is_current(run_dir):
            write_val_docs(run_dir, data_dir=run.config.data_dir, device=_device(run))
        return "done"
    except Exception as e:  # noqa: BLE001 - recorded; the scores stand
        line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"failed: {type(e).__name__}: {line}"[:300]


def summary_line(run_dir: Path, outcome: dict) -> str:
    """What a progress line says of an evaluation: the first score of each task, or why it failed."""
    tasks = ",".join(outcome.get("tasks") or [])
    if outcome.get("state") != "done":
        return f"on {tasks}: {outcome.get('reason')}"
    record = read_result(run_dir / outcome["file"]) or {}
    first: dict[str, str] = {}
    for m in metrics(record):
        first.setdefault(m.task, f"{m.task} {m.metric} {m.value:.4g}")
    return f"{', '.join(first.values()) or tasks} ({outcome.get('wall_time_s', 0):.1f}s)"


__all__ = [
    "ERROR_FILE",
    "check_tasks",
    "evaluate_run",
    "evaluated",
    "needs_eval",
    "resolve",
    "result_path",
    "spec_from_plan",
    "summary_line",
]
