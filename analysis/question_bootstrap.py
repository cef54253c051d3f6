"""How much of a paired downstream difference could come from which questions a task happens to hold: a bootstrap
over the questions, beside the CI over training seeds — the downstream twin of analysis/val_bootstrap.py.

    stacking report SWEEP_DIR         downstream_questions.csv and its lines under the downstream table
    stacking loss-table SWEEP_DIR     prints the table under the downstream table

Per target × method, task × per-question metric (acc, acc_norm, …: those `stacking eval` records in ``per_doc``)
and reading (mid: the main run's final checkpoint; annealed: its cooldown to 100 %), each question's score of the
grown model minus its own seed's scratch model's, averaged over questions and seeds:

* seed CI: Student-t 95 % over the seeds' differences, the questions held fixed (the downstream table's CI);
* question CI: the seeds held fixed, B resamples of the questions with replacement (one seeded numpy generator,
  `analysis.val_bootstrap.resample_counts`; a draw is the same multiset of questions for every run), the
  seed-mean difference recomputed on each; the 2.5 and 97.5 percentiles of the B values.

Runs pair only when their records hash the same questions (``docs_sha256``). Evaluations written before
``per_doc`` existed have none: rerun the sweep (it re-evaluates nothing already recorded; delete the runs' eval/
results to redo them) or `stacking eval` the checkpoints.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.downstream import eval_records
from analysis.loss_table import _cell, main_runs, paired_groups
from analysis.speedup import mean_ci
from analysis.sweep import AnalysisError, Sweep
from analysis.val_bootstrap import READINGS, RESAMPLES, _interval, resample_counts

COLUMNS = [
    "target",
    "method",
    "task",
    "metric",
    "reading",
    "seeds",
    "questions",
    "diff",
    "seed_lo",
    "seed_hi",
    "question_lo",
    "question_hi",
    "question_sd",
    "resamples",
]
"""downstream_questions.csv: per target × method × task × metric × reading, the seeds paired, the questions, the
seed-mean paired difference (grown − scratch, mean over questions), its seed CI, its question-bootstrap percentile
CI and SD, and B."""


def read_per_doc(sweep: Sweep) -> dict[str, dict]:
    """Every finished run's per-question scores (`stacking.eval_records.per_doc_scores`), by run id; runs whose
    record has none are left out."""
    return {run_id: rec["per_doc"] for run_id, rec in eval_records(sweep) if rec.get("per_doc")}


def _scores(per_doc: dict, task: str, metric: str) -> tuple[str, np.ndarray] | None:
    entry = per_doc.get(task) or {}
    if metric not in entry:
        return None
    return entry["docs_sha256"], np.asarray(entry[metric], np.float64)


def question_bootstrap_table(sweep: Sweep, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """One row per target × method × task × metric × reading with paired seeds whose records both hold that
    metric per question (`COLUMNS`); empty when no run has per-question scores."""
    per_doc = read_per_doc(sweep)
    if not per_doc:
        return pd.DataFrame(columns=COLUMNS)
    keys = list(
        dict.fromkeys(
            (task, metric)
            for rec in per_doc.values()
            for task, e in rec.items()
            for metric in e
            if metric not in ("doc_id", "docs_sha256")
        )
    )
    ids = pd.DataFrame({"run": list(per_doc)}, index=list(per_doc))
    draws: dict[str, np.ndarray] = {}  # one set of resamples per question set: the same draw for every run
    rows = []
    for target, method, _, own, scratch in paired_groups(sweep, main_runs(sweep, ids)):
        if method == "scratch":
            continue
        for task, metric in keys:
            for reading in READINGS:
                grown_ids, scratch_ids = own[f"{reading}:run"], scratch.loc[own["seed"], f"{reading}:run"]
                pairs = []
                for g, s in zip(grown_ids, scratch_ids):
                    if pd.isna(g) or pd.isna(s):
                        continue
                    a, b = _scores(per_doc[str(g)], task, metric), _scores(per_doc[str(s)], task, metric)
                    if a is None or b is None:
                        continue
                    pairs.append((str(g), str(s), a, b))
                if not pairs:
                    continue
                sha = pairs[0][2][0]
                for g, s, a, b in pairs:
                    if a[0] != sha or b[0] != sha:
                        raise AnalysisError(
                            f"runs {pairs[0][0]}, {g} and {s} were scored on different {task} questions "
                            f"(per_doc docs_sha256 {sha[:12]}, {a[0][:12]}, {b[0][:12]}): refusing to pair them"
                        )
                d = np.stack([a[1] - b[1] for _, _, a, b in pairs])  # (seeds, questions)
                if sha not in draws:
                    draws[sha] = resample_counts(d.shape[1], resamples, seed)
                boot = (draws[sha] @ d.T / d.shape[1]).mean(axis=1)
                diff, seed_lo, seed_hi = mean_ci(d.mean(axis=1))
                rows.append(
                    {
                        "target": target,
                        "method": method,
                        "task": task,
                        "metric": metric,
                        "reading": reading,
                        "seeds": len(pairs),
                        "questions": d.shape[1],
                        "diff": diff,
                        "seed_lo": seed_lo,
                        "seed_hi": seed_hi,
                        "question_lo": float(np.percentile(boot, 2.5)),
                        "question_hi": float(np.percentile(boot, 97.5)),
                        "question_sd": float(boot.std(ddof=1)) if resamples > 1 else np.nan,
                        "resamples": resamples,
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def format_question_bootstrap(table: pd.DataFrame) -> str:
    head = "| target | method | task metric | reading | seeds | questions | − scratch | seed CI (95 %) | question CI (95 %) |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['target']} | {r['method']} | {r['task']} {r['metric']} | {r['reading']} | {r['seeds']} | "
        f"{r['questions']} | {_cell(r['diff'], sign='+')} | {_interval(r['seed_lo'], r['seed_hi'])} | "
        f"{_interval(r['question_lo'], r['question_hi'])} |"
        for _, r in table.iterrows()
    ]
    return "\n".join(lines)


TEXT = (
    "Per-question downstream scores ({resamples} question resamples, seed {seed}; one draw for every run): each "
    "method's score minus its own seed's scratch run's, mean over the seeds. Seed CI: Student-t over the seeds, the "
    "questions held fixed. Question CI: the seeds held fixed, the task's questions resampled with replacement, "
    "2.5–97.5 percentiles. A difference whose seed CI excludes 0 while its question CI does not may hold for these "
    "questions and not for the task at large."
)


def question_bootstrap_markdown(table: pd.DataFrame, resamples: int, seed: int) -> list[str]:
    return [TEXT.format(resamples=resamples, seed=seed), "", format_question_bootstrap(table), ""]
