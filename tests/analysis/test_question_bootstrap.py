"""The paired bootstrap over a task's questions (analysis/question_bootstrap.py), on the committed export
results/factor-replicate, whose eval records hold nextline_mc's per-question scores (`per_doc`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.downstream import downstream_table
from analysis.loss_table import loss_table
from analysis.question_bootstrap import question_bootstrap_table
from analysis.sweep import AnalysisError, load_sweep
from analysis.val_bootstrap import resample_counts
from stacking.cli import main as cli_main

FACTOR = Path(__file__).parents[2] / "results" / "factor-replicate"
G2 = "G_stack g=2 d=2.34M"


def _record(sweep_dir: Path, run_id: str) -> dict:
    (path,) = (sweep_dir / "runs" / run_id / "eval").glob("tokens-*_nextline_mc+heldout_ppl_limit500.json")
    return json.loads(path.read_text())


def test_question_bootstrap_is_the_paired_per_question_difference_resampled():
    sweep = load_sweep(FACTOR)
    table = question_bootstrap_table(sweep).set_index(["method", "task", "metric", "reading"])
    row = table.loc[(G2, "nextline_mc", "acc", "annealed")]
    assert row["seeds"] == 3 and row["questions"] == 500 and row["resamples"] == 1000
    # the seed-mean difference is the downstream table's (per-question scores average to lm-eval's acc)
    down = downstream_table(sweep, loss_table(sweep)).set_index(["method", "task", "metric"])
    assert row["diff"] == pytest.approx(down.loc[(G2, "nextline_mc", "acc"), "annealed_vs_scratch"], abs=1e-12)
    # by hand from the export's files: each seed's f = 1 cooldowns, grown − scratch per question
    main, cool = sweep.runs(), sweep.runs("cooldown")
    full = cool[np.isclose(cool["anneal_fraction"].astype(float), 1.0)]
    annealed = dict(zip(full["parent_run"], full["run_id"]))
    rows = []
    for seed in (4, 5, 6):
        mine = main[main["seed"] == seed]
        grown = mine[(mine["kind"] == "grown") & mine["run_id"].str.contains("G_stack-depth-g2-")]["run_id"].item()
        scratch = mine[mine["kind"] == "scratch"]["run_id"].item()
        a, b = (np.array(_record(FACTOR, annealed[r])["per_doc"]["nextline_mc"]["acc"]) for r in (grown, scratch))
        rows.append(a - b)
    d = np.stack(rows)
    assert d.mean() == pytest.approx(row["diff"], abs=1e-12)
    boot = (resample_counts(500, 1000, 0) @ d.T / 500).mean(axis=1)
    assert row["question_lo"] == pytest.approx(np.percentile(boot, 2.5), abs=1e-12)
    assert row["question_hi"] == pytest.approx(np.percentile(boot, 97.5), abs=1e-12)
    assert row["question_lo"] < row["diff"] < row["question_hi"]
    assert ("scratch", "nextline_mc", "acc", "annealed") not in table.index
    assert not any(t == "heldout_ppl" for t in table.index.get_level_values("task"))  # no per-question number


def test_runs_scored_on_other_questions_are_refused(tmp_path):
    copy = tmp_path / "factor"
    shutil.copytree(FACTOR, copy, ignore=shutil.ignore_patterns("report"))
    (path,) = (copy / "runs").glob("scratch-*-s5-*/eval/tokens-*_limit500.json")
    rec = json.loads(path.read_text())
    rec["per_doc"]["nextline_mc"]["docs_sha256"] = "0" * 64
    path.write_text(json.dumps(rec))
    with pytest.raises(AnalysisError, match="scored on different nextline_mc questions"):
        question_bootstrap_table(load_sweep(copy))


def test_loss_table_prints_the_question_ci(capsys):
    assert cli_main(["loss-table", str(FACTOR)]) == 0
    out = capsys.readouterr().out
    assert "seed CI and question CI" in out
    assert f"| tiny-L8-D64 | {G2} | nextline_mc acc | annealed | 3 | 500 |" in out
