"""Final losses per method over seeds, and each grown method's loss minus its own seed's scratch run's: the plainest
reading of a seeded sweep, beside the speed-ups (which read FLOPs at a loss and so magnify small loss gaps).

    stacking loss-table SWEEP_DIR [--per-seed]
    stacking loss-table SWEEP_A --contrast SWEEP_B [--out contrast.csv]
    stacking loss-table SWEEP_DIR --seeds-for 0.012

mid = the main run's last validation loss (constant LR); annealed = its cooldown run ending at the full budget.
Mean ± half-width of the Student-t 95 % CI over seeds; the difference is paired by seed (same data order and init
seed for both), so the scratch run's seed-to-seed spread cancels out of it. ``--per-seed`` prints one row per
grown run instead (its seed's differences): how a one-seed d sweep is read against the main d's seeds.
With a grid's ``anneal.at_scratch_flops`` it prints a third reading under the table: the annealed loss at equal
FLOPs, each grown run's cooldown at the FLOPs of its seed's scratch cooldown at f minus that cooldown's, per f
(`equal_flops_table`). `stacking report` writes the loss table into report.md and losses.csv; with a grid's
``eval:`` both add the downstream scores paired the same way (analysis/downstream.py). ``--contrast SWEEP_B``
prints the difference-in-differences of two sweeps (e.g. TinyLlama's init against PyTorch's default): per method,
(method − scratch in SWEEP_DIR) − (method − scratch in SWEEP_B), Welch 95 % CI (`contrast_table`).
``--seeds-for NATS`` prints, per paired difference, its sd over seeds and how many seeds would bring its CI
half-width to NATS at that sd (`power_table`): the number to plan the next seeds with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.speedup import mean_ci
from analysis.sweep import AnalysisError, Sweep, load_sweep, method_label


def mean_ci_half(values) -> tuple[float, float]:
    """Mean and 95 % CI half-width over seeds (`analysis.speedup.mean_ci`; NaN half-width with one seed)."""
    m, _, hi = mean_ci(values)
    return m, hi - m


def main_runs(sweep: Sweep, values: pd.DataFrame | None = None) -> pd.DataFrame:
    """Finished grown and scratch runs with their method label and annealed loss (the f = 1 cooldown's). With
    ``values`` (per-run columns indexed by run id, e.g. downstream scores): each column's mid value (the run's own)
    as ``mid:<column>`` and its annealed value (its f = 1 cooldown's) as ``annealed:<column>``."""
    main = sweep.runs()
    main = main[main["kind"].isin(["grown", "scratch"])].copy()
    cool = sweep.runs("cooldown")
    cool = cool[np.isclose(cool["anneal_fraction"].astype(float), 1.0)]
    main["annealed"] = main["run_id"].map(dict(zip(cool["parent_run"], cool["final_val_loss"])))
    main["method"] = [("scratch" if r["kind"] == "scratch" else method_label(r)) for _, r in main.iterrows()]
    if values is not None:
        cooldown = main["run_id"].map(dict(zip(cool["parent_run"], cool["run_id"])))
        for col in values.columns:
            main[f"mid:{col}"] = main["run_id"].map(values[col])
            main[f"annealed:{col}"] = cooldown.map(values[col])
    return main


def _scratch_by_seed(main: pd.DataFrame, target) -> pd.DataFrame:
    scratch = main[(main["target"] == target) & (main["kind"] == "scratch")]
    return scratch.sort_values("tokens").drop_duplicates("seed", keep="last").set_index("seed")


def paired_groups(sweep: Sweep, main: pd.DataFrame):
    """Per target × method of `main_runs`: (target, method, its runs, those of them whose seed has a scratch run,
    the target's scratch runs indexed by seed); each paired run's validation windows checked against its scratch
    run's (`Sweep.check_same_windows`)."""
    for (target, method), grp in main.groupby(["target", "method"], sort=False):
        scratch = _scratch_by_seed(main, target)
        own = grp[grp["seed"].isin(scratch.index)]
        if method != "scratch":
            for rid, seed in zip(own["run_id"], own["seed"]):
                sweep.check_same_windows(str(rid), str(scratch.loc[seed, "run_id"]))
        yield target, method, grp, own, scratch


def paired_difference(own: pd.DataFrame, scratch: pd.DataFrame, col: str) -> np.ndarray:
    """Each paired run's ``col`` minus its own seed's scratch run's."""
    return own[col].to_numpy(float) - scratch.loc[own["seed"], col].to_numpy(float)


def loss_table(sweep: Sweep | str) -> pd.DataFrame:
    """One row per target × method: seeds, mid and annealed loss (mean, CI half-width), and the paired difference
    to scratch of the same target and seed (mean, CI half-width; NaN for scratch itself)."""
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    rows = []
    for target, method, grp, own, scratch in paired_groups(sweep, main_runs(sweep)):
        row = {
            "target": target,
            "method": method,
            "seeds": len(grp),
            "paired": len(own) if method != "scratch" else len(grp),
        }
        for col in ("final_val_loss", "annealed"):
            row[col], row[f"{col}_ci"] = mean_ci_half(grp[col])
            if method != "scratch":
                diff = paired_difference(own, scratch, col)
                row[f"{col}_vs_scratch"], row[f"{col}_vs_scratch_ci"] = mean_ci_half(diff)
        rows.append(row)
    return pd.DataFrame(rows)


def per_seed_table(sweep: Sweep | str) -> pd.DataFrame:
    """One row per grown run: target, method, seed, mid and annealed loss, and each minus its own seed's scratch
    run's (NaN without a scratch run of that seed)."""
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    main = main_runs(sweep)
    rows, by_target = [], {t: _scratch_by_seed(main, t) for t in main["target"].unique()}
    for _, r in main[main["kind"] == "grown"].iterrows():
        scratch = by_target[r["target"]]
        if r["seed"] in scratch.index:
            sweep.check_same_windows(str(r["run_id"]), str(scratch.loc[r["seed"], "run_id"]))
        row = {"target": r["target"], "method": r["method"], "seed": r["seed"], "run_id": r["run_id"]}
        for col in ("final_val_loss", "annealed"):
            row[col] = r[col]
            row[f"{col}_vs_scratch"] = r[col] - scratch.loc[r["seed"], col] if r["seed"] in scratch.index else np.nan
        rows.append(row)
    cols = ["target", "method", "seed", "run_id"] + [
        f"{c}{x}" for c in ("final_val_loss", "annealed") for x in ("", "_vs_scratch")
    ]
    return pd.DataFrame(rows, columns=cols)


MAX_SEEDS = 10_000
"""`seeds_for_halfwidth` stops counting here (the table says "> 10,000")."""


def seeds_for_halfwidth(sd: float, halfwidth: float, level: float = 0.95, max_seeds: int = MAX_SEEDS) -> int:
    """The fewest seeds n ≥ 2 whose Student-t CI half-width t(n − 1)·sd/√n is at most ``halfwidth``, for a paired
    difference with seed-to-seed standard deviation ``sd`` (taken as known: a planning figure, not a guarantee —
    the sd of 3–5 seeds is itself uncertain by about ±50 %). ``max_seeds`` + 1 when even that many do not suffice."""
    if not (np.isfinite(sd) and sd >= 0 and halfwidth > 0):
        raise AnalysisError(f"seeds_for_halfwidth needs a finite sd ≥ 0 and a half-width > 0, not {sd}, {halfwidth}")
    for n in range(2, max_seeds + 1):
        if stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n) <= halfwidth:
            return n
    return max_seeds + 1


