"""A compact export of a sweep (analysis/export.py) gives the same report tables as the sweep dir; analysis/rebuild.py
rebuilds every export's report; the readers take metrics.csv.gz."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import export_main
from analysis.export import evaluation_rows, export_sweep
from analysis.loss_table import format_loss_table, loss_table
from analysis.rebuild import main as rebuild_main
from analysis.rebuild import rebuild
from analysis.report import write_report
from analysis.sweep import AnalysisError, load_sweep

SWEEP = Path(__file__).parents[1] / "fixtures" / "sweep_small"
TABLES = ("speedups.csv", "speedup_runs.csv", "losses.csv", "fits.json")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results") / "sweep_small"
    export_sweep(SWEEP, out)
    return out


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_export_then_report_gives_the_same_tables(exported, tmp_path):
    full = write_report(SWEEP, tmp_path / "full", bootstrap=0)
    copy = write_report(exported, tmp_path / "copy", bootstrap=0)
    for name in TABLES:
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "copy" / name).read_bytes(), name
    assert copy.headline == full.headline
    assert format_loss_table(loss_table(exported)) == format_loss_table(loss_table(SWEEP))
    body = lambda p: p.read_text().split("\n", 1)[1]
    assert body(full.path) == body(copy.path)


def test_export_holds_gzipped_evaluation_rows_only(exported):
    runs = load_sweep(SWEEP).results
    assert sorted(p.name for p in exported.iterdir()) == ["export.json", "results.csv", "runs"]
    rid, rel = runs["run_id"].iloc[0], runs["run_dir"].iloc[0]
    assert not (exported / rel / "metrics.csv").exists()
    assert sorted(p.name for p in (exported / rel).iterdir()) == ["metrics.csv.gz", "summary.json"]
    full = pd.read_csv(SWEEP / rel / "metrics.csv")
    small = pd.read_csv(exported / rel / "metrics.csv.gz")
    pd.testing.assert_frame_equal(small, full[full["val_loss"].notna()].reset_index(drop=True))
    assert load_sweep(exported).curve(rid).equals(load_sweep(SWEEP).curve(rid))
    info = json.loads((exported / "export.json").read_text())
    assert info["runs"] == len(runs) and info["missing"] == [] and info["bytes"] < 150_000


def test_export_is_byte_reproducible(exported, tmp_path):
    again = tmp_path / "again"
    export_sweep(SWEEP, again)
    files = sorted(p.relative_to(exported) for p in exported.rglob("*") if p.is_file() and p.name != "export.json")
    assert files and all((exported / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_evaluation_rows_keep_the_header_and_every_val_column():
    text = b"step,tokens,flops,train_loss,val_loss,val_loss_code\n0,0,0,,6.1,6.2\n1,8,9,5.0,,\n2,16,18,4.0,,4.5\n"
    want = b"step,tokens,flops,train_loss,val_loss,val_loss_code\n0,0,0,,6.1,6.2\n2,16,18,4.0,,4.5\n"
    assert evaluation_rows(text) == want


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_export_copies_plan_grid_windows_and_the_seed_spread_file(tmp_path):
    src = tmp_path / "sweep"
    shutil.copytree(SWEEP, src)
    grid_dir = tmp_path / "grids"
    (grid_dir / "reference").mkdir(parents=True)
    write_report(SWEEP, tmp_path / "ref", bootstrap=0)
    shutil.copy(tmp_path / "ref" / "speedups.csv", grid_dir / "reference" / "spread.csv")
    (grid_dir / "reference" / "spread.meta.json").write_text(json.dumps({"format": 1, "runs": []}))
    (src / "grid.yaml").write_text("name: small\nseed_spread: reference/spread.csv\n")
    (src / "plan.json").write_text(json.dumps({"grid": str(grid_dir / "g.yaml"), "git": {"sha": "abc"}, "runs": []}))
    rel = load_sweep(src).results["run_dir"].iloc[0]
    (src / rel / "val_windows.json").write_text(json.dumps({"data_id": "data:x", "seq_len": 8, "offsets": [1, 2]}))
    (src / rel / "last.ckpt").write_bytes(b"weights")
    out = tmp_path / "out"
    export_sweep(src, out)
    assert (out / "plan.json").is_file() and (out / "grid.yaml").is_file()
    assert (out / "reference" / "spread.csv").is_file() and not (out / rel / "last.ckpt").exists()
    assert (out / "reference" / "spread.meta.json").is_file()  # the reference's sidecar travels with it
    assert json.loads(gzip.decompress((out / rel / "val_windows.json.gz").read_bytes()))["offsets"] == [1, 2]
    shutil.rmtree(grid_dir)  # the export reads its own copy of the reference
    md = write_report(out, tmp_path / "rep", bootstrap=0).path.read_text()
    assert "Seed spread of this configuration" in md and "code: git abc" in md
    assert (
        "git not recorded; versions not recorded; data id not recorded; run configurations not recorded" in md
    )  # read from the export's sidecar


def test_export_refuses_to_overwrite_and_to_write_into_the_sweep(tmp_path, capsys):
    out = tmp_path / "out"
    assert export_main([str(SWEEP), str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: 114 runs, ")
    assert export_main([str(SWEEP), str(out)]) == 2
    assert "give --overwrite" in capsys.readouterr().err
    (out / "runs" / "stale").mkdir()
    assert export_main([str(SWEEP), str(out), "--overwrite"]) == 0
    assert not (out / "runs" / "stale").exists()
    other = tmp_path / "other"
    (other / "x").mkdir(parents=True)
    with pytest.raises(AnalysisError, match="holds no export.json"):
        export_sweep(SWEEP, other, overwrite=True)
    with pytest.raises(AnalysisError, match="must lie outside the sweep dir"):
        export_sweep(SWEEP, SWEEP / "export")
    assert export_main([str(tmp_path / "nope"), str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_rebuild_writes_every_exports_report(exported, tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(exported, root / "a")
    (root / "notes").mkdir()  # a folder without results.csv is not an export
    written = rebuild(root, bootstrap=0)
    assert list(written) == [root / "a"]
    assert (root / "a" / "report" / "report.md") in written[root / "a"]
    assert (root / "a" / "report" / "speedups.csv").read_bytes() == (
        write_report(SWEEP, tmp_path / "full", bootstrap=0).path.parent / "speedups.csv"
    ).read_bytes()
    assert "wrote " in capsys.readouterr().out
    assert rebuild_main([str(tmp_path / "empty_missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
