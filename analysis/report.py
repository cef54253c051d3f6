"""`stacking report SWEEP_DIR`: speed-up table, fitted laws and figures of one sweep, as files.

Writes into OUT (default SWEEP_DIR/report/):

    report.md       speed-up tables (mid and annealed readings), fitted laws with CIs, notes on what was skipped
                    and why, figures embedded
    speedups.csv    the speed-up tables (one row per target × op × direction × g × d × reading × budget fraction
                    × reference)
    speedup_runs.csv  the per-run pairs behind it (L*, FLOPs and tokens at L*, reason when not reached)
    losses.csv      final losses per target × method over seeds and each minus its own seed's scratch run's
                    (analysis/loss_table.py; with grown and scratch runs)
    fits.json       every fit: L(C) per method, Chinchilla L(N, D), IsoFLOP argmins, Eq. 2 (fitted and the paper's)
    figures/*.png   loss curves per target, speed-up bars (and annealed ones), L(C), IsoFLOP, Chinchilla

Each analysis runs only when the sweep has the data it needs: Chinchilla needs ≥ 2 target sizes, IsoFLOP
needs ≥ 3 growth timings d of one (target, op, g), Eq. 2 needs IsoFLOP argmins at ≥ 2 sizes and budgets, the
annealed reading needs cooldown runs. Cooldown runs enter no analysis but the annealed speed-ups.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis import plots
from analysis.domain import domain_markdown, domain_table, has_eval_sets, plot_domain
from analysis.fit import PAPER_EQ2, fit_chinchilla, fit_eq2, fit_isoflop, fit_loss_compute
from analysis.loss_table import format_loss_table, loss_table
from analysis.speedup import (
    BUDGET_FRACTIONS,
    TABLE_KEYS,
    all_seeds_note,
    compute_annealed_speedups,
    compute_speedups,
    format_table,
    headline,
    speedup_table,
)
from analysis.sweep import (
    AnalysisError,
    chinchilla_points,
    compute_frontier,
    isoflop_points,
    load_sweep,
    loss_compute_points,
    lr_sweep_table,
    read_provenance,
    read_val_windows,
    to_jsonable,
)

SPEEDUP_DEFINITION = (
    "speed-up = FLOPs_scratch(L*) / FLOPs_grown(L*) − 1, FLOPs to first reach L* read on the running minimum of "
    "the curve (best loss so far), interpolating log-loss over log-FLOPs; the grown run's FLOPs include its "
    "base's FLOPs up to d. tokens ratio = tokens_scratch(L*) / (d + tokens_grown(L*)). p: L*_p is read at p × "
    "the scratch run's tokens. Mean and Student-t 95% CI over seeds (none with 1 seed); runs that never reach L* "
    "(or are already below it at their first point) are left out of the mean and counted in the note."
)
NO_COOLDOWNS = "no cooldown runs in this sweep: annealed reading not available"


@dataclass
class Report:
    """What `write_report` produced."""

    path: Path  # report.md
    table: pd.DataFrame  # the main speed-up table: mid reading, L*_p of the scratch run (or the fixed L*)
    fits: dict
    table_own_final: pd.DataFrame | None = None  # L* = each grown run's own final loss (None with a fixed L*)
    notes: list[str] = field(default_factory=list)
    table_annealed: pd.DataFrame | None = None  # annealed reading (None without cooldown runs)
    headline: str = ""  # the first sentence of the speed-up section
    provenance: list[str] = field(default_factory=list)  # code commit, versions, data ids (plan.json)


def _ci(fit_ci: dict, name: str, fmt: str = ".4g") -> str:
    if name not in fit_ci:
        return ""
    lo, hi = fit_ci[name]
    return f" [{lo:{fmt}}, {hi:{fmt}}]"


def write_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    target_loss: float | None = None,
    bootstrap: int = 200,
    seed: int = 0,
) -> Report:
    """Analyse a sweep dir and write report.md, speedups.csv, speedup_runs.csv, fits.json and figures/."""
    sweep = load_sweep(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep.path / "report"
    fig_dir = out / "figures"  # created by the first figure; `out` once the inputs are checked
    notes: list[str] = []
    figures: list[tuple[str, str]] = []  # (caption, relative path)
    fits: dict = {}

    def figure(fig, name: str, caption: str) -> None:
        plots.save_figure(fig, fig_dir / name)
        figures.append((caption, f"figures/{name}"))

    # ---- speed-ups -------------------------------------------------------------------------------------------
    n_grown, n_scratch = len(sweep.runs("grown")), len(sweep.runs("scratch"))
    if n_grown == 0 or n_scratch == 0:
        notes.append(f"speed-ups: skipped, the sweep has {n_grown} finished grown and {n_scratch} scratch runs")
    pairs = compute_speedups(sweep, target_loss=target_loss, fractions=BUDGET_FRACTIONS)
    table = speedup_table(pairs)
    reference = "fixed" if target_loss is not None else "scratch"
    tables = [table.assign(reference=reference)]
    pairs_all = [pairs.assign(reference=reference)]
    grown_table = None
    if target_loss is None and n_grown and n_scratch:
        grown_pairs = compute_speedups(sweep, reference="grown")
        grown_table = speedup_table(grown_pairs)
        tables.append(grown_table.assign(reference="grown"))
        pairs_all.append(grown_pairs.assign(reference="grown"))
    annealed_table = None
    if sweep.runs("cooldown").empty:
        notes.append(NO_COOLDOWNS)
    else:
        annealed_pairs = compute_annealed_speedups(sweep)
        annealed_table = speedup_table(annealed_pairs)
        tables.append(annealed_table.assign(reference="scratch"))
        pairs_all.append(annealed_pairs.assign(reference="scratch"))
        if annealed_table.empty:
            notes.append("annealed reading: no finished grown run has cooldown runs")
    out.mkdir(parents=True, exist_ok=True)
    order = TABLE_KEYS + ["reference"]
    speedups = pd.concat(tables, ignore_index=True)
    speedups[order + [c for c in speedups.columns if c not in order]].to_csv(out / "speedups.csv", index=False)
    pd.concat(pairs_all, ignore_index=True).to_csv(out / "speedup_runs.csv", index=False)
    main = table[(table["budget_fraction"] == 1.0) | table["budget_fraction"].isna()]
    lead = headline(main, "scratch's final loss" if target_loss is None else f"L* = {target_loss:g}")
    if len(table):
        figure(
            plots.plot_speedups(table),
            "speedups.png",
            "Speed-up per operator at L*_p, mid reading (bars: mean, whiskers: 95% CI)",
        )
    if annealed_table is not None and len(annealed_table):
        figure(
            plots.plot_speedups(annealed_table, title="annealed speed-up vs scratch"),
            "speedups_annealed.png",
            "Speed-up per operator at L*_f, annealed reading (bars: mean, whiskers: 95% CI)",
        )
    for target in sorted(sweep.runs()["target"].dropna().unique()):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(target))
        figure(plots.plot_loss_curves(sweep, target), f"curves_{safe}.png", f"Loss curves, target {target}")

    # ---- L(C) per method -------------------------------------------------------------------------------------
    frontier = compute_frontier(loss_compute_points(sweep))
    lc_fits = {}
    fits["loss_compute"] = {}
    for method, grp in frontier.groupby("method"):
        try:
            with_e = fit_loss_compute(grp["flops"], grp["loss"], offset=True, bootstrap=bootstrap, seed=seed)
            power = fit_loss_compute(grp["flops"], grp["loss"], offset=False, bootstrap=bootstrap, seed=seed)
        except AnalysisError as err:
            notes.append(f"L(C) for {method}: skipped ({err})")
            continue
        lc_fits[method] = with_e
        fits["loss_compute"][method] = {"with_offset": with_e.to_dict(), "power_law": power.to_dict()}
    if lc_fits:
        figure(
            plots.plot_loss_compute(frontier, lc_fits), "loss_compute.png", "L(C) per method with extrapolation bands"
        )

    # ---- Chinchilla L(N, D) on scratch runs -----------------------------------------------------------------
    cpts = chinchilla_points(sweep)
    chin = None
    if cpts["N"].nunique() < 2:
        notes.append(
            f"Chinchilla L(N, D): skipped, the scratch runs cover {cpts['N'].nunique()} model size(s); "
            "the fit needs at least 2 (better ≥ 4)"
        )
    else:
        try:
            chin = fit_chinchilla(cpts["N"], cpts["D"], cpts["loss"], bootstrap=bootstrap, seed=seed)
            fits["chinchilla"] = chin.to_dict() | {"data": "validation curves of scratch runs (10% warm-up dropped)"}
            figure(plots.plot_chinchilla(cpts, chin), "chinchilla.png", "Chinchilla L(N, D) fit on scratch curves")
        except AnalysisError as err:
            notes.append(f"Chinchilla L(N, D): skipped ({err})")

    # ---- growth timing: IsoFLOP and Eq. 2 -------------------------------------------------------------------
    ipts = isoflop_points(sweep)
    iso = fit_isoflop(ipts) if len(ipts) else pd.DataFrame()
    eq2 = None
    if iso.empty:
        notes.append("IsoFLOP over d: skipped, no (target, op, g) has ≥ 3 growth timings d with overlapping FLOPs")
    else:
        fits["isoflop"] = iso.to_dict(orient="records")
        figure(plots.plot_isoflop(ipts, iso), "isoflop.png", "IsoFLOP curves of growth timing d")
        good = iso[iso["interior"]]
        try:
            eq2 = fit_eq2(good["N"], good["budget"], good["d_opt"])
            fits["eq2_fit"] = eq2.to_dict()
        except AnalysisError as err:
            notes.append(f"Eq. 2 fit: skipped ({err})")
    eq2_rows = _eq2_predictions(sweep, eq2, notes)
    fits["eq2_paper"] = PAPER_EQ2.to_dict() | {"predictions": eq2_rows}

    (out / "fits.json").write_text(json.dumps(to_jsonable(fits), indent=1, allow_nan=False) + "\n")
    speedup_md = _speedup_markdown(lead, table, grown_table, annealed_table, target_loss)
    if target_loss is None:
        spread = _seed_spread_lines(sweep, pd.concat([t for t in (table, annealed_table) if t is not None]), notes)
        speedup_md[4:4] = spread  # right under the headline sentence
    if n_grown and n_scratch:
        losses = loss_table(sweep)
        losses.to_csv(out / "losses.csv", index=False)
        speedup_md += [LOSSES_HEADING, "", LOSSES_TEXT, "", format_loss_table(losses), ""]
    if n_grown and n_scratch:
        speedup_md += _growth_law_markdown(sweep, out, min(bootstrap, 100), notes)
    lrs = lr_sweep_table(sweep)
    if len(lrs):
        lrs.to_csv(out / "lr_sweep.csv", index=False)
        speedup_md += _lr_sweep_markdown(lrs)
    if has_eval_sets(sweep):  # eval_data_dirs: domain gained vs general lost (LLaMA Pro's figure; analysis/domain.py)
        dom = domain_table(sweep)
        dom.to_csv(out / "domain.csv", index=False)
        if len(dom):
            plots.save_figure(plot_domain(dom), fig_dir / "domain.png")
        speedup_md += domain_markdown(dom, "figures/domain.png" if len(dom) else None)
    prov = provenance_lines(sweep)
    md = _markdown(sweep, speedup_md, fits, chin, lc_fits, iso, eq2, eq2_rows, figures, notes, prov)
    path = out / "report.md"
    path.write_text(md)
    return Report(
        path=path,
        table=table,
        fits=fits,
        notes=notes,
        table_own_final=grown_table,
        table_annealed=annealed_table,
        headline=lead,
        provenance=prov,
    )


def _growth_law_markdown(sweep, out: Path, bootstrap: int, notes: list[str]) -> list[str]:
    """The g-bound table (Klein, Hutter et al. 2026) and Liew & Kato's L(D1, D2) fits (analysis/growth_laws.py),
    written to g_bound.csv / liew_kato.csv; a section that cannot be computed becomes a note."""
    from analysis.growth_laws import (format_g_bound_table, format_liew_kato_summary, g_bound_table,
                                      liew_kato_summary)

    md: list[str] = []
    try:
        bound = g_bound_table(sweep)
        bound.to_csv(out / "g_bound.csv", index=False)
        md += ["### Growth factor bound", "", "Grown − scratch loss per g, paired by seed (95 % CI; * = CI below 0), "
               "and the largest g still significantly ahead of scratch (Klein, Hutter et al. 2026).", "",
               format_g_bound_table(bound), ""]
    except AnalysisError as err:
        notes.append(f"g-bound table: skipped ({err})")
    try:
        laws = liew_kato_summary(sweep.path, bootstrap=bootstrap)
        laws.to_csv(out / "liew_kato.csv", index=False)
        md += ["### L(D1, D2) = A·D1^−α1·D2^(−α2 + α3·ln D1) + E (Liew & Kato 2025)", "",
               f"Base tokens D1 = d, tokens after growth D2; bootstrap 95 % CIs over {bootstrap} resamples.", "",
               format_liew_kato_summary(laws), ""]
    except AnalysisError as err:
        notes.append(f"Liew & Kato fit: skipped ({err})")
    return md


LOSSES_HEADING = "### Final losses, paired by seed"
LOSSES_TEXT = (
    "The plainest reading, beside the speed-ups (which read FLOPs at a loss and so magnify small loss gaps): each "
    "method's final validation loss (mid: the main run's last evaluation; annealed: its cooldown to 100 %), mean "
    "± 95 % CI half-width over seeds, and its loss minus its own seed's scratch run's (negative: growth is ahead; "
    "every seed counts, including those that never reach L*). Each run at its own budget: the same FLOPs as "
    "scratch when the grid sets `grown.total_flops`, else fewer for the grown runs than their scratch run."
)


def provenance_lines(sweep) -> list[str]:
    """How the sweep was made, from plan.json (analysis.sweep.read_provenance): the git commit, the software
    versions and the data id of every data dir; for plans written before versions and data ids were recorded,
    says so, and takes the data ids from the runs' val_windows.json instead. Empty without plan.json."""
    prov = read_provenance(sweep.path)
    if not prov:
        return []
    git = prov.get("git") or {}
    sha = git.get("sha")
    dirty = {True: " with uncommitted changes", False: "", None: ""}[git.get("dirty")]
    lines = [f"code: git {sha[:12]}{dirty}" if sha else "code: git commit not recorded"]
    ver = prov.get("versions")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()) if ver else
                 "versions: not recorded (plan.json predates them)")
    data = prov.get("data")
    if data:
        lines += [f"data: {did} ({path})" for path, did in data.items()]
        return lines
    ids = set()
    for rel in sweep.results["run_dir"].dropna().astype(str):
        windows = read_val_windows(sweep.path / rel)
        if windows is not None:
            ids.add(windows.get("data_id"))
    lines.append("data: " + (", ".join(sorted(map(str, ids))) + " (from the runs' val_windows.json; plan.json "
                             "predates data ids)" if ids else "not recorded"))
    return lines


