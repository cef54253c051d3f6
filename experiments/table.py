"""The sweep's results table and run states, rebuilt from the run dirs (never from logs).

``SWEEP_DIR/results.csv`` and ``results.parquet``: one row per planned run, in plan order, with the columns of
docs/formats.md (`RESULT_COLUMNS`), then every resolved RunConfig field as ``cfg.<name>``, then `EXTRA_COLUMNS`,
then, with ``anneal.at_scratch_flops``, `AT_FLOPS_COLUMN`, then ``final_val_loss_<name>`` for every name of any run's ``eval_data_dirs``, then, with a grid's ``eval:``,
``eval_status`` and one ``eval_<task>_<metric>`` column per downstream score (`stacking.eval_records`).
Numbers come from each run's ``summary.json`` (and ``model.json``); the plan (``plan.json``) gives what a run is
(kind, target, op, d, parent). A run that has not finished still has a row, with its state in ``status``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.evaluation import evaluated, result_path, spec_from_plan
from experiments.plan import PlannedRun
from experiments.rundir import is_done, load_plan, lock_held, read_json
from experiments.schema import EvalSpec
from stacking.config import RunConfig
from stacking.eval_records import PREFIX, metrics, read_result

RESULT_COLUMNS = [
    "run_id", "kind", "target", "model", "op", "direction", "g", "grow_at_tokens", "seed", "parent_run",
    "params_total", "params_non_embedding", "flops_per_token", "tokens", "flops_offset", "flops", "final_val_loss",
    "best_val_loss", "tokens_per_s", "wall_time_s", "status", "run_dir", "anneal_fraction", "decay_tokens",
]  # fmt: skip
EXTRA_COLUMNS = ["state", "error_class", "attempts", "planned_tokens", "planned_flops", "grown_dir", "variant"]
"""After the cfg.* columns: state (done | failed | skipped | running | interrupted | pending), failure class,
attempts so far, the planned budget, the grown checkpoint dir a grown run started from, and the op's variant (its
grid label where the grid runs one op with several option sets; the analyses group and name those runs by it)."""

AT_FLOPS_COLUMN = "at_flops_of"
"""After EXTRA_COLUMNS, only in a sweep with ``anneal.at_scratch_flops``: the scratch cooldown run at whose FLOPs
a grown run's cooldown ends (empty for every other run)."""

STATES = ("done", "running", "interrupted", "failed", "skipped", "pending")


def run_state(sweep_dir: Path, run: PlannedRun) -> dict[str, Any]:
    """{state, reason, error_class, attempts} of one run, from its dir (and its lock: is a process on it?)."""
    run_dir = sweep_dir / run.config.out_dir
    st = read_json(run_dir / "status.json") or {}
    summary = read_json(run_dir / "summary.json") or {}
    out = {"state": "pending", "reason": None, "error_class": None, "attempts": st.get("attempts", 0)}
    if lock_held(run_dir):
        out["state"] = "running"
    elif is_done(sweep_dir, run):
        out["state"] = "done"
    elif st.get("status") in ("failed", "skipped"):
        out.update(state=st["status"], reason=st.get("reason"), error_class=st.get("error_class"))
    elif str(summary.get("status", "")).startswith("failed"):
        out.update(state="failed", reason=summary["status"].removeprefix("failed: "), error_class="nan_loss")
    elif st.get("status") in ("running", "interrupted") or summary.get("status") == "running":
        out.update(state="interrupted", reason="stopped mid-run; the next sweep resumes it from last.ckpt")
    return out


def _status_text(state: dict, summary: dict) -> str:
    if state["state"] == "done":
        return "done"
    if state["state"] == "failed":
        if state["error_class"] == "nan_loss" and str(summary.get("status", "")).startswith("failed: nan"):
            return summary["status"]  # "failed: nan at tokens=…", as the trainer wrote it
        return f"failed: {state['error_class']}: {state['reason']}"
    if state["state"] == "skipped":
        return f"skipped: {state['reason']}"
    return state["state"]


