"""The replicate grid, shrunk, is read by the report and a notebook as any other sweep: seeds give a CI, both
readings (mid and annealed) are there, and the tokens per parameter of every base and target are in the plan."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from nbclient import NotebookClient

from experiments.grid import apply_scale
from stacking.cli import main as cli_main

pytestmark = pytest.mark.slow  # end to end: `make test-fast` (-m 'not slow') leaves it out

ROOT = Path(__file__).resolve().parents[2]
REPLICATE = ROOT / "experiments" / "grids" / "replicate.yaml"


def test_replicate_demo_shrunk_reports_seed_cis_and_reads_in_a_notebook(tiny_data, tmp_path, capsys, monkeypatch):
    raw, _ = apply_scale(yaml.safe_load(REPLICATE.read_text()), "demo", "replicate.yaml")
    # the same study at toy size: G_stack and G↑zero at one d, 2 seeds, the demo scale's cooldowns
    raw.pop("overrides", None)
    raw.update(
        targets=["tiny-L4-D32"],
        d=[2048],
        seeds=[0, 1],
        grown={"tokens": 6144, "lr": "target"},
        ops=["G_stack", {"op": "G_zero", "direction": "depth"}],
    )
    raw["defaults"].update(
        data_dir=str(tiny_data),
        seq_len=32,
        micro_batch_size=8,
        global_batch_tokens=256,
        warmup_tokens=512,
        val_every_tokens=256,
        val_tokens=1024,
        checkpoint_every_tokens=4096,
    )
    path = tmp_path / "replicate.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    sweep = tmp_path / "sweep"

    assert cli_main(["sweep", str(path), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "tok/param" in plan and "epochs" in plan  # tokens per parameter of every base at d and every target
    assert cli_main(["sweep", str(path), "--out", str(sweep), "--jobs", "2", "--threads", "1"]) == 0
    results = pd.read_csv(sweep / "results.csv")
    assert set(results["status"]) == {"done"} and sorted(set(results["seed"])) == [0, 1]

    assert cli_main(["report", str(sweep)]) == 0
    speedups = pd.read_csv(sweep / "report" / "speedups.csv")
    final = speedups[
        (speedups["reference"] == "scratch") & (speedups["reading"] == "mid") & (speedups["budget_fraction"] == 1.0)
    ]
    assert set(final["op"]) == {"G_stack", "G_zero"} and set(final["n_runs"]) == {2}
    # two seeds: a Student-t 95 % CI around the mean wherever both seeds reach L* (some L*_p always is)
    both = speedups[(speedups["reference"] == "scratch") & (speedups["n_reached"] == 2)]
    assert len(both) > 0
    for _, r in both.iterrows():
        assert math.isfinite(r["speedup_lo"]) and r["speedup_lo"] <= r["speedup"] <= r["speedup_hi"]
    one = speedups[(speedups["reference"] == "scratch") & (speedups["n_reached"] == 1)]
    assert one["speedup_lo"].isna().all()  # one seed: no CI
    assert set(speedups["reading"]) == {"mid", "annealed"}

    # the paired loss table: grown minus its own seed's scratch, mid and annealed
    from analysis.loss_table import format_loss_table, loss_table

    table = loss_table(sweep).set_index("method")
    assert set(table["seeds"]) == {2} and "scratch" in table.index
    grown = results[results["kind"] == "grown"]
    scratch = results[results["kind"] == "scratch"].set_index("seed")["final_val_loss"]
    stack = grown[grown["op"] == "G_stack"]
    expect = float((stack.set_index("seed")["final_val_loss"] - scratch).mean())
    row = table.loc[next(m for m in table.index if m.startswith("G_stack"))]
    assert abs(row["final_val_loss_vs_scratch"] - expect) < 1e-9 and math.isfinite(row["annealed_vs_scratch"])
    assert "| tiny-L4-D32 | scratch | 2 |" in format_loss_table(loss_table(sweep))
    from analysis.cli import loss_table_main as loss_main
    from analysis.loss_table import per_seed_table

    seeds = per_seed_table(sweep)
    one = seeds[(seeds["run_id"] == stack["run_id"].iloc[0])].iloc[0]
    assert one["final_val_loss_vs_scratch"] == pytest.approx(
        stack["final_val_loss"].iloc[0] - scratch[stack["seed"].iloc[0]]
    )
    assert loss_main([str(sweep), "--per-seed"]) == 0 and loss_main([str(sweep / "nope")]) == 2
    assert "error: sweep dir" in capsys.readouterr().err

    monkeypatch.setenv("STACKING_SWEEP_DIR", str(sweep))
    nb_path = ROOT / "notebooks" / "01_operator_speedups.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(nb_path.parent)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