def _eq2_predictions(sweep, eq2, notes: list[str]) -> list[dict]:
    """Paper's (and our fitted) Eq. 2 d for each target at its scratch run's total FLOPs."""
    rows = []
    scratch = sweep.runs("scratch")
    for target, grp in scratch.groupby("target"):
        n, c = float(grp["params_total"].iloc[0]), float(grp["flops"].max())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d_paper = float(PAPER_EQ2.predict_d(n, c))
            d_fit = float(eq2.predict_d(n, c)) if eq2 is not None else math.nan
        rows.append(
            {
                "target": target,
                "N": n,
                "C": c,
                "d_paper": d_paper,
                "d_fit": d_fit,
                "warnings": [str(w.message) for w in caught],
            }
        )
    if any(r["warnings"] for r in rows):
        notes.append(next(r["warnings"][0] for r in rows if r["warnings"]))
    return rows


def _speedup_markdown(lead: str, table, grown_table, annealed_table, target_loss) -> list[str]:
    """The speed-up section: the headline sentence, the definition, the mid tables, the annealed table or note."""
    lines = ["## Speed-ups", "", lead, "", SPEEDUP_DEFINITION, "", "### Mid reading (the main runs' curves)", ""]
    if target_loss is not None:
        lstar = f"fixed L* = {target_loss:g}"
    else:
        ps = "/".join(f"{100 * p:g}" for p in BUDGET_FRACTIONS)
        lstar = f"L\\*_p = the matched scratch run's loss at p = {ps} % of its tokens (p = 100 %: its final loss)"
    lines += [f"**{lstar}**", "", format_table(table) if len(table) else "_no grown/scratch pairs_", ""]
    if grown_table is not None and len(grown_table):
        lines += [
            (
                "**L* = the grown run's own final loss** (the speed-up a slower method gets: negative when "
                "scratch reaches it first)"
            ),
            "",
            format_table(grown_table),
            "",
        ]
    lines += ["### Annealed reading (WSD cooldown branches)", ""]
    if annealed_table is None:
        lines += [NO_COOLDOWNS, ""]
    elif annealed_table.empty:
        lines += ["No finished grown run has cooldown runs: annealed reading not available.", ""]
    else:
        lines += [
            (
                "**L\\*_f = the matched scratch run's annealed loss at f** (its cooldown ending at p = f of its "
                "tokens); FLOPs_grown = first crossing of the grown run's annealed curve (its cooldowns' end "
                "points, running minimum)"
            ),
            "",
            format_table(annealed_table),
            "",
        ]
    return lines


