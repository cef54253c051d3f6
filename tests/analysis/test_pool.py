"""`stacking loss-table SWEEP --pool SWEEP_B`: seeds of one comparison pooled across sweeps, on the committed
exports. results/seeds-demo (seeds 2–9) and results/replicate-demo (seeds 0–2 at the main d) configure G_stack
g = 2 / 4 and scratch at 0.11M alike, so they pool to ten seeds (seed 2 is in both: the same run, counted once);
results/replicate-torch-init-tiny_own_lr and -tiny_tinyllama differ in init and LR, so they are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.loss_table import loss_table
from analysis.pool import pool_sweeps
from analysis.sweep import AnalysisError, load_sweep
from stacking.cli import main as cli_main

RESULTS = Path(__file__).parents[2] / "results"
SEEDS, REPLICATE = RESULTS / "seeds-demo", RESULTS / "replicate-demo"
OWN_LR, TINYLLAMA = RESULTS / "replicate-torch-init-tiny_own_lr", RESULTS / "replicate-torch-init-tiny_tinyllama"
G2 = "G_stack g=2 d=328K"


def _main(sweep_dir: Path, method: str) -> pd.DataFrame:
    """Finished main runs of a method ('scratch' or a grown label) with their f = 1 cooldown's loss, by seed."""
    res = pd.read_csv(sweep_dir / "results.csv")
    res = res[res["status"] == "done"]
    label = res["kind"].eq("scratch") if method == "scratch" else res["run_id"].str.contains("G_stack-depth-g2-d327680")
    main = res[label & res["kind"].isin(["grown", "scratch"])]
    cool = res[(res["kind"] == "cooldown") & np.isclose(res["anneal_fraction"], 1.0)]
    annealed = dict(zip(cool["parent_run"], cool["final_val_loss"]))
    return pd.DataFrame({"seed": main["seed"], "annealed": main["run_id"].map(annealed)}).set_index("seed")


def test_two_sweeps_of_one_configuration_pool_to_the_union_of_their_seeds():
    pooled = pool_sweeps([SEEDS, REPLICATE])
    table = loss_table(pooled).set_index("method")
    row = table.loc[G2]
    assert row["seeds"] == row["paired"] == 10  # seeds 2–9 here, 0 and 1 from the replicate; 2 once
    assert loss_table(load_sweep(SEEDS)).set_index("method").loc[G2, "seeds"] == 8  # alone
    # by hand: each seed's G_stack − scratch (annealed), seed 2 from the first sweep, 0 and 1 from the second
    grown = pd.concat([_main(SEEDS, G2), _main(REPLICATE, G2).loc[[0, 1]]])
    scratch = pd.concat([_main(SEEDS, "scratch"), _main(REPLICATE, "scratch").loc[[0, 1]]])
    diff = (grown["annealed"] - scratch.loc[grown.index, "annealed"]).to_numpy()
    assert len(diff) == 10
    assert row["annealed_vs_scratch"] == pytest.approx(diff.mean(), abs=1e-12)
    half = 2.2621571627409915 * diff.std(ddof=1) / np.sqrt(10)  # t(0.975, 9)
    assert row["annealed_vs_scratch_ci"] == pytest.approx(half, rel=1e-9)
    assert table.loc["G_stack g=8 d=328K", "seeds"] == 8  # only seeds-demo has g = 8
    assert table.loc["G_zero g=2 d=328K", "seeds"] == 3  # only the replicate has G_zero


def test_a_seed_in_both_sweeps_is_counted_once_and_said(capsys):
    pooled = pool_sweeps([SEEDS, REPLICATE])
    dup = {(d["method"], d["seed"]) for d in pooled.duplicates}
    assert ("tiny-L8-D32 scratch", 2) in dup and (f"tiny-L8-D32 {G2}", 2) in dup
    assert all(d["loss_kept"] == d["loss_dropped"] for d in pooled.duplicates)  # two grids, one run: same to the bit
    lines = pooled.summary()
    assert any(line.startswith(f"in both {SEEDS} and {REPLICATE}, counted once: 9 runs") for line in lines)
    assert not any(line.startswith("WARNING") for line in lines)
    assert pooled.sources[1][1][f"tiny-L8-D32 {G2}"] == [0, 1]


def test_a_repeat_that_does_not_reproduce_is_a_warning(tmp_path):
    copy = tmp_path / "replicate-demo"
    shutil.copytree(REPLICATE, copy, ignore=shutil.ignore_patterns("report"))
    res = pd.read_csv(copy / "results.csv")
    seed2 = (res["kind"] == "scratch") & (res["seed"] == 2)
    res.loc[seed2, "final_val_loss"] += 0.001
    res.to_csv(copy / "results.csv", index=False)
    lines = pool_sweeps([SEEDS, copy]).summary()
    warned = [line for line in lines if line.startswith("WARNING")]
    assert len(warned) == 1 and "tiny-L8-D32 scratch seed 2 does not reproduce" in warned[0]


def test_differently_configured_sweeps_are_refused_naming_the_fields():
    with pytest.raises(AnalysisError) as err:
        pool_sweeps([TINYLLAMA, OWN_LR])
    msg = str(err.value)
    assert msg.startswith("refusing to pool: tiny-L8-D64 G_stack g=2 d=2.34M is configured differently")
    assert "init 'tinyllama' vs 'torch_default'" in msg and "lr 0.00075 vs 0.003" in msg
    with pytest.raises(AnalysisError, match="at least two"):
        pool_sweeps([SEEDS])


def test_the_command_prints_where_the_seeds_came_from(capsys):
    assert cli_main(["loss-table", str(SEEDS), "--pool", str(REPLICATE)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"pooled from {SEEDS}: tiny-L8-D32 {G2} seeds 2,3,4,5,6,7,8,9")
    assert f"| tiny-L8-D32 | {G2} | 10 |" in out
    assert cli_main(["loss-table", str(TINYLLAMA), "--pool", str(OWN_LR)]) == 2  # a bad input, like the others
    err = capsys.readouterr().err
    assert err.startswith("stacking loss-table: error: refusing to pool") and len(err.strip().splitlines()) == 1


def test_contrast_against_pooled_sweeps(capsys):
    """`--contrast B+C`: the other side pooled as --pool pools it (TinyLlama arm: seeds 1–3 + factor's 4–6)."""
    from analysis.loss_table import contrast_table

    factor = RESULTS / "factor-replicate"
    assert cli_main(["loss-table", str(OWN_LR), "--contrast", f"{TINYLLAMA}+{factor}", "--out", "/dev/null"]) == 0
    out = capsys.readouterr().out
    assert f"pooled from {factor}" in out
    table = contrast_table(OWN_LR, pool_sweeps([TINYLLAMA, factor])).set_index("reading")
    row = table.loc["annealed"]
    assert row["seeds_a"] == 3 and row["seeds_b"] == 6
    line = next(x for x in out.splitlines() if "| annealed |" in x)
    assert f"{row['contrast']:+.4f}" in line and f"[{row['contrast_lo']:+.4f}, {row['contrast_hi']:+.4f}]" in line
