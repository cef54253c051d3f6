"""Speed-up by the paper's definition on curves with a known answer, and on the committed fixture sweep: running-min
crossings, L* at several budget fractions, CIs over seeds, and the annealed reading from cooldown runs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.speedup import (
    BUDGET_FRACTIONS,
    Crossing,
    compute_annealed_speedups,
    compute_speedups,
    first_crossing,
    format_table,
    headline,
    loss_at_fraction,
    speedup_from_curves,
    speedup_table,
)
from analysis.sweep import AnalysisError, load_sweep

FIXTURES = Path(__file__).parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_sweep_fixture import (
    ANNEAL_FRACTIONS,
    ANNEAL_SEED_SHIFT,
    D_DEFAULT,
    MAX_TOKENS,
    TARGETS,
    expected_annealed_speedup,
    expected_speedup,
)

T_975_1 = 12.706204736174698  # Student-t 97.5% quantile, 1 degree of freedom (two seeds)

N = 4e6  # target parameters
FPT = 6 * N  # FLOPs per token


def law(flops: np.ndarray) -> np.ndarray:
    """Scratch loss as a function of its FLOPs (Chinchilla-like at fixed N)."""
    return 2.0 + 150.0 / (flops / FPT) ** 0.28


def curve(tokens, flops, loss) -> pd.DataFrame:
    return pd.DataFrame(
        {"tokens": np.asarray(tokens, float), "flops": np.asarray(flops, float), "val_loss": np.asarray(loss, float)}
    )


def scratch_curve(n_points: int = 400, max_tokens: float = 1e8) -> pd.DataFrame:
    t = np.linspace(0, max_tokens, n_points + 1)
    loss = np.r_[8.3, law(FPT * t[1:])]  # initial evaluation at tokens = 0 is the untrained loss
    return curve(t, FPT * t, loss)


def grown_curve(speedup: float, d: float, n_base: float, n_points: int = 400, max_tokens: float = 1e8):
    """Scratch shifted by a FLOP factor 1+speedup; FLOPs start at the base's 6·n_base·d, as metrics.csv does."""
    t = np.linspace(0, max_tokens, n_points + 1)
    flops = 6 * n_base * d + FPT * t
    return curve(t, flops, law(flops * (1 + speedup)))


def test_first_crossing_interpolates_log_loss_over_log_flops():
    c = curve([0, 10, 20], [0, 100, 200], [10.0, 4.0, 2.0])
    hit = first_crossing(c, 3.0)
    frac = (math.log(4) - math.log(3)) / (math.log(4) - math.log(2))
    assert hit.flops == pytest.approx(math.exp(math.log(100) + frac * math.log(2)), rel=1e-12)
    assert hit.tokens == pytest.approx(10 + (hit.flops - 100) / 100 * 10, rel=1e-12)
    assert hit.reason == ""
    # between the 0-FLOP initial point and the first: linear in FLOPs
    assert first_crossing(c, 7.0).flops == pytest.approx(
        100 * (math.log(10) - math.log(7)) / (math.log(10) - math.log(4))
    )
    # the first crossing counts, not a later dip
    assert first_crossing(curve([0, 1, 2, 3], [1, 2, 3, 4], [5.0, 3.0, 3.5, 2.0]), 3.2).flops < 2


def test_crossing_is_read_on_the_running_minimum():
    # A noisy bump (3.6) just before the crossing: the bracket starts at the best loss so far (3.0), not at 3.6.
    c = curve([0, 1, 2, 3], [100, 200, 300, 400], [5.0, 3.0, 3.6, 2.0])
    hit = first_crossing(c, 2.5)
    frac = (math.log(3.0) - math.log(2.5)) / (math.log(3.0) - math.log(2.0))
    assert hit.flops == pytest.approx(math.exp(math.log(300) + frac * math.log(400 / 300)), rel=1e-12)
    raw_frac = (math.log(3.6) - math.log(2.5)) / (math.log(3.6) - math.log(2.0))  # what raw points would give
    assert hit.flops < math.exp(math.log(300) + raw_frac * math.log(400 / 300)) - 10
    assert hit.tokens == pytest.approx(2 + (hit.flops - 300) / 100, rel=1e-12)
    # The crossing evaluation is the same as on raw points: an early noisy dip below L* still counts.
    dip = curve([0, 1, 2, 3], [100, 200, 300, 400], [5.0, 2.4, 3.0, 2.0])
    assert first_crossing(dip, 2.5).flops < 200


