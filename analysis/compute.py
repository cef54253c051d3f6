"""What a sweep cost: training and evaluation wall time per run kind, from the runs' own records (report
`compute.csv` and its "Compute" section).

Training time is each finished run's `summary.json` ``wall_time_s`` (carried across resumes; a cooldown that branches
from a saved state counts only its own steps); evaluation time is the ``wall_time_s`` of each run's `stacking eval`
record for the grid's ``eval:`` settings. Times are summed over runs, so runs trained side by side (``--jobs`` > 1)
overlap: the sum is core-time at the sweep's threads per run, not the sweep's elapsed time.
"""

from __future__ import annotations

import pandas as pd

from analysis.downstream import eval_records

COLUMNS = ["kind", "runs", "train_wall_h", "eval_runs", "eval_wall_h"]
KINDS = ["base", "grown", "scratch", "cooldown"]


def compute_table(sweep) -> pd.DataFrame:
    """One row per run kind with finished runs (`COLUMNS`), then a row ``total``; empty for a sweep with none."""
    runs = sweep.runs()
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    eval_s = {run_id: float(rec.get("eval", {}).get("wall_time_s") or 0.0) for run_id, rec in eval_records(sweep)}
    rows = []
    kinds = [k for k in KINDS if k in set(runs["kind"])] + sorted(set(runs["kind"]) - set(KINDS))
    for kind in kinds:
        part = runs[runs["kind"] == kind]
        evaluated = [eval_s[r] for r in part["run_id"] if r in eval_s]
        rows.append(
            {
                "kind": kind,
                "runs": len(part),
                "train_wall_h": float(pd.to_numeric(part["wall_time_s"], errors="coerce").fillna(0).sum()) / 3600,
                "eval_runs": len(evaluated),
                "eval_wall_h": sum(evaluated) / 3600,
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    total = {"kind": "total", **{c: table[c].sum() for c in COLUMNS[1:]}}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def compute_markdown(table: pd.DataFrame) -> list[str]:
    """The report's "Compute" section: the table, and what its hours are."""
    lines = [
        "## Compute",
        "",
        (
            "Wall time summed over finished runs (each run's own training steps, carried across resumes; evaluation "
            "from its `stacking eval` record). Runs trained side by side overlap, so this is run-time at the sweep's "
            "threads per run, not elapsed time."
        ),
        "",
        "| kind | runs | training h | evaluated runs | evaluation h |",
        "|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        bold = "**" if r["kind"] == "total" else ""
        lines.append(
            f"| {bold}{r['kind']}{bold} | {int(r['runs'])} | {bold}{r['train_wall_h']:.2f}{bold} | "
            f"{int(r['eval_runs'])} | {r['eval_wall_h']:.2f} |"
        )
    return lines + [""]


__all__ = ["COLUMNS", "compute_markdown", "compute_table"]
