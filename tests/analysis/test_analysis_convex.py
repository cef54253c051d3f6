"""The annealed speed-up's interpolation on convex curves, where the exact answer is known.

Scratch's annealed loss is L(C) = E + A·(C/1e9)^−a (convex in log-log: a power law plus an offset), and the grown
run's is L((1 + s)·C): it reaches every loss with 1/(1 + s) of scratch's FLOPs, so the exact speed-up is s at every
L*. With 2–4 annealed points far apart, the chord in log-log lies above the curve and overstates the grown FLOPs at
the crossing: the speed-up
comes out 2–5 points low (issue 21: ≈ 2). A monotone piecewise-cubic (PCHIP) through all the points,
what the annealed reading uses, is within one point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.speedup import first_crossing

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
C_T = 2e12


def _curves(E, A, a, s, fractions=FRACTIONS):
    law = lambda c: E + A * (np.asarray(c) / 1e9) ** -a
    flops = np.array(fractions) * C_T
    grown = pd.DataFrame({"tokens": flops / 1e6, "flops": flops, "val_loss": law((1 + s) * flops)})
    return law, grown


def _speedups(E, A, a, s, interpolation, fractions=FRACTIONS):
    """{f: speed-up at L*_f = scratch's annealed loss at f} read off the grown run's annealed points."""
    law, grown = _curves(E, A, a, s, fractions)
    out = {}
    for f in fractions:
        c = first_crossing(grown, float(law(f * C_T)), interpolation=interpolation)
        out[f] = f * C_T / c.flops - 1
    return out


@pytest.mark.parametrize("E, A, a, s", [(1.5, 2.0, 0.5, 0.3), (1.6, 1.5, 0.4, 0.3), (1.8, 1.0, 0.6, 0.5)])
def test_chord_underestimates_the_speedup_and_pchip_does_not(E, A, a, s):
    chord, pchip = _speedups(E, A, a, s, "chord"), _speedups(E, A, a, s, "pchip")
    assert np.isnan(chord[0.25]) and np.isnan(pchip[0.25])  # already below L* at its first point: not bracketed
    bias = chord[0.5] - s
    assert -0.06 < bias < -0.02  # 2 to 6 speed-up points: the grown FLOPs overstated by the chord
    for f in (0.5, 0.75, 1.0):
        assert chord[f] <= s + 1e-9  # the chord never overstates it on a convex curve
        assert pchip[f] == pytest.approx(s, abs=0.01)
        assert abs(pchip[f] - s) < abs(chord[f] - s) + 1e-9


def test_on_a_power_law_both_are_exact():
    chord, pchip = _speedups(0.0, 3.0, 0.3, 0.4, "chord"), _speedups(0.0, 3.0, 0.3, 0.4, "pchip")
    for f in (0.5, 0.75, 1.0):
        assert chord[f] == pytest.approx(0.4, abs=1e-9) and pchip[f] == pytest.approx(0.4, abs=1e-9)


def test_with_two_points_pchip_is_the_chord():
    two = (0.5, 1.0)
    chord, pchip = _speedups(1.5, 2.0, 0.5, 0.3, "chord", two), _speedups(1.5, 2.0, 0.5, 0.3, "pchip", two)
    assert pchip[1.0] == pytest.approx(chord[1.0], rel=1e-12) and chord[1.0] < 0.3


def test_unknown_interpolation_is_a_user_error():
    from analysis.sweep import AnalysisError

    _, grown = _curves(1.5, 2.0, 0.5, 0.3)
    with pytest.raises(AnalysisError, match="interpolation must be one of chord, pchip"):
        first_crossing(grown, float(grown["val_loss"].iloc[1]) - 1e-3, interpolation="cubic")