def test_curve_already_below_target_at_its_first_point_is_not_bracketed():
    c = curve([0, 1], [100, 200], [3.0, 2.0])
    hit = first_crossing(c, 3.5)
    assert math.isnan(hit.flops) and math.isnan(hit.tokens)
    assert hit.reason == "already below L*=3.5 at its first point (3 at 100 FLOPs): crossing not bracketed"
    assert first_crossing(c, 3.0) == Crossing(100.0, 0.0)  # exactly at it: that point


def test_loss_at_fraction_reads_the_running_min_linearly_in_tokens():
    c = curve([0, 10, 20, 30, 40], [0, 1, 2, 3, 4], [8.0, 5.0, 4.5, 4.7, 4.0])  # noisy 4.7 at 30 tokens
    assert loss_at_fraction(c, 0.25) == pytest.approx(5.0)
    assert loss_at_fraction(c, 0.625) == pytest.approx(4.5)  # 25 tokens: best so far is 4.5 on both sides
    assert loss_at_fraction(c, 0.875) == pytest.approx(4.25)  # 35 tokens: halfway from 4.5 to 4.0 (raw: 4.35)
    assert loss_at_fraction(c, 1.0) == pytest.approx(4.0)


def test_never_reached_is_nan_with_reason():
    hit = first_crossing(curve([0, 1], [1, 2], [5.0, 4.0]), 3.0)
    assert math.isnan(hit.flops) and math.isnan(hit.tokens)
    assert hit.reason == "never reached L*=3 (lowest 4)"
    out = speedup_from_curves(
        scratch_curve(), grown_curve(-0.2, 1e7, N / 2), 1e7, float(scratch_curve()["val_loss"].iloc[-1])
    )
    assert math.isnan(out["speedup"]) and math.isnan(out["tokens_ratio"])
    assert out["reason"].startswith("grown never reached L*=")


def test_exact_flop_shift_gives_exact_speedup():
    # A grown curve that is the scratch curve with every FLOP count divided by 1.5: speed-up exactly 50%.
    s = scratch_curve(50)
    g = s.assign(flops=s["flops"] / 1.5)
    out = speedup_from_curves(s, g, 0.0, 3.5)
    assert out["speedup"] == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("true_speedup", [0.546, 0.3, 0.05])
def test_speedup_with_base_flops_offset(true_speedup):
    d, n_base = 1e7, N / 4  # base of a quarter the size trained for d tokens
    s, g = scratch_curve(), grown_curve(true_speedup, d, n_base)
    lstar = float(s["val_loss"].iloc[-1])
    out = speedup_from_curves(s, g, d, lstar)
    assert out["speedup"] == pytest.approx(true_speedup, abs=1e-3)
    # FLOPs of the grown run at L* include the base: 6·n_base·d + 6·N·tokens_grown.
    assert out["flops_grown"] == pytest.approx(6 * n_base * d + FPT * out["tokens_grown"], rel=1e-9)
    # tokens ratio = tokens_scratch / (d + tokens_grown), here computed analytically
    tokens_grown = (FPT * 1e8 / (1 + true_speedup) - 6 * n_base * d) / FPT
    assert out["tokens_ratio"] == pytest.approx(1e8 / (d + tokens_grown), rel=1e-3)
    # Leaving the base out would overstate the speed-up — the offset matters.
    assert FPT * 1e8 / (FPT * tokens_grown) - 1 > true_speedup + 0.01