def _cell(v: Any) -> Any:
    """A config value as a table cell: lists and dicts as JSON (one type per column in Parquet)."""
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return v


def eval_cells(sweep_dir: Path, run: PlannedRun, spec: EvalSpec | None) -> dict[str, Any]:
    """A run's downstream columns: ``eval_status`` (done | failed: <reason> | pending; empty for a run the grid's
    ``eval:`` does not evaluate) and its scores (`stacking.eval_records.metrics`); {} without ``eval:``."""
    if spec is None:
        return {}
    if not evaluated(run):
        return {"eval_status": None}
    path = result_path(sweep_dir, run, spec)
    record = read_result(path) if path is not None else None
    if record is not None:
        return {"eval_status": "done", **{m.column: m.value for m in metrics(record)}}
    outcome = (read_json(sweep_dir / run.config.out_dir / "status.json") or {}).get("eval") or {}
    failed = outcome.get("state") == "failed" and outcome.get("tasks") == list(spec.tasks)
    return {"eval_status": f"failed: {outcome.get('reason')}" if failed else "pending"}


def results_frame(sweep_dir: str | Path, runs: list[PlannedRun] | None = None) -> pd.DataFrame:
    sweep_dir = Path(sweep_dir)
    runs = load_plan(sweep_dir) if runs is None else runs
    spec = spec_from_plan(sweep_dir)
    at_flops = [AT_FLOPS_COLUMN] if any(r.at_flops_of for r in runs) else []
    rows = []
    for r in runs:
        run_dir = sweep_dir / r.config.out_dir
        summary = read_json(run_dir / "summary.json") or {}
        model = read_json(run_dir / "model.json") or {}
        state = run_state(sweep_dir, r)
        grown = r.op is not None and r.kind in ("grown", "cooldown")
        row = {
            "run_id": r.id,
            "kind": r.kind,
            "target": r.target,
            "model": r.model,
            "op": r.op if grown else None,
            "direction": r.direction if grown else None,
            "g": r.g if grown else None,
            "grow_at_tokens": r.grow_at_tokens if grown else None,
            "seed": r.config.seed,
            "parent_run": r.branch_of if r.kind == "cooldown" else r.parent,
            "params_total": summary.get("params_total", model.get("params_total")),
            "params_non_embedding": summary.get("params_non_embedding", model.get("params_non_embedding")),
            "flops_per_token": r.flops_per_token,
            "tokens": summary.get("tokens"),
            "flops_offset": summary.get("flops_offset", r.flops_offset),
            "flops": summary.get("flops"),
            "final_val_loss": summary.get("final_val_loss"),
            "best_val_loss": summary.get("best_val_loss"),
            "tokens_per_s": summary.get("tokens_per_s"),
            "wall_time_s": summary.get("wall_time_s"),
            "status": _status_text(state, summary),
            "run_dir": r.config.out_dir,
            "anneal_fraction": r.anneal_fraction,
            "decay_tokens": r.decay_tokens,
        }
        for f in fields(RunConfig):
            row[f"cfg.{f.name}"] = _cell(getattr(r.config, f.name))
        row.update(
            state=state["state"],
            error_class=state["error_class"],
            attempts=state["attempts"],
            planned_tokens=r.tokens,
            planned_flops=r.flops,
            grown_dir=r.grow.dst if r.grow else None,
            variant=r.variant if grown else None,
        )
        if at_flops:
            row["at_flops_of"] = r.at_flops_of
        row.update({f"final_val_loss_{n}": summary.get(f"final_val_loss_{n}") for n in r.config.eval_data_dirs})
        row.update(eval_cells(sweep_dir, r, spec))
        rows.append(row)
    # eval_data_dirs' final losses last: readers of the earlier columns see the table they always did
    evals = sorted({f"final_val_loss_{n}" for r in runs for n in r.config.eval_data_dirs})
    scores = list(dict.fromkeys(k for row in rows for k in row if k.startswith(PREFIX) and k != "eval_status"))
    downstream = ["eval_status", *scores] if spec is not None else []
    columns = (
        RESULT_COLUMNS + [f"cfg.{f.name}" for f in fields(RunConfig)] + EXTRA_COLUMNS + at_flops + evals + downstream
    )
    df = pd.DataFrame(rows, columns=columns)
    for col in (
        "g",
        "grow_at_tokens",
        "seed",
        "params_total",
        "params_non_embedding",
        "tokens",
        "attempts",
        "planned_tokens",
        "decay_tokens",
    ):
        df[col] = df[col].astype("Int64")
    for col in (
        "flops_per_token",
        "flops_offset",
        "flops",
        "final_val_loss",
        "best_val_loss",
        "tokens_per_s",
        "wall_time_s",
        "planned_flops",
        "anneal_fraction",
        *evals,
        *scores,
    ):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for f in fields(RunConfig):  # mixed None/str or int/str config columns: one type each for Parquet
        col = f"cfg.{f.name}"
        if df[col].map(lambda v: v is None or isinstance(v, str)).all() or f.name == "devices":
            df[col] = df[col].map(lambda v: None if v is None else str(v)).astype("string")
    return df


