"""Downstream scores of a sweep whose grid has ``eval:`` (lm-eval tasks; docs/evaluation.md, "In sweeps"), paired by
seed like the loss table: each method's score minus its own seed's scratch run's, mid and annealed, and where that
difference and the loss difference point opposite ways.

    stacking loss-table SWEEP_DIR     prints it under the loss table
    stacking report SWEEP_DIR         downstream.csv, and its section next to the loss table

mid = the main run's final checkpoint, annealed = its cooldown run ending at the full budget: the checkpoints the
loss table reads. Scores come from the runs' ``eval/*.json`` (`stacking eval`'s records, which `stacking export`
carries): the file of the settings plan.json's ``eval`` records, at each run's final checkpoint. Whether a higher
score is better is lm-eval's ``higher_is_better``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.loss_table import _cell, main_runs, mean_ci_half, paired_difference, paired_groups
from analysis.sweep import AnalysisError, Sweep
from stacking.eval_records import Metric, find_result, metrics, read_result

READINGS = {"mid": "final_val_loss", "annealed": "annealed"}
"""Reading → the loss table's column of the same checkpoints."""
COLUMNS = ["target", "method", "task", "metric", "higher_is_better"] + [
    f"{reading}{suffix}"
    for reading in READINGS
    for suffix in (
        "_seeds",
        "",
        "_ci",
        "_vs_scratch",
        "_vs_scratch_ci",
        "_loss_vs_scratch",
        "_loss_vs_scratch_ci",
        "_agrees",
    )
]
"""downstream.csv: per target × method × metric and reading, the runs scored (for a method: the seeds paired with
scratch), the score's mean and 95 % CI half-width, its paired difference to scratch, the loss table's difference
of the same checkpoints, and whether the two point the same way (both say growth is ahead, or both behind)."""


def eval_settings(sweep_dir: str | Path) -> dict | None:
    """plan.json's ``eval`` (tasks, include_path, limit, num_fewshot, batch_size), or None: no evaluation."""
    path = Path(sweep_dir) / "plan.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("eval") or None
    except ValueError:
        raise AnalysisError(f"{path} is not valid JSON") from None


def eval_records(sweep: Sweep):
    """(run id, record) of every finished run but the bases with a result of plan.json's ``eval`` settings at its
    final checkpoint (`stacking eval`'s JSON); nothing without evaluation settings."""
    settings = eval_settings(sweep.path)
    if settings is None:
        return
    runs = sweep.runs()
    for _, r in runs[runs["kind"] != "base"].iterrows():
        path = find_result(
            sweep.path / str(r["run_dir"]),
            int(r["tokens"]),
            settings["tasks"],
            settings.get("limit"),
            settings.get("num_fewshot"),
        )
        record = read_result(path) if path is not None else None
        if record is not None:
            yield str(r["run_id"]), record


def read_scores(sweep: Sweep) -> tuple[pd.DataFrame, dict[str, Metric]]:
    """Every finished run's downstream scores (index: run id; one column per metric, `Metric.column`), and each
    column's description (task, metric, direction); empty without evaluation settings or results."""
    if eval_settings(sweep.path) is None:
        return pd.DataFrame(), {}
    scores, described = {}, {}
    for run_id, record in eval_records(sweep):
        scores[run_id] = {m.column: m.value for m in metrics(record)}
        for m in metrics(record):
            described.setdefault(m.column, m)
    return pd.DataFrame.from_dict(scores, orient="index", columns=list(described), dtype=float), described


def downstream_table(sweep: Sweep, losses: pd.DataFrame) -> pd.DataFrame:
    """One row per target × method × metric (`COLUMNS`), paired by seed as `analysis.loss_table.loss_table` pairs
    (``losses``: its table of the same sweep); empty when the sweep has no downstream scores."""
    scores, described = read_scores(sweep)
    if scores.empty:
        return pd.DataFrame(columns=COLUMNS)
    loss_rows = {(r["target"], r["method"]): r for _, r in losses.iterrows()}
    rows = []
    for target, method, grp, own, scratch in paired_groups(sweep, main_runs(sweep, scores)):
        for col, m in described.items():
            row = {
                "target": target,
                "method": method,
                "task": m.task,
                "metric": m.metric,
                "higher_is_better": m.higher_is_better,
            }
            for reading, loss_col in READINGS.items():
                row.update(_reading(grp, own, scratch, f"{reading}:{col}", reading, method))
                loss = loss_rows.get((target, method), {})
                row[f"{reading}_loss_vs_scratch"] = loss.get(f"{loss_col}_vs_scratch", np.nan)
                row[f"{reading}_loss_vs_scratch_ci"] = loss.get(f"{loss_col}_vs_scratch_ci", np.nan)
                row[f"{reading}_agrees"] = _agrees(row, reading)
            if row["mid_seeds"] or row["annealed_seeds"]:
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _reading(grp: pd.DataFrame, own: pd.DataFrame, scratch: pd.DataFrame, col: str, reading: str, method: str) -> dict:
    """One reading's cells: runs scored (a method: seeds paired), the score's mean ± CI, the paired difference."""
    out = {f"{reading}_seeds": int(grp[col].notna().sum())}
    out[reading], out[f"{reading}_ci"] = mean_ci_half(grp[col])
    out[f"{reading}_vs_scratch"] = out[f"{reading}_vs_scratch_ci"] = np.nan
    if method != "scratch":
        diff = paired_difference(own, scratch, col)
        out[f"{reading}_seeds"] = int(np.isfinite(diff).sum())
        out[f"{reading}_vs_scratch"], out[f"{reading}_vs_scratch_ci"] = mean_ci_half(diff)
    return out


