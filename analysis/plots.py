"""Figures for the report and notebooks (matplotlib, object API: no pyplot state, Agg when saved to PNG).

Every function returns a `matplotlib.figure.Figure`; `save_figure` writes it as PNG. In a notebook a returned
Figure is displayed by the inline backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from analysis.fit import ChinchillaFit, LossComputeFit
from analysis.sweep import Sweep, format_tokens, method_label

# One colour per operator, stable across figures; scratch is black.
_OP_COLOURS = {
    "scratch": "black",
    "base": "0.6",
    "G_stack": "tab:blue",
    "G_zero": "tab:green",
    "G_random": "tab:red",
    "G_direct": "tab:purple",
    "G_learn": "tab:orange",
    "llama_pro": "tab:brown",
    "solar_dus": "tab:pink",
    "interpolate": "tab:olive",
}


def _colour(name: str) -> str:
    op = name.split()[0].split("(")[0]
    return _OP_COLOURS.get(op, "tab:gray")


def _log_x(ax, log_y: bool = False) -> None:
    """Log axes with plain tick labels (no 5×10^0) and no crowded minor labels."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.grid(alpha=0.3, which="both")


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def tokens_before(runs: pd.DataFrame, run_id: str) -> float:
    """Tokens trained before this run on its own line of descent: d for a grown run (for a chain's target, every
    stage's tokens), the earlier stages' tokens for a chain stage, 0 for a base or scratch run. `runs` is indexed
    by run_id."""
    r = runs.loc[run_id]
    if r["kind"] == "grown":
        return float(r["grow_at_tokens"])
    parent = r["parent_run"]
    if r["kind"] == "base" and isinstance(parent, str) and parent in runs.index:
        return tokens_before(runs, parent) + float(runs.loc[parent, "tokens"])
    return 0.0


def plot_loss_curves(sweep: Sweep, target: str) -> Figure:
    """Validation loss vs tokens and vs FLOPs for every main run of one target (and the bases of its grown runs).

    Grown runs are drawn on the total axes: tokens d + tokens-since-growth, FLOPs including the base's
    (as metrics.csv records them); a chain's stages likewise start at the tokens of the stages before them
    (`tokens_before`); the growth point is marked with a dot. The end points of a run's cooldown
    branches (its annealed losses) are triangles in the run's colour; cooldown curves themselves are not drawn.
    """
    fig = Figure(figsize=(12, 4.5))
    ax_t, ax_f = fig.subplots(1, 2, sharey=True)
    runs = sweep.runs()
    mine = runs[runs["target"] == target]
    parents = set(mine.loc[mine["kind"] == "grown", "parent_run"].dropna())
    shown = pd.concat([mine[mine["kind"].isin(("scratch", "grown"))], runs[runs["run_id"].isin(parents)]])
    # a chain's stages (bases grown from a base) and ancestors, so every curve starts at the tokens before it
    by_id = runs.set_index("run_id")
    while True:
        more = set(shown.loc[shown["kind"] == "base", "parent_run"].dropna()) - set(shown["run_id"])
        if not more:
            break
        shown = pd.concat([shown, runs[runs["run_id"].isin(more)]])
    seen: set[str] = set()
    methods = sorted({method_label(r) for _, r in shown.iterrows()})
    styles = ["-", "--", ":", "-."]
    annealed_labelled = False
    for _, r in shown.iterrows():
        c = sweep.curve(r["run_id"])
        c = c[c["tokens"] > 0] if r["kind"] != "grown" else c
        label = method_label(r)
        offset = tokens_before(by_id, r["run_id"])
        same_op = [m for m in methods if _colour(m) == _colour(label)]  # e.g. G_zero and G_zero(width): styles
        style = styles[same_op.index(label) % len(styles)] if r["kind"] == "grown" else "-"
        kw = {
            "color": _colour(label),
            "ls": "--" if r["kind"] == "base" else style,
            "lw": 1.2,
            "alpha": 0.85,
            "label": None if label in seen else label,
        }
        seen.add(label)
        ax_t.plot(c["tokens"] + offset, c["val_loss"], **kw)
        ax_f.plot(c["flops"], c["val_loss"], **kw)
        if r["kind"] == "grown":
            ax_t.plot(offset + c["tokens"].iloc[0], c["val_loss"].iloc[0], "o", color=kw["color"], ms=4)
            ax_f.plot(c["flops"].iloc[0], c["val_loss"].iloc[0], "o", color=kw["color"], ms=4)
        annealed = sweep.annealed_curve(r["run_id"]) if r["kind"] != "base" else pd.DataFrame()
        if not annealed.empty:
            mk = {"color": kw["color"], "ls": "none", "marker": "v", "ms": 5, "mec": "k", "mew": 0.5}
            mk["label"] = None if annealed_labelled else "annealed (cooldown end)"
            annealed_labelled = True
            ax_t.plot(annealed["tokens"] + offset, annealed["val_loss"], **(mk | {"label": None}))
            ax_f.plot(annealed["flops"], annealed["val_loss"], **mk)
    for ax, xl in ((ax_t, "tokens (grown: d + tokens after growth)"), (ax_f, "FLOPs (grown: incl. base)")):
        _log_x(ax)
        ax.set_xlabel(xl)
    ax_t.set_ylabel("validation loss")
    ax_f.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{target}: loss curves (dot = growth point)")
    return fig


