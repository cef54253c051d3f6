"""The 2025–26 growth laws on a sweep: Liew & Kato's L(D1, D2) and a g-bound reading of the factor grid.

Liew & Kato (arXiv 2510.06548): a base trained on D1 tokens, grown, and trained on for D2 tokens reaches

    L(D1, D2) = A · D1^(−α1) · D2^(−α2 + α3·ln D1) + E          (natural log; α3 in log10 units is α3·ln 10)

`fit_liew_kato` fits it in log space, log L ≈ logaddexp(log A − α1 ln D1 + (−α2 + α3 ln D1) ln D2, log E), with a
Huber(δ = 1e-3) loss on the log residuals (Chinchilla's objective, analysis/fit.py) by scipy's trust-region least
squares from a grid of starts; D1 and D2 are divided by their geometric means inside the fit (the normalised
parameters are a reparametrisation, mapped back exactly), so the reported parameters are in the caller's units.
Bootstrap: the points are resampled with replacement and refitted from the estimate; percentile CIs. Read off a
sweep, whole runs are resampled (a run's curve or cooldown points are not independent draws).
`liew_kato_points` reads the points of one operator off a sweep: D1 = the grown run's d, D2 = tokens trained
after growth, at the annealed ends of its cooldowns (reading "annealed") or at each evaluation of its validation
curve (reading "mid"). α1 and α3 need ≥ 2 distinct D1, α3 needs ≥ 2 of them with ≥ 2 D2 each.

Klein, Hutter et al. (arXiv 2605.13405): past an upper bound on the growth factor g, scratch wins.
`g_bound_table` reads it per budget off a factor grid (one d, several g, seeds): the paired (by seed) loss
difference grown − scratch per g, its Student-t 95 % CI, and the largest g whose CI lies wholly below 0. Every
budget compares the two at equal FLOPs: the final losses, the f = 1 cooldowns, and below f = 1 only cooldowns a
grid's ``anneal.at_scratch_flops`` placed at scratch's FLOPs (a grown cooldown at a fraction of its own budget has
spent more than scratch's at that fraction: its base's FLOPs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis.fit import check_points
from analysis.loss_table import EQUAL_FLOPS_RTOL
from analysis.speedup import mean_ci
from analysis.sweep import AnalysisError, Sweep, format_tokens, load_sweep

LK_PARAMS = ("A", "alpha1", "alpha2", "alpha3", "E")
HUBER_DELTA = 1e-3
# Starts (normalised units): E as a share of the lowest loss, then the exponents; log A follows from E.
LK_GRID = {"E_share": (0.2, 0.5, 0.8, 0.95), "b1": (0.0, 0.5), "b2": (0.1, 0.3, 1.0), "c": (-0.05, 0.0, 0.05)}
READINGS = ("auto", "annealed", "mid")


def _log_pred(theta: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L and the share of the power-law term in L, for normalised θ = (a, b1, b2, c, e) at x = ln(D / scale)."""
    log_r = theta[0] - theta[1] * x1 - theta[2] * x2 + theta[3] * x1 * x2
    log_l = np.logaddexp(log_r, theta[4])
    return log_l, np.exp(log_r - log_l)


def _solve(theta0: np.ndarray, x1, x2, log_loss, delta: float):
    """One Huber least-squares solve on the log residuals, with the analytic Jacobian."""

    def fun(t):
        return _log_pred(t, x1, x2)[0] - log_loss

    def jac(t):
        w = _log_pred(t, x1, x2)[1]
        return np.stack([w, -w * x1, -w * x2, w * x1 * x2, 1.0 - w], axis=1)

    return least_squares(fun, theta0, jac=jac, loss="huber", f_scale=delta, method="trf", x_scale="jac", max_nfev=2000)


