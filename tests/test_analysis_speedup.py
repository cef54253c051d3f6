"""Speed-up by the paper's definition on curves with a known answer, and on the committed fixture sweep."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.results import AnalysisError, load_sweep
from analysis.speedup import (
    compute_speedups,
    first_crossing,
    format_table,
    speedup_from_curves,
    speedup_table,
)

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_sweep_fixture import expected_speedup

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