def test_speedup_table_mean_and_t_interval():
    pairs = pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "scratch_run_id": "s",
            "target": "t",
            "op": "G_stack",
            "direction": "depth",
            "g": 2.0,
            "grow_at_tokens": 1e7,
            "seed": [0, 1, 2],
            "target_loss": 3.0,
            "speedup": [0.4, 0.5, math.nan],
            "tokens_ratio": [1.2, 1.3, math.nan],
            "reason": ["", "", "grown never reached L*=3"],
        }
    )
    row = speedup_table(pairs).iloc[0]
    half = stats.t.ppf(0.975, 1) * np.std([0.4, 0.5], ddof=1) / math.sqrt(2)
    assert row["speedup"] == pytest.approx(0.45)
    assert (row["speedup_lo"], row["speedup_hi"]) == pytest.approx((0.45 - half, 0.45 + half))
    assert row["n_runs"] == 3 and row["n_reached"] == 2
    assert row["note"] == "1/3 not reached: grown never reached L*=3"
    assert "+45.0%" in format_table(speedup_table(pairs))


def test_seeds_that_never_reach_l_star_bound_the_all_seed_mean():
    """A mean over the seeds that reach L* flatters an operator whose worst seed drops out: the table also bounds
    the mean over every seed, a seed that never reached L* entering at scratch's FLOPs over its last FLOPs − 1."""
    s = curve([0, 50, 100], [0, 50 * FPT, 100 * FPT], [8.0, 3.5, 3.0])  # L* = 3.0 at 100 FLOP units
    reach = curve([10, 40, 80], [10 * FPT, 40 * FPT, 80 * FPT], [4.0, 3.0, 2.9])  # reaches 3.0 at 40 units
    never = curve([10, 40, 90], [10 * FPT, 40 * FPT, 90 * FPT], [4.0, 3.2, 3.1])  # ends at 90 units, 3.1
    one = speedup_from_curves(s, reach, 10, 3.0)
    other = speedup_from_curves(s, never, 10, 3.0)
    assert one["speedup"] == one["speedup_max"] == pytest.approx(100 / 40 - 1)
    assert math.isnan(other["speedup"]) and other["speedup_max"] == pytest.approx(100 / 90 - 1)
    base = {"scratch_run_id": "s", "target": "t", "op": "G_zero", "direction": "depth", "g": 2.0, "grow_at_tokens": 10}
    pairs = pd.DataFrame([base | {"run_id": "a", "seed": 0} | one, base | {"run_id": "b", "seed": 1} | other])
    row = speedup_table(pairs).iloc[0]
    assert row["speedup"] == pytest.approx(1.5) and row["n_reached"] == 1  # the survivor: +150 %
    assert row["speedup_max_all"] == pytest.approx((1.5 + 100 / 90 - 1) / 2)  # all seeds: at most +81 %
    assert "all 2 seeds ≤ +80.6%" in format_table(speedup_table(pairs))
    assert "1 of 2 seeds reach it, over all 2 at most +81 %" in headline(speedup_table(pairs))
    # every seed reaches L*: the bound is the mean itself and no note is added
    both = pd.DataFrame([base | {"run_id": "a", "seed": 0} | one, base | {"run_id": "c", "seed": 2} | one])
    row = speedup_table(both).iloc[0]
    assert row["speedup_max_all"] == pytest.approx(row["speedup"]) and "≤" not in format_table(speedup_table(both))


# ---- on the committed fixture sweep (curves drawn from a known law, see make_sweep_fixture.py) ---------------


@pytest.fixture(scope="module")
def sweep():
    return load_sweep(FIXTURES / "sweep_small")