def _seed_spread_lines(sweep, table: pd.DataFrame, notes: list[str]) -> list[str]:
    """The grid's ``seed_spread`` file (a seeded sweep's speedups.csv of the same configuration), quoted for every
    configuration of this sweep's table at the full budget: its mean speed-up, 95 % CI and seeds, mid and annealed."""
    grid_file, plan = sweep.path / "grid.yaml", sweep.path / "plan.json"
    if not grid_file.is_file():
        return []
    rel = (yaml.safe_load(grid_file.read_text()) or {}).get("seed_spread")
    if not rel:
        return []
    grid_dir = Path(json.loads(plan.read_text())["grid"]).parent if plan.is_file() else Path.cwd()
    path = Path(rel) if Path(rel).is_absolute() else grid_dir / rel
    if not Path(rel).is_absolute() and (sweep.path / rel).is_file():  # an export carries its own copy
        path = sweep.path / rel
    if not path.is_file():
        notes.append(f"seed spread: the grid's seed_spread file {path} is missing")
        return []
    ref = pd.read_csv(path)
    ref = ref[ref["reference"] == "scratch"]
    keys = ["target", "op", "direction", "g", "grow_at_tokens", "reading", "budget_fraction"]
    mine = table[table["budget_fraction"] == 1.0]
    quoted = mine[keys].merge(ref, on=keys, how="inner")
    if quoted.empty:
        notes.append(f"seed spread: {path} has no row for this sweep's configurations")
        return []
    parts = []
    for (op, g, d), grp in quoted.groupby(["op", "g", "grow_at_tokens"], sort=False):
        cells = []
        for _, r in grp.sort_values("reading", ascending=False).iterrows():
            if pd.isna(r["speedup"]):
                cells.append(f"{r['reading']}: never reaches L* ({r['n_runs']} seeds)")
                continue
            ci = (f", 95 % CI {100 * r['speedup_lo']:+.1f} % to {100 * r['speedup_hi']:+.1f} %"
                  if pd.notna(r["speedup_lo"]) else "")
            bound = all_seeds_note(r)
            cells.append(f"{r['reading']} {100 * r['speedup']:+.1f} %{ci} ({r['n_reached']}/{r['n_runs']} seeds "
                         f"reach L*{'; ' + bound if bound else ''})")
        parts.append(f"{op} g={g:g} d={int(d):,}: " + "; ".join(cells))
    return [f"Seed spread of this configuration, measured on a seeded sweep of it (`{rel}`), speed-up at the "
            "scratch run's final (mid) or annealed loss: " + " — ".join(parts) + ".", ""]