def _gain(diff: float, higher_is_better: bool) -> float:
    """A difference to scratch as growth's gain: positive where the method is ahead."""
    return diff if higher_is_better else -diff


def _agrees(row: dict, reading: str) -> bool | None:
    """Whether the score's and the loss's differences to scratch both put growth ahead (or both behind); None where
    either is missing or zero, or the metric has no direction."""
    diff, loss = row[f"{reading}_vs_scratch"], row[f"{reading}_loss_vs_scratch"]
    if row["higher_is_better"] is None or not (np.isfinite(diff) and np.isfinite(loss)) or diff == 0 or loss == 0:
        return None
    return bool(_gain(diff, row["higher_is_better"]) * _gain(loss, False) > 0)


def _excludes_zero(mean: float, half: float) -> bool:
    return bool(np.isfinite(half) and abs(mean) > half)


def _says(gain: float, mean: float, half: float) -> str:
    where = "ahead of" if gain > 0 else "behind"
    sure = ", CI excludes 0" if _excludes_zero(mean, half) else ""
    return f"{where} scratch ({_cell(mean, half, '+')}{sure})"


def disagreements(table: pd.DataFrame) -> list[str]:
    """One line per target × method × reading × metric whose score difference to scratch and loss difference point
    opposite ways, saying which of the two CIs exclude 0."""
    lines = []
    for _, r in table[table["method"] != "scratch"].iterrows():
        for reading in READINGS:
            agrees = r[f"{reading}_agrees"]
            if agrees is None or pd.isna(agrees) or agrees:
                continue
            diff, half = r[f"{reading}_vs_scratch"], r[f"{reading}_vs_scratch_ci"]
            loss, loss_half = r[f"{reading}_loss_vs_scratch"], r[f"{reading}_loss_vs_scratch_ci"]
            lines.append(
                f"{r['target']} {r['method']}, {reading}: {_metric_label(r)} puts growth "
                f"{_says(_gain(diff, r['higher_is_better']), diff, half)}, the loss puts it "
                f"{_says(-loss, loss, loss_half)}"
            )
    return lines


def _metric_label(r) -> str:
    arrow = {True: " ↑", False: " ↓"}.get(r["higher_is_better"], "")
    return f"{r['task']} {r['metric']}{arrow}"


def _seeds(r) -> str:
    mid, annealed = int(r["mid_seeds"]), int(r["annealed_seeds"])
    return f"{mid}" if annealed in (0, mid) else f"{mid} (annealed {annealed})"


def format_downstream_table(table: pd.DataFrame) -> str:
    """The markdown table: per target × method × metric, mid and annealed score (mean ± CI) and − scratch."""
    lines = [
        "| target | method | metric | seeds | mid | mid − scratch | annealed | annealed − scratch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        cells = " | ".join(
            _cell(r[col], r[f"{col}_ci"], sign)
            for col, sign in (("mid", ""), ("mid_vs_scratch", "+"), ("annealed", ""), ("annealed_vs_scratch", "+"))
        )
        lines.append(f"| {r['target']} | {r['method']} | {_metric_label(r)} | {_seeds(r)} | {cells} |")
    return "\n".join(lines)


DOWNSTREAM_HEADING = "### Downstream scores, paired by seed"
DOWNSTREAM_TEXT = (
    "lm-eval scores of the checkpoints the loss table reads (mid: the main run's final checkpoint; annealed: its "
    "cooldown to 100 %), mean ± 95 % CI half-width over seeds, and each method's score minus its own seed's scratch "
    "run's (seeds: runs scored; for a method, seeds paired with scratch). ↑: higher is better, ↓: lower is better "
    "(lm-eval's `higher_is_better`): growth is ahead where its difference points the arrow's way."
)

AGREE = "Scores and losses agree: no method's score puts it on the other side of scratch than its loss does."
DISAGREE = "Scores and losses disagree (the score difference to scratch and the loss difference point opposite ways):"


def downstream_markdown(table: pd.DataFrame, settings: dict) -> list[str]:
    """The report's downstream section: settings, table, and one line per disagreement with the loss table."""
    limit = f", limit {settings['limit']}" if settings.get("limit") is not None else ""
    shots = f", {settings['num_fewshot']}-shot" if settings.get("num_fewshot") is not None else ""
    lines = [
        DOWNSTREAM_HEADING,
        "",
        f"{DOWNSTREAM_TEXT} Tasks: {', '.join(settings['tasks'])}{limit}{shots}.",
        "",
        format_downstream_table(table),
        "",
    ]
    notes = disagreements(table)
    if not notes:
        return lines + [AGREE, ""]
    return lines + [DISAGREE, ""] + [f"- {n}" for n in notes] + [""]