def write_results(sweep_dir: str | Path, runs: list[PlannedRun] | None = None) -> pd.DataFrame:
    """Rebuild results.csv and results.parquet from the run dirs (each written atomically)."""
    sweep_dir = Path(sweep_dir)
    df = results_frame(sweep_dir, runs)
    for name, write in (
        ("results.csv", lambda p: df.to_csv(p, index=False)),
        ("results.parquet", lambda p: df.to_parquet(p, index=False)),
    ):
        tmp = sweep_dir / f".{name}.tmp-{os.getpid()}"
        write(tmp)
        os.replace(tmp, sweep_dir / name)
    return df


def format_status(sweep_dir: str | Path) -> str:
    """`stacking sweep status`: counts, then one line per run that is not done (failed ones with their reason)."""
    sweep_dir = Path(sweep_dir)
    runs = load_plan(sweep_dir)
    states = {r.id: run_state(sweep_dir, r) for r in runs}
    count = {s: sum(1 for v in states.values() if v["state"] == s) for s in STATES}
    lines = [
        f"{sweep_dir}: {len(runs)} runs: "
        + ", ".join(f"{count[s]} {s}" for s in STATES if count[s] or s in ("done", "failed", "pending"))
    ]
    spec = spec_from_plan(sweep_dir)
    for r in runs:
        st = states[r.id]
        if st["state"] == "done":
            s = read_json(sweep_dir / r.config.out_dir / "summary.json") or {}
            loss = s.get("final_val_loss")
            detail = f"val loss {loss:.4f}" if isinstance(loss, float) and math.isfinite(loss) else ""
            evaluation = eval_cells(sweep_dir, r, spec).get("eval_status")
            detail += f"  evaluation {evaluation}" if evaluation and evaluation != "done" else ""
            lines.append(f"  done         {r.id}  {detail}")
        else:
            why = st["reason"] and (f"{st['error_class']}: {st['reason']}" if st["error_class"] else st["reason"])
            tries = (
                f" (after {st['attempts']} attempt{'s' if st['attempts'] != 1 else ''})"
                if st["attempts"] and st["state"] == "failed"
                else ""
            )
            lines.append(f"  {st['state']:<12} {r.id}" + (f"  {why}{tries}" if why else ""))
    return "\n".join(lines)


__all__ = [
    "AT_FLOPS_COLUMN",
    "EXTRA_COLUMNS",
    "RESULT_COLUMNS",
    "format_status",
    "results_frame",
    "run_state",
    "write_results",
]
