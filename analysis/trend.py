"""The gain's trend with model size and budget, across sweeps: one table and one figure (issue 21).

    stacking trend SWEEP_DIR [SWEEP_DIR ...] [--out DIR]      # SWEEP_A+SWEEP_B: their seeds pooled (loss-table --pool)

For each sweep (a finished sweep or an export under results/) and each grown method, the annealed loss of the
grown run minus its own seed's scratch run's at equal FLOPs, mean and Student-t 95 % CI over the paired seeds, at
every budget the sweep holds at equal FLOPs: with a grid's ``anneal.at_scratch_flops`` the fractions f of the
scratch budget its cooldowns sit at (`analysis.loss_table.equal_flops_table`), otherwise only the full budget
(f = 1, where the grown run and scratch have spent the same FLOPs; the grown cooldowns at f < 1 sit at other FLOPs
than scratch's and are not used). Each row carries the target's non-embedding parameters N, the scratch run's
initialisation and LR (so a mistuned baseline shows), and the budget's tokens per non-embedding parameter (the
scratch run's tokens at f / N) — the axes of the paper's and Klein, Hutter et al.'s claims (gains largest under
≈ 20 tokens/param and shrinking as the budget grows; the paper's speed-ups sit at 81–1,970 tokens per target
parameter). The figure plots the difference against N (at f = 1) and against tokens per parameter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.loss_table import equal_flops_table, loss_table
from analysis.sweep import AnalysisError, Sweep, load_sweep

TREND_COLUMNS = [
    "sweep",
    "target",
    "params_non_embedding",
    "init",
    "lr",
    "method",
    "fraction",
    "flops",
    "tokens_per_param",
    "seeds",
    "diff",
    "diff_ci",
]
PAPER_TPP = (81.0, 1970.0)
"""Total tokens per target parameter of the paper's reported speed-ups (reference/stacking.md)."""
KLEIN_TPP = 20.0
"""Klein, Hutter et al.: gains are largest under ≈ 20 tokens per parameter and shrink as the budget grows."""


def _scratch_facts(sweep: Sweep) -> dict:
    """The target's N, the scratch runs' init, LR and tokens (one target per sweep: the trend's unit)."""
    scratch = sweep.runs("scratch")
    if scratch.empty:
        raise AnalysisError(f"{sweep.path}: no finished scratch run to pair with")
    if scratch["target"].nunique() > 1:
        raise AnalysisError(f"{sweep.path}: several targets ({', '.join(sorted(scratch['target'].unique()))})")

    def one(col: str, default="?"):
        values = scratch[col].dropna().unique() if col in scratch.columns else []
        return values[0] if len(values) == 1 else default if len(values) == 0 else "mixed"

    return {
        "target": scratch["target"].iloc[0],
        "params_non_embedding": int(scratch["params_non_embedding"].iloc[0]),
        "init": one("cfg.init", "tinyllama"),
        "lr": one("cfg.lr"),
        "tokens": float(scratch["tokens"].max()),
    }


def sweep_trend(sweep: Sweep | str, name: str | None = None) -> pd.DataFrame:
    """The rows of one sweep (see the module doc)."""
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    facts = _scratch_facts(sweep)
    eq = equal_flops_table(sweep)
    if not eq.empty:
        rows = eq.rename(columns={"annealed_vs_scratch": "diff", "annealed_vs_scratch_ci": "diff_ci"})
    else:
        t = loss_table(sweep).reindex(columns=["method", "paired", "annealed_vs_scratch", "annealed_vs_scratch_ci"])
        t = t[(t["method"] != "scratch") & t["annealed_vs_scratch"].notna()]
        scratch_flops = float(sweep.runs("scratch")["flops"].max())
        rows = pd.DataFrame(
            {
                "method": t["method"],
                "fraction": 1.0,
                "flops": scratch_flops,
                "seeds": t["paired"],
                "diff": t["annealed_vs_scratch"],
                "diff_ci": t["annealed_vs_scratch_ci"],
            }
        )
    if rows.empty:
        raise AnalysisError(f"{sweep.path}: no grown run has an annealed loss paired with its seed's scratch run")
    out = rows[["method", "fraction", "flops", "seeds", "diff", "diff_ci"]].copy()
    for key in ("target", "params_non_embedding", "init", "lr"):
        out[key] = facts[key]
    out["sweep"] = name or Path(str(sweep.path)).name
    out["tokens_per_param"] = out["fraction"].astype(float) * facts["tokens"] / facts["params_non_embedding"]
    return out[TREND_COLUMNS].reset_index(drop=True)


