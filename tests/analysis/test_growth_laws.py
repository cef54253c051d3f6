"""The 2025–26 growth laws (analysis/growth_laws.py): Liew & Kato's L(D1, D2) recovered from synthetic points, read
off the fixture sweep, and the g-bound reading checked against numbers worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sweep_helpers import results_row

from analysis.growth_laws import (
    LK_PARAMS,
    LiewKatoFit,
    fit_liew_kato,
    format_g_bound_table,
    format_liew_kato_summary,
    g_bound_table,
    liew_kato_points,
    liew_kato_summary,
    optimal_d1,
)
from analysis.sweep import AnalysisError, load_sweep

SWEEP_SMALL = Path(__file__).parents[1] / "fixtures" / "sweep_small"
TRUE = {"A": 400.0, "alpha1": 0.1, "alpha2": 0.3, "alpha3": 0.005, "E": 1.8}
TOLERANCE = {"A": 0.5, "alpha1": 0.1, "alpha2": 0.05, "alpha3": 0.15, "E": 0.03}  # relative


def law(d1, d2, p=TRUE):
    l1, l2 = np.log(d1), np.log(d2)
    return p["A"] * np.exp(-p["alpha1"] * l1 + (p["alpha3"] * l1 - p["alpha2"]) * l2) + p["E"]


def grid_points(noise: float = 0.0, seed: int = 0, n_d1: int = 5, n_d2: int = 8, reps: int = 2):
    """D1 × D2 on log grids over 1e7–1e9 tokens (losses 2.6–4.1), `reps` noisy copies of each point."""
    d1 = np.tile(np.repeat(np.geomspace(1e7, 1e9, n_d1), n_d2), reps)
    d2 = np.tile(np.geomspace(1e7, 1e9, n_d2), n_d1 * reps)
    loss = law(d1, d2) * np.exp(np.random.default_rng(seed).normal(0.0, noise, d1.size))
    return d1, d2, loss


@pytest.fixture(scope="module")
def noisy_fit():
    d1, d2, loss = grid_points(noise=0.002)
    return fit_liew_kato(d1, d2, loss, bootstrap=100, seed=1)


def test_noise_free_points_give_the_law_back():
    fit = fit_liew_kato(*grid_points(reps=1))
    for k, v in TRUE.items():
        assert getattr(fit, k) == pytest.approx(v, rel=1e-4), k
    assert fit.rmse < 1e-6 and fit.n_points == 40 and fit.n_bootstrap == 0 and fit.ci == {}


def test_noisy_points_recover_the_law_and_the_cis_cover_it(noisy_fit):
    fit = noisy_fit
    for k, v in TRUE.items():
        assert getattr(fit, k) == pytest.approx(v, rel=TOLERANCE[k]), k
        lo, hi = fit.ci[k]
        assert lo <= v <= hi and lo < getattr(fit, k) < hi, k
    assert 0.004 < fit.rmse < 0.01  # 0.2 % noise on losses of 2.6–4.1
    assert fit.draws.shape == (100, len(LK_PARAMS)) and np.isfinite(fit.draws).all()
    d = fit.to_dict()
    assert set(d["params"]) == set(LK_PARAMS) and d["bootstrap"] == 100 and set(d["ci"]) == set(LK_PARAMS)


def test_token_units_do_not_change_the_fit():
    """D in millions: the same curve; α3 unchanged, the others shifted by α3·ln 1e6 as the algebra says."""
    d1, d2, loss = grid_points(noise=0.002)
    a, b = fit_liew_kato(d1, d2, loss), fit_liew_kato(d1 / 1e6, d2 / 1e6, loss)
    k = math.log(1e6)
    np.testing.assert_allclose(b.predict(d1 / 1e6, d2 / 1e6), a.predict(d1, d2), rtol=1e-6)
    assert b.alpha3 == pytest.approx(a.alpha3, rel=1e-4)
    assert b.alpha1 == pytest.approx(a.alpha1 - a.alpha3 * k, abs=1e-5)
    assert b.alpha2 == pytest.approx(a.alpha2 - a.alpha3 * k, abs=1e-5)
    assert b.log_A == pytest.approx(a.log_A - (a.alpha1 + a.alpha2) * k + a.alpha3 * k * k, abs=1e-3)
    assert b.E == pytest.approx(a.E, rel=1e-5) and b.d1_scale == pytest.approx(a.d1_scale / 1e6)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d1, d2, y: (d1[:5], d2[:5], y[:5]), "too few points for the fit: need at least 6, got 5"),
        (lambda d1, d2, y: (np.r_[0.0, d1[1:]], d2, y), "D1 must be positive"),
        (lambda d1, d2, y: (d1, np.r_[-1.0, d2[1:]], y), "D2 must be positive"),
        (lambda d1, d2, y: (d1, d2, np.r_[np.nan, y[1:]]), "loss has 1 missing or non-finite value"),
        (lambda d1, d2, y: (np.full_like(d1, 1e8), d2, y), "D1 takes a single value .*not identifiable"),
        (lambda d1, d2, y: (d1, np.where(d1 > 1e7, 1e8, d2), y), "only 1 of the 5 D1 values .*α3"),
    ],
)
def test_bad_points_are_one_line_errors(change, message):
    with pytest.raises(AnalysisError, match=message) as err:
        fit_liew_kato(*change(*grid_points(reps=1)))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------------------------
# From the fixture sweep
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep():
    return load_sweep(SWEEP_SMALL)


def test_annealed_points_are_the_cooldown_ends_and_one_d_is_not_identifiable(sweep):
    pts = liew_kato_points(sweep, "G_stack", target="toy-1M")
    assert set(pts["reading"]) == {"annealed"} and len(pts) == 8  # 2 seeds × 4 cooldowns, only at d = 10M
    assert set(pts["D1"]) == {1e7} and set(pts["D2"]) == {25e6, 50e6, 75e6, 100e6}
    cool = sweep.runs("cooldown")
    cool = cool[cool["parent_run"].isin(pts["run_id"])]
    assert sorted(pts["loss"]) == pytest.approx(sorted(cool["final_val_loss"]))
    with pytest.raises(AnalysisError, match=r"D1 takes a single value \(10M\): α1 and α3 are not identifiable"):
        fit_liew_kato(pts["D1"], pts["D2"], pts["loss"])


def test_mid_points_span_the_three_ds_and_fit(sweep):
    pts = liew_kato_points(sweep, "G_stack", target="toy-1M", reading="mid")
    assert set(pts["D1"]) == {2.5e6, 1e7, 4e7} and (pts["D2"] >= 1e7).all()  # skip_frac 0.1 of 100M
    assert len(pts) == 3 * 2 * 19  # 19 evaluations from 10M to 100M tokens, per run
    fit = fit_liew_kato(pts["D1"], pts["D2"], pts["loss"])
    assert fit.rmse < 0.02 and 0 < fit.E < pts["loss"].min()
    # G_zero has no cooldowns: "auto" falls back on the curves
    assert set(liew_kato_points(sweep, "G_zero", target="toy-4M")["reading"]) == {"mid"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"op": "G_stack"}, "several target values .*pass target="),
        ({"op": "G_nope"}, "no finished grown run of op G_nope"),
        ({"op": "G_stack", "target": "toy-1M", "reading": "best"}, "reading must be one of"),
        ({"op": "G_stack", "target": "toy-1M", "g": 4}, "no finished grown run of op G_stack at"),
    ],
)
def test_point_errors_are_one_line(sweep, kwargs, message):
    with pytest.raises(AnalysisError, match=message) as err:
        liew_kato_points(sweep, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_summary_fits_what_it_can_and_says_why_not(sweep):
    annealed = liew_kato_summary(sweep, reading="annealed", bootstrap=0)  # cooldowns at one d only
    assert len(annealed) == 9 and annealed["A"].isna().all()
    assert annealed[annealed["op"] != "G_zero"]["note"].str.contains("not identifiable").all()
    assert annealed[annealed["op"] == "G_zero"]["note"].str.contains("no annealed loss").all()
    auto = liew_kato_summary(sweep, bootstrap=0)  # falls back to the curves, which span 3 d's
    assert set(auto["reading"]) == {"mid"} and auto[auto["op"] == "G_stack"]["A"].notna().all()
    mid = liew_kato_summary(SWEEP_SMALL, reading="mid", bootstrap=0)
    fitted = mid[mid["note"] == ""]
    assert list(fitted["op"]) == ["G_stack"] * 3 and (fitted["n_d1"] == 3).all() and (fitted["rmse"] < 0.02).all()
    text = format_liew_kato_summary(mid)
    assert text.count("\n") == len(mid) + 1 and "| toy-1M | G_stack | depth | 2 | mid | 114 (3) |" not in text
    assert "| toy-1M | G_stack | 2 | mid | 114 (3) |" in text


# --------------------------------------------------------------------------------------------------------------
# g-bound
# --------------------------------------------------------------------------------------------------------------

SCRATCH = {"final": [3.00, 3.10, 2.90], 0.5: [3.30, 3.40, 3.20], 1.0: [2.80, 2.90, 2.70]}  # seeds 0, 1, 2
DIFFS = {  # (op, g) → budget → grown − scratch per seed
    ("G_stack", 2): {"final": [-0.05, -0.06, -0.04], 0.5: [-0.01, 0.02, -0.02], 1.0: [-0.05, -0.06, -0.04]},
    ("G_stack", 4): {"final": [-0.03, -0.02, -0.025], 0.5: [0.0, 0.01, -0.02], 1.0: [-0.05, 0.03, -0.01]},
    ("G_stack", 8): {"final": [0.02, 0.03, 0.01], 0.5: [0.05, 0.06, 0.04], 1.0: [0.01, 0.02, 0.0]},
}


def write_factor_sweep(path: Path) -> Path:
    """results.csv alone (the g-bound reads no curve): scratch (1e12 FLOPs) and G_stack g = 2/4/8 at seeds 0–2 with
    cooldowns at f = 0.5 and 1 — the grown ones at fractions of their own budget, whose f = 0.5 has spent its
    base's 2e11 FLOPs more than scratch's (a loss 1.0 lower, never to be read), plus one at scratch's f = 0.5 FLOPs
    (anneal.at_scratch_flops) — a G_stack g = 2 run at seed 3 with no scratch of its own, a one-seed G_zero."""
    rows = []

    def add(rid, kind, seed, loss, flops=1e12, **extra):
        rows.append(results_row(rid, kind, seed, loss, anneal_fraction=None, flops=flops) | extra)

    grown = {"direction": "depth", "grow_at_tokens": 100}
    for seed in range(3):
        add(f"scratch-s{seed}", "scratch", seed, SCRATCH["final"][seed])
        for f in (0.5, 1.0):
            add(
                f"cd-scratch-s{seed}-f{f}",
                "cooldown",
                seed,
                SCRATCH[f][seed],
                f * 1e12,
                parent_run=f"scratch-s{seed}",
                anneal_fraction=f,
            )
        for (op, g), diffs in DIFFS.items():
            rid = f"{op}-g{g}-s{seed}"
            add(rid, "grown", seed, SCRATCH["final"][seed] + diffs["final"][seed], op=op, g=g, **grown)
            own = {
                "f0.5": (0.5, 6e11, SCRATCH[0.5][seed] - 1.0),
                "f1.0": (1.0, 1e12, SCRATCH[1.0][seed] + diffs[1.0][seed]),
            }
            own["at-scratch-f0.5"] = (0.4, 5.001e11, SCRATCH[0.5][seed] + diffs[0.5][seed])
            for name, (f, flops, loss) in own.items():
                add(
                    f"cd-{rid}-{name}",
                    "cooldown",
                    seed,
                    loss,
                    flops,
                    parent_run=rid,
                    anneal_fraction=f,
                    op=op,
                    g=g,
                    **grown,
                )
    add("G_stack-g2-s3", "grown", 3, 1.0, op="G_stack", g=2, **grown)
    add("G_zero-g2-s0", "grown", 0, 2.5, op="G_zero", g=2, **grown)
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    return path


def test_g_bound_matches_a_hand_computation(tmp_path):
    t = g_bound_table(write_factor_sweep(tmp_path / "factor"))
    stack = t[t["op"] == "G_stack"]
    assert list(stack["budget"].unique()) == ["final", "f=0.5", "f=1"]
    assert (stack["n_pairs"] == 3).all()  # seed 3 has no scratch run: left out
    # f = 0.5 reads the cooldowns at scratch's FLOPs, never the grown run's own f = 0.5 (1.0 lower, 20 % more FLOPs)
    for (op, g), diffs in DIFFS.items():
        for budget, values in diffs.items():
            r = stack[(stack["g"] == g) & (stack["budget"] == ("final" if budget == "final" else f"f={budget:g}"))]
            m, half = np.mean(values), stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
            assert r["diff"].iloc[0] == pytest.approx(m, abs=1e-9)
            assert (r["diff_lo"].iloc[0], r["diff_hi"].iloc[0]) == pytest.approx((m - half, m + half), abs=1e-9)
    # final: g = 2 (hi −0.025) and 4 (hi −0.0126) below 0, 8 above; f = 1: only g = 2; f = 0.5: none
    bounds = stack.groupby("budget", sort=False)["g_bound"].first().to_dict()
    assert bounds == {"final": 4.0, "f=0.5": "none", "f=1": 2.0}
    assert list(stack.loc[stack["budget"] == "final", "better"]) == [True, True, False]
    zero = t[t["op"] == "G_zero"]
    assert len(zero) == 1 and zero["n_pairs"].iloc[0] == 1 and np.isnan(zero["diff_hi"].iloc[0])
    assert zero["g_bound"].iloc[0] == "none"
    text = format_g_bound_table(t)
    assert "| tiny | G_stack | 100 | final | -0.0500 [-0.0748, -0.0252] * | -0.0250 [" in text
    assert text.splitlines()[2].endswith("| +0.0200 [-0.0048, +0.0448] | 4 |")
    assert "| tiny | G_zero | 100 | final | -0.5000 (1 seed) | — | — | none |" in text


def test_g_bound_without_pairs_is_one_line(tmp_path):
    path = write_factor_sweep(tmp_path / "factor")
    df = pd.read_csv(path / "results.csv")
    df = df[~df["run_id"].str.contains("scratch")]
    df.to_csv(path / "results.csv", index=False)
    with pytest.raises(AnalysisError, match="no grown run has a scratch run"):
        g_bound_table(path)


def test_g_bound_on_the_fixture_sweep_refuses_unequal_flops(sweep):
    """The fixture's grown runs train a fixed number of tokens after growth: at d = 10M they end with 5 % more FLOPs
    than scratch (6.3e14 vs 6e14), and so do their cooldowns at each fraction: no budget is equal."""
    with pytest.raises(
        AnalysisError, match=r"none of the sweep's 30 paired grown runs has a reading at its scratch run's FLOPs"
    ):
        g_bound_table(sweep)


def test_g_bound_on_the_committed_seeds_demo():
    """results/seeds-demo: f < 1 read from the at_scratch_flops cooldowns (equal to the equal-FLOPs loss table),
    f = 1 and final from the FLOP-matched runs."""
    from analysis.loss_table import equal_flops_table

    demo = Path(__file__).parents[2] / "results" / "seeds-demo"
    t = g_bound_table(demo)
    eq = equal_flops_table(demo)
    assert list(t["budget"].unique()) == ["final", "f=0.25", "f=0.5", "f=0.75", "f=1"] and (t["n_pairs"] == 8).all()
    for _, r in eq.iterrows():
        row = t[(t["g"] == float(r["method"].split("g=")[1].split()[0])) & (t["budget"] == f"f={r['fraction']:g}")]
        assert row["diff"].iloc[0] == pytest.approx(r["annealed_vs_scratch"], abs=1e-12)


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_the_report_shows_the_g_bound_and_the_liew_kato_fits(tmp_path):
    """`stacking report` adds both sections and their CSVs; with cooldowns at one d only, the fit reads the
    mid-schedule curves, which span the fixture's three d's (G_stack), and says why the others have no fit."""
    from analysis.report import write_report

    rep = write_report(Path(__file__).parents[1] / "fixtures" / "sweep_small", tmp_path / "r", bootstrap=10)
    text = rep.path.read_text()
    assert "g-bound table: skipped (" in text and "has a reading at its scratch run's FLOPs" in text
    assert "(Liew & Kato 2025)" in text
    laws = pd.read_csv(tmp_path / "r" / "liew_kato.csv")
    stack = laws[laws["op"] == "G_stack"]
    assert (stack["reading"] == "mid").all() and (stack["n_d1"] == 3).all() and stack["alpha2"].notna().all()
    assert laws[laws["op"] == "G_zero"]["note"].str.contains("not identifiable").all()
    assert not (tmp_path / "r" / "g_bound.csv").exists()


def lk(alpha1, alpha2, draws=None) -> LiewKatoFit:
    """L = 10 · D1^−α1 · D2^−α2 + 2 (α3 = 0): on the budget line C = b·D1 + t·D2 the optimum is
    D1* = α1·C / (b·(α1 + α2)), by hand."""
    kw = {"rmse": 0.0, "n_points": 0, "d1_scale": 1.0, "d2_scale": 1.0, "n_starts": 0}
    return LiewKatoFit(10.0, alpha1, alpha2, 0.0, 2.0, log_A=math.log(10.0), draws=draws, **kw)


def test_optimal_d1_is_the_argmin_along_the_budget_line():
    """The budget C buys D1 base tokens at b FLOPs each and D2 = (C − b·D1)/t after growth: the law's optimum on
    that line by hand, and an end of the sampled range flagged as an edge."""
    c, b, t = 1e18, 2e9, 8e9
    best = optimal_d1(lk(0.3, 0.3), c, b, t, (1e7, 1e9), n=4000)
    assert best["d1"] == pytest.approx(c / (2 * b), rel=2e-3)  # α1 = α2: half the budget
    assert best["d2"] == pytest.approx((c - b * best["d1"]) / t)
    assert best["loss"] == pytest.approx(10 * (best["d1"] * best["d2"]) ** -0.3 + 2)
    assert not best["edge"] and math.isnan(best["d1_lo"])  # no draws, no interval
    narrow = optimal_d1(lk(0.3, 0.3), c, b, t, (1e7, 1e8))
    assert narrow["edge"] and narrow["d1"] == pytest.approx(1e8)
    # the bootstrap draws' own optima give the interval: α1 = 0.1 … 0.5 with α2 = 0.3
    a1 = np.linspace(0.1, 0.5, 41)
    draws = np.column_stack([np.full(41, math.log(10.0)), a1, np.full(41, 0.3), np.zeros(41), np.full(41, 2.0)])
    best = optimal_d1(lk(0.3, 0.3, draws), c, b, t, (1e6, 1e10), n=20_000)
    opt = a1 * c / (b * (a1 + 0.3))
    assert (best["d1_lo"], best["d1_hi"]) == pytest.approx(tuple(np.percentile(opt, [2.5, 97.5])), rel=2e-3)


def test_a_budget_the_base_uses_up_is_one_line():
    with pytest.raises(AnalysisError, match=r"used up by the base before the sweep's smallest d \(10M\)"):
        optimal_d1(lk(0.3, 0.3), 1e16, 2e9, 8e9, (1e7, 1e9))


def test_grouped_bootstrap_resamples_whole_runs():
    """Points that are not independent draws (here each point repeated 5 times, as a run's curve repeats its
    run's luck) make a point bootstrap too narrow; resampling the groups gives the width of the distinct points."""
    d1, d2, loss = grid_points(noise=0.003, reps=1)
    rep = [np.repeat(v, 5) for v in (d1, d2, loss)]
    width = {}
    for name, kw in (("points", {}), ("groups", {"groups": np.repeat(np.arange(d1.size), 5)})):
        fit = fit_liew_kato(*rep, bootstrap=60, seed=3, **kw)
        width[name] = fit.ci["alpha2"][1] - fit.ci["alpha2"][0]
    assert width["groups"] > 1.6 * width["points"]
    singletons = fit_liew_kato(d1, d2, loss, bootstrap=20, seed=3, groups=np.arange(d1.size))
    assert singletons.ci == fit_liew_kato(d1, d2, loss, bootstrap=20, seed=3).ci  # one point a group: the same draws
    with pytest.raises(AnalysisError, match="groups has 3 labels for 40 points"):
        fit_liew_kato(d1, d2, loss, bootstrap=5, groups=[1, 2, 3])