POWER_COLUMNS = ["target", "method", "reading", "seeds", "diff", "sd", "halfwidth", "seeds_needed"]


def power_table(sweep: Sweep | str, halfwidth: float) -> pd.DataFrame:
    """How many seeds each paired difference needs: per target × grown method × reading (mid, annealed), the
    seeds paired to scratch, the mean difference, its seed-to-seed sd, its CI half-width now, and
    `seeds_for_halfwidth` at that sd for a half-width of ``halfwidth`` nats. Rows with < 2 paired seeds: NaN sd."""
    if not halfwidth > 0:
        raise AnalysisError(f"the target CI half-width must be > 0 nats, not {halfwidth}")
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    per_seed = per_seed_table(sweep)
    rows = []
    for (target, method), grp in per_seed.groupby(["target", "method"], sort=False):
        for col, reading in READINGS.items():
            d = grp[f"{col}_vs_scratch"].to_numpy(float)
            d = d[np.isfinite(d)]
            if len(d) == 0:
                continue
            sd = float(d.std(ddof=1)) if len(d) > 1 else np.nan
            mean, half = mean_ci_half(d)
            need = seeds_for_halfwidth(sd, halfwidth) if np.isfinite(sd) else np.nan
            rows.append(
                {
                    "target": target,
                    "method": method,
                    "reading": reading,
                    "seeds": len(d),
                    "diff": mean,
                    "sd": sd,
                    "halfwidth": half,
                    "seeds_needed": need,
                }
            )
    return pd.DataFrame(rows, columns=POWER_COLUMNS)