def test_fixture_speedups_match_the_generating_law(sweep):
    pairs = compute_speedups(sweep)
    grown = sweep.runs("grown")
    assert len(pairs) == len(grown)  # one same-seed scratch run per grown run
    for _, p in pairs.iterrows():
        assert sweep.row(p["scratch_run_id"])["seed"] == p["seed"]
        truth = expected_speedup(p["op"], p["target"], p["grow_at_tokens"])
        if truth < 0:  # G_random is slower: never reaches scratch's final loss
            assert math.isnan(p["speedup"]) and p["reason"].startswith("grown never reached")
        else:
            assert p["speedup"] == pytest.approx(truth, abs=0.03), p["run_id"]

    slower = compute_speedups(sweep, reference="grown")
    g_random = slower[slower["op"] == "G_random"]
    assert np.allclose(g_random["speedup"], -0.2, atol=0.03)
    faster = slower[slower["op"] == "G_stack"]
    assert faster["speedup"].isna().all() and faster["reason"].str.startswith("scratch never reached").all()


def test_fixture_table_groups_seeds(sweep):
    table = speedup_table(compute_speedups(sweep))
    assert len(table) == 3 * (3 + 1 + 1)  # targets × (G_stack at 3 d + G_zero + G_random)
    assert (table["n_runs"] == 2).all()
    row = table[(table["target"] == "toy-4M") & (table["op"] == "G_stack") & (table["grow_at_tokens"] == 1e7)].iloc[0]
    assert row["speedup_lo"] < 0.5 < row["speedup_hi"]


def test_variants_of_one_op_are_separate_rows(sweep, tmp_path):
    # results.csv's variant column (one op run with two option sets) splits what `op` alone would pool as seeds
    res = pd.read_csv(FIXTURES / "sweep_small" / "results.csv")
    zero = res["op"] == "G_zero"
    res["variant"] = None
    res.loc[zero, "variant"] = np.where(res.loc[zero, "seed"] == 0, "G_zero_a", "G_zero_b")
    (tmp_path / "results.csv").write_text(res.to_csv(index=False))
    (tmp_path / "runs").symlink_to(FIXTURES / "sweep_small" / "runs")
    table = speedup_table(compute_speedups(load_sweep(tmp_path)))
    pooled = speedup_table(compute_speedups(sweep))
    assert len(table) == len(pooled) + 3  # one more row per target
    split = table[table["op"].isin(["G_zero_a", "G_zero_b"])]
    assert len(split) == 6 and (split["n_runs"] == 1).all()
    assert (table.loc[table["op"] == "G_stack", "n_runs"] == 2).all()


def test_fixed_target_loss_and_matching_without_same_seed(sweep, tmp_path):
    # A fixed L* reachable by every G_stack run gives the same speed-up as the law.
    pairs = compute_speedups(sweep, target_loss=3.3)
    p = pairs[(pairs["target"] == "toy-4M") & (pairs["op"] == "G_zero")]
    assert np.allclose(p["speedup"], 0.35, atol=0.03) and (p["target_loss"] == 3.3).all()
    # Without a same-seed scratch run, a grown run is compared with every scratch run of its target.
    res = sweep.results.copy()
    res.loc[res["kind"] == "scratch", "seed"] += 10
    (tmp_path / "results.csv").write_text(res.to_csv(index=False))
    (tmp_path / "runs").symlink_to(FIXTURES / "sweep_small" / "runs")
    pairs = compute_speedups(load_sweep(tmp_path))
    assert len(pairs) == 2 * len(sweep.runs("grown"))
    with pytest.raises(AnalysisError, match="target loss must be a positive number"):
        compute_speedups(sweep, target_loss=-1.0)
    with pytest.raises(AnalysisError, match="reference must be one of scratch, grown"):
        compute_speedups(sweep, reference="base")


