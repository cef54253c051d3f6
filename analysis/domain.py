"""Domain gained, general lost: continued pretraining on a domain corpus read as LLaMA Pro's figure reads it.

A sweep whose runs set ``eval_data_dirs`` measures more than one validation set at every evaluation (metrics.csv
``val_loss_<name>``; docs/formats.md). In a domain grid (experiments/grids/llama_pro_domain.yaml, docs/domain.md)
the base trains on a general corpus and every later run on a domain corpus; each run also measures the other one.
For each finished main run (grown — growth ops and ``continued``, the base trained on as is — and scratch) this
module reads, on each data set, the base's loss at the growth point d and the run's final loss:

* domain gain = base's domain loss at d − the run's final domain loss (positive: the run learnt the domain);
* forgetting  = the run's final general loss − base's general loss at d (positive: it lost general ability).

Data sets are matched by path (``cfg.data_dir`` and ``cfg.eval_data_dirs``, resolved by the plan), so the base
(trained on the general set, measuring the domain as ``val_loss_domain``) and a continued run (trained on the
domain, measuring ``val_loss_general``) are read on the same windows whatever their column names.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.sweep import MAIN_KINDS, Sweep, format_tokens

COLUMNS = [
    "method",
    "run_id",
    "kind",
    "model",
    "tokens",
    "flops",
    "grow_at_tokens",
    "base_run",
    "domain",
    "domain_base",
    "domain_final",
    "domain_gain",
    "general",
    "general_base",
    "general_final",
    "forgetting",
]
"""domain.csv: one row per main run × general set; losses in nats/token on each set's fixed windows."""


def _sets(row) -> dict[str, str]:
    """{data dir path: metrics.csv column} of one results row: its data_dir (val_loss), then its eval sets."""
    evals = row.get("cfg.eval_data_dirs")
    evals = json.loads(evals) if isinstance(evals, str) and evals.strip() else {}
    return {str(row["cfg.data_dir"]): "val_loss", **{str(p): f"val_loss_{n}" for n, p in evals.items()}}


def has_eval_sets(sweep: Sweep) -> bool:
    """Whether any run of the sweep measured eval_data_dirs (its results.csv has final_val_loss_<name>)."""
    cols = set(sweep.results)
    return {"cfg.eval_data_dirs", "cfg.data_dir"} <= cols and any(c.startswith("final_val_loss_") for c in cols)


def method(row) -> str:
    """'scratch', 'continued', or a grown run's op label as the grid names it (``llama_pro_new_only``)."""
    if row["kind"] == "scratch":
        return "scratch"
    rid, target = str(row["run_id"]), str(row["target"])
    m = re.fullmatch(rf"grown-{re.escape(target)}-(.+)-{row['direction']}-g\d+-d\d+-s\d+-[0-9a-f]{{8}}", rid)
    return m.group(1) if m else str(row["op"])


def _at(metrics: pd.DataFrame, column: str, tokens: float) -> float:
    """``column`` at ``tokens``, linear between evaluations (exact where one was made there); NaN outside."""
    if column not in metrics:
        return float("nan")
    v = metrics.loc[metrics[column].notna(), ["tokens", column]].drop_duplicates("tokens", keep="last")
    v = v.sort_values("tokens")
    return float(np.interp(tokens, v["tokens"], v[column], left=np.nan, right=np.nan)) if len(v) else float("nan")


def _final(metrics: pd.DataFrame, column: str) -> float:
    v = metrics[column].dropna() if column in metrics else pd.Series(dtype=float)
    return float(v.iloc[-1]) if len(v) else float("nan")


