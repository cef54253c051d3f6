"""Scaling-law fits: Chinchilla Approach 3, L(C) power laws, IsoFLOP parabolas, the Stacking paper's Eq. 2.

Chinchilla Approach 3 (Hoffmann et al. 2022, §3.3 and App. D.2; replication by Besiroglu et al. 2024):

    L(N, D) = E + A / N^α + B / D^β,   fitted in log space as  log L ≈ LSE(a − α log N, b − β log D, e)

with A, B, E = exp(a), exp(b), exp(e). Objectives, summed over points (a mean makes L-BFGS stop early — the
"poor loss scale" Epoch AI found in the original fit):

* ``huber``: Huber(δ = 1e-3) of the log residual, the paper's objective;
* ``lad``: least absolute deviations of the log residual. Epoch's headline estimate is a Huber-shaped
  maximum-likelihood fit whose scale σ collapses to ~5e-6, i.e. effectively LAD (reference/chinchilla.md §2.2b).
  |r| is not smooth, so we minimise Huber_δ(r)/δ for δ = 1e-4, 1e-6, 1e-8, each solve warm-started from the
  previous one (continuation); Huber_δ(r)/δ = |r| − δ/2 outside |r| ≤ δ, so the last solve is LAD to ~1e-8.

All 4500 grid starts run as one batched L-BFGS problem (analysis/lbfgs.py) with analytic gradients, and so do
all bootstrap resamples: a resample is the same data with integer weights (how often each point was drawn).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.lbfgs import minimize_batched
from analysis.sweep import AnalysisError

HUBER_DELTA = 1e-3
# LAD continuation: Huber_δ/δ with shrinking δ (see the module docstring). Three levels reach the same Σ|r|
# (to 1e-6 relative on Epoch's data) as five levels 1e-4, 1e-5, …, 1e-8, at two thirds of the iterations.
LAD_DELTAS = (1e-4, 1e-6, 1e-8)
LAD_REFINE_STARTS = 128
# Hoffmann et al. App. D.2 initialisation grid: 6·6·5·5·5 = 4500 starts, order (a, b, e, α, β).
CHINCHILLA_GRID = {
    "a": np.arange(0.0, 26.0, 5.0),
    "b": np.arange(0.0, 26.0, 5.0),
    "e": np.arange(-1.0, 1.01, 0.5),
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
}
CHINCHILLA_PARAMS = ("E", "A", "B", "alpha", "beta")
OBJECTIVES = ("huber", "lad")


# --------------------------------------------------------------------------------------------------------------
# The batched objective: log L ≈ LSE(a_1 − α_1 x_1, …, a_J − α_J x_J, e) with x_j = log of the j-th variable.
# Parameter row: [a_1 … a_J, e, α_1 … α_J]; Chinchilla is J = 2 → (a, b, e, α, β).
# --------------------------------------------------------------------------------------------------------------


def lse_objective(
    x_log: np.ndarray, log_loss: np.ndarray, delta: float, weights: np.ndarray | None = None, scale: float = 1.0
):
    """Return fun_grad(params, rows) → (scale · Σ w·Huber_δ(r), gradient) for the batched optimiser.

    x_log is (J, n); weights, if given, is (S, n) and row `rows[i]` of it weights the points of problem i.
    The LAD continuation uses scale = 1/δ so that every level has the scale of Σ|r|; the Huber fit keeps
    scale 1, the sum Chinchilla and Epoch minimise (the optimiser's tolerances are set for it).
    """
    n_terms, n_points = x_log.shape
    # Evaluate ~64k (row, point) pairs at a time: the ~20 elementwise passes then run in L2 cache instead of
    # streaming the whole (rows × points) block through memory each time (2× faster on Epoch's 4500 × 240).
    chunk = max(1, 65536 // n_points)

    x_lo, x_hi = x_log.min(axis=1), x_log.max(axis=1)
    one_x = [np.stack([np.ones(n_points), x_log[j]]) for j in range(n_terms)]  # (2, n): row j → [1, x_j]
    one_x_t = [np.ascontiguousarray(v.T) for v in one_x]

    def block(params: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, e, alpha = params[:, :n_terms], params[:, n_terms], params[:, n_terms + 1 :]
        # Shift by each row's maximum term (not per point): a − α·x is linear in x, so its maximum over the
        # points is at x_lo or x_hi — no pass over the points needed — and exp(e − m) stays one scalar per
        # row. Rows so extreme that every term underflows get f = inf and are rejected by the line search.
        m = np.maximum(e, (a - np.where(alpha >= 0, alpha * x_lo, alpha * x_hi)).max(axis=1))
        terms = []
        for j in range(n_terms):
            t = np.stack([a[:, j] - m, -alpha[:, j]], axis=1) @ one_x[j]  # (a − m) − α·x in one pass
            np.exp(t, out=t)
            terms.append(t)
        e_term = np.exp(e - m)
        s = terms[0].copy()
        for t in terms[1:]:
            s += t
        s += e_term[:, None]
        r = np.log(s)
        r += m[:, None]
        r -= log_loss  # r = log prediction − log loss
        c = np.clip(r, -delta, delta)  # dHuber/dr; Huber_δ(r) = c·(r − c/2)
        if weights is None:
            f = np.einsum("ij,ij->i", c, r) - 0.5 * np.einsum("ij,ij->i", c, c)
        else:
            cw = c * weights[rows]
            f = np.einsum("ij,ij->i", cw, r) - 0.5 * np.einsum("ij,ij->i", cw, c)
            c = cw
        f *= scale
        c /= s  # dHuber/d(prediction), per unit of each term
        g = np.empty_like(params)
        for j, t in enumerate(terms):
            t *= c
            g_j = t @ one_x_t[j]  # [Σ t·c, Σ t·c·x]
            g[:, j], g[:, n_terms + 1 + j] = g_j[:, 0], -g_j[:, 1]
        g[:, n_terms] = e_term * c.sum(axis=1)
        g *= scale
        return f, g

    def fun_grad(params: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = np.empty(params.shape[0])
        g = np.empty_like(params)
        with np.errstate(all="ignore"):
            for i in range(0, params.shape[0], chunk):
                f[i : i + chunk], g[i : i + chunk] = block(params[i : i + chunk], rows[i : i + chunk])
        f[~np.isfinite(f)] = np.inf
        return f, g

    return fun_grad


class LSEProblem:
    """The points of one log-sum-exp fit, log L ≈ LSE(a_j − α_j x_j …, e), solved in centred coordinates.

    a and α are nearly collinear when x = log N ≈ 20 (a − α·x barely changes when both move together), which
    makes L-BFGS crawl. Writing the term as (a − α·μ) − α·(x − μ), with μ the mean of x, is the same model
    and the same starting points, but better conditioned: on Epoch's data the 4500-start grid needs ~30% fewer
    iterations. Parameters passed in and out of `solve`/`lad` are in centred form; convert with
    `to_centred`/`from_centred`.
    """

    def __init__(self, x_log: np.ndarray, log_loss: np.ndarray):
        self.n_terms = x_log.shape[0]
        self.mu = x_log.mean(axis=1)
        self.x = x_log - self.mu[:, None]
        self.y = log_loss

    def _shift(self, params: np.ndarray, sign: float) -> np.ndarray:
        out = np.array(params, dtype=float, copy=True)
        j = self.n_terms
        out[:, :j] += sign * out[:, j + 1 :] * self.mu
        return out

    def to_centred(self, params: np.ndarray) -> np.ndarray:
        return self._shift(params, -1.0)

    def from_centred(self, params: np.ndarray) -> np.ndarray:
        return self._shift(params, 1.0)

    def solve(self, starts: np.ndarray, weights: np.ndarray | None = None):
        """Huber(δ = 1e-3) fit from every start (without weights: starts of one problem, see lbfgs)."""
        return minimize_batched(
            lse_objective(self.x, self.y, HUBER_DELTA, weights), starts, starts_of_one_problem=weights is None
        )

    def lad(self, starts: np.ndarray, weights: np.ndarray | None = None):
        """Σ|r| from every start: Huber_δ/δ for the shrinking δ of LAD_DELTAS, each level warm-started."""
        res = None
        x = starts
        for delta in LAD_DELTAS:
            res = minimize_batched(lse_objective(self.x, self.y, delta, weights, scale=1.0 / delta), x, ftol=1e-12)
            x = res.x
        return res

    def residual_loss(self, params: np.ndarray, objective: str) -> float:
        """The objective at centred `params` as reported: Σ Huber_1e-3(r) (comparable to Epoch's
        0.0010183) for huber, Σ|r| for lad."""
        j = self.n_terms
        pred = np.logaddexp.reduce(
            [params[i] - params[j + 1 + i] * self.x[i] for i in range(j)] + [np.full(self.y.shape, params[j])],
            axis=0,
        )
        r = pred - self.y
        if objective == "lad":
            return float(np.abs(r).sum())
        c = np.clip(r, -HUBER_DELTA, HUBER_DELTA)
        return float((c * (r - 0.5 * c)).sum())

    def grid_fit(self, starts: np.ndarray, objective: str) -> tuple[np.ndarray, int]:
        """Best (centred) parameters from centred starts, and how many starts converged.

        LAD is not run from every start: the Huber(1e-3) solutions are already near LAD optima, so the LAD
        continuation starts from the LAD_REFINE_STARTS best distinct Huber solutions. On Epoch's data this
        gives Σ|r| within 1e-6 (relative) of refining all ~1400 distinct solutions, in a tenth of the time.
        """
        res = self.solve(starts)
        ok = res.converged & np.isfinite(res.fun)
        pool = np.where(ok, res.fun, np.inf) if ok.any() else res.fun
        order = np.argsort(pool, kind="stable")
        if objective == "huber":
            return res.x[order[0]], int(ok.sum())
        ranked = res.x[order[np.isfinite(pool[order])]]
        _, first = np.unique(np.round(ranked, 3), axis=0, return_index=True)
        lad = self.lad(ranked[np.sort(first)[:LAD_REFINE_STARTS]])
        scores = [self.residual_loss(x, "lad") for x in lad.x]
        return lad.x[int(np.argmin(scores))], int(ok.sum())

    def refit(self, start: np.ndarray, objective: str, weights: np.ndarray):
        """Refit every weighted problem (bootstrap resample) from the full-data (centred) estimate."""
        starts = np.repeat(start[None], weights.shape[0], axis=0)
        return self.lad(starts, weights) if objective == "lad" else self.solve(starts, weights)


def _bootstrap_weights(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(k, n) draw counts: resampling n points with replacement, k times."""
    idx = rng.integers(0, n, size=(k, n)) + n * np.arange(k)[:, None]  # flat index of (resample, point)
    return np.bincount(idx.ravel(), minlength=k * n).reshape(k, n).astype(float)


def _percentile_ci(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100.0 * (1.0 - level) / 2.0
    return np.nanpercentile(draws, tail, axis=0), np.nanpercentile(draws, 100.0 - tail, axis=0)


def check_points(columns: dict[str, np.ndarray], min_points: int) -> None:
    """One clear AnalysisError per problem: lengths, NaN, non-positive values, too few points."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise AnalysisError(f"columns {', '.join(columns)} have different lengths {sorted(lengths)}")
    for name, v in columns.items():
        v = np.asarray(v, dtype=float)
        bad = ~np.isfinite(v)
        if bad.any():
            raise AnalysisError(
                f"{name} has {bad.sum()} missing or non-finite value(s) (first at row {np.argmax(bad)})"
            )
        if (v <= 0).any():
            raise AnalysisError(
                f"{name} must be positive: {(v <= 0).sum()} value(s) ≤ 0 (first at row {np.argmax(v <= 0)}, "
                f"value {v[np.argmax(v <= 0)]:g})"
            )
    n = lengths.pop()
    if n < min_points:
        raise AnalysisError(f"too few points for the fit: need at least {min_points}, got {n}")


# --------------------------------------------------------------------------------------------------------------
# Chinchilla L(N, D)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ChinchillaFit:
    """L(N, D) = E + A/N^α + B/D^β with optional bootstrap percentile CIs."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: str
    loss: float  # Σ Huber_1e-3(r) or Σ |r| at the optimum
    n_points: int
    n_starts: int
    n_converged: int
    n_bootstrap: int = 0
    ci_level: float = 0.95
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    se: dict[str, float] = field(default_factory=dict)
    draws: np.ndarray | None = field(default=None, repr=False)  # (K, 5) in CHINCHILLA_PARAMS order

    def predict(self, n, d) -> np.ndarray:
        """Loss at N parameters and D tokens."""
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    @property
    def exponents(self) -> tuple[float, float]:
        """(a, b) of N_opt ∝ C^a, D_opt ∝ C^b: a = β/(α+β), b = α/(α+β) (Hoffmann et al. App. D.2)."""
        return self.beta / (self.alpha + self.beta), self.alpha / (self.alpha + self.beta)

    def compute_optimal(self, flops) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) at compute C with C = 6ND: N_opt = G (C/6)^a, D_opt = G⁻¹ (C/6)^b."""
        a, b = self.exponents
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        c6 = np.asarray(flops, dtype=float) / 6.0
        return g * c6**a, c6**b / g

    def to_dict(self) -> dict:
        """JSON-ready summary (what `stacking fit-law` prints)."""
        out = {
            "law": "L = E + A/N^alpha + B/D^beta",
            "objective": self.objective,
            "params": {k: getattr(self, k) for k in CHINCHILLA_PARAMS},
            "objective_value": self.loss,
            "n_points": self.n_points,
            "n_starts": self.n_starts,
            "n_converged": self.n_converged,
            "compute_optimal_exponents": dict(zip(("a", "b"), self.exponents)),
            "bootstrap": self.n_bootstrap,
        }
        if self.n_bootstrap:
            out["ci_level"] = self.ci_level
            out["ci"] = {k: list(v) for k, v in self.ci.items()}
            out["se"] = dict(self.se)
        return out


def chinchilla_grid() -> np.ndarray:
    """The 4500 Chinchilla starts as rows (a, b, e, α, β)."""
    g = CHINCHILLA_GRID
    mesh = np.meshgrid(g["a"], g["b"], g["e"], g["alpha"], g["beta"], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def fit_chinchilla(
    n,
    d,
    loss,
    *,
    objective: str = "huber",
    bootstrap: int = 0,
    seed: int = 0,
    ci_level: float = 0.95,
    starts: np.ndarray | None = None,
) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^α + B/D^β (Chinchilla Approach 3) to points (N params, D tokens, loss).

    Grid fit from the 4500 Chinchilla starts (or `starts`, rows (a, b, e, α, β)); the best converged start is
    the estimate. With `bootstrap` = K > 0, K resamples (with replacement, numpy seed `seed`) are refitted from
    the estimate with the same objective and CIs are the percentile intervals at `ci_level`; SE = std of draws.
    """
    if objective not in OBJECTIVES:
        raise AnalysisError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    n, d, loss = (np.asarray(v, dtype=float).ravel() for v in (n, d, loss))
    check_points({"N": n, "D": d, "loss": loss}, min_points=10)
    for name, v in (("N", n), ("D", d)):
        if np.unique(v).size < 2:
            raise AnalysisError(f"{name} takes a single value ({v[0]:g}); the fit needs at least 2 distinct {name}")
    prob = LSEProblem(np.stack([np.log(n), np.log(d)]), np.log(loss))
    grid = chinchilla_grid() if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))

    best_c, n_converged = prob.grid_fit(prob.to_centred(grid), objective)
    fit = ChinchillaFit(
        *map(float, _to_natural(prob.from_centred(best_c[None]))[0]),
        objective=objective,
        loss=prob.residual_loss(best_c, objective),
        n_points=n.size,
        n_starts=grid.shape[0],
        n_converged=n_converged,
    )
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        weights = _bootstrap_weights(n.size, bootstrap, rng)
        boot = prob.refit(best_c, objective, weights)
        draws = _to_natural(prob.from_centred(boot.x))
        draws[~np.isfinite(boot.fun)] = np.nan
        lo, hi = _percentile_ci(draws, ci_level)
        fit.n_bootstrap, fit.ci_level, fit.draws = bootstrap, ci_level, draws
        fit.ci = {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(CHINCHILLA_PARAMS)}
        fit.se = {k: float(np.nanstd(draws[:, i], ddof=1)) for i, k in enumerate(CHINCHILLA_PARAMS)}
    return fit