def test_budget_fractions_read_lstar_off_the_scratch_curve(sweep):
    pairs = compute_speedups(sweep, fractions=BUDGET_FRACTIONS)
    assert len(pairs) == 4 * len(sweep.runs("grown")) and set(pairs["reading"]) == {"mid"}
    for _, p in pairs.iterrows():
        s = sweep.curve(p["scratch_run_id"])
        at = s[s["tokens"] == p["budget_fraction"] * MAX_TOKENS]  # the fixture evaluates every 5M tokens
        assert p["target_loss"] == pytest.approx(s.loc[: at.index[0], "val_loss"].min(), rel=1e-12)
        # the scratch crossing of L*_p is the evaluation at p·T itself (the fixture's curves decrease)
        assert p["flops_scratch"] == pytest.approx(float(at["flops"].iloc[0]), rel=1e-9)
        assert p["tokens_scratch"] == pytest.approx(p["budget_fraction"] * MAX_TOKENS, rel=1e-9)
    # Where the grown curve brackets L*_p, the speed-up is the law's at every p (G_stack at 10M, past its spike).
    stack = pairs[(pairs["op"] == "G_stack") & (pairs["grow_at_tokens"] == D_DEFAULT)]
    for _, p in stack.iterrows():
        assert p["speedup"] == pytest.approx(expected_speedup("G_stack", p["target"], D_DEFAULT), abs=0.03)
    with pytest.raises(AnalysisError, match=r"budget fractions must be in \(0, 1\], got \[0.0, 0.5\]"):
        compute_speedups(sweep, fractions=[0.0, 0.5])
    # reference="grown" at p: the grown run's own running-min curve
    own = compute_speedups(sweep, reference="grown", fractions=(0.5,))
    row = own.iloc[0]
    assert row["target_loss"] == pytest.approx(loss_at_fraction(sweep.curve(row["run_id"]), 0.5))


def test_seed_ci_matches_a_hand_computation(sweep):
    pairs = compute_speedups(sweep, fractions=BUDGET_FRACTIONS)
    key = (pairs["target"] == "toy-4M") & (pairs["op"] == "G_zero") & (pairs["budget_fraction"] == 0.5)
    v = pairs.loc[key].sort_values("seed")["speedup"].to_numpy()
    assert len(v) == 2
    mean, sd = (v[0] + v[1]) / 2, abs(v[0] - v[1]) / math.sqrt(2)  # sample sd of two values
    row = speedup_table(pairs).set_index(["target", "op", "grow_at_tokens", "budget_fraction"])
    row = row.loc[("toy-4M", "G_zero", D_DEFAULT, 0.5)]
    assert row["speedup"] == pytest.approx(mean, rel=1e-12)
    assert row["speedup_hi"] - row["speedup"] == pytest.approx(T_975_1 * sd / math.sqrt(2), rel=1e-9)
    assert row["speedup"] - row["speedup_lo"] == pytest.approx(T_975_1 * sd / math.sqrt(2), rel=1e-9)


