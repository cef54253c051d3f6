"""`stacking plan-growth`: Eq. 2's growth timing at a budget, checked against the published constants by hand, its
warnings outside the paper's ground, one-line errors for every bad input, and `--fit` on the fixture sweep."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.fit import PAPER_EQ2, fit_eq2, fit_isoflop
from analysis.plan import plan_growth
from analysis.sweep import isoflop_points, load_sweep
from stacking.cli import main as cli_main
from stacking.models import flops_per_token, model_config, param_breakdown

SWEEP = Path(__file__).parents[1] / "fixtures" / "sweep_small"

# Du et al. 2024, Eq. 2, with the constants as published: log10 d = 0.88·log10 N + 163.27 / log10 C − 5.74
A, B, C0 = 0.88, 163.27, -5.74


def eq2_by_hand(n: float, flops: float) -> float:
    return 10 ** (A * math.log10(n) + B / math.log10(flops) + C0)


def test_published_constants_reproduce_the_values_the_reference_quotes():
    # reference/stacking.md §4: "3B at 1e21 → ≈24B", "1.1B at 8e20 → ≈10.6B" (nominal N), and the
    # README/App. F.1 table "Llama2-7B (2T) → 11.11B" with C = 6·N·D
    assert eq2_by_hand(3e9, 1e21) == pytest.approx(24e9, rel=0.02)
    assert eq2_by_hand(1.1e9, 8e20) == pytest.approx(10.6e9, rel=0.01)
    assert eq2_by_hand(7e9, 6 * 7e9 * 2e12) == pytest.approx(11.11e9, rel=0.005)
    assert (PAPER_EQ2.a, PAPER_EQ2.b, PAPER_EQ2.c) == (A, B, C0)


def test_the_3b_setting_at_1e21_against_eq2_by_hand():
    plan = plan_growth("stack-3b", flops=1e21)
    # the accounting, rebuilt from stacking.models at the paper's context and vocabulary
    tc = model_config("stack-3b", vocab_size=32000, block_size=2048)
    bc = model_config("stack-3b", vocab_size=32000, block_size=2048, n_layer=8)
    tp, bp = param_breakdown(tc), param_breakdown(bc)
    t_fpt, b_fpt = flops_per_token(tc, 2048), flops_per_token(bc, 2048)
    assert (plan.g, plan.n_layer, plan.base_layers) == (4, 32, 8)
    assert plan.target_params_non_embedding == tp["non_embedding"] and plan.target_params_total == tp["total"]
    assert plan.base_params_non_embedding == bp["non_embedding"]
    assert plan.target_flops_per_token == pytest.approx(t_fpt)
    assert plan.tokens == pytest.approx(1e21 / t_fpt)
    assert plan.target_tokens_per_param == pytest.approx(1e21 / t_fpt / tp["non_embedding"])
    # d from the published constants at N = the target's total parameters
    d = eq2_by_hand(tp["total"], 1e21)
    assert plan.paper.d == pytest.approx(d, rel=1e-12)
    # …which is the reference's ≈24B at nominal N = 3e9, scaled by d ∝ N^0.88
    assert plan.paper.d == pytest.approx(24e9 * (tp["total"] / 3e9) ** A, rel=0.02)
    assert plan.paper.base_share == pytest.approx(d * b_fpt / 1e21)
    assert plan.paper.base_tokens_per_param == pytest.approx(d / bp["non_embedding"])
    assert plan.paper.tokens_after == pytest.approx((1e21 - d * b_fpt) / t_fpt)
    # inside the fitted range and the paper's regime: no warning
    assert not plan.paper.warnings and not plan.warnings


def test_the_report_prints_the_plan(capsys):
    assert cli_main(["plan-growth", "--target", "stack-1.1b", "--flops", "8e20"]) == 0
    out = capsys.readouterr().out
    plan = plan_growth("stack-1.1b", flops=8e20)
    assert out.startswith("plan-growth stack-1.1b: depth growth by g = 4 from a base of 6 layers")
    assert "recommended g = 2–4" in out
    assert f"{plan.target_params_non_embedding:,} non-embedding params" in out
    assert "budget C = 8e+20 FLOPs" in out and f"{plan.target_tokens_per_param:.3g} tokens per target param" in out
    assert f"d = {plan.paper.d / 1e9:.3g}B tokens" in out
    assert f"{100 * plan.paper.base_share:.3g} % of the budget" in out
    assert "warning" not in out
    # --tokens T is the same budget as --flops T × FLOPs/token
    by_tokens = plan_growth("stack-1.1b", tokens=plan.tokens)
    assert by_tokens.flops == pytest.approx(8e20) and by_tokens.paper.d == pytest.approx(plan.paper.d)


def test_out_of_range_budget_warns(capsys):
    assert cli_main(["plan-growth", "--target", "tiny-L8-D32", "--flops", "1e13", "--g", "2"]) == 0
    out = capsys.readouterr().out
    warnings = [ln for ln in out.splitlines() if ln.startswith("warning: ")]
    lo, hi = PAPER_EQ2.flops_range
    assert any(f"outside {lo:.3g}–{hi:.3g} FLOPs, the range Eq. 2 was fitted on" in w for w in warnings), out
    assert any("past the whole budget" in w for w in warnings), out
    assert "note: " not in out  # g = 2 is inside the recommended range


def test_regime_warnings():
    # 1e20 FLOPs on a 7B target: ≈ 2.5 tokens per target param, below the paper's ≳ 20
    plan = plan_growth("stack-7b", flops=1e20)
    assert any("below the paper's regime (≳ 20)" in w for w in plan.warnings)
    # g outside 2–4 is a note, a 1-layer base a warning
    plan = plan_growth("stack-1.1b", flops=8e20, g=24)
    assert any("outside the paper's recommended g = 2–4" in n for n in plan.notes)
    assert any("1-layer base" in w for w in plan.warnings)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--target", "tinyllama-1.1b", "--flops", "1e21"],
            "--target: unknown model preset 'tinyllama-1.1b'; valid: tiny-d{N}, tiny-L{L}-D{D}, stack-410m",
        ),
        (["--target", "stack-1.1b"], "give exactly one of --flops C and --tokens T (the budget), got neither"),
        (["--target", "stack-1.1b", "--flops", "1e21", "--tokens", "1e11"], "got both"),
        (["--target", "stack-1.1b", "--flops", "0"], "--flops must be a positive number, got 0.0"),
        (["--target", "stack-1.1b", "--tokens=-5e9"], "--tokens must be a positive number, got -5000000000.0"),
        (
            ["--target", "stack-1.1b", "--flops", "1e21", "--g", "5"],
            "--g 5 does not divide stack-1.1b's n_layer = 24; valid: 2, 3, 4, 6, 8, 12, 24",
        ),
        (["--target", "stack-1.1b", "--flops", "1e21", "--g", "1"], "--g must be an integer ≥ 2"),
        (["--target", "stack-1.1b", "--flops", "1e21", "--g", "two"], "argument --g: invalid int value: 'two'"),
        (
            ["--target", "stack-1.1b", "--flops", "1e15"],
            "the budget C = 1e+15 FLOPs is smaller than one optimizer step of the 6-layer base (2,097,152 tokens ×",
        ),
        (
            ["--target", "tiny-L8-D32", "--tokens", "100"],
            "smaller than one optimizer step of the 2-layer base (2,048 tokens ×",
        ),
        (
            ["--target", "stack-1.1b", "--flops", "1e21", "--fit", "no/such/sweep"],
            "--fit no/such/sweep: sweep dir no/such/sweep does not exist",
        ),
    ],
)
def test_bad_input_is_one_line(args, message, capsys):
    assert cli_main(["plan-growth", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("stacking plan-growth: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err, captured.err


def test_unknown_preset_suggests_the_close_name(capsys):
    assert cli_main(["plan-growth", "--target", "tinyllama-1.1b", "--flops", "1e21"]) == 2
    assert "(did you mean 'tiny-llama-1.1b'?)" in capsys.readouterr().err


def test_fit_on_the_fixture_sweep(capsys):
    """sweep_small has G_stack g = 2 at d = 2.5M, 10M, 40M for three sizes: Eq. 2 refitted as the report does."""
    sweep = load_sweep(SWEEP)
    iso = fit_isoflop(isoflop_points(sweep))
    good = iso[iso["interior"]]
    law = fit_eq2(good["N"], good["budget"], good["d_opt"])
    plan = plan_growth("tiny-L8-D128", flops=1e15, g=2, fit_dir=str(SWEEP))
    assert plan.fitted is not None
    assert (plan.fitted.law.a, plan.fitted.law.b, plan.fitted.law.c) == pytest.approx((law.a, law.b, law.c))
    n = plan.target_params_total
    assert plan.fitted.d == pytest.approx(10 ** (law.a * math.log10(n) + law.b / math.log10(1e15) + law.c))
    assert plan.paper.d == pytest.approx(eq2_by_hand(n, 1e15))
    assert not plan.fitted.warnings  # N and C inside the sweep's points, g = the sweep's g
    assert (
        cli_main(["plan-growth", "--target", "tiny-L8-D128", "--flops", "1e15", "--g", "2", "--fit", str(SWEEP)]) == 0
    )
    out = capsys.readouterr().out
    assert f"Eq. 2 fitted on {SWEEP}" in out and "12 IsoFLOP minima of G_stack g = 2" in out
    assert out.count("  d = ") == 2  # both predictions
    # the planned g differs from the sweep's, and N lies outside its sizes: both said
    plan = plan_growth("tiny-L8-D32", flops=1e15, g=4, fit_dir=str(SWEEP))
    assert any("not the planned g = 4" in w for w in plan.fitted.warnings)
    assert any("outside the sweep's target sizes" in w for w in plan.fitted.warnings)


def test_fit_on_a_sweep_with_too_few_timings_is_one_line(tmp_path, capsys):
    """The fixture without its d = 2.5M runs: 2 growth timings per target, no IsoFLOP curve, no Eq. 2 fit."""
    results = pd.read_csv(SWEEP / "results.csv")
    results[results["grow_at_tokens"] != 2_500_000].to_csv(tmp_path / "results.csv", index=False)
    shutil.copytree(SWEEP / "runs", tmp_path / "runs")
    assert (
        cli_main(["plan-growth", "--target", "tiny-L8-D128", "--flops", "1e15", "--g", "2", "--fit", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stacking plan-growth: error: --fit ")
    assert "cannot support an Eq. 2 fit: no (target, op, g) has ≥ 3 finished growth timings d" in err


def renamed_fixture(tmp_path: Path, keep=lambda r: r) -> Path:
    """sweep_small with its toy-1M target named tiny-L8-D64 (a preset plan-growth can account for)."""
    results = pd.read_csv(SWEEP / "results.csv")
    results["target"] = results["target"].replace("toy-1M", "tiny-L8-D64")
    keep(results).to_csv(tmp_path / "results.csv", index=False)
    shutil.copytree(SWEEP / "runs", tmp_path / "runs")
    return tmp_path


def test_liew_kato_timing_from_a_sweep(tmp_path, capsys):
    """The fixture's G_stack g = 2 curves at d = 2.5M, 10M, 40M: Liew & Kato fitted on them, and plan-growth's d
    the law's optimum on the plan's own budget line (its FLOPs/token), inside the sweep's d's."""
    from analysis.growth_laws import fit_liew_kato, fit_points, optimal_d1

    path = renamed_fixture(tmp_path)
    plan = plan_growth("tiny-L8-D64", flops=3e14, g=2, fit_dir=str(path))
    pts = fit_points(load_sweep(path), "G_stack", target="tiny-L8-D64", g=2.0, direction="depth")
    assert set(pts["D1"]) == {2.5e6, 1e7, 4e7} and set(pts["reading"]) == {"mid"}
    fit = fit_liew_kato(pts["D1"], pts["D2"], pts["loss"])
    assert plan.lk.law.params == pytest.approx(fit.params, rel=1e-6)
    best = optimal_d1(fit, 3e14, plan.base_flops_per_token, plan.target_flops_per_token, (2.5e6, 4e7))
    assert plan.lk.d == pytest.approx(best["d1"]) and plan.lk.loss == pytest.approx(best["loss"])
    assert plan.lk.tokens_after == pytest.approx((3e14 - plan.lk.base_flops) / plan.target_flops_per_token)
    assert 2.5e6 <= plan.lk.d <= 4e7 and plan.lk.d_ci[0] <= plan.lk.d <= plan.lk.d_ci[1]
    assert plan.fitted is not None  # Eq. 2 from the other targets' minima as before
    cli_main(["plan-growth", "--target", "tiny-L8-D64", "--flops", "3e14", "--g", "2", "--fit", str(path)])
    out = capsys.readouterr().out
    assert f"Liew & Kato L(D1, D2) = A·D1^-α1·D2^(-α2 + α3·ln D1) + E fitted on {path}:" in out
    assert "G_stack g = 2 on tiny-L8-D64, mid: " in out and " at 3 d's (2.5M–40M)" in out
    assert "d 95 % bootstrap interval [" in out and "predicted loss at d: " in out
    # another operator, or a g the sweep does not have: a note, the Eq. 2 fit still printed
    plan = plan_growth("tiny-L8-D64", flops=3e14, g=4, fit_dir=str(path))
    assert plan.lk is None and plan.fitted is not None
    assert any(n.startswith(f"Liew & Kato not fitted on {path}: no finished grown run") for n in plan.fit_notes)


def test_a_sweep_that_supports_neither_law_is_one_line(tmp_path, capsys):
    """At one growth timing d there is neither an IsoFLOP valley nor a D1 to fit α1 on: both reasons, one line."""
    path = renamed_fixture(tmp_path, keep=lambda r: r[r["grow_at_tokens"].isna() | (r["grow_at_tokens"] == 1e7)])
    argv = ["plan-growth", "--target", "tiny-L8-D64", "--flops", "3e14", "--g", "2", "--fit", str(path)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot support an Eq. 2 fit" in err
    assert "and no Liew & Kato fit: D1 takes a single value (10M): α1 and α3 are not identifiable" in err