def _to_natural(x: np.ndarray) -> np.ndarray:
    """Rows (a, b, e, α, β) → (E, A, B, α, β)."""
    return np.stack([np.exp(x[:, 2]), np.exp(x[:, 0]), np.exp(x[:, 1]), x[:, 3], x[:, 4]], axis=1)


# --------------------------------------------------------------------------------------------------------------
# L(C): loss against total training compute, per method
# --------------------------------------------------------------------------------------------------------------

# Starts for L(C) = exp(LSE(a − α log C, e)): exponents α and irreducible losses E as fractions of the lowest
# loss; a is then set so the power-law term matches the data at the mean log C (see _loss_compute_starts).
LC_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
LC_E_FRACTIONS = (1e-3, 0.3, 0.6, 0.8, 0.95)


def _loss_compute_starts(prob: LSEProblem) -> np.ndarray:
    """Centred starts (a_c, e, α): at log C = mean, the term a_c must carry the loss above E."""
    l_min, l_typ = float(np.exp(prob.y.min())), float(np.exp(prob.y.mean()))
    rows = []
    for frac in LC_E_FRACTIONS:
        e_val = frac * l_min
        for alpha in LC_ALPHAS:
            rows.append([np.log(l_typ - e_val), np.log(e_val), alpha])
    return np.array(rows)