def test_annealed_speedup_matches_a_hand_computation(sweep):
    pairs = compute_annealed_speedups(sweep)
    assert set(pairs["reading"]) == {"annealed"}
    assert set(pairs["op"]) == {"G_stack", "G_random"}  # the grown runs that have cooldown runs
    res = sweep.results
    g = res[(res["kind"] == "grown") & (res["target"] == "toy-4M") & (res["op"] == "G_stack")]
    g = g[(g["grow_at_tokens"] == D_DEFAULT) & (g["seed"] == 0)].iloc[0]
    s = res[(res["kind"] == "scratch") & (res["target"] == "toy-4M") & (res["seed"] == 0)].iloc[0]
    cd = res[res["kind"] == "cooldown"].set_index(["parent_run", "anneal_fraction"])
    # f = 0.5: L* = scratch's cooldown loss; the grown annealed curve crosses it between its f = 0.25 and 0.5 points
    lstar, flops_s = cd.loc[(s["run_id"], 0.5), ["final_val_loss", "flops"]]
    (l1, f1), (l2, f2) = (cd.loc[(g["run_id"], f), ["final_val_loss", "flops"]] for f in (0.25, 0.5))
    assert l1 > lstar > l2
    frac = (math.log(l1) - math.log(lstar)) / (math.log(l1) - math.log(l2))
    flops_g = math.exp(math.log(f1) + frac * (math.log(f2) - math.log(f1)))
    row = pairs[(pairs["run_id"] == g["run_id"]) & (pairs["budget_fraction"] == 0.5)].iloc[0]
    assert row["scratch_run_id"] == s["run_id"]
    assert row["flops_scratch"] == flops_s and row["tokens_scratch"] == 0.5 * MAX_TOKENS
    # the annealed reading reads the crossing on a PCHIP through all points (tests/analysis/test_analysis_convex.py); on
    # this fixture's power law that is the chord up to the rounding of the stored losses
    assert row["flops_grown"] == pytest.approx(flops_g, rel=1e-5)
    assert row["speedup"] == pytest.approx(flops_s / row["flops_grown"] - 1, rel=1e-12)
    assert row["speedup"] == pytest.approx(flops_s / flops_g - 1, abs=1e-5)
    tokens_g = 0.25 * MAX_TOKENS + (flops_g - f1) / (f2 - f1) * 0.25 * MAX_TOKENS
    assert row["tokens_ratio"] == pytest.approx(0.5 * MAX_TOKENS / (D_DEFAULT + tokens_g), rel=1e-5)
    # ... which is the fixture's law: the annealed curves are power laws, so log-log interpolation is exact
    assert row["speedup"] == pytest.approx(expected_annealed_speedup("G_stack", "toy-4M", D_DEFAULT, 0), abs=1e-4)


def test_annealed_speedups_against_the_fixture_law(sweep):
    pairs = compute_annealed_speedups(sweep)
    assert len(pairs) == len(ANNEAL_FRACTIONS) * 2 * 2 * len(TARGETS)  # f × ops × seeds × targets
    for _, p in pairs.iterrows():
        truth = expected_annealed_speedup(p["op"], p["target"], p["grow_at_tokens"], int(p["seed"]))
        if p["op"] == "G_stack" and p["budget_fraction"] == 0.25:
            # faster than scratch and starting later (base FLOPs): its first annealed point is already below L*
            assert math.isnan(p["speedup"]) and "crossing not bracketed" in p["reason"]
        elif p["op"] == "G_random" and p["budget_fraction"] == 1.0:
            assert math.isnan(p["speedup"]) and p["reason"].startswith("grown never reached")
        else:
            assert p["speedup"] == pytest.approx(truth, abs=1e-4), (p["run_id"], p["budget_fraction"])
    # CI over the two seeds, by hand: speed-ups s − 0.02 and s + 0.02 → mean s, half-width t(0.975, 1)·0.02
    table = speedup_table(pairs)
    row = table[(table["target"] == "toy-4M") & (table["op"] == "G_stack") & (table["budget_fraction"] == 0.75)]
    row = row.iloc[0]
    s = expected_speedup("G_stack", "toy-4M", D_DEFAULT)
    half = T_975_1 * ANNEAL_SEED_SHIFT[1]
    assert row["reading"] == "annealed" and row["n_runs"] == 2 and row["n_reached"] == 2
    assert row["speedup"] == pytest.approx(s, abs=1e-4)
    # (the 6-digit losses of results.csv perturb each seed by ~1e-5; t = 12.7 magnifies that in the bounds)
    assert (row["speedup_lo"], row["speedup_hi"]) == pytest.approx((s - half, s + half), abs=1e-3)
    assert "[+24.6%, +75.4%]" in format_table(row.to_frame().T)


