"""Final losses per method over seeds, and each grown method's loss minus its own seed's scratch run's: the plainest
reading of a seeded sweep, beside the speed-ups (which read FLOPs at a loss and so magnify small loss gaps).

    python -m analysis.loss_table SWEEP_DIR

mid = the main run's last validation loss (constant LR); annealed = its cooldown run ending at the full budget.
Mean ± half-width of the Student-t 95 % CI over seeds; the difference is paired by seed (same data order and init
seed for both), so the scratch run's seed-to-seed spread cancels out of it.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from scipy import stats

from analysis.sweep import load_sweep, method_label


def _mean_ci(values) -> tuple[float, float]:
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def loss_table(sweep_dir) -> pd.DataFrame:
    """One row per target × method: seeds, mid and annealed loss (mean, CI half-width), and the paired difference
    to scratch of the same target and seed (mean, CI half-width; NaN for scratch itself)."""
    sweep = load_sweep(sweep_dir)
    main = sweep.runs()
    main = main[main["kind"].isin(["grown", "scratch"])].copy()
    cool = sweep.runs("cooldown")
    cool = cool[np.isclose(cool["anneal_fraction"].astype(float), 1.0)]
    main["annealed"] = main["run_id"].map(dict(zip(cool["parent_run"], cool["final_val_loss"])))
    main["method"] = [("scratch" if r["kind"] == "scratch" else method_label(r)) for _, r in main.iterrows()]
    rows = []
    for (target, method), grp in main.groupby(["target", "method"], sort=False):
        scratch = main[(main["target"] == target) & (main["kind"] == "scratch")]
        scratch = scratch.sort_values("tokens").drop_duplicates("seed", keep="last").set_index("seed")
        row = {"target": target, "method": method, "seeds": len(grp)}
        for col in ("final_val_loss", "annealed"):
            row[col], row[f"{col}_ci"] = _mean_ci(grp[col])
            if method != "scratch":
                diff = [r[col] - scratch.loc[r["seed"], col] for _, r in grp.iterrows() if r["seed"] in scratch.index]
                row[f"{col}_vs_scratch"], row[f"{col}_vs_scratch_ci"] = _mean_ci(diff)
        rows.append(row)
    return pd.DataFrame(rows)


def format_loss_table(df: pd.DataFrame) -> str:
    def cell(mean, ci, sign=""):
        if not np.isfinite(mean):
            return "—"
        return f"{mean:{sign}.4f}" + (f" ± {ci:.4f}" if np.isfinite(ci) else "")

    lines = ["| target | method | seeds | mid loss | mid − scratch | annealed loss | annealed − scratch |",
             "|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r['target']} | {r['method']} | {r['seeds']} | {cell(r['final_val_loss'], r['final_val_loss_ci'])} | "
                     f"{cell(r.get('final_val_loss_vs_scratch', np.nan), r.get('final_val_loss_vs_scratch_ci', np.nan), '+')} | "
                     f"{cell(r['annealed'], r['annealed_ci'])} | "
                     f"{cell(r.get('annealed_vs_scratch', np.nan), r.get('annealed_vs_scratch_ci', np.nan), '+')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m analysis.loss_table SWEEP_DIR")
    print(format_loss_table(loss_table(sys.argv[1])))