def _lr_sweep_markdown(lrs: pd.DataFrame) -> list[str]:
    """The LR sweep on scratch runs (lr_sweep.csv): one table per target × budget, the best LR named."""
    lines = ["## LR sweep (scratch runs alone)", ""]
    for (target, tokens), grp in lrs.groupby(["target", "tokens"], sort=False):
        key = "annealed_val_loss" if grp["annealed_val_loss"].notna().all() else "final_val_loss"
        best = grp.loc[grp[key].idxmin()]
        lines += [f"{target}, {int(tokens):,} tokens: lowest {key.replace('_', ' ')} at **LR {best['lr']:g}**.", "",
                  "| LR | seeds | final val loss | best val loss | annealed (cooldown to 100 %) |",
                  "|---|---|---|---|---|"]
        for _, r in grp.iterrows():
            ann = "—" if pd.isna(r["annealed_val_loss"]) else f"{r['annealed_val_loss']:.4f}"
            lines.append(f"| {r['lr']:g} | {r['n_seeds']} | {r['final_val_loss']:.4f} | {r['best_val_loss']:.4f} | "
                         f"{ann} |")
        lines.append("")
    return lines


def _markdown(sweep, speedup_md, fits, chin, lc_fits, iso, eq2, eq2_rows, figures, notes, prov=()) -> str:
    res = sweep.results
    counts = ", ".join(f"{k}: {v}" for k, v in res["kind"].value_counts().sort_index().items())
    n_done = int((res["status"] == "done").sum())
    lines = [
        f"# Sweep report: {sweep.path}",
        "",
        f"{len(res)} runs ({counts}); {n_done} done. Only finished runs are analysed.",
        "",
    ]
    if prov:
        lines += ["Provenance (plan.json): " + "; ".join(prov) + ".", ""]
    lines += speedup_md
    lines += ["## Fitted laws", ""]
    if lc_fits:
        lines += [
            "### L(C) per method (compute-efficient frontier of validation curves)",
            "",
            "| method | L = a·C^b + E: a | b | E | L = a·C^b: a | b | points |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, f in fits["loss_compute"].items():
            w, p = f["with_offset"], f["power_law"]
            ci_w, ci_p = w.get("ci", {}), p.get("ci", {})
            lines.append(
                f"| {method} | {w['a']:.4g}{_ci(ci_w, 'a')} | {w['b']:.4f}{_ci(ci_w, 'b', '.4f')} | "
                f"{w['E']:.4g}{_ci(ci_w, 'E')} | {p['a']:.4g}{_ci(ci_p, 'a')} | {p['b']:.4f}{_ci(ci_p, 'b', '.4f')} | "
                f"{w['n_points']} |"
            )
        lines += ["", "Brackets: bootstrap percentile 95% CI. Extrapolation bands are in the L(C) figure.", ""]
    if chin is not None:
        lines += [
            "### Chinchilla L(N, D) = E + A/N^α + B/D^β (scratch runs)",
            "",
            "| parameter | estimate | 95% CI |",
            "|---|---|---|",
        ]
        for k in ("E", "A", "B", "alpha", "beta"):
            lo_hi = chin.ci.get(k)
            ci = f"[{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]" if lo_hi else "—"
            lines.append(f"| {k} | {getattr(chin, k):.4g} | {ci} |")
        a, b = chin.exponents
        lines += [
            "",
            (
                f"Huber δ=1e-3 on log residuals, {chin.n_starts} starts ({chin.n_converged} converged), "
                f"{chin.n_points} points, {chin.n_bootstrap} bootstrap resamples. N_opt ∝ C^{a:.3f}, "
                f"D_opt ∝ C^{b:.3f}. Caveat: points along one cosine run are not separately decayed runs."
            ),
            "",
        ]
    if not iso.empty:
        lines += [
            "### Growth timing d: IsoFLOP argmins",
            "",
            "| target | op | g | budget C | d_opt | inside sampled d |",
            "|---|---|---|---|---|---|",
        ]
        for _, r in iso.iterrows():
            d = f"{r['d_opt']:.3g}" if np.isfinite(r["d_opt"]) else "no valley"
            lines.append(f"| {r['target']} | {r['op']} | {r['g']:g} | {r['budget']:.3g} | {d} | {r['interior']} |")
        lines.append("")
    if eq2 is not None:
        lines += [
            (
                f"Eq. 2 form fitted: log10 d = {eq2.a:.3f}·log10 N + {eq2.b:.2f}/log10 C + {eq2.c:.2f} "
                f"({eq2.n_points} argmins, RMS {eq2.rms_log10:.3f} in log10 d)."
            ),
            "",
        ]
    lines += [
        f"Paper's Eq. 2 (a={PAPER_EQ2.a}, b={PAPER_EQ2.b}, c={PAPER_EQ2.c}; fitted at C ≈ 1e19.5–1e21):",
        "",
        "| target | N | C (scratch) | d (paper Eq. 2) | d (our fit) |",
        "|---|---|---|---|---|",
    ]
    for r in eq2_rows:
        warn = " ⚠ outside fitted C range" if r["warnings"] else ""
        d_fit = f"{r['d_fit']:.3g}" if np.isfinite(r["d_fit"]) else "—"
        lines.append(f"| {r['target']} | {r['N']:.3g} | {r['C']:.3g} | {r['d_paper']:.3g}{warn} | {d_fit} |")
    lines.append("")

    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Figures", ""]
    for caption, rel in figures:
        lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    return "\n".join(lines)
