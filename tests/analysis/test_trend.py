"""`stacking trend`: the gain against size and budget across sweeps, read off the committed 8-seed exports
(results/seeds-demo, results/seeds-demo_torch_init) and checked against the loss table's numbers by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.loss_table import equal_flops_table, loss_table
from analysis.sweep import AnalysisError, load_sweep
from analysis.trend import sweep_trend, trend_table
from stacking.cli import main as cli_main

RESULTS = Path(__file__).parents[2] / "results"
DEMO, TORCH = RESULTS / "seeds-demo", RESULTS / "seeds-demo_torch_init"
N_DEMO = 117_280  # tiny-L8-D32's non-embedding parameters
SCRATCH_TOKENS = 1_812_480


def test_the_rows_are_the_equal_flops_readings_with_their_axes():
    t = sweep_trend(DEMO)
    eq = equal_flops_table(DEMO)
    assert len(t) == len(eq) == 12  # G_stack g = 2, 4, 8 × 4 budgets
    assert np.allclose(t["diff"], eq["annealed_vs_scratch"]) and np.allclose(t["diff_ci"], eq["annealed_vs_scratch_ci"])
    assert set(t["params_non_embedding"]) == {N_DEMO} and set(t["init"]) == {"tinyllama"} and set(t["lr"]) == {0.012}
    row = t[(t["method"] == "G_stack g=2 d=328K") & (t["fraction"] == 0.25)].iloc[0]
    assert row["tokens_per_param"] == pytest.approx(0.25 * SCRATCH_TOKENS / N_DEMO)  # 3.86
    assert row["diff"] == pytest.approx(-0.0832, abs=5e-5) and row["seeds"] == 8
    both = trend_table([TORCH, DEMO])
    assert list(both["sweep"].unique()) == ["seeds-demo", "seeds-demo_torch_init"]  # same N: by name
    assert set(both[both["sweep"] == "seeds-demo_torch_init"]["init"]) == {"torch_default"}


def test_without_equal_flops_cooldowns_only_the_full_budget(tmp_path):
    """Grown cooldowns at f < 1 sit at other FLOPs than scratch's: without at_scratch_flops only f = 1 is read."""
    shutil.copytree(DEMO, tmp_path / "s", ignore=shutil.ignore_patterns("report"))
    res = pd.read_csv(tmp_path / "s" / "results.csv")
    extra = res["run_id"].str.contains("-at-scratch-")  # the cooldowns at_scratch_flops adds
    res[~extra].drop(columns="at_flops_of").to_csv(tmp_path / "s" / "results.csv", index=False)
    t = sweep_trend(tmp_path / "s")
    lt = loss_table(load_sweep(DEMO)).set_index("method")
    assert list(t["fraction"]) == [1.0, 1.0, 1.0]
    for _, r in t.iterrows():
        assert r["diff"] == pytest.approx(lt.loc[r["method"], "annealed_vs_scratch"])
        assert r["tokens_per_param"] == pytest.approx(SCRATCH_TOKENS / N_DEMO)


def test_the_command_writes_the_table_and_the_figure(tmp_path, capsys):
    assert cli_main(["trend", str(DEMO), str(TORCH), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "| seeds-demo | 0.117M | tinyllama, 0.012 | G_stack g=2 d=328K | 0.25 | 3.86 | 8 | -0.0832 ± 0.0245 |" in out
    assert pd.read_csv(tmp_path / "t" / "trend.csv").shape[0] == 12 + 8  # g = 8 in seeds-demo only
    assert (tmp_path / "t" / "trend.png").stat().st_size > 10_000


def test_a_sweep_without_grown_runs_is_one_line(tmp_path, capsys):
    assert cli_main(["trend", str(RESULTS / "lr-scratch-demo_torch_init"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no grown run has an annealed loss paired with its seed's scratch run" in err


def test_no_sweep_is_an_error():
    with pytest.raises(AnalysisError, match="at least one sweep"):
        trend_table([])


def test_rebuild_writes_the_trend_of_every_export_it_can_read(tmp_path, capsys):
    """`python -m analysis.rebuild` ends with results/trend/: the trend over the exports with paired runs, the
    others (an LR sweep) named and left out."""
    from analysis.rebuild import write_trend

    for name in ("seeds-demo", "lr-scratch-demo_torch_init"):
        (tmp_path / name).symlink_to(RESULTS / name, target_is_directory=True)
    written = write_trend(tmp_path)
    assert written == [tmp_path / "trend" / "trend.csv", tmp_path / "trend" / "trend.png"]
    pd.testing.assert_frame_equal(pd.read_csv(written[0]), sweep_trend(DEMO).astype({"lr": float}), check_dtype=False)
    out = capsys.readouterr().out
    assert "trend: lr-scratch-demo_torch_init left out (" in out and "trend: 12 rows from 1 sweeps" in out


def test_a_plus_entry_pools_two_sweeps_seeds(tmp_path, capsys):
    """`stacking trend A+B`: one sweep's rows from the seeds of both (loss-table --pool), named a+b; the f = 1 row
    equals the pooled loss table's annealed difference."""
    from analysis.pool import pool_sweeps
    from analysis.trend import parse_entry

    replicate = RESULTS / "replicate-demo"
    assert parse_entry(f"{DEMO}+{replicate}") == [DEMO, replicate]
    assert parse_entry(str(DEMO)) == DEMO
    t = trend_table([parse_entry(f"{DEMO}+{replicate}")])
    assert set(t["sweep"]) == {"seeds-demo+replicate-demo"}
    row = t[(t["method"] == "G_stack g=2 d=328K") & (t["fraction"] == 1.0)].iloc[0]
    pooled = loss_table(pool_sweeps([DEMO, replicate])).set_index("method").loc["G_stack g=2 d=328K"]
    # f = 1: the replicate's seeds 0–1 have no at_flops_of mark (its grid lacks at_scratch_flops) but end at
    # scratch's FLOPs, so they pair there too: all 10 seeds, the loss table's annealed reading
    assert row["seeds"] == pooled["seeds"] == 10
    assert row["diff"] == pytest.approx(pooled["annealed_vs_scratch"]) and row["diff"] == pytest.approx(
        -0.0403, abs=5e-5
    )
    below = t[(t["method"] == "G_stack g=2 d=328K") & (t["fraction"] < 1.0)]
    assert list(below["seeds"]) == [8, 8, 8]  # below f = 1 only seeds-demo's at_scratch_flops cooldowns exist
    assert cli_main(["trend", f"{DEMO}+{replicate}", "--out", str(tmp_path / "t")]) == 0
    assert "| seeds-demo+replicate-demo | 0.117M |" in capsys.readouterr().out


def test_rebuild_reads_the_trend_list(tmp_path, capsys):
    """results/trend/sweeps.txt names the trend's entries (a+b pooled); a name that is no export is one error."""
    from analysis.rebuild import write_trend

    for name in ("seeds-demo", "replicate-demo"):
        (tmp_path / name).symlink_to(RESULTS / name, target_is_directory=True)
    (tmp_path / "trend").mkdir()
    (tmp_path / "trend" / "sweeps.txt").write_text("# pooled\nseeds-demo+replicate-demo\n")
    write_trend(tmp_path)
    assert set(pd.read_csv(tmp_path / "trend" / "trend.csv")["sweep"]) == {"seeds-demo+replicate-demo"}
    (tmp_path / "trend" / "sweeps.txt").write_text("seeds-demo+nothing-here\n")
    with pytest.raises(AnalysisError, match="nothing-here is not an exported sweep"):
        write_trend(tmp_path)
