"""`stacking loss-table SWEEP_A --contrast SWEEP_B`: difference-in-differences with a Welch interval,
checked against numbers worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sweep_helpers import results_row

from analysis.cli import loss_table_main as main
from analysis.loss_table import contrast_table, welch_ci
from analysis.sweep import AnalysisError


def write_sweep(path: Path, scratch: dict, grown: dict) -> Path:
    """A results.csv alone (the loss table reads no curve): {seed: final loss} of scratch and of G_stack runs."""
    rows = []
    for kind, losses in (("scratch", scratch), ("grown", grown)):
        for seed, loss in losses.items():
            rid = f"{kind}-s{seed}"
            grown_cols = {"op": "G_stack", "direction": "depth", "g": 2, "grow_at_tokens": 100}
            rows.append(results_row(rid, kind, seed, loss, **(grown_cols if kind == "grown" else {})))
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    return path


@pytest.fixture()
def sweeps(tmp_path):
    # A: differences −0.05, −0.08, −0.02 (mean −0.05, sd 0.03); B: −0.10, −0.14 (mean −0.12, sd 0.02·√2);
    # seed 7 of B has no scratch run: unpaired, left out
    a = write_sweep(tmp_path / "a", {0: 2.00, 1: 2.10, 2: 1.90}, {0: 1.95, 1: 2.02, 2: 1.88})
    b = write_sweep(tmp_path / "b", {0: 2.20, 1: 2.30}, {0: 2.10, 1: 2.16, 7: 1.0})
    return a, b


def test_contrast_matches_a_hand_computation(sweeps):
    t = contrast_table(*sweeps)
    assert list(t["reading"]) == ["mid"]  # no cooldown runs: no annealed row
    r = t.iloc[0]
    assert (r["method"], r["seeds_a"], r["seeds_b"]) == ("G_stack g=2 d=100", 3, 2)
    assert r["diff_a"] == pytest.approx(-0.05) and r["diff_b"] == pytest.approx(-0.12)
    assert r["contrast"] == pytest.approx(0.07)
    # se² = 0.03²/3 + 0.0008/2 = 0.0003 + 0.0004; df = 0.0007² / (0.0003²/2 + 0.0004²/1) = 2.390244
    se, df = math.sqrt(0.0007), 0.0007**2 / (0.0003**2 / 2 + 0.0004**2)
    assert df == pytest.approx(2.390244, abs=1e-6) and r["df"] == pytest.approx(df)
    half = stats.t.ppf(0.975, df) * se
    assert (r["contrast_lo"], r["contrast_hi"]) == pytest.approx((0.07 - half, 0.07 + half))
    assert r["diff_a_ci"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.03 / math.sqrt(3))


def test_welch_ci_edge_cases():
    assert np.isnan(welch_ci([1.0], [0.5, 0.7])[1]) and welch_ci([1.0], [0.5, 0.7])[0] == pytest.approx(0.4)
    assert np.isnan(welch_ci([], [1.0])[0])
    assert welch_ci([1.0, 1.0], [0.0, 0.0])[:3] == (1.0, 1.0, 1.0)


def test_contrast_cli_prints_and_writes_contrast_csv(sweeps, tmp_path, capsys):
    a, b = sweeps
    assert main([str(a), "--contrast", str(b)]) == 0
    out = capsys.readouterr().out
    assert "| tiny | G_stack g=2 d=100 | mid | -0.0500 ± 0.0745 | 3 | -0.1200 ± 0.2541 | 2 | +0.0700 |" in out
    assert pd.read_csv(a / "report" / "contrast.csv")["contrast"].iloc[0] == pytest.approx(0.07)
    assert main([str(a), "--contrast", str(b), "--out", str(tmp_path / "c.csv")]) == 0
    assert (tmp_path / "c.csv").is_file()


def test_contrast_without_common_methods_is_one_line(sweeps, tmp_path, capsys):
    other = write_sweep(tmp_path / "c", {0: 2.0}, {})
    with pytest.raises(AnalysisError, match="share no target × method"):
        contrast_table(sweeps[0], other)
    assert main([str(sweeps[0]), "--contrast", str(other)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