@dataclass
class LossComputeFit:
    """L(C) = a·C^b + E (`offset`) or a·C^b, with bootstrap draws of (a, b, E) for CIs and bands."""

    a: float
    b: float
    E: float
    offset: bool
    n_points: int
    flops_range: tuple[float, float]
    n_bootstrap: int = 0
    ci_level: float = 0.95
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    draws: np.ndarray | None = field(default=None, repr=False)  # (K, 3): a, b, E

    def predict(self, flops) -> np.ndarray:
        return self.a * np.asarray(flops, dtype=float) ** self.b + self.E

    def band(self, flops, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Percentile band of the bootstrap predictions at `flops` (NaN without a bootstrap)."""
        c = np.asarray(flops, dtype=float)
        if self.draws is None:
            return np.full(c.shape, np.nan), np.full(c.shape, np.nan)
        pred = self.draws[:, 0, None] * c.ravel()[None] ** self.draws[:, 1, None] + self.draws[:, 2, None]
        lo, hi = _percentile_ci(pred, self.ci_level if level is None else level)
        return lo.reshape(c.shape), hi.reshape(c.shape)

    def to_dict(self) -> dict:
        out = {
            "law": "L = a*C^b + E" if self.offset else "L = a*C^b",
            "a": self.a,
            "b": self.b,
            "n_points": self.n_points,
            "flops_range": list(self.flops_range),
            "bootstrap": self.n_bootstrap,
        }
        if self.offset:
            out["E"] = self.E
        if self.n_bootstrap:
            out["ci_level"] = self.ci_level
            out["ci"] = {k: list(v) for k, v in self.ci.items()}
        return out


def fit_loss_compute(
    flops, loss, *, offset: bool = True, bootstrap: int = 0, seed: int = 0, ci_level: float = 0.95
) -> LossComputeFit:
    """Fit L(C) = a·C^b + E (Huber 1e-3 on log residuals, grid of starts) or a·C^b (least squares in log-log).

    The saturating form is Porian et al.'s `fit_loss_with_saturation`; the pure power law is the Stacking
    paper's Fig. 7 form (they fit it with curve_fit in linear space; log space weights every point alike).
    """
    c, loss = np.asarray(flops, dtype=float).ravel(), np.asarray(loss, dtype=float).ravel()
    check_points({"flops": c, "loss": loss}, min_points=5 if offset else 3)
    if np.unique(c).size < 2:
        raise AnalysisError("flops takes a single value; L(C) needs at least 2 distinct compute values")
    x, y = np.log(c), np.log(loss)
    rng = np.random.default_rng(seed)
    weights = _bootstrap_weights(c.size, bootstrap, rng) if bootstrap > 0 else None
    fit = LossComputeFit(0.0, 0.0, 0.0, offset, c.size, (float(c.min()), float(c.max())))
    if offset:
        prob = LSEProblem(x[None], y)
        best_c, _ = prob.grid_fit(_loss_compute_starts(prob), "huber")
        best = prob.from_centred(best_c[None])[0]
        fit.a, fit.b, fit.E = float(np.exp(best[0])), float(-best[2]), float(np.exp(best[1]))
        if weights is not None:
            boot = prob.refit(best_c, "huber", weights)
            bx = prob.from_centred(boot.x)
            draws = np.stack([np.exp(bx[:, 0]), -bx[:, 2], np.exp(bx[:, 1])], axis=1)
            draws[~np.isfinite(boot.fun)] = np.nan
    else:
        (la, b), draws = _loglog_lstsq(x, y, np.ones((1, c.size)))[0], None
        fit.a, fit.b = float(np.exp(la)), float(b)
        if weights is not None:
            coef = _loglog_lstsq(x, y, weights)
            draws = np.stack([np.exp(coef[:, 0]), coef[:, 1], np.zeros(bootstrap)], axis=1)
    if weights is not None:
        lo, hi = _percentile_ci(draws, ci_level)
        names = ("a", "b", "E") if offset else ("a", "b")
        fit.n_bootstrap, fit.ci_level, fit.draws = bootstrap, ci_level, draws
        fit.ci = {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(names)}
    return fit


def _loglog_lstsq(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares of y = la + b·x for each weight row of w (K, n) → (K, 2) [la, b]."""
    s0, s1, s2 = w.sum(1), w @ x, w @ (x * x)
    t0, t1 = w @ y, w @ (x * y)
    det = s0 * s2 - s1 * s1
    with np.errstate(all="ignore"):
        b = (s0 * t1 - s1 * t0) / det
        la = (t0 - b * s1) / s0
    return np.stack([la, b], axis=1)


# --------------------------------------------------------------------------------------------------------------
# Growth timing d: IsoFLOP parabolas and the Stacking paper's Eq. 2
# --------------------------------------------------------------------------------------------------------------


def fit_isoflop(points, group_keys=("target", "op", "direction", "g")):
    """Per (group, budget): parabola loss = p0 + p1·x + p2·x² in x = log10 d, and its argmin d_opt.

    `points` has columns group_keys + N, budget, d, loss (analysis.sweep.isoflop_points). d_opt is NaN when
    the parabola opens downward (no valley); `interior` says whether d_opt lies inside the sampled d range
    (outside it the argmin is an extrapolation).
    """
    keys = list(group_keys) + ["N", "budget"]
    rows = []
    for key, grp in points.dropna(subset=["loss"]).groupby(keys, dropna=False):
        x, y = np.log10(grp["d"].to_numpy(float)), grp["loss"].to_numpy(float)
        if np.unique(x).size < 3:
            continue
        p2, p1, p0 = np.polyfit(x, y, 2)
        x_opt = -p1 / (2 * p2) if p2 > 0 else math.nan
        rows.append(
            dict(zip(keys, key))
            | {
                "n_d": int(np.unique(x).size),
                "p0": p0,
                "p1": p1,
                "p2": p2,
                "d_opt": 10**x_opt if np.isfinite(x_opt) else math.nan,
                "loss_opt": p0 + p1 * x_opt + p2 * x_opt**2 if np.isfinite(x_opt) else math.nan,
                "interior": bool(np.isfinite(x_opt) and x.min() <= x_opt <= x.max()),
            }
        )
    return pd.DataFrame(rows, columns=keys + ["n_d", "p0", "p1", "p2", "d_opt", "loss_opt", "interior"])


@dataclass
class Eq2:
    """log10 d = a·log10 N + b / log10 C + c (Du et al. 2024, Eq. 2); d tokens, N params, C FLOPs."""

    a: float
    b: float
    c: float
    flops_range: tuple[float, float]  # the range of C it was fitted on; predictions outside it warn
    source: str = "fit"
    n_points: int = 0
    rms_log10: float = math.nan  # residual RMS in log10 d

    def predict_d(self, n, flops, warn: bool = True) -> np.ndarray:
        """Growth timing d (tokens) for target size N (params) and total compute C (FLOPs)."""
        n, flops = np.asarray(n, dtype=float), np.asarray(flops, dtype=float)
        lo, hi = self.flops_range
        if warn and (np.any(flops < lo * (1 - 1e-9)) or np.any(flops > hi * (1 + 1e-9))):
            warnings.warn(
                f"Eq. 2 ({self.source}) evaluated at C outside the range it was fitted on "
                f"({lo:.3g}–{hi:.3g} FLOPs); the b/log10(C) term makes it unreliable there",
                UserWarning,
                stacklevel=2,
            )
        return 10.0 ** (self.a * np.log10(n) + self.b / np.log10(flops) + self.c)

    def to_dict(self) -> dict:
        return {
            "form": "log10 d = a*log10 N + b/log10 C + c",
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "flops_range": list(self.flops_range),
            "source": self.source,
            "n_points": self.n_points,
            "rms_log10": self.rms_log10,
        }


# The paper fitted Eq. 2 on 410M, 1.1B and 3B targets at C ≈ 1e19.5–1e21 (reference/stacking.md §4).
PAPER_EQ2 = Eq2(a=0.88, b=163.27, c=-5.74, flops_range=(10**19.5, 1e21), source="Du et al. 2024, Eq. 2")


def fit_eq2(n, flops, d) -> Eq2:
    """Least-squares fit of the Eq. 2 form to optimal growth timings d(N, C)."""
    n, flops, d = (np.asarray(v, dtype=float).ravel() for v in (n, flops, d))
    check_points({"N": n, "C": flops, "d": d}, min_points=3)
    if (flops <= 1.0).any():
        raise AnalysisError("C must be > 1 FLOP (log10 C appears in a denominator)")
    if np.unique(n).size < 2 or np.unique(flops).size < 2:
        raise AnalysisError(
            f"Eq. 2 needs at least 2 distinct N and 2 distinct C, got {np.unique(n).size} N and "
            f"{np.unique(flops).size} C"
        )
    design = np.stack([np.log10(n), 1.0 / np.log10(flops), np.ones_like(n)], axis=1)
    if np.linalg.matrix_rank(design) < 3:
        raise AnalysisError("N and C vary together in these points; Eq. 2 cannot separate its N and C terms")
    coef, *_ = np.linalg.lstsq(design, np.log10(d), rcond=None)
    resid = np.log10(d) - design @ coef
    return Eq2(
        *map(float, coef),
        flops_range=(float(flops.min()), float(flops.max())),
        n_points=n.size,
        rms_log10=float(np.sqrt(np.mean(resid**2))),
    )
