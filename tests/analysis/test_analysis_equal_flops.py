"""The annealed reading at equal FLOPs (``anneal.at_scratch_flops``): each grown cooldown at the FLOPs of its seed's
scratch cooldown minus that cooldown's loss, mean ± CI per f, on a synthetic results.csv worked out by hand; the
loss table is unchanged by these cooldowns, and without them `stacking loss-table` prints what it always did."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats
from sweep_helpers import results_row

from analysis.cli import loss_table_main
from analysis.loss_table import equal_flops_table, format_loss_table, loss_table
from analysis.sweep import load_sweep

GROWN = {"op": "G_stack", "direction": "depth", "g": 2, "grow_at_tokens": 100}


def write_sweep(path, at_flops: bool = True):
    """Seeds 0–2: scratch (1000 tokens, 1e9 FLOPs) with cooldowns at f = 0.5 and 1, G_stack with its own cooldowns
    at 0.5 and 1 and — with ``at_flops`` — a cooldown at scratch's f = 0.5 FLOPs (its own f = 0.35)."""
    rows = []
    for seed, (s_half, s_end, g_half, g_end, g_at) in enumerate(
        [(3.00, 2.50, 3.10, 2.45, 2.96), (3.10, 2.60, 3.20, 2.52, 3.02), (2.90, 2.40, 3.00, 2.37, 2.85)]
    ):
        s, g = f"scratch-s{seed}", f"grown-s{seed}"
        rows += [
            results_row(s, "scratch", seed, 2.7),
            results_row(f"{s}-f50", "cooldown", seed, s_half, parent_run=s, anneal_fraction=0.5, flops=5e8),
            results_row(f"{s}-f100", "cooldown", seed, s_end, parent_run=s, anneal_fraction=1.0, flops=1e9),
            results_row(g, "grown", seed, 2.6, **GROWN),
            results_row(f"{g}-f50", "cooldown", seed, g_half, parent_run=g, anneal_fraction=0.5, flops=6e8, **GROWN),
            results_row(f"{g}-f100", "cooldown", seed, g_end, parent_run=g, anneal_fraction=1.0, flops=1e9, **GROWN),
        ]
        if at_flops:
            rows[-1]["at_flops_of"] = f"{s}-f100"  # its own end: scratch's f = 1 point
            rows.append(
                results_row(
                    f"{g}-at-scratch-f50",
                    "cooldown",
                    seed,
                    g_at,
                    parent_run=g,
                    anneal_fraction=0.35,
                    flops=5.01e8,
                    at_flops_of=f"{s}-f50",
                    **GROWN,
                )
            )
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    return path


def test_equal_flops_by_hand(tmp_path):
    t = equal_flops_table(write_sweep(tmp_path / "s"))
    assert list(t["fraction"]) == [0.5, 1.0] and list(t["method"]) == ["G_stack g=2 d=100"] * 2
    half, end = t.iloc[0], t.iloc[1]
    # f = 0.5: 2.96 − 3.00, 3.02 − 3.10, 2.85 − 2.90 = −0.04, −0.08, −0.05: mean −0.17/3, sd √(0.0014/2)
    sd = math.sqrt(((0.04 - 0.17 / 3) ** 2 + (0.08 - 0.17 / 3) ** 2 + (0.05 - 0.17 / 3) ** 2) / 2)
    assert half["seeds"] == 3 and half["annealed_vs_scratch"] == pytest.approx(-0.17 / 3)
    assert half["annealed_vs_scratch_ci"] == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3))
    assert half["annealed"] == pytest.approx((2.96 + 3.02 + 2.85) / 3)
    assert half["flops"] == pytest.approx(5e8) and half["flops_diff"] == pytest.approx(0.002)
    # f = 1: the grown runs' own end cooldowns (−0.05, −0.08, −0.03), the loss table's annealed difference
    assert end["annealed_vs_scratch"] == pytest.approx(-0.16 / 3) and end["flops_diff"] == 0
    losses = loss_table(tmp_path / "s")
    assert losses.iloc[1]["annealed_vs_scratch"] == pytest.approx(end["annealed_vs_scratch"])


def test_loss_table_unchanged_by_them(tmp_path, capsys):
    with_them, without = write_sweep(tmp_path / "a"), write_sweep(tmp_path / "b", at_flops=False)
    pd.testing.assert_frame_equal(loss_table(with_them), loss_table(without))
    assert equal_flops_table(without).empty
    assert loss_table_main([str(without)]) == 0
    assert capsys.readouterr().out == format_loss_table(loss_table(without)) + "\n"
    assert loss_table_main([str(with_them)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(format_loss_table(loss_table(with_them)) + "\n\nannealed loss at equal FLOPs")
    assert "| tiny | G_stack g=2 d=100 | 0.5 | 5e+08 | +0.20 % | 3 | 2.9433 ± " in out


def test_annealed_curve_has_every_point(tmp_path):
    """The speed-up's annealed curve of a grown run reads its cooldowns at scratch's FLOPs too (more points, at the
    FLOPs where scratch's own were read)."""
    sweep = load_sweep(write_sweep(tmp_path / "s"))
    curve = sweep.annealed_curve("grown-s0")
    assert list(curve["anneal_fraction"]) == [0.35, 0.5, 1.0] and list(curve["flops"]) == [5.01e8, 6e8, 1e9]