def test_annealed_matching_and_missing_cooldowns(sweep, tmp_path):
    (tmp_path / "runs").symlink_to(FIXTURES / "sweep_small" / "runs")
    res = sweep.results.copy()
    # No same-seed scratch run: each grown run is compared with both scratch runs of its target.
    res.loc[res["kind"] == "scratch", "seed"] += 10
    res.to_csv(tmp_path / "results.csv", index=False)
    pairs = compute_annealed_speedups(load_sweep(tmp_path))
    assert len(pairs) == 2 * len(compute_annealed_speedups(sweep))
    # A scratch run without cooldowns: one row with the reason; a sweep without any: no rows.
    res = sweep.results
    scratch_ids = set(res.loc[res["kind"] == "scratch", "run_id"])
    res[~((res["kind"] == "cooldown") & res["parent_run"].isin(scratch_ids))].to_csv(
        tmp_path / "results.csv", index=False
    )
    pairs = compute_annealed_speedups(load_sweep(tmp_path))
    assert len(pairs) == 12 and pairs["speedup"].isna().all()
    assert pairs["reason"].str.fullmatch(r"scratch run scratch-.* has no cooldown runs").all()
    assert "1/1 not reached" not in format_table(speedup_table(pairs))  # 2 seeds per row
    res[res["kind"] != "cooldown"].to_csv(tmp_path / "results.csv", index=False)
    assert compute_annealed_speedups(load_sweep(tmp_path)).empty


def _table_row(**kw) -> pd.DataFrame:
    row = {
        "target": "t",
        "op": "G_stack",
        "direction": "depth",
        "g": 2.0,
        "grow_at_tokens": 1e7,
        "reading": "mid",
        "budget_fraction": 1.0,
        "n_runs": 1,
        "n_reached": 1,
        "target_loss": 3.0,
        "speedup": 0.12,
        "speedup_lo": math.nan,
        "speedup_hi": math.nan,
        "tokens_ratio": 1.1,
        "tokens_ratio_lo": math.nan,
        "tokens_ratio_hi": math.nan,
        "note": "",
    }
    return pd.DataFrame([row | kw])


def test_headline_and_one_seed_without_ci():
    one = _table_row()
    assert headline(one) == (
        "At scratch's final loss, G_stack g=2 d=10M needs 11 % fewer FLOPs than scratch "
        "(speed-up +12 %, 1 seed: no CI)."
    )
    assert "| 100% | 1/1 | 3 | +12.0% | 1 seed: no CI | 1.100 |" in format_table(one)
    three = _table_row(n_runs=3, n_reached=3, speedup_lo=-0.02, speedup_hi=0.25)
    assert headline(three).endswith("(speed-up +12 %, 3 seeds, 95 % CI -2 % to +25 %).")
    never = _table_row(n_runs=2, n_reached=0, speedup=math.nan)
    assert headline(never) == "G_stack g=2 d=10M never reaches scratch's final loss (2 seeds)."
    both = pd.concat([one, never.assign(op="G_zero"), one.assign(target="u", speedup=-0.2)], ignore_index=True)
    assert headline(both, "L* = 3") == (
        "At L* = 3, the best of 3 grown configurations, G_stack g=2 d=10M on t, needs 11 % fewer FLOPs than "
        "scratch (speed-up +12 %, 1 seed: no CI); 1 of 3 never reach it."
    )
    assert "needs 25 % more FLOPs" in headline(one.assign(speedup=-0.2))
    # a configuration whose every seed reaches L* wins over a faster-looking mean of the seeds that did
    all3 = _table_row(n_runs=3, n_reached=3, speedup=0.1, speedup_lo=0.0, speedup_hi=0.2)
    two_of_3 = _table_row(op="G_zero", n_runs=3, n_reached=2, speedup=0.3, speedup_lo=0.1, speedup_hi=0.5)
    assert "the best of 2 grown configurations, G_stack g=2 d=10M" in headline(pd.concat([two_of_3, all3]))
    # a one-seed extra (a d sweep beside the seeded main d) does not win the headline by its larger mean
    extra = _table_row(grow_at_tokens=2e7, speedup=0.5)
    assert "the best-replicated of 3 grown configurations, G_stack g=2 d=10M, needs 9 % fewer" in headline(
        pd.concat([two_of_3, extra, all3])
    )
    assert "the best of the 2 grown configurations with 3 seeds (3 in all), G_zero" in headline(
        pd.concat([extra, all3, all3.assign(op="G_zero", speedup=0.2)])
    )