def _to_original(theta: np.ndarray, ls1: float, ls2: float) -> np.ndarray:
    """Rows of normalised θ = (a, b1, b2, c, e) → (ln A, α1, α2, α3, E) for D1, D2 in the caller's units.

    With x = ln D − ls: a − b1 x1 − b2 x2 + c x1 x2 = ln A − α1 ln D1 + (−α2 + α3 ln D1) ln D2 when α3 = c,
    α1 = b1 + c·ls2, α2 = b2 + c·ls1 and ln A = a + α1 ls1 + α2 ls2 − α3 ls1 ls2."""
    a, b1, b2, c, e = np.atleast_2d(theta).T
    al1, al2 = b1 + c * ls2, b2 + c * ls1
    return np.stack([a + al1 * ls1 + al2 * ls2 - c * ls1 * ls2, al1, al2, c, np.exp(e)], axis=1)


def check_identifiable(d1: np.ndarray, d2: np.ndarray) -> None:
    """One-line AnalysisError when α1 / α3 cannot be told apart from A / α2 on these (D1, D2) points."""
    levels = np.unique(d1)
    if levels.size < 2:
        raise AnalysisError(
            f"D1 takes a single value ({format_tokens(levels[0])}): α1 and α3 are not identifiable; "
            "the Liew-Kato fit needs grown runs at ≥ 2 growth timings d"
        )
    rich = sum(np.unique(d2[d1 == v]).size >= 2 for v in levels)
    if rich < 2:
        raise AnalysisError(
            f"only {rich} of the {levels.size} D1 values has ≥ 2 distinct D2: α3 (the D1 × D2 term) "
            "is not identifiable; the fit needs ≥ 2 D2 per d at ≥ 2 d's"
        )


@dataclass
class LiewKatoFit:
    """L(D1, D2) = A · D1^(−α1) · D2^(−α2 + α3·ln D1) + E, with bootstrap percentile CIs when n_bootstrap > 0."""

    A: float
    alpha1: float
    alpha2: float
    alpha3: float
    E: float
    log_A: float
    rmse: float
    """Root-mean-square of (prediction − loss) over the points, in loss units."""
    n_points: int
    d1_scale: float
    d2_scale: float
    """The geometric means D1 and D2 were divided by inside the fit."""
    n_starts: int
    n_bootstrap: int = 0
    ci_level: float = 0.95
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    draws: np.ndarray | None = field(default=None, repr=False)  # (K, 5): ln A, α1, α2, α3, E

    @property
    def params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in LK_PARAMS}

    def predict(self, d1, d2) -> np.ndarray:
        """Loss after D2 tokens of the grown model whose base saw D1 tokens (computed in log space)."""
        l1, l2 = np.log(np.asarray(d1, dtype=float)), np.log(np.asarray(d2, dtype=float))
        return np.exp(self.log_A - self.alpha1 * l1 + (self.alpha3 * l1 - self.alpha2) * l2) + self.E

    def to_dict(self) -> dict:
        out = {
            "law": "L = A * D1^-alpha1 * D2^(-alpha2 + alpha3*ln D1) + E",
            "params": self.params,
            "log_A": self.log_A,
            "rmse": self.rmse,
            "n_points": self.n_points,
            "bootstrap": self.n_bootstrap,
        }
        if self.n_bootstrap:
            out |= {"ci_level": self.ci_level, "ci": {k: list(v) for k, v in self.ci.items()}}
        return out


def _lk_starts(loss: np.ndarray) -> np.ndarray:
    """The grid of normalised starts (a, b1, b2, c, e), E a share of the lowest loss and A filling the median."""
    rows = []
    for share in LK_GRID["E_share"]:
        e = share * loss.min()
        a = math.log(max(np.median(loss) - e, 1e-3 * loss.min()))
        rows += [(a, b1, b2, c, math.log(e)) for b1 in LK_GRID["b1"] for b2 in LK_GRID["b2"] for c in LK_GRID["c"]]
    return np.asarray(rows)


