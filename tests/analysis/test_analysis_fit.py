"""Scaling-law fits: Epoch AI's Chinchilla replication, recovery of known parameters, L(C), IsoFLOP, Eq. 2."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from analysis.fit import (
    PAPER_EQ2,
    chinchilla_grid,
    fit_chinchilla,
    fit_eq2,
    fit_isoflop,
    fit_loss_compute,
)
from analysis.lbfgs import minimize_batched
from analysis.sweep import AnalysisError

EPOCH_CSV = Path(__file__).parents[1] / "fixtures" / "chinchilla" / "svg_extracted_data.csv"
# Besiroglu et al. 2024 (reference/chinchilla.md §2.2): Huber grid fit (a), LAD-like headline (b), 95% CIs (c).
EPOCH_HUBER = {"E": 1.81724, "A": 477.84, "B": 2143.86, "alpha": 0.347313, "beta": 0.367183}
EPOCH_HEADLINE = {"E": 1.81686, "A": 482.006, "B": 2085.434, "alpha": 0.34781, "beta": 0.36585}
EPOCH_CI = {
    "E": (1.769, 1.871),
    "A": (285.2, 743.6),
    "B": (1042, 5810),
    "alpha": (0.317, 0.373),
    "beta": (0.331, 0.415),
}
TOLERANCE = {"E": 0.01, "alpha": 0.01, "beta": 0.01, "A": 0.05, "B": 0.05}


def epoch_points():
    df = pd.read_csv(EPOCH_CSV)
    df = df[df["loss"] < sorted(df["loss"])[-5]]  # Epoch drops the 5 highest losses
    n, c = df["Model Size"].to_numpy(), df["Training FLOP"].to_numpy()
    return n, c / (6 * n), df["loss"].to_numpy()


@pytest.fixture(scope="module", params=["huber", "lad"])
def epoch_fit(request):
    n, d, loss = epoch_points()
    assert n.size == 240
    return request.param, fit_chinchilla(n, d, loss, objective=request.param, bootstrap=200, seed=42)


def test_epoch_fit_matches_published_numbers(epoch_fit):
    objective, fit = epoch_fit
    published = EPOCH_HUBER if objective == "huber" else EPOCH_HEADLINE
    for name, value in published.items():
        assert getattr(fit, name) == pytest.approx(value, rel=TOLERANCE[name]), name
    if objective == "huber":
        # Epoch's objective value for the Huber grid fit is 0.00101827403 (summed Huber, δ = 1e-3).
        assert fit.loss == pytest.approx(0.00101827403, rel=1e-6)
        # hopeless starts are stopped early and not counted as converged (analysis/lbfgs.py); ~2900 converge
        assert fit.n_starts == 4500 and fit.n_converged > 2500


def test_epoch_bootstrap_cis_overlap_published(epoch_fit):
    _, fit = epoch_fit
    for name, (lo, hi) in EPOCH_CI.items():
        ours = fit.ci[name]
        assert ours[0] < getattr(fit, name) < ours[1]
        assert ours[0] < hi and lo < ours[1], f"{name}: {ours} vs published {(lo, hi)}"
        assert fit.se[name] > 0


def test_compute_optimal_exponent_matches_epoch():
    # Epoch: a = β/(α+β) = 0.513 with their headline parameters.
    from analysis.fit import ChinchillaFit

    fit = ChinchillaFit(**EPOCH_HEADLINE, objective="lad", loss=0, n_points=240, n_starts=1, n_converged=1)
    assert fit.exponents[0] == pytest.approx(0.513, abs=0.001)
    n_opt, d_opt = fit.compute_optimal(5.76e23)
    assert 6 * n_opt * d_opt == pytest.approx(5.76e23, rel=1e-9)
    assert d_opt / n_opt == pytest.approx(18.4, rel=0.03)  # reference/chinchilla.md, Chinchilla budget table


def test_synthetic_parameters_recovered_within_bootstrap_cis():
    truth = {"E": 1.7, "A": 400.0, "B": 1000.0, "alpha": 0.35, "beta": 0.3}
    rng = np.random.default_rng(3)
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e8, 1e10, 8), np.geomspace(1e9, 1e11, 8)))
    clean = truth["E"] + truth["A"] / n ** truth["alpha"] + truth["B"] / d ** truth["beta"]
    loss = clean * np.exp(0.01 * rng.standard_normal(n.size))
    fit = fit_chinchilla(n, d, loss, bootstrap=200, seed=0)
    for name, value in truth.items():
        lo, hi = fit.ci[name]
        assert lo <= value <= hi, f"{name}={value} outside [{lo}, {hi}]"
    assert np.max(np.abs(fit.predict(n, d) / clean - 1)) < 0.01


def test_noise_free_synthetic_is_fitted_exactly_by_both_objectives():
    truth = (1.9, 300.0, 2000.0, 0.3, 0.4)
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e8, 1e10, 5)))
    loss = truth[0] + truth[1] / n ** truth[3] + truth[2] / d ** truth[4]
    for objective in ("huber", "lad"):
        # every 9th Chinchilla start (500) is plenty here and keeps the test fast
        fit = fit_chinchilla(n, d, loss, objective=objective, starts=chinchilla_grid()[::9])
        got = (fit.E, fit.A, fit.B, fit.alpha, fit.beta)
        np.testing.assert_allclose(got, truth, rtol=1e-3, err_msg=objective)


def test_batched_lbfgs_agrees_with_scipy_per_start():
    # Rosenbrock in 4 dimensions from 8 random starts: same minimum as scipy's L-BFGS-B, row by row.
    def rosen(x):
        return np.sum(100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2, axis=1)

    def rosen_grad(x):
        g = np.zeros_like(x)
        g[:, :-1] = -400 * x[:, :-1] * (x[:, 1:] - x[:, :-1] ** 2) - 2 * (1 - x[:, :-1])
        g[:, 1:] += 200 * (x[:, 1:] - x[:, :-1] ** 2)
        return g

    starts = np.random.default_rng(0).uniform(-2, 2, size=(8, 4))
    res = minimize_batched(lambda x, rows: (rosen(x), rosen_grad(x)), starts, gtol=1e-10, ftol=1e-15)
    assert res.converged.all()
    for x0, x in zip(starts, res.x):
        # scipy's default tolerances (tighter ones make it spend seconds on line-search retries)
        ref = minimize(lambda z: rosen(z[None])[0], x0, jac=lambda z: rosen_grad(z[None])[0], method="L-BFGS-B")
        np.testing.assert_allclose(x, ref.x, atol=1e-3)
        assert rosen(x[None])[0] <= ref.fun + 1e-9


def test_chinchilla_grid_is_hoffmanns():
    grid = chinchilla_grid()
    assert grid.shape == (4500, 5)
    assert sorted(set(grid[:, 0])) == [0, 5, 10, 15, 20, 25]
    assert sorted(set(grid[:, 2])) == [-1, -0.5, 0, 0.5, 1]
    assert sorted(set(grid[:, 3])) == [0, 0.5, 1, 1.5, 2]


@pytest.mark.parametrize(
    ("n", "d", "loss", "message"),
    [
        ([1e8, -1.0] + [1e9] * 10, [1e9] * 12, [3.0] * 12, "N must be positive"),
        ([1e8, 1e9] * 6, [1e9, 0.0] * 6, [3.0] * 12, "D must be positive"),
        ([1e8, 1e9] * 6, [1e9, 1e10] * 6, [3.0, float("nan")] * 6, "loss has 6 missing or non-finite"),
        ([1e8, 1e9] * 2, [1e9, 1e10] * 2, [3.0] * 4, "too few points for the fit: need at least 10, got 4"),
        ([1e8] * 12, list(np.geomspace(1e9, 1e11, 12)), [3.0] * 12, "N takes a single value"),
    ],
)
def test_bad_points_give_one_clear_error(n, d, loss, message):
    with pytest.raises(AnalysisError, match=message) as err:
        fit_chinchilla(n, d, loss)
    assert "\n" not in str(err.value)


def test_unknown_objective_is_rejected():
    with pytest.raises(AnalysisError, match="objective must be one of huber, lad"):
        fit_chinchilla(*epoch_points(), objective="mse")


# ---- L(C) ----------------------------------------------------------------------------------------------------


def test_loss_compute_recovers_saturating_and_pure_power_laws():
    rng = np.random.default_rng(1)
    c = np.geomspace(1e15, 1e19, 40)
    loss = (2e3 * c**-0.2 + 1.5) * np.exp(0.003 * rng.standard_normal(c.size))
    fit = fit_loss_compute(c, loss, offset=True, bootstrap=200, seed=0)
    for name, value in {"a": 2e3, "b": -0.2, "E": 1.5}.items():
        lo, hi = fit.ci[name]
        assert lo <= value <= hi, f"{name}={value} outside [{lo}, {hi}]"
    # The extrapolation band widens beyond the data and contains the true law there.
    far = np.array([1e20, 1e21])
    lo, hi = fit.band(far)
    assert np.all(lo <= 2e3 * far**-0.2 + 1.5) and np.all(2e3 * far**-0.2 + 1.5 <= hi)
    assert np.all(np.diff(hi - lo) > 0)

    pure = fit_loss_compute(c, 50 * c**-0.05, offset=False, bootstrap=50)
    assert pure.a == pytest.approx(50, rel=1e-9) and pure.b == pytest.approx(-0.05, rel=1e-9)
    assert pure.E == 0


def test_loss_compute_needs_enough_points():
    with pytest.raises(AnalysisError, match="need at least 5, got 3"):
        fit_loss_compute([1e15, 1e16, 1e17], [3.0, 2.5, 2.2])


# ---- IsoFLOP and Eq. 2 -----------------------------------------------------------------------------------------


def test_isoflop_parabola_argmin():
    d = np.array([1e8, 1e9, 1e10, 1e11])
    x = np.log10(d)
    rows = [
        {
            "target": "t",
            "op": "G_stack",
            "direction": "depth",
            "g": 4,
            "N": 1e9,
            "budget": b,
            "d": di,
            "loss": 2.0 + 0.05 * (xi - x_opt) ** 2,
        }
        for b, x_opt in ((1e20, 9.3), (1e21, 9.8))
        for di, xi in zip(d, x)
    ]
    rows += [
        {
            "target": "t",
            "op": "G_zero",
            "direction": "depth",
            "g": 4,
            "N": 1e9,
            "budget": 1e20,
            "d": di,
            "loss": 2.0 - 0.05 * (xi - 9.5) ** 2,
        }
        for di, xi in zip(d, x)
    ]
    fits = fit_isoflop(pd.DataFrame(rows)).set_index(["op", "budget"])
    assert fits.loc[("G_stack", 1e20), "d_opt"] == pytest.approx(10**9.3, rel=1e-9)
    assert fits.loc[("G_stack", 1e21), "d_opt"] == pytest.approx(10**9.8, rel=1e-9)
    assert fits.loc[("G_stack", 1e21), "interior"]
    assert math.isnan(fits.loc[("G_zero", 1e20), "d_opt"]) and not fits.loc[("G_zero", 1e20), "interior"]


def test_paper_eq2_reproduces_its_published_predictions():
    # reference/stacking.md §4: 1.1B at 8e20 FLOPs → ≈10.6B tokens (inside the fitted range, no warning).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PAPER_EQ2.predict_d(1.1e9, 8e20) == pytest.approx(10.6e9, rel=0.01)
    # Llama2-7B on 2T tokens → 11.11B (App. F.1); C = 6·N·D = 8.4e22 is outside the fitted range → warns.
    with pytest.warns(UserWarning, match="outside the range it was fitted on"):
        assert PAPER_EQ2.predict_d(7e9, 6 * 7e9 * 2e12) == pytest.approx(11.11e9, rel=0.005)


def test_eq2_fit_recovers_known_coefficients():
    n, c = (g.ravel() for g in np.meshgrid([4e8, 1.1e9, 3e9], [1e20, 3e20, 1e21]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = PAPER_EQ2.predict_d(n, c)
    fit = fit_eq2(n, c, d)
    assert (fit.a, fit.b, fit.c) == pytest.approx((0.88, 163.27, -5.74), rel=1e-6)
    assert fit.rms_log10 < 1e-9 and fit.flops_range == (1e20, 1e21)
    with pytest.warns(UserWarning):
        fit.predict_d(1e9, 1e22)


def test_eq2_fit_needs_several_sizes_and_budgets():
    with pytest.raises(AnalysisError, match="at least 2 distinct N and 2 distinct C, got 1 N"):
        fit_eq2([1e9] * 3, [1e20, 3e20, 1e21], [1e9, 2e9, 3e9])
    with pytest.raises(AnalysisError, match="N and C vary together"):
        fit_eq2([1e9, 2e9, 1e9, 2e9], [1e20, 1e21, 1e20, 1e21], [1e9, 2e9, 1.1e9, 2.1e9])