def parse_entry(text: str, root: str | Path | None = None) -> Path | list[Path]:
    """A sweep dir, or ``A+B[+…]``: the seeds of several sweeps of one configuration read as one (`analysis.pool`;
    a path that exists as written is never split). ``root``: what relative paths are relative to."""
    base = Path(root) if root is not None else Path()
    if "+" not in text or (base / text).exists():
        return base / text
    return [base / part for part in text.split("+")]


def _entry_trend(entry) -> pd.DataFrame:
    """`sweep_trend` of a sweep, or of the pooled sweeps of a list (named ``a+b``)."""
    if isinstance(entry, (list, tuple)):
        from analysis.pool import pool_sweeps

        return sweep_trend(pool_sweeps(list(entry)), name="+".join(Path(str(e)).name for e in entry))
    return sweep_trend(entry)


def trend_table(sweeps: list, on_error=None) -> pd.DataFrame:
    """`sweep_trend` of each sweep (a list of sweeps: pooled, `parse_entry`), smallest target first. With
    ``on_error(sweep, err)``, a sweep it cannot read is passed to it and left out (an AnalysisError when none is
    left) instead of raising."""
    if not sweeps:
        raise AnalysisError("give at least one sweep dir")
    tables = []
    for s in sweeps:
        try:
            tables.append(_entry_trend(s))
        except AnalysisError as err:
            if on_error is None:
                raise
            on_error(s, err)
    if not tables:
        raise AnalysisError("no sweep has paired grown and scratch runs to read a trend from")
    out = pd.concat(tables, ignore_index=True)
    return out.sort_values(["params_non_embedding", "sweep", "method", "fraction"], kind="stable", ignore_index=True)


def format_trend_table(df: pd.DataFrame) -> str:
    lines = [
        "| sweep | N (non-emb.) | init, LR | method | f | tokens/param | seeds | annealed − scratch at equal FLOPs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        ci = f" ± {r['diff_ci']:.4f}" if np.isfinite(r["diff_ci"]) else " (1 seed)"
        lines.append(
            f"| {r['sweep']} | {r['params_non_embedding'] / 1e6:.3g}M | {r['init']}, {r['lr']:g} | {r['method']} | "
            f"{r['fraction']:g} | {r['tokens_per_param']:.3g} | {r['seeds']} | {r['diff']:+.4f}{ci} |"
        )
    return "\n".join(lines)


def _series(df: pd.DataFrame):
    """(label, rows) per sweep × method with ≥ 2 paired seeds (one-seed points, e.g. a d sweep's, stay in the table
    only: they have no CI)."""
    for (sweep, method), grp in df.groupby(["sweep", "method"], sort=False):
        if grp["seeds"].max() >= 2:
            yield f"{sweep}: {method}", grp.sort_values("fraction")


def plot_trend(df: pd.DataFrame) -> Figure:
    """Left: the difference at f = 1 against N; right: against tokens per parameter, with the paper's range and
    Klein et al.'s ≈ 20 tokens/param marked. Error bars are the 95 % CIs over seeds; methods with one seed are
    left out of the figure."""
    fig = Figure(figsize=(11, 4.2))
    ax_n, ax_t = fig.subplots(1, 2, sharey=True)
    for i, (label, grp) in enumerate(_series(df)):
        colour, marker = f"C{i % 10}", "os^Dv<>"[i % 7]
        err = grp["diff_ci"].fillna(0.0)
        full = grp[np.isclose(grp["fraction"].astype(float), 1.0)]
        ax_n.errorbar(
            full["params_non_embedding"],
            full["diff"],
            yerr=full["diff_ci"].fillna(0.0),
            fmt=marker,
            color=colour,
            capsize=3,
            label=label,
        )
        ax_t.errorbar(grp["tokens_per_param"], grp["diff"], yerr=err, fmt=f"{marker}-", color=colour, capsize=3)
    ax_t.axvspan(*PAPER_TPP, color="0.9", zorder=0, label="paper's reported speed-ups")
    ax_t.axvline(KLEIN_TPP, color="0.5", ls=":", label="Klein et al.: gains largest below ≈ 20")
    for ax, xlabel in ((ax_n, "target non-embedding parameters"), (ax_t, "tokens per non-embedding parameter")):
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    ax_n.set_ylabel("annealed loss, grown − scratch (nats; < 0: growth ahead)")
    ax_n.set_title("gain vs size (full budget)")
    ax_t.set_title("gain vs budget (equal FLOPs)")
    ax_n.legend(fontsize=7, loc="best")
    ax_t.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