def domain_table(sweep: Sweep) -> pd.DataFrame:
    """Domain gain and forgetting of every finished main run relative to the base at d (`COLUMNS`). A scratch run
    has no base of its own: it is read against the base of its target and seed's grown runs when they share one
    (base, d), else left without base values."""
    res = sweep.runs()
    rows = []
    grown = res[res["kind"] == "grown"]
    for _, r in res[res["kind"].isin(MAIN_KINDS)].iterrows():
        base_id, d = r["parent_run"], r["grow_at_tokens"]
        if r["kind"] == "scratch":
            mine = grown[(grown["target"] == r["target"]) & (grown["seed"] == r["seed"])]
            pairs = set(zip(mine["parent_run"].astype(str), mine["grow_at_tokens"]))
            base_id, d = pairs.pop() if len(pairs) == 1 else (None, np.nan)
        base = sweep.row(str(base_id)) if isinstance(base_id, str) and base_id in set(res["run_id"]) else None
        bsets = _sets(base) if base is not None else {}
        bmetrics = sweep.metrics(str(base_id)) if base is not None else None
        metrics, sets = sweep.metrics(str(r["run_id"])), _sets(r)
        domain = str(r["cfg.data_dir"])

        at_base = {p: _at(bmetrics, c, float(d)) for p, c in bsets.items()} if bmetrics is not None else {}
        dom_base, dom_final = at_base.get(domain, float("nan")), _final(metrics, "val_loss")
        for path, col in sets.items():
            if path == domain:
                continue
            gen_base, gen_final = at_base.get(path, float("nan")), _final(metrics, col)
            rows.append(
                {
                    "method": method(r),
                    "run_id": r["run_id"],
                    "kind": r["kind"],
                    "model": r["model"],
                    "tokens": r["tokens"],
                    "flops": r["flops"],
                    "grow_at_tokens": d,
                    "base_run": base_id,
                    "domain": domain,
                    "domain_base": dom_base,
                    "domain_final": dom_final,
                    "domain_gain": dom_base - dom_final,
                    "general": col.removeprefix("val_loss_"),
                    "general_base": gen_base,
                    "general_final": gen_final,
                    "forgetting": gen_final - gen_base,
                }
            )
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.sort_values(["general", "domain_final"], kind="stable", ignore_index=True)


def domain_markdown(table: pd.DataFrame, figure: str | None = None) -> list[str]:
    """The report's "Domain and general loss" section."""
    intro = (
        "Continued pretraining on the domain set (each run's data_dir) from the base at the growth point d: "
        "the domain loss gained and the general loss lost (forgetting), both relative to the base at d "
        "(interpolated between its evaluations), final values of each run, on the same FLOPs where the grid "
        "matched them. Scratch runs start from nothing; their base columns are those of the grown runs' base. "
        "Positive gain = better on the domain; positive forgetting = worse on the general set."
    )
    lines = ["## Domain and general loss", "", intro, ""]
    for general, grp in table.groupby("general", sort=False):
        header = (
            f"| method | model | tokens after d | FLOPs | domain loss: base → final | domain gain | {general} "
            "loss: base → final | forgetting |"
        )
        lines += [f"**General set: `{general}`**", "", header, "|---|---|---|---|---|---|---|---|"]
        for _, r in grp.iterrows():
            lines.append(
                f"| {r['method']} | {r['model']} | {format_tokens(float(r['tokens']))} | {r['flops']:.3g} | "
                f"{r['domain_base']:.4f} → {r['domain_final']:.4f} | {r['domain_gain']:+.4f} | "
                f"{r['general_base']:.4f} → {r['general_final']:.4f} | {r['forgetting']:+.4f} |"
            )
        lines.append("")
    if figure:
        lines += [f"![domain vs general loss]({figure})", ""]
    return lines


def plot_domain(table: pd.DataFrame) -> Figure:
    """Final general loss (x) against final domain loss (y) per method, the base at d as a star: LLaMA Pro's
    figure in losses (down and left is better; a method's arrow from the star is what it gained and forgot)."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for general, grp in table.groupby("general", sort=False):
        for _, r in grp.iterrows():
            ax.scatter(r["general_final"], r["domain_final"], zorder=3)
            ax.annotate(
                r["method"],
                (r["general_final"], r["domain_final"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        based = grp.dropna(subset=["general_base", "domain_base"])
        if len(based):
            b = based.iloc[0]
            ax.scatter(b["general_base"], b["domain_base"], marker="*", s=160, color="black", zorder=4)
            ax.annotate(
                "base at d",
                (b["general_base"], b["domain_base"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=8,
            )
        ax.set_xlabel(f"general loss ({general}), final")
    ax.set_ylabel("domain loss, final")
    ax.grid(alpha=0.3)
    ax.set_title("domain gained vs general lost")
    return fig


__all__ = ["COLUMNS", "domain_markdown", "domain_table", "has_eval_sets", "method", "plot_domain"]
