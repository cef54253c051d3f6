"""Final losses per method over seeds, and each grown method's loss minus its own seed's scratch run's: the plainest
reading of a seeded sweep, beside the speed-ups (which read FLOPs at a loss and so magnify small loss gaps).

    python -m analysis.loss_table SWEEP_DIR [--per-seed]

mid = the main run's last validation loss (constant LR); annealed = its cooldown run ending at the full budget.
Mean ± half-width of the Student-t 95 % CI over seeds; the difference is paired by seed (same data order and init
seed for both), so the scratch run's seed-to-seed spread cancels out of it. ``--per-seed`` prints one row per
grown run instead (its seed's differences): how a one-seed d sweep is read against the main d's seeds.
`stacking report` writes the same table into report.md and losses.csv.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
from scipy import stats

from analysis.sweep import AnalysisError, Sweep, load_sweep, method_label


def _mean_ci(values) -> tuple[float, float]:
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def _main_runs(sweep: Sweep) -> pd.DataFrame:
    """Finished grown and scratch runs with their method label and annealed loss (the f = 1 cooldown's)."""
    main = sweep.runs()
    main = main[main["kind"].isin(["grown", "scratch"])].copy()
    cool = sweep.runs("cooldown")
    cool = cool[np.isclose(cool["anneal_fraction"].astype(float), 1.0)]
    main["annealed"] = main["run_id"].map(dict(zip(cool["parent_run"], cool["final_val_loss"])))
    main["method"] = [("scratch" if r["kind"] == "scratch" else method_label(r)) for _, r in main.iterrows()]
    return main


def _scratch_by_seed(main: pd.DataFrame, target) -> pd.DataFrame:
    scratch = main[(main["target"] == target) & (main["kind"] == "scratch")]
    return scratch.sort_values("tokens").drop_duplicates("seed", keep="last").set_index("seed")


def loss_table(sweep: Sweep | str) -> pd.DataFrame:
    """One row per target × method: seeds, mid and annealed loss (mean, CI half-width), and the paired difference
    to scratch of the same target and seed (mean, CI half-width; NaN for scratch itself)."""
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    main = _main_runs(sweep)
    rows = []
    for (target, method), grp in main.groupby(["target", "method"], sort=False):
        scratch = _scratch_by_seed(main, target)
        row = {"target": target, "method": method, "seeds": len(grp)}
        for col in ("final_val_loss", "annealed"):
            row[col], row[f"{col}_ci"] = _mean_ci(grp[col])
            if method != "scratch":
                diff = [r[col] - scratch.loc[r["seed"], col] for _, r in grp.iterrows() if r["seed"] in scratch.index]
                row[f"{col}_vs_scratch"], row[f"{col}_vs_scratch_ci"] = _mean_ci(diff)
        rows.append(row)
    return pd.DataFrame(rows)


def per_seed_table(sweep: Sweep | str) -> pd.DataFrame:
    """One row per grown run: target, method, seed, mid and annealed loss, and each minus its own seed's scratch
    run's (NaN without a scratch run of that seed)."""
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    main = _main_runs(sweep)
    rows, by_target = [], {t: _scratch_by_seed(main, t) for t in main["target"].unique()}
    for _, r in main[main["kind"] == "grown"].iterrows():
        scratch = by_target[r["target"]]
        row = {"target": r["target"], "method": r["method"], "seed": r["seed"], "run_id": r["run_id"]}
        for col in ("final_val_loss", "annealed"):
            row[col] = r[col]
            row[f"{col}_vs_scratch"] = r[col] - scratch.loc[r["seed"], col] if r["seed"] in scratch.index else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


HEADER = "| mid loss | mid − scratch | annealed loss | annealed − scratch |"


def _cell(mean, ci=np.nan, sign="") -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:{sign}.4f}" + (f" ± {ci:.4f}" if np.isfinite(ci) else "")


def _loss_cells(r) -> str:
    """The four loss cells of a row of either table (CI half-widths where the row has them)."""
    return " | ".join(_cell(r.get(col, np.nan), r.get(f"{col}_ci", np.nan), sign)
                      for col, sign in (("final_val_loss", ""), ("final_val_loss_vs_scratch", "+"),
                                        ("annealed", ""), ("annealed_vs_scratch", "+")))


def format_loss_table(df: pd.DataFrame) -> str:
    lines = ["| target | method | seeds " + HEADER, "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['method']} | {r['seeds']} | {_loss_cells(r)} |" for _, r in df.iterrows()]
    return "\n".join(lines)


def format_per_seed_table(df: pd.DataFrame) -> str:
    lines = ["| target | method | seed " + HEADER, "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['method']} | {r['seed']:g} | {_loss_cells(r)} |" for _, r in df.iterrows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.loss_table", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", help="a sweep dir written by `stacking sweep`")
    p.add_argument("--per-seed", action="store_true", help="one row per grown run (its own seed's differences)")
    args = p.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep_dir)
        print(format_per_seed_table(per_seed_table(sweep)) if args.per_seed else format_loss_table(loss_table(sweep)))
    except AnalysisError as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
