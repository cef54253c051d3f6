"""Safeguards of the comparisons: runs evaluated on different validation windows are never paired; comparisons
against a scratch run of another seed are marked; one mean_ci; the report prints the sweep's provenance."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from analysis import loss_table as lt
from analysis.loss_table import format_loss_table, loss_table
from analysis.report import provenance_lines
from analysis.speedup import compute_annealed_speedups, compute_speedups, format_table, mean_ci, speedup_table
from analysis.sweep import AnalysisError, load_sweep
from experiments.provenance import PACKAGES, data_ids, versions

SWEEP = Path(__file__).parents[1] / "fixtures" / "sweep_small"


@pytest.fixture()
def copy(tmp_path) -> Path:
    return Path(shutil.copytree(SWEEP, tmp_path / "sweep"))


def _pair(sweep_dir: Path, target="toy-1M", seed=0):
    """(grown G_stack d=10M run, its scratch run) of one target and seed."""
    r = load_sweep(sweep_dir).results
    g = r[
        (r["kind"] == "grown")
        & (r["target"] == target)
        & (r["op"] == "G_stack")
        & (r["seed"] == seed)
        & (r["grow_at_tokens"] == 10_000_000)
    ].iloc[0]
    s = r[(r["kind"] == "scratch") & (r["target"] == target) & (r["seed"] == seed)].iloc[0]
    return g, s


def _windows(run_dir: Path, offsets) -> None:
    (run_dir / "val_windows.json").write_text(
        json.dumps({"data_id": "data:1", "seq_len": 8, "n_windows": 2, "offsets": offsets})
    )


def test_runs_on_different_validation_windows_are_refused(copy):
    g, s = _pair(copy)
    _windows(copy / g["run_dir"], [0, 10])
    _windows(copy / s["run_dir"], [0, 10])
    assert len(compute_speedups(load_sweep(copy)))  # the same windows: compared
    _windows(copy / s["run_dir"], [0, 11])
    for compute in (compute_speedups, compute_annealed_speedups, loss_table, lt.per_seed_table):
        with pytest.raises(AnalysisError) as err:
            compute(load_sweep(copy))
        msg = str(err.value)
        assert "\n" not in msg and g["run_id"] in msg and s["run_id"] in msg and "validation windows" in msg


def test_a_cooldown_on_other_windows_is_refused(copy):
    g, s = _pair(copy)
    r = load_sweep(copy).results
    cd = r[(r["kind"] == "cooldown") & (r["parent_run"] == g["run_id"])].iloc[0]
    _windows(copy / s["run_dir"], [0, 10])
    _windows(copy / cd["run_dir"], [5, 10])
    compute_speedups(load_sweep(copy))  # the mid reading does not read cooldowns
    with pytest.raises(AnalysisError, match=f"runs {cd['run_id']} and {s['run_id']} were evaluated"):
        compute_annealed_speedups(load_sweep(copy))


def test_unpaired_comparisons_are_marked(copy):
    g, s = _pair(copy, seed=1)
    res = pd.read_csv(copy / "results.csv")
    gone = (res["run_id"] == s["run_id"]) | (res["parent_run"] == s["run_id"])  # seed 1 loses its scratch run
    res[~gone].to_csv(copy / "results.csv", index=False)
    sweep = load_sweep(copy)
    pairs = compute_speedups(sweep)
    mine = pairs[pairs["run_id"] == g["run_id"]]
    assert not mine["paired"].any() and pairs[pairs["target"] != "toy-1M"]["paired"].all()
    table = speedup_table(pairs)
    row = table[
        (table["target"] == "toy-1M")
        & (table["op"] == "G_stack")
        & (table["grow_at_tokens"] == 1e7)
        & (table["budget_fraction"] == 1.0)
    ].iloc[0]
    assert "1/2 unpaired (scratch of another seed)" in row["note"]
    assert "unpaired" not in "".join(table[table["target"] != "toy-1M"]["note"])
    assert "1/2 unpaired" in format_table(table)
    losses = loss_table(sweep)
    one = losses[(losses["target"] == "toy-1M") & (losses["method"] == "G_stack g=2 d=10M")].iloc[0]
    assert one["paired"] == 1 and "| 2 (1 paired) |" in format_loss_table(losses)


def test_one_mean_ci():
    from analysis import downstream

    assert not hasattr(lt, "stats") or lt.mean_ci_half([1.0, 2.0, 4.0])[1] == pytest.approx(
        mean_ci([1.0, 2.0, 4.0])[2] - mean_ci([1.0, 2.0, 4.0])[0]
    )
    assert lt.mean_ci_half([1.0, 2.0, 4.0])[0] == pytest.approx(7 / 3)
    for module in (lt, downstream):
        assert "def mean_ci(" not in Path(module.__file__).read_text()


def test_provenance_records_versions_and_data_ids(tmp_path):
    v = versions()
    assert v["python"] == platform.python_version() and set(PACKAGES) <= set(v) and v["numpy"]
    data = tmp_path / "ds"
    data.mkdir()
    (data / "meta.json").write_text(json.dumps({"tokens": 5, "sources": ["/x"]}))
    run = SimpleNamespace(config=SimpleNamespace(data_dir=str(data), eval_data_dirs={"code": str(data)}))
    ids = data_ids([run, run])
    assert list(ids) == [str(data)] and ids[str(data)].startswith("data:")


def test_the_report_prints_the_provenance(copy):
    plan = {
        "git": {"sha": "0123456789abcdef", "dirty": True},
        "versions": {"python": "3.11.9", "torch": "2.13.0"},
        "data": {"/d/stdlib": "data:5a58"},
        "runs": [],
    }
    (copy / "plan.json").write_text(json.dumps(plan))
    assert provenance_lines(load_sweep(copy)) == [
        "code: git 0123456789ab with uncommitted changes",
        "versions: python 3.11.9, torch 2.13.0",
        "data: data:5a58 (/d/stdlib)",
    ]
    g, _ = _pair(copy)
    _windows(copy / g["run_dir"], [1])
    (copy / "plan.json").write_text(json.dumps({"git": {"sha": "abc", "dirty": False}, "runs": []}))
    lines = provenance_lines(load_sweep(copy))
    assert lines[1].startswith("versions: not recorded") and lines[2].startswith("data: data:1 (from the runs'")
    assert provenance_lines(load_sweep(SWEEP)) == []  # no plan.json
