"""Speed-up of grown runs over scratch runs, by the Stacking paper's definition (Du et al. 2024, App. B.2).

    speedup = FLOPs_scratch(L*) / FLOPs_grown(L*) − 1

FLOPs_x(L*) is the compute at which run x's validation loss first reaches the target loss L*, read off the
curve by interpolating log-loss over log-FLOPs between the two evaluations that bracket the crossing.
FLOPs_grown counts the base run's FLOPs up to the growth point d: metrics.csv of a grown run already starts
its `flops` column at that offset. Example from the paper: 7B scratch reaches its 300B-token loss, G_stack
reaches the same loss at the FLOPs of 194B scratch tokens → 300/194 − 1 = 54.6%.

    tokens_ratio = tokens_scratch(L*) / (d + tokens_grown(L*))

the data-efficiency counterpart: training tokens the scratch run needs over the tokens the grown path needs,
counting the base's d tokens (a plain ratio, not minus one: 1.2 means growth used 1/1.2 of the tokens).

L* defaults to the scratch run's final validation loss (the paper's usage); `reference="grown"` uses the grown
run's final loss instead, which is the one that gives a (negative) number when growth is slower: then the
grown run never reaches scratch's final loss. "Never reached" is NaN with the reason in `reason`; no
extrapolation is done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.results import AnalysisError, Sweep, format_tokens

REFERENCES = ("scratch", "grown")


@dataclass(frozen=True)
class Crossing:
    """Where a curve first reaches a loss; flops/tokens are NaN and `reason` says why when it never does."""

    flops: float
    tokens: float
    reason: str = ""


def first_crossing(curve: pd.DataFrame, target_loss: float) -> Crossing:
    """First point where the validation curve (tokens, flops, val_loss) reaches `target_loss`.

    Between the last evaluation above the target and the first at or below it, log-loss is interpolated
    linearly in log-FLOPs (linearly in FLOPs when the earlier point is at 0 FLOPs, the scratch run's initial
    evaluation). Tokens follow from FLOPs, which grow linearly with tokens within a run.
    """
    t, f, loss = (curve[c].to_numpy(dtype=float) for c in ("tokens", "flops", "val_loss"))
    hit = np.flatnonzero(loss <= target_loss)
    if hit.size == 0:
        return Crossing(math.nan, math.nan, f"never reached L*={target_loss:.4g} (lowest {loss.min():.4g})")
    i = int(hit[0])
    if i == 0:
        return Crossing(float(f[0]), float(t[0]))
    j = i - 1
    frac = (math.log(loss[j]) - math.log(target_loss)) / (math.log(loss[j]) - math.log(loss[i]))
    if f[j] > 0:
        flops = math.exp(math.log(f[j]) + frac * (math.log(f[i]) - math.log(f[j])))
    else:
        flops = f[j] + frac * (f[i] - f[j])
    tokens = t[j] + (flops - f[j]) / (f[i] - f[j]) * (t[i] - t[j]) if f[i] > f[j] else t[i]
    return Crossing(float(flops), float(tokens))


def speedup_from_curves(scratch: pd.DataFrame, grown: pd.DataFrame, grow_at_tokens: float, target_loss: float) -> dict:
    """Speed-up and tokens ratio of one grown curve against one scratch curve at `target_loss`."""
    cs, cg = first_crossing(scratch, target_loss), first_crossing(grown, target_loss)
    reason = ""
    if cs.reason:
        reason = "scratch " + cs.reason
    elif cg.reason:
        reason = "grown " + cg.reason
    return {
        "target_loss": target_loss,
        "flops_scratch": cs.flops,
        "flops_grown": cg.flops,
        "tokens_scratch": cs.tokens,
        "tokens_grown": cg.tokens,
        "speedup": cs.flops / cg.flops - 1.0 if not reason else math.nan,
        "tokens_ratio": cs.tokens / (grow_at_tokens + cg.tokens) if not reason else math.nan,
        "reason": reason,
    }


PAIR_COLUMNS = [
    "run_id",
    "scratch_run_id",
    "target",
    "op",
    "direction",
    "g",
    "grow_at_tokens",
    "seed",
    "target_loss",
    "flops_scratch",
    "flops_grown",
    "tokens_scratch",
    "tokens_grown",
    "speedup",
    "tokens_ratio",
    "reason",
]


def compute_speedups(sweep: Sweep, target_loss: float | None = None, reference: str = "scratch") -> pd.DataFrame:
    """One row per (grown run, matched scratch run) among finished runs.

    Matching: the scratch run(s) with the same `target` (final model preset) and the same seed; when no
    scratch run has that seed, every scratch run of that target. L* is `target_loss` when given, else the
    final validation loss of the `reference` run ("scratch" or "grown").
    """
    if reference not in REFERENCES:
        raise AnalysisError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    if target_loss is not None and not (math.isfinite(target_loss) and target_loss > 0):
        raise AnalysisError(f"target loss must be a positive number, got {target_loss}")
    scratch = sweep.runs("scratch")
    rows = []
    for _, g in sweep.runs("grown").iterrows():
        base = {k: g[k] for k in ("run_id", "target", "op", "direction", "g", "grow_at_tokens", "seed")}
        same_target = scratch[scratch["target"] == g["target"]]
        matched = same_target[same_target["seed"] == g["seed"]]
        if matched.empty:
            matched = same_target
        if matched.empty:
            rows.append(base | {"reason": f"no finished scratch run with target {g['target']}"})
            continue
        for _, s in matched.iterrows():
            try:
                cs, cg = sweep.curve(s["run_id"]), sweep.curve(g["run_id"])
            except AnalysisError as err:
                rows.append(base | {"scratch_run_id": s["run_id"], "reason": str(err)})
                continue
            if target_loss is not None:
                lstar = target_loss
            else:
                lstar = float((cs if reference == "scratch" else cg)["val_loss"].iloc[-1])
            rows.append(
                base | {"scratch_run_id": s["run_id"]} | speedup_from_curves(cs, cg, g["grow_at_tokens"], lstar)
            )
    out = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    out["reason"] = out["reason"].fillna("")
    return out


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval over seeds (NaN CI with fewer than 2 values)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if v.size < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


TABLE_KEYS = ["target", "op", "direction", "g", "grow_at_tokens"]


def speedup_table(pairs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Speed-up per (target, op, direction, g, d): mean and t-interval over grown runs (seeds).

    A grown run matched to several scratch runs contributes the mean of its pairs. Runs that never reached
    L* are counted in `n_runs` but not in the mean; `note` says how many and why.
    """
    cols = TABLE_KEYS + [
        "n_runs",
        "n_reached",
        "target_loss",
        "speedup",
        "speedup_lo",
        "speedup_hi",
        "tokens_ratio",
        "tokens_ratio_lo",
        "tokens_ratio_hi",
        "note",
    ]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    per_run = pairs.groupby("run_id", sort=False).agg(
        **{k: (k, "first") for k in TABLE_KEYS},
        target_loss=("target_loss", "mean"),
        speedup=("speedup", "mean"),
        tokens_ratio=("tokens_ratio", "mean"),
        reason=("reason", lambda r: next((x for x in r if x), "")),
    )
    out = []
    for key, grp in per_run.groupby(TABLE_KEYS, dropna=False, sort=True):
        sp = mean_ci(grp["speedup"], level)
        tr = mean_ci(grp["tokens_ratio"], level)
        n_reached = int(grp["speedup"].notna().sum())
        missing = grp.loc[grp["speedup"].isna(), "reason"]
        note = f"{len(missing)}/{len(grp)} not reached: {missing.iloc[0]}" if len(missing) else ""
        out.append(
            dict(zip(TABLE_KEYS, key))
            | {
                "n_runs": len(grp),
                "n_reached": n_reached,
                "target_loss": grp["target_loss"].mean(),
                "speedup": sp[0],
                "speedup_lo": sp[1],
                "speedup_hi": sp[2],
                "tokens_ratio": tr[0],
                "tokens_ratio_lo": tr[1],
                "tokens_ratio_hi": tr[2],
                "note": note,
            }
        )
    return pd.DataFrame(out, columns=cols)


def format_table(table: pd.DataFrame) -> str:
    """Speed-up table as a markdown table (percent with CI) for the terminal and report.md."""

    def pct(x):
        return "—" if not np.isfinite(x) else f"{100 * x:+.1f}%"

    lines = [
        "| target | op | g | d | runs | L* | speed-up | 95% CI | tokens ratio | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        op = r["op"] if r["direction"] in ("depth", None) or pd.isna(r["direction"]) else f"{r['op']}({r['direction']})"
        ci = f"[{pct(r['speedup_lo'])}, {pct(r['speedup_hi'])}]" if np.isfinite(r["speedup_lo"]) else "—"
        tr = f"{r['tokens_ratio']:.3f}" if np.isfinite(r["tokens_ratio"]) else "—"
        lines.append(
            f"| {r['target']} | {op} | {r['g']:g} | {format_tokens(r['grow_at_tokens'])} | "
            f"{r['n_reached']}/{r['n_runs']} | {r['target_loss']:.4g} | {pct(r['speedup'])} | {ci} | {tr} | "
            f"{r['note']} |"
        )
    return "\n".join(lines)