def plot_speedups(table: pd.DataFrame, title: str = "speed-up vs scratch") -> Figure:
    """Bars of the mean speed-up (%) per (target, op, g, d) with CI whiskers; runs that never reached L* → 'n/r'.

    With a `budget_fraction` column holding several fractions p, each configuration gets one bar per p (lighter
    for smaller p), so the speed-up at L*_25% … L*_100% can be compared side by side.
    """
    keys = ["target", "op", "direction", "g", "grow_at_tokens"]
    table = table.copy()
    if "budget_fraction" not in table:
        table["budget_fraction"] = np.nan
    fractions = sorted(table["budget_fraction"].dropna().unique()) or [np.nan]
    configs = table[keys].drop_duplicates().reset_index(drop=True)
    labels = [
        f"{r['target']} {r['op']} g={r['g']:g} d={format_tokens(r['grow_at_tokens'])}" for _, r in configs.iterrows()
    ]
    fig = Figure(figsize=(max(6.0, (0.3 + 0.15 * len(fractions)) * len(labels) + 2), 4.5))
    ax = fig.subplots()
    width = 0.8 / len(fractions)
    for k, p in enumerate(fractions):
        sel = table["budget_fraction"].isna() if not np.isfinite(p) else table["budget_fraction"] == p
        rows = configs.merge(table[sel], on=keys, how="left")
        x = np.arange(len(labels)) + (k - (len(fractions) - 1) / 2) * width
        y = 100 * rows["speedup"].to_numpy(float)
        lo = 100 * rows["speedup_lo"].to_numpy(float)
        hi = 100 * rows["speedup_hi"].to_numpy(float)
        colours = [_colour(str(op)) for op in rows["op"]]
        alpha = 0.85 if len(fractions) == 1 else 0.3 + 0.55 * (k + 1) / len(fractions)
        ax.bar(x, np.nan_to_num(y), width=width, color=colours, alpha=alpha, edgecolor="k", lw=0.3)
        if np.isfinite(p):  # legend entry in grey: the colour is the operator's, the shade is p
            ax.bar([np.nan], [np.nan], color="0.3", alpha=alpha, edgecolor="k", lw=0.3, label=f"L* at p = {100 * p:g}%")
        has_ci = np.isfinite(lo) & np.isfinite(hi)
        ax.errorbar(
            x[has_ci],
            y[has_ci],
            yerr=[y[has_ci] - lo[has_ci], hi[has_ci] - y[has_ci]],
            fmt="none",
            ecolor="k",
            capsize=2,
        )
        for xi in x[~np.isfinite(y)]:
            ax.text(xi, 0, "n/r", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("speed-up (%)  FLOPs_scratch/FLOPs_grown − 1")
    ax.set_title(title + " (n/r: L* not reached)")
    ax.grid(axis="y", alpha=0.3)
    if len(fractions) > 1:
        ax.legend(fontsize=7)
    return fig


def plot_isoflop(points: pd.DataFrame, fits: pd.DataFrame) -> Figure:
    """Loss vs growth timing d at fixed total FLOPs, one panel per (target, op, g); parabola fit and its argmin (★,
    only where it lies inside the sampled d range)."""
    groups = list(points.groupby(["target", "op", "direction", "g"], dropna=False))
    fig = Figure(figsize=(4.5 * max(1, len(groups)), 4))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(groups)), squeeze=False)[0])
    for ax, (key, grp) in zip(axes, groups):
        budgets = sorted(grp["budget"].unique())
        cmap = [f"C{i}" for i in range(len(budgets))]
        for colour, budget in zip(cmap, budgets):
            b = grp[grp["budget"] == budget].sort_values("d")
            ax.plot(b["d"], b["loss"], "o", color=colour, label=f"C={budget:.2g}")
            f = fits[
                (fits["target"] == key[0]) & (fits["op"] == key[1]) & (fits["g"] == key[3]) & (fits["budget"] == budget)
            ]
            if not f.empty:
                p = f.iloc[0]
                xs = np.linspace(np.log10(b["d"].min()) - 0.2, np.log10(b["d"].max()) + 0.2, 80)
                ax.plot(10**xs, p["p0"] + p["p1"] * xs + p["p2"] * xs**2, "-", color=colour, lw=1)
                if np.isfinite(p["d_opt"]) and p["interior"]:  # an argmin outside the sampled d's is no valley
                    ax.plot(p["d_opt"], p["loss_opt"], "*", color=colour, ms=11, mec="k")
        _log_x(ax)
        ax.set_xlabel("growth timing d (tokens)")
        ax.set_title(f"{key[0]} {key[1]} g={key[3]:g}", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("validation loss at budget")
    fig.suptitle("IsoFLOP: loss vs d (parabola in log d, ★ = argmin)")
    return fig


def plot_loss_compute(points: pd.DataFrame, fits: dict[str, LossComputeFit], extrapolate: float = 10.0) -> Figure:
    """Frontier points L(C) per method, the fitted a·C^b + E with its bootstrap band, extrapolated ×`extrapolate`."""
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    for i, (method, grp) in enumerate(points.groupby("method")):
        colour = _colour(method) if method == "scratch" else f"C{i % 10}"
        ax.plot(grp["flops"], grp["loss"], "o", ms=3, color=colour, alpha=0.6)
        fit = fits.get(method)
        if fit is None:
            continue
        c = np.geomspace(fit.flops_range[0], fit.flops_range[1] * extrapolate, 100)
        ax.plot(
            c, fit.predict(c), "-", color=colour, lw=1.3, label=f"{method}: {fit.a:.3g}·C^{fit.b:.3f} + {fit.E:.3g}"
        )
        lo, hi = fit.band(c)
        if np.isfinite(lo).all():
            ax.fill_between(c, lo, hi, color=colour, alpha=0.15)
        ax.axvline(fit.flops_range[1], color=colour, lw=0.5, ls=":")
    _log_x(ax, log_y=True)
    ax.set_xlabel("total training FLOPs C (grown: incl. base)")
    ax.set_ylabel("validation loss (frontier)")
    ax.set_title(f"L(C) per method, extrapolated ×{extrapolate:g} (band: bootstrap CI; dotted: last data)")
    ax.legend(fontsize=7)
    return fig


def plot_chinchilla(points: pd.DataFrame, fit: ChinchillaFit) -> Figure:
    """Loss vs tokens D for each model size N: data points and the fitted L(N, D)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for i, (n, grp) in enumerate(points.groupby("N")):
        ax.plot(grp["D"], grp["loss"], "o", ms=3, color=f"C{i}", label=f"N={n:.3g}")
        d = np.geomspace(grp["D"].min(), grp["D"].max() * 3, 60)
        ax.plot(d, fit.predict(n, d), "-", color=f"C{i}", lw=1)
    _log_x(ax, log_y=True)
    ax.set_xlabel("tokens D")
    ax.set_ylabel("validation loss")
    ax.set_title(
        f"L = {fit.E:.3g} + {fit.A:.3g}/N^{fit.alpha:.3f} + {fit.B:.3g}/D^{fit.beta:.3f} ({fit.objective})", fontsize=9
    )
    ax.legend(fontsize=7)
    return fig
