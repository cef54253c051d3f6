"""The README's main job, shrunk: the demo grid's runs (same ops, g, kinds) at toy budgets, then the report."""

from pathlib import Path

import pandas as pd
import yaml

from stacking.cli import main as cli_main

DEMO = Path(__file__).parent.parent / "experiments" / "grids" / "demo.yaml"


def test_demo_grid_shrunk_runs_end_to_end_and_reports(tiny_data, tmp_path, capsys):
    grid = yaml.safe_load(DEMO.read_text())
    # same experiment, toy sizes: a narrower target, budgets / 64, the test dataset
    grid["targets"] = ["tiny-L4-D32"]
    grid["d"] = [4096]
    grid["grown"]["tokens"] = 12288
    grid["defaults"].update(data_dir=str(tiny_data), seq_len=32, micro_batch_size=8, global_batch_tokens=256,
                            warmup_tokens=1024, val_every_tokens=2048, val_tokens=2048)
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

    assert cli_main(["report", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| tiny-L4-D32 | G_stack | 2 |" in out and "| tiny-L4-D32 | G_zero | 2 |" in out
    assert out.strip().endswith("report.md")
    report = sweep / "report"
    md = (report / "report.md").read_text()
    assert "## Speed-ups" in md and "figures/curves_tiny-L4-D32.png" in md
    for name in ("curves_tiny-L4-D32.png", "speedups.png"):
        assert (report / "figures" / name).stat().st_size > 10_000
    speedups = pd.read_csv(report / "speedups.csv")
    assert set(speedups["op"]) == {"G_stack", "G_zero"}
    assert set(speedups["reading"]) == {"mid", "annealed"}  # both readings, from the curves and the cooldowns
