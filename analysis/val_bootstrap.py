"""How much of a paired loss difference could come from which documents are held out: a bootstrap over the
validation documents, beside the CI over training seeds (issue 21, "Safeguards"; docs/analysis.md).

    stacking val-docs SWEEP_DIR       each evaluated run's per-document losses (runs/<id>/eval/val_docs.json)
    stacking report SWEEP_DIR         val_bootstrap.csv and its section after the loss table, when those files exist
    stacking loss-table SWEEP_DIR     prints the table under the loss table

Per target × method (the loss table's grouping) and reading (mid: the main run's final checkpoint; annealed: its
cooldown to 100 %), the difference grown − scratch of the same seed, averaged over seeds:

* seed CI: Student-t 95 % over the seeds' differences (`analysis.speedup.mean_ci`), the validation set held fixed;
* doc CI: the seeds held fixed, B resamples of the documents with replacement (one seeded numpy generator; a draw is
  the same multiset of documents for every run), each run's token-weighted loss recomputed on the draw, then the
  seed-mean difference; the 2.5 and 97.5 percentiles of the B values.

Runs are paired only when their val_docs.json record the same data id, seq_len and window offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.loss_table import _cell, main_runs, paired_groups
from analysis.section import Section
from analysis.speedup import mean_ci
from analysis.sweep import AnalysisError, Sweep
from stacking.val_docs import read_val_docs

RESAMPLES = 1000
READINGS = ("mid", "annealed")
COLUMNS = [
    "target",
    "method",
    "reading",
    "seeds",
    "documents",
    "diff",
    "seed_lo",
    "seed_hi",
    "doc_lo",
    "doc_hi",
    "doc_sd",
    "resamples",
]
"""val_bootstrap.csv: per target × method × reading, the seeds paired, the documents, the seed-mean paired difference
(grown − scratch, from the documents' losses), its seed CI, its document-bootstrap percentile CI and SD, and B."""


@dataclass(frozen=True)
class DocLosses:
    """One run's val_docs.json: its windows and, per document, target tokens and loss sum."""

    windows: tuple
    """(data_id, seq_len, sha256 of the window offsets): runs with different windows are never paired."""
    index: np.ndarray
    tokens: np.ndarray
    loss_sum: np.ndarray

    @property
    def loss(self) -> float:
        return float(self.loss_sum.sum() / self.tokens.sum())


def read_doc_losses(sweep: Sweep) -> dict[str, DocLosses]:
    """Every finished run's per-document losses, by run id (runs without val_docs.json left out)."""
    out = {}
    for _, r in sweep.runs().iterrows():
        rec = read_val_docs(sweep.path / str(r["run_dir"]))
        if rec is None or not rec.get("documents"):
            continue
        docs = rec["documents"]
        out[str(r["run_id"])] = DocLosses(
            (rec.get("data_id"), rec.get("seq_len"), rec.get("offsets_sha256")),
            np.array([d["index"] for d in docs], np.int64),
            np.array([d["tokens"] for d in docs], np.float64),
            np.array([d["loss_sum"] for d in docs], np.float64),
        )
    return out


def check_pair(run_a: str, a: DocLosses, run_b: str, b: DocLosses) -> None:
    """AnalysisError when two runs' per-document losses are of different windows or documents."""
    if a.windows != b.windows or not np.array_equal(a.index, b.index):
        raise AnalysisError(
            f"runs {run_a} and {run_b} have per-document validation losses of different windows (val_docs.json "
            f"data_id, seq_len, offsets {a.windows[0]}, {a.windows[1]}, {str(a.windows[2])[:12]} vs {b.windows[0]}, "
            f"{b.windows[1]}, {str(b.windows[2])[:12]}): refusing to pair them"
        )


def resample_counts(n_docs: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_docs) multiplicities: each row a draw of n_docs documents with replacement."""
    draws = np.random.default_rng(seed).integers(0, n_docs, size=(resamples, n_docs))
    flat = (draws + n_docs * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n_docs).reshape(resamples, n_docs).astype(np.float64)


def paired_bootstrap(pairs: list[tuple[DocLosses, DocLosses]], counts: np.ndarray) -> np.ndarray:
    """The seed-mean difference grown − scratch on each resample (``counts``: `resample_counts`): (resamples,)."""

    def losses(runs: list[DocLosses]) -> np.ndarray:  # (resamples, seeds)
        return (counts @ np.stack([r.loss_sum for r in runs]).T) / (counts @ np.stack([r.tokens for r in runs]).T)

    return (losses([g for g, _ in pairs]) - losses([s for _, s in pairs])).mean(axis=1)


def val_bootstrap_table(sweep: Sweep, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """One row per target × method × reading with paired seeds whose runs both have val_docs.json (`COLUMNS`);
    empty when no run has one."""
    docs = read_doc_losses(sweep)
    if not docs:
        return pd.DataFrame(columns=COLUMNS)
    ids = pd.DataFrame({"run": list(docs)}, index=list(docs))
    draws: dict[tuple, np.ndarray] = {}  # one set of resamples per window set: the same draw for every run
    rows = []
    for target, method, _, own, scratch in paired_groups(sweep, main_runs(sweep, ids)):
        if method == "scratch":
            continue
        for reading in READINGS:
            grown_ids, scratch_ids = own[f"{reading}:run"], scratch.loc[own["seed"], f"{reading}:run"]
            pairs = [(str(g), str(s)) for g, s in zip(grown_ids, scratch_ids) if pd.notna(g) and pd.notna(s)]
            if not pairs:
                continue
            for g, s in pairs:
                check_pair(g, docs[g], s, docs[s])
            first = docs[pairs[0][0]]
            if first.windows not in draws:
                draws[first.windows] = resample_counts(len(first.index), resamples, seed)
            for g, _ in pairs[1:]:
                check_pair(pairs[0][0], first, g, docs[g])
            runs = [(docs[g], docs[s]) for g, s in pairs]
            diff, seed_lo, seed_hi = mean_ci([a.loss - b.loss for a, b in runs])
            boot = paired_bootstrap(runs, draws[first.windows])
            rows.append(
                {
                    "target": target,
                    "method": method,
                    "reading": reading,
                    "seeds": len(pairs),
                    "documents": len(first.index),
                    "diff": diff,
                    "seed_lo": seed_lo,
                    "seed_hi": seed_hi,
                    "doc_lo": float(np.percentile(boot, 2.5)),
                    "doc_hi": float(np.percentile(boot, 97.5)),
                    "doc_sd": float(boot.std(ddof=1)) if resamples > 1 else np.nan,
                    "resamples": resamples,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _interval(lo: float, hi: float) -> str:
    return f"[{lo:+.4f}, {hi:+.4f}]" if np.isfinite(lo) and np.isfinite(hi) else "1 seed: no CI"


def format_val_bootstrap(table: pd.DataFrame) -> str:
    lines = [
        "| target | method | reading | seeds | documents | − scratch | seed CI (95 %) | doc CI (95 %) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['target']} | {r['method']} | {r['reading']} | {r['seeds']} | {r['documents']} | "
        f"{_cell(r['diff'], sign='+')} | {_interval(r['seed_lo'], r['seed_hi'])} | "
        f"{_interval(r['doc_lo'], r['doc_hi'])} |"
        for _, r in table.iterrows()
    ]
    return "\n".join(lines)


HEADING = "### Paired loss differences: seeds and held-out documents"
TEXT = (
    "Each method's final loss minus its own seed's scratch run's (mid: the main runs' final checkpoints; annealed: "
    "their cooldowns to 100 %), mean over the seeds, from the per-document losses of `stacking val-docs`. Seed CI: "
    "Student-t over the seeds, the validation documents held fixed. Doc CI: the seeds held fixed, the documents "
    "resampled with replacement ({resamples} draws, seed {seed}; one draw for every run), 2.5–97.5 percentiles. "
    "A difference whose seed CI excludes 0 while its doc CI does not may hold for these documents and not for "
    "held-out data at large."
)


def val_bootstrap_markdown(table: pd.DataFrame, resamples: int, seed: int) -> list[str]:
    return [HEADING, "", TEXT.format(resamples=resamples, seed=seed), "", format_val_bootstrap(table), ""]


def val_bootstrap_section(sweep: Sweep, resamples: int = RESAMPLES, seed: int = 0) -> Section:
    """The report's section and val_bootstrap.csv; empty when no run has val_docs.json (the report unchanged)."""
    table = val_bootstrap_table(sweep, resamples, seed)
    if table.empty:
        return Section()
    return Section(markdown=val_bootstrap_markdown(table, resamples, seed), csv={"val_bootstrap.csv": table})