def fit_liew_kato(
    d1,
    d2,
    loss,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    ci_level: float = 0.95,
    delta: float = HUBER_DELTA,
    groups=None,
) -> LiewKatoFit:
    """Fit Liew & Kato's L(D1, D2) to points (base tokens D1, tokens after growth D2, loss); see the module doc.

    The best of the grid starts (`LK_GRID`, 72) is the estimate. With `bootstrap` = K > 0, K resamples of the
    points (numpy seed `seed`) are refitted from it; CIs are percentile intervals at `ci_level` (resamples that
    fail to converge, or whose points leave α1 / α3 unidentifiable, are NaN and left out). With `groups` (one
    label per point, e.g. its run id), whole groups are resampled: the points of one validation curve or of one
    run's cooldowns are not independent draws, and resampling them one by one would make the CIs too narrow."""
    d1, d2, loss = (np.asarray(v, dtype=float).ravel() for v in (d1, d2, loss))
    check_points({"D1": d1, "D2": d2, "loss": loss}, min_points=len(LK_PARAMS) + 1)
    check_identifiable(d1, d2)
    ls1, ls2 = float(np.log(d1).mean()), float(np.log(d2).mean())
    x1, x2, y = np.log(d1) - ls1, np.log(d2) - ls2, np.log(loss)
    starts = _lk_starts(loss)
    sols = [_solve(s, x1, x2, y, delta) for s in starts]
    ok = [s for s in sols if s.status > 0 and np.isfinite(s.cost)]
    if not ok:
        raise AnalysisError(f"the Liew-Kato fit did not converge from any of its {len(starts)} starts")
    best = min(ok, key=lambda s: s.cost).x
    log_a, al1, al2, al3, e = _to_original(best, ls1, ls2)[0]
    fit = LiewKatoFit(
        float(np.exp(log_a)),
        float(al1),
        float(al2),
        float(al3),
        float(e),
        log_A=float(log_a),
        rmse=0.0,
        n_points=loss.size,
        d1_scale=math.exp(ls1),
        d2_scale=math.exp(ls2),
        n_starts=len(starts),
    )
    fit.rmse = float(np.sqrt(np.mean((fit.predict(d1, d2) - loss) ** 2)))
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        draws = np.full((bootstrap, len(LK_PARAMS)), np.nan)
        members = _members(groups, loss.size)
        for k in range(bootstrap):
            i = np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))])
            try:
                check_identifiable(d1[i], d2[i])
            except AnalysisError:
                continue
            s = _solve(best, x1[i], x2[i], y[i], delta)
            if s.status > 0 and np.isfinite(s.cost):
                draws[k] = _to_original(s.x, ls1, ls2)[0]
        with np.errstate(over="ignore"):
            natural = np.column_stack([np.exp(draws[:, 0]), draws[:, 1:]])
        tail = 50.0 * (1.0 - ci_level)
        lo, hi = np.nanpercentile(natural, tail, axis=0), np.nanpercentile(natural, 100.0 - tail, axis=0)
        fit.n_bootstrap, fit.ci_level, fit.draws = bootstrap, ci_level, draws
        fit.ci = {k: (float(lo[j]), float(hi[j])) for j, k in enumerate(LK_PARAMS)}
    return fit


def _members(groups, n: int) -> list[np.ndarray]:
    """The point indices of each resampling unit: one per point, or one per distinct label of `groups`."""
    if groups is None:
        return [np.array([j]) for j in range(n)]
    labels = np.asarray(groups).ravel()
    if labels.size != n:
        raise AnalysisError(f"groups has {labels.size} labels for {n} points")
    return [np.flatnonzero(labels == g) for g in dict.fromkeys(labels.tolist())]


# --------------------------------------------------------------------------------------------------------------
# Points from a sweep
# --------------------------------------------------------------------------------------------------------------

LK_POINT_COLUMNS = ["target", "op", "g", "run_id", "seed", "reading", "D1", "D2", "loss"]


