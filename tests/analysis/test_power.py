"""`stacking loss-table SWEEP --seeds-for NATS`: how many seeds a paired difference needs for a given CI half-width,
at its sd over the seeds run so far (planning issue 21's ≥ 8 seeds), on a committed export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis.loss_table import mean_ci_half, per_seed_table, power_table, seeds_for_halfwidth
from analysis.sweep import AnalysisError
from stacking.cli import main as cli_main

OWN_LR = Path(__file__).parents[2] / "results" / "replicate-torch-init-tiny_own_lr"


def test_seeds_for_halfwidth_is_the_fewest_seeds_whose_t_interval_is_narrow_enough():
    # sd 0.011 (issue 21's paired sd), ± 0.012: 5 seeds give 2.776·0.011/√5 = 0.0137, 6 give 2.571·0.011/√6 = 0.0115
    assert seeds_for_halfwidth(0.011, 0.012) == 6
    for sd, half in [(0.011, 0.012), (0.03, 0.012), (0.004, 0.01), (0.05, 0.005)]:
        n = seeds_for_halfwidth(sd, half)
        assert stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n) <= half < stats.t.ppf(0.975, n - 2) * sd / np.sqrt(n - 1)
        # an n-seed sample with exactly that sd has a CI half-width at most the target
        x = np.random.default_rng(n).normal(size=n)
        x = (x - x.mean()) / x.std(ddof=1) * sd
        assert mean_ci_half(x)[1] <= half + 1e-15
    assert seeds_for_halfwidth(0.0, 0.012) == 2
    assert seeds_for_halfwidth(1.0, 1e-6, max_seeds=50) == 51  # out of reach: said as max + 1
    with pytest.raises(AnalysisError, match="half-width > 0"):
        seeds_for_halfwidth(0.01, 0.0)


def test_power_table_reads_each_paired_difference_of_the_export():
    table = power_table(OWN_LR, 0.012).set_index(["method", "reading"])
    per_seed = per_seed_table(OWN_LR)
    for reading, col in [("mid", "final_val_loss_vs_scratch"), ("annealed", "annealed_vs_scratch")]:
        d = per_seed[per_seed["method"] == "G_stack g=2 d=2.34M"][col].dropna().to_numpy()
        row = table.loc[("G_stack g=2 d=2.34M", reading)]
        assert row["seeds"] == len(d) == 3
        assert row["diff"] == pytest.approx(d.mean()) and row["sd"] == pytest.approx(d.std(ddof=1))
        assert row["halfwidth"] == pytest.approx(mean_ci_half(d)[1])
        assert row["seeds_needed"] == seeds_for_halfwidth(d.std(ddof=1), 0.012)
    assert "scratch" not in table.index.get_level_values("method")


def test_cli_prints_the_seeds_needed_and_refuses_a_non_positive_target(capsys):
    assert cli_main(["loss-table", str(OWN_LR), "--seeds-for", "0.012"]) == 0
    out = capsys.readouterr().out
    assert "seeds for ± 0.012" in out
    need = int(power_table(OWN_LR, 0.012).query("reading == 'annealed'")["seeds_needed"].iloc[0])
    assert any(
        line.startswith("| tiny-L8-D64 | G_stack g=2 d=2.34M | annealed |") and line.endswith(f"| {need} |")
        for line in out.splitlines()
    )
    assert cli_main(["loss-table", str(OWN_LR), "--seeds-for", "1e-7"]) == 0  # out of reach: said so, not 10001
    assert "| > 10,000 |" in capsys.readouterr().out
    assert cli_main(["loss-table", str(OWN_LR), "--seeds-for", "-0.01"]) != 0
    err = capsys.readouterr().err
    assert "--seeds-for is a CI half-width in nats and must be > 0" in err
