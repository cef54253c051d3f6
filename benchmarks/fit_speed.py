"""How fast is the Chinchilla Approach 3 fit? Batched L-BFGS (analysis.fit) against a plain scipy loop.

    python benchmarks/fit_speed.py [--bootstrap 4000] [--baseline-starts 4500] [--no-lad]

Data: Epoch AI's 240 Chinchilla points (tests/fixtures/chinchilla, 5 highest losses dropped, D = C/(6N)).

* batched: `analysis.fit.fit_chinchilla` — all 4500 grid starts as one numpy problem with analytic gradients,
  then K bootstrap resamples as one more batched problem (and the same for the LAD objective);
* baseline: the usual recipe, one `scipy.optimize.minimize(method="L-BFGS-B", jac=True)` per grid start on
  the same summed Huber(δ = 1e-3) objective, written plainly for one parameter vector, best successful start
  kept. With --baseline-starts K < 4500 it runs K random starts and extrapolates the time (and says so).

The last lines are `same_optimum=…` (every parameter within 1e-4 relative) and `ratio=…` (baseline grid time
over batched grid time, same run, same machine).

BLAS runs single-threaded for both (set OPENBLAS_NUM_THREADS yourself to change it): scipy's L-BFGS-B calls
BLAS on 5-vectors every iteration, and on a busy machine waking OpenBLAS threads for each call made the scipy
loop ~10× slower (4 ms → 40 ms per start), which would inflate the ratio. The batched fit does not care.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from analysis.fit import CHINCHILLA_PARAMS, HUBER_DELTA, chinchilla_grid, fit_chinchilla

DATA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "chinchilla" / "svg_extracted_data.csv"


def epoch_points() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = pd.read_csv(DATA)
    df = df[df["loss"] < sorted(df["loss"])[-5]]
    n, c = df["Model Size"].to_numpy(), df["Training FLOP"].to_numpy()
    return n, c / (6 * n), df["loss"].to_numpy()


def huber_objective(log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray):
    """Σ Huber_δ(LSE(a − α log N, b − β log D, e) − log L) and its gradient, for one vector (a, b, e, α, β)."""

    def f(p: np.ndarray) -> tuple[float, np.ndarray]:
        a, b, e, alpha, beta = p
        u = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
        m = u.max(axis=0)
        w = np.exp(u - m)
        s = w.sum(axis=0)
        r = m + np.log(s) - log_loss
        c = np.clip(r, -HUBER_DELTA, HUBER_DELTA)
        w /= s
        grad = np.array([c @ w[0], c @ w[1], c @ w[2], -(c * w[0]) @ log_n, -(c * w[1]) @ log_d])
        return float(np.sum(c * (r - 0.5 * c))), grad

    return f


def baseline(n, d, loss, n_starts: int) -> tuple[np.ndarray, float, int]:
    """Per-start scipy loop over `n_starts` grid starts → (best natural params, objective, starts run).

    A subset is drawn at random (seed 0): a stride would pick one β value only (β varies fastest in the grid).
    """
    f = huber_objective(np.log(n), np.log(d), np.log(loss))
    grid = chinchilla_grid()
    if n_starts < len(grid):
        grid = grid[np.sort(np.random.default_rng(0).choice(len(grid), n_starts, replace=False))]
    best_x, best_f, runs = None, np.inf, 0
    for x0 in grid:
        res = minimize(f, x0, jac=True, method="L-BFGS-B")
        runs += 1
        if res.success and res.fun < best_f:
            best_x, best_f = res.x, float(res.fun)
    a, b, e, alpha, beta = best_x
    return np.array([np.exp(e), np.exp(a), np.exp(b), alpha, beta]), best_f, runs


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--bootstrap", type=int, default=4000, help="bootstrap resamples for the batched timing (default 4000)"
    )
    p.add_argument(
        "--baseline-starts",
        type=int,
        default=4500,
        help="grid starts run by the scipy loop (default all 4500; fewer: a random subset, time extrapolated)",
    )
    p.add_argument("--no-lad", action="store_true", help="skip timing the LAD objective")
    args = p.parse_args()
    n, d, loss = epoch_points()
    blas = os.environ["OPENBLAS_NUM_THREADS"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, BLAS threads {blas}; {n.size} points")

    fit, t_grid = timed(fit_chinchilla, n, d, loss)
    print(f"batched huber grid (4500 starts): {t_grid:.2f} s  objective={fit.loss:.11f}  converged={fit.n_converged}")
    boot, t_all = timed(fit_chinchilla, n, d, loss, bootstrap=args.bootstrap, seed=42)
    print(f"batched huber grid + {args.bootstrap} bootstraps: {t_all:.2f} s  (bootstrap ≈ {t_all - t_grid:.2f} s)")
    print("  95% CI: " + ", ".join(f"{k} [{boot.ci[k][0]:.4g}, {boot.ci[k][1]:.4g}]" for k in CHINCHILLA_PARAMS))
    if not args.no_lad:
        lad, t_lad = timed(fit_chinchilla, n, d, loss, objective="lad", bootstrap=args.bootstrap, seed=42)
        print(
            f"batched lad grid + {args.bootstrap} bootstraps: {t_lad:.2f} s  "
            + ", ".join(f"{k}={getattr(lad, k):.6g}" for k in CHINCHILLA_PARAMS)
        )

    (ref, ref_f, runs), t_ref = timed(baseline, n, d, loss, min(max(args.baseline_starts, 1), 4500))
    t_ref_full = t_ref * 4500 / runs
    note = "" if runs == 4500 else f" (ran {runs} starts in {t_ref:.1f} s, extrapolated to 4500)"
    print(f"scipy L-BFGS-B loop, 4500 starts: {t_ref_full:.1f} s{note}  objective={ref_f:.11f}")

    ours = np.array([getattr(fit, k) for k in CHINCHILLA_PARAMS])
    print("params  " + "  ".join(f"{k:>10}" for k in CHINCHILLA_PARAMS))
    print("batched " + "  ".join(f"{v:10.6g}" for v in ours))
    print("scipy   " + "  ".join(f"{v:10.6g}" for v in ref))
    rel = np.max(np.abs(ours / ref - 1))
    print(f"max relative parameter difference: {rel:.2e}")
    print(f"same_optimum={bool(rel < 1e-4)}")
    print(f"ratio={t_ref_full / t_grid:.1f}")


if __name__ == "__main__":
    main()
