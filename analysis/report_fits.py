"""The "Fitted laws" part of `stacking report` (analysis/report.py): L(C) per method, Chinchilla L(N, D) on the
scratch runs, and growth timing d (IsoFLOP argmins, the Eq. 2 form fitted to them, the paper's Eq. 2 at each
target's scratch FLOPs). Each is a function of the sweep that returns a `Section`; a fit the data cannot support
becomes a note."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from analysis import plots
from analysis.fit import PAPER_EQ2, fit_chinchilla, fit_eq2, fit_isoflop, fit_loss_compute
from analysis.section import Section
from analysis.sweep import AnalysisError, chinchilla_points, compute_frontier, isoflop_points, loss_compute_points


def fitted_law_sections(sweep, bootstrap: int, seed: int) -> list[Section]:
    """L(C), Chinchilla and growth timing, in the report's order."""
    return [
        loss_compute_section(sweep, bootstrap, seed),
        chinchilla_section(sweep, bootstrap, seed),
        growth_timing_section(sweep),
    ]


def _ci(fit_ci: dict, name: str, fmt: str = ".4g") -> str:
    if name not in fit_ci:
        return ""
    lo, hi = fit_ci[name]
    return f" [{lo:{fmt}}, {hi:{fmt}}]"


def loss_compute_section(sweep, bootstrap: int, seed: int) -> Section:
    """L(C) per method on the compute-efficient frontier of the validation curves, with and without an offset E."""
    sec = Section()
    frontier = compute_frontier(loss_compute_points(sweep))
    lc_fits, fits = {}, {}
    for method, grp in frontier.groupby("method"):
        try:
            with_e = fit_loss_compute(grp["flops"], grp["loss"], offset=True, bootstrap=bootstrap, seed=seed)
            power = fit_loss_compute(grp["flops"], grp["loss"], offset=False, bootstrap=bootstrap, seed=seed)
        except AnalysisError as err:
            sec.notes.append(f"L(C) for {method}: skipped ({err})")
            continue
        lc_fits[method] = with_e
        fits[method] = {"with_offset": with_e.to_dict(), "power_law": power.to_dict()}
    sec.fits["loss_compute"] = fits
    if lc_fits:
        sec.figure(
            plots.plot_loss_compute(frontier, lc_fits), "loss_compute.png", "L(C) per method with extrapolation bands"
        )
        sec.markdown = _loss_compute_markdown(fits)
    return sec


def _loss_compute_markdown(fits: dict) -> list[str]:
    lines = [
        "### L(C) per method (compute-efficient frontier of validation curves)",
        "",
        "| method | L = a·C^b + E: a | b | E | L = a·C^b: a | b | points |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, f in fits.items():
        w, p = f["with_offset"], f["power_law"]
        ci_w, ci_p = w.get("ci", {}), p.get("ci", {})
        lines.append(
            f"| {method} | {w['a']:.4g}{_ci(ci_w, 'a')} | {w['b']:.4f}{_ci(ci_w, 'b', '.4f')} | "
            f"{w['E']:.4g}{_ci(ci_w, 'E')} | {p['a']:.4g}{_ci(ci_p, 'a')} | {p['b']:.4f}{_ci(ci_p, 'b', '.4f')} | "
            f"{w['n_points']} |"
        )
    return lines + ["", "Brackets: bootstrap percentile 95% CI. Extrapolation bands are in the L(C) figure.", ""]


def chinchilla_section(sweep, bootstrap: int, seed: int) -> Section:
    """Chinchilla L(N, D) on the scratch runs' curves (≥ 2 model sizes)."""
    sec = Section()
    cpts = chinchilla_points(sweep)
    if cpts["N"].nunique() < 2:
        sec.notes.append(
            f"Chinchilla L(N, D): skipped, the scratch runs cover {cpts['N'].nunique()} model size(s); "
            "the fit needs at least 2 (better ≥ 4)"
        )
        return sec
    try:
        chin = fit_chinchilla(cpts["N"], cpts["D"], cpts["loss"], bootstrap=bootstrap, seed=seed)
    except AnalysisError as err:
        sec.notes.append(f"Chinchilla L(N, D): skipped ({err})")
        return sec
    sec.fits["chinchilla"] = chin.to_dict() | {"data": "validation curves of scratch runs (10% warm-up dropped)"}
    sec.figure(plots.plot_chinchilla(cpts, chin), "chinchilla.png", "Chinchilla L(N, D) fit on scratch curves")
    sec.markdown = _chinchilla_markdown(chin)
    return sec


def _chinchilla_markdown(chin) -> list[str]:
    lines = [
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
    return lines + [
        "",
        (
            f"Huber δ=1e-3 on log residuals, {chin.n_starts} starts ({chin.n_converged} converged), "
            f"{chin.n_points} points, {chin.n_bootstrap} bootstrap resamples. N_opt ∝ C^{a:.3f}, "
            f"D_opt ∝ C^{b:.3f}. Caveat: points along one cosine run are not separately decayed runs."
        ),
        "",
    ]


def growth_timing_section(sweep) -> Section:
    """Growth timing d: IsoFLOP argmins over d, the Eq. 2 form fitted to them, and the paper's Eq. 2 d for each
    target at its scratch run's FLOPs."""
    sec = Section()
    ipts = isoflop_points(sweep)
    iso = fit_isoflop(ipts) if len(ipts) else pd.DataFrame()
    eq2 = None
    if iso.empty:
        sec.notes.append("IsoFLOP over d: skipped, no (target, op, g) has ≥ 3 growth timings d with overlapping FLOPs")
    else:
        sec.fits["isoflop"] = iso.to_dict(orient="records")
        sec.figure(plots.plot_isoflop(ipts, iso), "isoflop.png", "IsoFLOP curves of growth timing d")
        good = iso[iso["interior"]]
        try:
            eq2 = fit_eq2(good["N"], good["budget"], good["d_opt"])
            sec.fits["eq2_fit"] = eq2.to_dict()
        except AnalysisError as err:
            sec.notes.append(f"Eq. 2 fit: skipped ({err})")
    eq2_rows = _eq2_predictions(sweep, eq2, sec.notes)
    sec.fits["eq2_paper"] = PAPER_EQ2.to_dict() | {"predictions": eq2_rows}
    sec.markdown = _isoflop_markdown(iso) + _eq2_markdown(eq2, eq2_rows)
    return sec


def _isoflop_markdown(iso: pd.DataFrame) -> list[str]:
    if iso.empty:
        return []
    lines = [
        "### Growth timing d: IsoFLOP argmins",
        "",
        "| target | op | g | budget C | d_opt | inside sampled d |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in iso.iterrows():
        d = f"{r['d_opt']:.3g}" if np.isfinite(r["d_opt"]) else "no valley"
        lines.append(f"| {r['target']} | {r['op']} | {r['g']:g} | {r['budget']:.3g} | {d} | {r['interior']} |")
    return lines + [""]


def _eq2_markdown(eq2, eq2_rows: list[dict]) -> list[str]:
    lines = []
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
    return lines + [""]


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


__all__ = ["chinchilla_section", "fitted_law_sections", "growth_timing_section", "loss_compute_section"]