def format_power_table(df: pd.DataFrame, halfwidth: float) -> str:
    lines = [
        f"| target | method | reading | seeds | method − scratch | sd over seeds | seeds for ± {halfwidth:g} |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        need = "—" if not np.isfinite(r["seeds_needed"]) else f"{int(r['seeds_needed'])}"
        if np.isfinite(r["seeds_needed"]) and r["seeds_needed"] > MAX_SEEDS:
            need = f"> {MAX_SEEDS:,}"
        sd = "—" if not np.isfinite(r["sd"]) else f"{r['sd']:.4f}"
        lines.append(
            f"| {r['target']} | {r['method']} | {r['reading']} | {r['seeds']} | "
            f"{_cell(r['diff'], r['halfwidth'], '+')} | {sd} | {need} |"
        )
    return "\n".join(lines)


EQUAL_FLOPS_RTOL = 0.01
"""A grown reading and a scratch reading closer than this in FLOPs are at the same budget (whole steps apart)."""


def _unmarked_full_budget(cool: pd.DataFrame) -> dict:
    """{row index: scratch cooldown id} for the grown runs' f = 1 cooldowns that carry no ``at_flops_of`` (runs of a
    sweep without ``anneal.at_scratch_flops``, pooled with one that has it) and end within `EQUAL_FLOPS_RTOL` of
    the FLOPs of their seed's scratch f = 1 cooldown: the pairing at_scratch_flops itself marks there."""
    full = cool[np.isclose(cool["anneal_fraction"].astype(float), 1.0)]
    scratch = full[full["grow_at_tokens"].isna()].drop_duplicates(["target", "seed"], keep="last")
    scratch = scratch.set_index(["target", "seed"])
    out = {}
    for i, c in full[full["grow_at_tokens"].notna() & full["at_flops_of"].isna()].iterrows():
        key = (c["target"], c["seed"])
        if key in scratch.index and abs(float(c["flops"]) / float(scratch.loc[key, "flops"]) - 1) <= EQUAL_FLOPS_RTOL:
            out[i] = scratch.loc[key, "run_id"]
    return out


EQUAL_FLOPS_COLUMNS = [
    "target",
    "method",
    "fraction",
    "flops",
    "flops_diff",
    "seeds",
    "annealed",
    "annealed_ci",
    "annealed_vs_scratch",
    "annealed_vs_scratch_ci",
]


def equal_flops_table(sweep: Sweep | str) -> pd.DataFrame:
    """The annealed reading at equal FLOPs (a grid's ``anneal.at_scratch_flops``): per target × method × fraction f
    of the scratch run, the annealed loss of each grown run's cooldown that ends where it has spent the FLOPs of its
    own seed's scratch cooldown at f (results.csv ``at_flops_of``), and that loss minus the scratch cooldown's, mean
    and CI half-width over the seeds where both finished (no interpolation: the cooldowns were run there). A grown
    f = 1 cooldown without the mark (pooled from a sweep without the option) pairs where it ends within
    `EQUAL_FLOPS_RTOL` of its scratch f = 1 cooldown's FLOPs.
    ``flops`` is the scratch cooldowns' mean FLOPs, ``flops_diff`` the mean of grown / scratch FLOPs − 1 (whole
    optimizer steps apart at most). Empty when the sweep has no such cooldown."""
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    if "at_flops_of" not in sweep.results.columns:
        return pd.DataFrame(columns=EQUAL_FLOPS_COLUMNS)
    done = sweep.runs().set_index("run_id", drop=False)
    cool = sweep.runs("cooldown")
    at = cool["at_flops_of"].copy()
    for i, sid in _unmarked_full_budget(cool).items():
        at.loc[i] = sid
    pairs = []
    for i, c in cool[at.notna()].iterrows():
        scratch_id = str(at.loc[i])
        if scratch_id not in done.index:
            continue  # its scratch cooldown has not finished
        s = done.loc[scratch_id]
        sweep.check_same_windows(str(c["run_id"]), scratch_id)
        pairs.append(
            {
                "target": c["target"],
                "method": method_label(dict(c) | {"kind": "grown"}),
                "fraction": float(s["anneal_fraction"]),
                "flops": float(s["flops"]),
                "flops_diff": float(c["flops"]) / float(s["flops"]) - 1.0,
                "annealed": float(c["final_val_loss"]),
                "diff": float(c["final_val_loss"]) - float(s["final_val_loss"]),
            }
        )
    if not pairs:
        return pd.DataFrame(columns=EQUAL_FLOPS_COLUMNS)
    pairs = pd.DataFrame(pairs).sort_values("fraction", kind="stable")
    rows = []
    for (target, method, fraction), grp in pairs.groupby(["target", "method", "fraction"], sort=False):
        row = {"target": target, "method": method, "fraction": fraction, "seeds": len(grp)}
        row["flops"], row["flops_diff"] = grp["flops"].mean(), grp["flops_diff"].mean()
        row["annealed"], row["annealed_ci"] = mean_ci_half(grp["annealed"])
        row["annealed_vs_scratch"], row["annealed_vs_scratch_ci"] = mean_ci_half(grp["diff"])
        rows.append(row)
    order = {m: i for i, m in enumerate(dict.fromkeys(pairs["method"]))}
    out = pd.DataFrame(rows, columns=EQUAL_FLOPS_COLUMNS)
    out = out.sort_values(["target", "method", "fraction"], key=lambda c: c.map(order) if c.name == "method" else c)
    return out.reset_index(drop=True)


EQUAL_FLOPS_TEXT = (
    "annealed loss at equal FLOPs (anneal.at_scratch_flops): each grown run's cooldown where it has spent the FLOPs "
    "of its own seed's scratch cooldown at f, minus that scratch cooldown's loss (mean ± 95 % CI over seeds):"
)


def format_equal_flops_table(df: pd.DataFrame) -> str:
    lines = [
        "| target | method | scratch f | FLOPs | grown FLOPs − scratch's | seeds | annealed loss | annealed − scratch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['target']} | {r['method']} | {r['fraction']:g} | {r['flops']:.3g} | {100 * r['flops_diff']:+.2f} % | "
        f"{r['seeds']} | {_cell(r['annealed'], r['annealed_ci'])} | "
        f"{_cell(r['annealed_vs_scratch'], r['annealed_vs_scratch_ci'], '+')} |"
        for _, r in df.iterrows()
    ]
    return "\n".join(lines)


def welch_ci(a, b, level: float = 0.95) -> tuple[float, float, float, float]:
    """Difference of two independent means, mean(a) − mean(b), with its Welch t interval: (difference, lo, hi,
    degrees of freedom). NaN interval when either side has fewer than 2 finite values."""
    a, b = (np.asarray(v, float) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return (float("nan"),) * 4
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    if se == 0:
        return diff, diff, diff, float("inf")
    df = float((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
    half = float(stats.t.ppf(0.5 + level / 2, df) * se)
    return diff, diff - half, diff + half, df


READINGS = {"final_val_loss": "mid", "annealed": "annealed"}
CONTRAST_COLUMNS = [
    "target",
    "method",
    "reading",
    "seeds_a",
    "diff_a",
    "diff_a_ci",
    "seeds_b",
    "diff_b",
    "diff_b_ci",
    "contrast",
    "contrast_lo",
    "contrast_hi",
    "df",
]


def contrast_table(sweep_a: Sweep | str, sweep_b: Sweep | str) -> pd.DataFrame:
    """Difference-in-differences of two sweeps (e.g. one init against another): for each target × method present
    in both and each reading (mid, annealed), (method − scratch under A) − (method − scratch under B).

    Within each sweep the differences are paired by seed (`per_seed_table`; seeds without their own scratch run are
    left out); the two sweeps' runs are independent, so the CI is Welch's t interval for the difference of the two
    means (`welch_ci`). Rows where either sweep has no paired seed for that reading are left out."""
    a, b = (s if isinstance(s, Sweep) else load_sweep(s) for s in (sweep_a, sweep_b))
    pa, pb = per_seed_table(a), per_seed_table(b)
    rows = []
    for (target, method), ga in pa.groupby(["target", "method"], sort=False):
        gb = pb[(pb["target"] == target) & (pb["method"] == method)]
        for col, reading in READINGS.items():
            da, db = (g[f"{col}_vs_scratch"].to_numpy(float) for g in (ga, gb))
            da, db = da[np.isfinite(da)], db[np.isfinite(db)]
            if len(da) == 0 or len(db) == 0:
                continue
            contrast, lo, hi, df = welch_ci(da, db)
            rows.append(
                {
                    "target": target,
                    "method": method,
                    "reading": reading,
                    "seeds_a": len(da),
                    "diff_a": mean_ci_half(da)[0],
                    "diff_a_ci": mean_ci_half(da)[1],
                    "seeds_b": len(db),
                    "diff_b": mean_ci_half(db)[0],
                    "diff_b_ci": mean_ci_half(db)[1],
                    "contrast": contrast,
                    "contrast_lo": lo,
                    "contrast_hi": hi,
                    "df": df,
                }
            )
    if not rows:
        raise AnalysisError(f"{a.path} and {b.path} share no target × method with seeds paired to scratch")
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def format_contrast_table(df: pd.DataFrame, name_a: str = "A", name_b: str = "B") -> str:
    head = (
        f"| target | method | reading | {name_a}: method − scratch | seeds | {name_b}: method − scratch | seeds | "
        f"{name_a} − {name_b} | 95 % CI (Welch) |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        ci = (
            f"[{r['contrast_lo']:+.4f}, {r['contrast_hi']:+.4f}]"
            if np.isfinite(r["contrast_lo"])
            else "< 2 seeds: no CI"
        )
        lines.append(
            f"| {r['target']} | {r['method']} | {r['reading']} | {_cell(r['diff_a'], r['diff_a_ci'], '+')} | "
            f"{r['seeds_a']} | {_cell(r['diff_b'], r['diff_b_ci'], '+')} | {r['seeds_b']} | "
            f"{_cell(r['contrast'], sign='+')} | {ci} |"
        )
    return "\n".join(lines)


HEADER = "| mid loss | mid − scratch | annealed loss | annealed − scratch |"


def _cell(mean, ci=np.nan, sign="") -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:{sign}.4f}" + (f" ± {ci:.4f}" if np.isfinite(ci) else "")


def _loss_cells(r) -> str:
    """The four loss cells of a row of either table (CI half-widths where the row has them)."""
    return " | ".join(
        _cell(r.get(col, np.nan), r.get(f"{col}_ci", np.nan), sign)
        for col, sign in (
            ("final_val_loss", ""),
            ("final_val_loss_vs_scratch", "+"),
            ("annealed", ""),
            ("annealed_vs_scratch", "+"),
        )
    )


def format_loss_table(df: pd.DataFrame) -> str:
    lines = ["| target | method | seeds " + HEADER, "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['method']} | {_seeds_cell(r)} | {_loss_cells(r)} |" for _, r in df.iterrows()]
    return "\n".join(lines)


def _seeds_cell(r) -> str:
    """'3', or '3 (2 paired)' when some seeds have no scratch run of their own (left out of the differences)."""
    paired = r.get("paired", r["seeds"])
    return f"{r['seeds']}" if pd.isna(paired) or paired == r["seeds"] else f"{r['seeds']} ({int(paired)} paired)"


def format_per_seed_table(df: pd.DataFrame) -> str:
    lines = ["| target | method | seed " + HEADER, "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['method']} | {r['seed']:g} | {_loss_cells(r)} |" for _, r in df.iterrows()]
    return "\n".join(lines)
