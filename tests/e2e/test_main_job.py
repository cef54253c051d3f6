"""The README's main job, shrunk: the demo grid's runs (same ops, g, kinds) at toy budgets, then the report."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.seed_spread import reference_meta
from analysis.sweep import load_sweep
from stacking.cli import main as cli_main

pytestmark = pytest.mark.slow  # end to end: `make test-fast` (-m 'not slow') leaves it out

DEMO = Path(__file__).parents[2] / "experiments" / "grids" / "demo.yaml"


def test_demo_grid_shrunk_runs_end_to_end_and_reports(tiny_data, tmp_path, capsys):
    grid = yaml.safe_load(DEMO.read_text())
    # same experiment, toy sizes: a narrower target, budgets / 64, the test dataset
    grid["targets"] = ["tiny-L4-D32"]
    grid["d"] = [4096]
    grid["grown"] = {"tokens": 12288}  # (demo.yaml gives total_flops: its base FLOPs would leave nothing here)
    grid["defaults"].update(
        data_dir=str(tiny_data),
        seq_len=32,
        micro_batch_size=8,
        global_batch_tokens=256,
        warmup_tokens=1024,
        val_every_tokens=2048,
        val_tokens=2048,
    )
    # the seed spread the report quotes: a seeded sweep's speedups.csv of the same configuration (made up here)
    assert grid["seed_spread"] == "reference/replicate_demo_speedups.csv"
    (tmp_path / "reference").mkdir()
    pd.DataFrame(
        [
            dict(
                target="tiny-L4-D32",
                op="G_stack",
                direction="depth",
                g=2,
                grow_at_tokens=4096,
                reading=r,
                budget_fraction=1.0,
                reference="scratch",
                n_runs=3,
                n_reached=n,
                target_loss=1.7,
                speedup=s,
                speedup_lo=lo,
                speedup_hi=hi,
                tokens_ratio=1.1,
                tokens_ratio_lo=1.0,
                tokens_ratio_hi=1.2,
                note="",
            )
            for r, n, s, lo, hi in (("mid", 3, 0.12, 0.05, 0.19), ("annealed", 2, 0.03, -0.2, 0.26))
        ]
    ).to_csv(tmp_path / "reference" / "replicate_demo_speedups.csv", index=False)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(grid))
    sweep = tmp_path / "sweep"
    assert cli_main(["sweep", str(path), "--out", str(sweep), "--jobs", "2", "--threads", "1"]) == 0
    results = pd.read_csv(sweep / "results.csv")
    n_cool = 3 * len(grid["anneal"]["fractions"])  # 2 grown + 1 scratch main runs, one cooldown per fraction each
    assert sorted(results["kind"]) == ["base"] + ["cooldown"] * n_cool + ["grown", "grown", "scratch"]
    assert set(results["status"]) == {"done"}
    assert sorted(results.loc[results["kind"] == "grown", "op"]) == ["G_stack", "G_zero"]
    capsys.readouterr()

    # its sidecar: this sweep's own runs (numerics hashes from its plan.json), G_stack's final loss moved by 0.01
    meta = reference_meta(load_sweep(sweep), "replicate_demo_speedups.csv")
    moved = next(r for r in meta["runs"] if r["kind"] == "grown" and "G_stack" in r["name"])
    loss = moved["final_val_loss"]
    moved["final_val_loss"] = loss + 0.01
    (tmp_path / "reference" / "replicate_demo_speedups.meta.json").write_text(json.dumps(meta))
    assert cli_main(["report", str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert "warning: seed spread: this sweep's runs do not reproduce the same runs of the reference" in err
    assert f"{moved['name']} {loss:.6g} here, {loss + 0.01:.6g} in the reference)" in err  # the one run moved
    assert "| tiny-L4-D32 | G_stack | 2 |" in out and "| tiny-L4-D32 | G_zero | 2 |" in out
    assert out.strip().endswith("report.md")
    report = sweep / "report"
    md = (report / "report.md").read_text()
    assert "## Speed-ups" in md and "figures/curves_tiny-L4-D32.png" in md
    spread = next(line for line in md.splitlines() if line.startswith("Seed spread of this configuration"))
    assert (
        "G_stack g=2 d=4,096: mid +12.0 %, 95 % CI +5.0 % to +19.0 % (3/3 seeds reach L*); annealed +3.0 %, "
        "95 % CI -20.0 % to +26.0 % (2/3 seeds reach L*)"
    ) in spread and "G_zero" not in spread
    assert "made at git " in spread and "its runs do not reproduce here: see the warning in Notes" in spread
    assert md.index(spread) < md.index("speed-up = FLOPs_scratch")  # under the headline, before the definition
    for name in ("curves_tiny-L4-D32.png", "speedups.png"):
        assert (report / "figures" / name).stat().st_size > 10_000
    speedups = pd.read_csv(report / "speedups.csv")
    assert set(speedups["op"]) == {"G_stack", "G_zero"}
    assert set(speedups["reading"]) == {"mid", "annealed"}  # both readings, from the curves and the cooldowns