def _one_value(runs: pd.DataFrame, col: str, op: str) -> None:
    values = sorted(runs[col].dropna().astype(str).unique())
    if len(values) > 1:
        raise AnalysisError(
            f"op {op} has grown runs at several {col} values ({', '.join(values)}): pass {col}= to fit one of them"
        )


def liew_kato_points(
    sweep: Sweep | str,
    op: str,
    *,
    target: str | None = None,
    g: float | None = None,
    direction: str | None = None,
    reading: str = "auto",
    skip_frac: float = 0.1,
) -> pd.DataFrame:
    """(D1, D2, loss) points of op's finished grown runs (one target, g and direction: pass them when the sweep
    has several; each seed's points are separate points): D1 = the run's d, D2 = its tokens
    after growth. Reading "annealed": the end of each cooldown (D2 = its tokens; runs without cooldowns are left
    out); "mid": every evaluation of the validation curve with D2 > 0 past the first `skip_frac` of the run's
    tokens (the post-growth spike); "auto": annealed when any of these runs has a cooldown, else mid."""
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    if reading not in READINGS:
        raise AnalysisError(f"reading must be one of {', '.join(READINGS)}, got {reading!r}")
    grown = sweep.runs("grown")
    runs = grown[grown["op"] == op]
    if runs.empty:
        ops = ", ".join(sorted(grown["op"].dropna().unique()))
        raise AnalysisError(f"no finished grown run of op {op} (ops: {ops})")
    runs = runs if target is None else runs[runs["target"] == target]
    runs = runs if g is None else runs[np.isclose(runs["g"].astype(float), float(g))]
    runs = runs if direction is None else runs[runs["direction"] == direction]
    if runs.empty:
        raise AnalysisError(f"no finished grown run of op {op} at target={target} g={g} direction={direction}")
    for col in ("target", "g", "direction"):
        _one_value(runs, col, op)
    annealed = {str(r): sweep.annealed_curve(str(r)) for r in runs["run_id"]}
    if reading == "auto":
        reading = "annealed" if any(len(a) for a in annealed.values()) else "mid"
    frames = []
    for _, r in runs.iterrows():
        if reading == "annealed":
            c = annealed[str(r["run_id"])]
        else:
            c = sweep.curve(str(r["run_id"]))
            c = c[(c["tokens"] > 0) & (c["tokens"] >= skip_frac * c["tokens"].max())]
        frames.append(
            pd.DataFrame(
                {
                    "target": r["target"],
                    "op": op,
                    "g": float(r["g"]),
                    "run_id": r["run_id"],
                    "seed": r["seed"],
                    "reading": reading,
                    "D1": float(r["grow_at_tokens"]),
                    "D2": c["tokens"].to_numpy(float),
                    "loss": c["val_loss"].to_numpy(float),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)[LK_POINT_COLUMNS] if frames else pd.DataFrame(columns=LK_POINT_COLUMNS)
    if out.empty:
        raise AnalysisError(f"op {op}: no {reading} loss after growth to fit")
    return out


def fit_points(sweep: Sweep, op: str, *, reading: str = "auto", **kw) -> pd.DataFrame:
    """`liew_kato_points` as the fits use them: with ``auto``, the annealed points, or the mid-schedule curves when
    the cooldowns sit at a single d (the curves may span more)."""
    pts = liew_kato_points(sweep, op, reading=reading, **kw)
    if reading == "auto" and pts["D1"].nunique() < 2:
        pts = liew_kato_points(sweep, op, reading="mid", **kw)
    return pts


def optimal_d1(
    fit: LiewKatoFit, flops: float, base_fpt: float, target_fpt: float, d1_range: tuple[float, float], n: int = 400
) -> dict:
    """The growth timing that minimises the fitted L(D1, D2) at a budget of `flops`: D1 base tokens cost
    D1·base_fpt, the rest buys D2 = (flops − D1·base_fpt) / target_fpt tokens after growth. D1 is searched on a
    log grid of `n` points over `d1_range` (the sweep's sampled d's: the law is not extrapolated in D1) where D2 > 0.
    Returns d1, d2, loss at the optimum, `edge` (the optimum is an end of the range), and with bootstrap draws
    `d1_lo`/`d1_hi`: the percentile interval of each draw's own optimum at the fit's `ci_level`."""
    lo, hi = d1_range
    d1 = np.geomspace(lo, min(hi, flops / base_fpt), n)
    d1 = d1[d1 * base_fpt < flops]
    if d1.size == 0:
        raise AnalysisError(
            f"the budget {flops:.3g} FLOPs is used up by the base before the sweep's smallest d ({format_tokens(lo)})"
        )
    d2 = (flops - d1 * base_fpt) / target_fpt
    l1, l2 = np.log(d1), np.log(d2)
    i = int(np.argmin(fit.predict(d1, d2)))
    out = {
        "d1": float(d1[i]),
        "d2": float(d2[i]),
        "loss": float(fit.predict(d1[i], d2[i])),
        "edge": i in (0, d1.size - 1),
    }
    out |= {"d1_lo": math.nan, "d1_hi": math.nan}
    draws = None if fit.draws is None else fit.draws[np.isfinite(fit.draws).all(axis=1)]
    if draws is not None and len(draws):  # no finite draw (every resample unidentifiable): no interval
        log_a, al1, al2, al3, e = (draws[:, j : j + 1] for j in range(5))
        with np.errstate(over="ignore"):
            pred = np.exp(log_a - al1 * l1 + (al3 * l1 - al2) * l2) + e  # (draws, grid)
        best = d1[np.argmin(pred, axis=1)]
        tail = 50.0 * (1.0 - fit.ci_level)
        out["d1_lo"], out["d1_hi"] = (float(v) for v in np.percentile(best, [tail, 100.0 - tail]))
    return out


LK_SUMMARY_COLUMNS = (
    ["target", "op", "direction", "g", "reading", "n_points", "n_d1"]
    + list(LK_PARAMS)
    + [f"{k}_{s}" for k in LK_PARAMS for s in ("lo", "hi")]
    + ["rmse", "note"]
)


def liew_kato_summary(
    sweep_dir: Sweep | str, *, reading: str = "auto", bootstrap: int = 200, seed: int = 0
) -> pd.DataFrame:
    """One row per target × op × direction × g of the sweep's grown runs: the Liew-Kato fit on `liew_kato_points`
    (``auto``: the annealed points, or the mid-schedule curves when the cooldowns sit at a single d) with its
    bootstrap CIs, or NaN parameters and the one-line reason in `note` when the points cannot support it (a
    single d, too few points)."""
    sweep = sweep_dir if isinstance(sweep_dir, Sweep) else load_sweep(sweep_dir)
    rows = []
    for (target, op, direction, g), _ in sweep.runs("grown").groupby(["target", "op", "direction", "g"], dropna=False):
        row = {"target": target, "op": op, "direction": direction, "g": float(g), "note": ""}
        try:
            kw = {"target": str(target), "g": float(g), "direction": None if pd.isna(direction) else str(direction)}
            pts = fit_points(sweep, str(op), reading=reading, **kw)
            row |= {"reading": pts["reading"].iloc[0], "n_points": len(pts), "n_d1": pts["D1"].nunique()}
            fit = fit_liew_kato(pts["D1"], pts["D2"], pts["loss"], bootstrap=bootstrap, seed=seed, groups=pts["run_id"])
        except AnalysisError as err:
            rows.append(row | {"note": str(err)})
            continue
        row |= fit.params | {"rmse": fit.rmse}
        row |= {f"{k}_{s}": v for k, (lo, hi) in fit.ci.items() for s, v in (("lo", lo), ("hi", hi))}
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=LK_SUMMARY_COLUMNS)


def format_liew_kato_summary(df: pd.DataFrame) -> str:
    """Markdown: one line per fit, each parameter with its 95 % CI, or the reason there is no fit."""
    lines = ["| target | op | g | reading | points (d's) | A | α1 | α2 | α3 | E | RMSE |", "|---" * 11 + "|"]
    for _, r in df.iterrows():
        head = f"| {r['target']} | {r['op']} | {r['g']:g} | {r['reading'] if isinstance(r['reading'], str) else '—'}"
        if r["note"]:
            lines.append(f"{head} | {_int(r['n_points'])} ({_int(r['n_d1'])}) | {r['note']} |" + " |" * 5)
            continue
        cells = [f"{r[k]:.4g} [{r[f'{k}_lo']:.3g}, {r[f'{k}_hi']:.3g}]" for k in LK_PARAMS]
        lines.append(f"{head} | {r['n_points']:.0f} ({r['n_d1']:.0f}) | {' | '.join(cells)} | {r['rmse']:.4f} |")
    return "\n".join(lines)


def _int(v) -> str:
    return "—" if pd.isna(v) else f"{int(v)}"


# --------------------------------------------------------------------------------------------------------------
# g-bound reading (Klein, Hutter et al.)
# --------------------------------------------------------------------------------------------------------------

G_BOUND_COLUMNS = [
    "target",
    "op",
    "direction",
    "d",
    "budget",
    "g",
    "n_pairs",
    "diff",
    "diff_lo",
    "diff_hi",
    "better",
    "g_bound",
]


def _scratch_budgets(sweep: Sweep, run) -> dict[str, tuple[float, float]]:
    """{"final": (the run's last mid-schedule loss, its FLOPs), "f=0.5": (its annealed loss at f = 0.5, FLOPs), …}."""
    a = sweep.annealed_curve(str(run["run_id"]))
    return {"final": (float(run["final_val_loss"]), float(run["flops"]))} | {
        f"f={f:g}": (float(v), float(c)) for f, v, c in zip(a["anneal_fraction"], a["val_loss"], a["flops"])
    }


def _grown_at(sweep: Sweep, run, scratch: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The grown run's losses at the scratch run's budgets, where it has spent the same FLOPs (`EQUAL_FLOPS_RTOL`):
    its last mid-schedule loss at "final", and at "f=…" its cooldown at scratch's FLOPs — the f = 1 cooldown, and a
    grid's ``anneal.at_scratch_flops`` cooldowns below it. Its cooldowns at fractions of its own budget (which
    includes the base's FLOPs: more than scratch's at the same fraction) are not compared."""

    def nearest(points, flops: float) -> float | None:
        """The loss of the (loss, FLOPs) point nearest `flops`, if within EQUAL_FLOPS_RTOL."""
        gap, loss = min(((abs(f / flops - 1.0), v) for v, f in points), default=(math.inf, None))
        return loss if gap <= EQUAL_FLOPS_RTOL else None

    a = sweep.annealed_curve(str(run["run_id"]))
    cooldowns = list(zip(a["val_loss"].astype(float), a["flops"].astype(float)))
    main = [(float(run["final_val_loss"]), float(run["flops"]))]
    found = {b: nearest(main if b == "final" else cooldowns, flops) for b, (_, flops) in scratch.items()}
    return {b: loss for b, loss in found.items() if loss is not None}


def g_bound_table(sweep: Sweep | str, level: float = 0.95) -> pd.DataFrame:
    """Per target × op × direction × d × budget × g: the paired (by seed) difference grown − scratch of the same
    target (mean over seeds and Student-t CI, `analysis.speedup.mean_ci`), `better` = CI wholly below 0, and per
    target × op × direction × d × budget `g_bound` = the largest g that is `better`, or "none". Budgets: "final"
    (last mid-schedule loss) and "f=…" for each annealed fraction of the scratch run, each compared with the grown
    run's reading at the same FLOPs (`_grown_at`: f = 1, and below it only a grid's ``anneal.at_scratch_flops``
    cooldowns; a budget without one is not read). Seeds without a scratch run of
    their own are left out; with one pair the CI is NaN and the g is not `better`."""
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    scratch = (
        sweep.runs("scratch").sort_values("tokens", kind="stable").drop_duplicates(["target", "seed"], keep="last")
    )
    scratch_losses = {
        (r["target"], r["seed"]): (r["run_id"], _scratch_budgets(sweep, r)) for _, r in scratch.iterrows()
    }
    diffs: dict[tuple, list[float]] = {}
    paired = 0
    for _, r in sweep.runs("grown").iterrows():
        if (r["target"], r["seed"]) not in scratch_losses:
            continue
        paired += 1
        sid, base = scratch_losses[(r["target"], r["seed"])]
        sweep.check_same_windows(str(r["run_id"]), str(sid))
        key = (r["target"], r["op"], r["direction"], float(r["grow_at_tokens"]))
        for budget, loss in _grown_at(sweep, r, base).items():
            diffs.setdefault(key + (budget, float(r["g"])), []).append(loss - base[budget][0])
    rows = []
    for key, values in diffs.items():
        m, lo, hi = mean_ci(values, level)
        rows.append(
            dict(zip(G_BOUND_COLUMNS[:6], key))
            | {
                "n_pairs": int(np.isfinite(values).sum()),
                "diff": m,
                "diff_lo": lo,
                "diff_hi": hi,
                "better": bool(hi < 0),
            }
        )
    if not paired:
        raise AnalysisError(f"{sweep.path}: no grown run has a scratch run of its own target and seed to pair with")
    if not rows:
        raise AnalysisError(
            f"none of the sweep's {paired} paired grown runs has a reading at its scratch run's FLOPs "
            f"(within {EQUAL_FLOPS_RTOL:.0%}; a grid's scratch.flop_matched makes them equal): no budget to compare at"
        )
    out = pd.DataFrame(rows)
    out["_order"] = out["budget"] != "final"  # "final" first, then the fractions in order
    out = out.sort_values(["target", "op", "direction", "d", "_order", "budget", "g"], kind="stable")
    keys = ["target", "op", "direction", "d", "budget"]
    better = out[out["better"]].groupby(keys, sort=False, dropna=False)["g"].max()
    out["g_bound"] = [better.get(k, "none") for k in zip(*(out[c] for c in keys))]
    return out.reset_index(drop=True)[G_BOUND_COLUMNS]


def format_g_bound_table(df: pd.DataFrame) -> str:
    """Markdown: one line per target × op × d × budget with each g's paired difference and the bound."""
    gs = sorted(df["g"].unique())
    lines = [
        f"| target | op | d | budget | {' | '.join(f'g={g:g}: grown − scratch' for g in gs)} | largest g better |",
        "|---" * (5 + len(gs)) + "|",
    ]
    for (target, op, _, d, budget), t in df.groupby(
        ["target", "op", "direction", "d", "budget"], sort=False, dropna=False
    ):
        by_g = dict(zip(t["g"], t.itertuples()))
        cells = [_diff_cell(by_g[g]) if g in by_g else "—" for g in gs]
        b = t["g_bound"].iloc[0]
        lines.append(
            f"| {target} | {op} | {format_tokens(d)} | {budget} | {' | '.join(cells)} | "
            f"{b if isinstance(b, str) else f'{b:g}'} |"
        )
    return "\n".join(lines)


def _diff_cell(r) -> str:
    ci = f" [{r.diff_lo:+.4f}, {r.diff_hi:+.4f}]" if np.isfinite(r.diff_lo) else " (1 seed)"
    return f"{r.diff:+.4f}{ci}{' *' if r.better else ''}"
