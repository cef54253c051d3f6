"""Batched L-BFGS: many independent small minimisation problems solved as one numpy problem.

Scaling-law fits are small (5 parameters, a few hundred points) but are solved thousands of times: the
Chinchilla grid has 4500 starts and a bootstrap adds thousands of resamples. A Python loop around
`scipy.optimize.minimize` spends nearly all its time in per-iteration interpreter overhead. Here every problem
is a row of one (k, p) array, the objective is evaluated for all rows in one vectorised call, and each row keeps
its own L-BFGS history, line search and convergence test. Rows that have converged leave the active set, so
the cost follows the total number of iterations, not k times the slowest row.

The algorithm is textbook L-BFGS (Nocedal & Wright, Alg. 7.4 two-loop recursion) with a backtracking Armijo
line search (quadratic interpolation, safeguarded to [0.1, 0.5] of the previous step). Curvature pairs with
s·y ≤ eps·|s||y| are skipped, which keeps the implicit Hessian positive definite without a Wolfe search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# fun_grad(x, rows) -> (f, g): x is (k, p), rows (k,) says which problems the rows belong to (so a caller can
# select per-problem data such as bootstrap weights); f is (k,), g is (k, p). Non-finite f means "reject".
FunGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

PRUNE_WINDOW = 10  # iterations between checks for hopeless starts (see minimize_batched)
PRUNE_FACTOR = 10.0  # safety factor on "cannot reach the best f in the iterations left"


@dataclass
class BatchResult:
    """Final state of every problem (row)."""

    x: np.ndarray  # (S, p) final parameters
    fun: np.ndarray  # (S,) final objective
    grad_max: np.ndarray  # (S,) max |gradient| at x
    n_iter: np.ndarray  # (S,) iterations taken
    converged: np.ndarray  # (S,) bool: gradient or objective-change test met (not max_iter / line-search failure)


def minimize_batched(
    fun_grad: FunGrad,
    x0: np.ndarray,
    *,
    max_iter: int = 1000,
    history: int = 10,
    ftol: float = 1e-9,
    gtol: float = 1e-8,
    max_backtracks: int = 40,
    starts_of_one_problem: bool = False,
) -> BatchResult:
    """Minimise S independent problems at once; row i starts at x0[i].

    Convergence of a row (either): max |grad| ≤ gtol, or the relative decrease of f over one iteration
    ≤ ftol · max(|f|, tiny). The relative test has no floor of 1 (unlike scipy's factr test): an objective
    summed over few points can be ~1e-3 at the optimum, and a floor would stop such fits early — the
    "poor loss scale" Epoch AI found in the original Chinchilla fit.

    `starts_of_one_problem`: the rows are different starts of the *same* objective (a grid of starts), so
    only the lowest final f matters. Then a row is stopped (not converged) when, at its average rate over
    the last PRUNE_WINDOW iterations, it would need over PRUNE_FACTOR times its remaining iterations to get
    down to the best f any row has reached. Without it, starts that crawl along a plateau (one power-law term
    underflowed to ~1e-5 of the loss, gradient ~3e-5) run to max_iter: on Epoch's data ~150 of 4500 starts,
    40% of all iterations, none of which could have become the best fit.
    """
    x = np.array(x0, dtype=float, copy=True)
    n_prob, p = x.shape
    f, g = fun_grad(x, np.arange(n_prob))
    # History as (slot, parameter, problem): the two-loop recursion then works on contiguous rows of length k
    # (3× faster than (problem, slot, parameter) with p = 5). Newest pair in slot -1; rho = 0 marks empty.
    s_hist = np.zeros((history, p, n_prob))
    y_hist = np.zeros((history, p, n_prob))
    rho = np.zeros((history, n_prob))
    n_iter = np.zeros(n_prob, dtype=int)
    converged = np.max(np.abs(g), axis=1) <= gtol
    active = np.flatnonzero(~converged & np.isfinite(f))
    f_mark = f.copy()  # f at the last pruning check

    for it in range(max_iter):
        if active.size == 0:
            break
        ga, fa, xa = g[active], f[active], x[active]
        with np.errstate(all="ignore"):  # a diverging row gives inf/nan here and is caught below
            direction = -_two_loop(ga.T, s_hist[:, :, active], y_hist[:, :, active], rho[:, active]).T
        slope = np.einsum("kp,kp->k", direction, ga)
        # Not a descent direction (stale history): restart that row from steepest descent.
        bad = ~(slope < 0)
        if bad.any():
            rho[:, active[bad]] = 0.0
            direction[bad] = -ga[bad] / np.maximum(np.linalg.norm(ga[bad], axis=1, keepdims=True), 1.0)
            slope[bad] = np.einsum("kp,kp->k", direction[bad], ga[bad])

        step, f_new, g_new, ok = _armijo(fun_grad, active, xa, fa, direction, slope, max_backtracks)
        n_iter[active] += 1

        # Rows whose line search failed stop here (scipy reports ABNORMAL_TERMINATION_IN_LNSRCH).
        stopped = ~ok
        acc = np.flatnonzero(ok)
        rows = active[acc]
        s_new = step[acc, None] * direction[acc]
        y_new = g_new[acc] - ga[acc]
        x[rows] = xa[acc] + s_new
        f_old = fa[acc]
        f[rows], g[rows] = f_new[acc], g_new[acc]

        sy = np.einsum("kp,kp->k", s_new, y_new)
        # 1e-200 floor: 1/sy must stay finite when both s and y are vanishingly small.
        good = (sy > 1e-12 * np.linalg.norm(s_new, axis=1) * np.linalg.norm(y_new, axis=1)) & (sy > 1e-200)
        upd = rows[good]
        if upd.size:
            s_hist[:, :, upd] = np.roll(s_hist[:, :, upd], -1, axis=0)
            y_hist[:, :, upd] = np.roll(y_hist[:, :, upd], -1, axis=0)
            rho[:, upd] = np.roll(rho[:, upd], -1, axis=0)
            s_hist[-1][:, upd] = s_new[good].T
            y_hist[-1][:, upd] = y_new[good].T
            rho[-1, upd] = 1.0 / sy[good]

        small_grad = np.max(np.abs(g_new[acc]), axis=1) <= gtol
        small_change = (f_old - f_new[acc]) <= ftol * np.maximum(np.abs(f_old), 1e-300)
        done = small_grad | small_change
        converged[rows[done]] = True
        finished = np.zeros(active.size, dtype=bool)
        finished[acc[done]] = True
        finished |= stopped
        active = active[~finished]

        if starts_of_one_problem and (it + 1) % PRUNE_WINDOW == 0 and active.size:
            f_best = np.min(f[np.isfinite(f)])
            rate = (f_mark[active] - f[active]) / PRUNE_WINDOW
            hopeless = (n_iter[active] >= 2 * PRUNE_WINDOW) & (
                rate * (max_iter - n_iter[active]) * PRUNE_FACTOR < f[active] - f_best
            )
            f_mark[active] = f[active]
            active = active[~hopeless]

    return BatchResult(
        x=x, fun=f, grad_max=np.max(np.abs(g), axis=1), n_iter=n_iter, converged=converged & np.isfinite(f)
    )


def _two_loop(g: np.ndarray, s: np.ndarray, y: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """H·g per problem from its (s, y) history. g is (p, k); s, y are (m, p, k); rho is (m, k), 0 = empty slot
    (contributes nothing). Returns (p, k)."""
    q = g.copy()
    m = s.shape[0]
    alpha = np.zeros(rho.shape)
    for i in range(m - 1, -1, -1):
        alpha[i] = rho[i] * (s[i] * q).sum(axis=0)
        q -= alpha[i] * y[i]
    # Initial Hessian scale gamma = s·y / y·y from the newest pair; without history, a unit-length first step
    # (gradient normalised) so a first step cannot fling the parameters far away.
    has = rho[-1] > 0
    yy = (y[-1] * y[-1]).sum(axis=0)
    gamma = np.where(
        has,
        1.0 / np.maximum(rho[-1] * yy, 1e-300),
        1.0 / np.maximum(np.sqrt((g * g).sum(axis=0)), 1.0),
    )
    r = gamma * q
    for i in range(m):
        beta = rho[i] * (y[i] * r).sum(axis=0)
        r += s[i] * (alpha[i] - beta)
    return r


def _armijo(
    fun_grad: FunGrad,
    rows: np.ndarray,
    x: np.ndarray,
    f0: np.ndarray,
    direction: np.ndarray,
    slope: np.ndarray,
    max_backtracks: int,
    c1: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backtracking line search from step 1 for every row; returns (step, f, g, ok) per row."""
    k = x.shape[0]
    step = np.ones(k)
    f_new = np.full(k, np.nan)
    g_new = np.zeros_like(x)
    ok = np.zeros(k, dtype=bool)
    todo = np.arange(k)
    for _ in range(max_backtracks):
        ft, gt = fun_grad(x[todo] + step[todo, None] * direction[todo], rows[todo])
        accept = np.isfinite(ft) & (ft <= f0[todo] + c1 * step[todo] * slope[todo])
        idx = todo[accept]
        f_new[idx], g_new[idx], ok[idx] = ft[accept], gt[accept], True
        rej = todo[~accept]
        if rej.size == 0:
            break
        # Minimiser of the quadratic through f0, slope and f(t), kept within [0.1 t, 0.5 t].
        t = step[rej]
        fr = ft[~accept]
        denom = 2.0 * (fr - f0[rej] - slope[rej] * t)
        t_quad = np.where(np.isfinite(fr) & (denom > 0), -slope[rej] * t * t / np.where(denom > 0, denom, 1.0), 0.1 * t)
        step[rej] = np.clip(t_quad, 0.1 * t, 0.5 * t)
        todo = rej
    return step, f_new, g_new, ok
