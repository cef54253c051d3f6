"""The report's compute table (analysis/compute.py) on the committed export results/factor-replicate: hours
summed by hand from the runs' own summary.json and eval records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.compute import compute_table
from analysis.report import compute_section
from analysis.sweep import load_sweep

SWEEP = Path(__file__).parents[2] / "results" / "factor-replicate"


def test_compute_table_sums_each_kinds_own_records():
    table = compute_table(load_sweep(SWEEP)).set_index("kind")
    assert list(table.index) == ["base", "grown", "scratch", "cooldown", "total"]
    train, evals = {}, {}
    done = pd.read_csv(SWEEP / "results.csv").query("status == 'done'")
    for kind, rel in zip(done["kind"], done["run_dir"]):
        run = SWEEP / rel
        summary = json.loads((run / "summary.json").read_text())
        train[kind] = train.get(kind, 0.0) + summary["wall_time_s"]
        for path in (run / "eval").glob("tokens-*.json"):
            evals.setdefault(kind, []).append(json.loads(path.read_text())["eval"]["wall_time_s"])
    for kind, seconds in train.items():
        assert table.loc[kind, "train_wall_h"] == pytest.approx(seconds / 3600, rel=1e-9)
        assert table.loc[kind, "eval_wall_h"] == pytest.approx(sum(evals.get(kind, [])) / 3600, rel=1e-9)
        assert table.loc[kind, "eval_runs"] == len(evals.get(kind, []))
    # 3 seeds × g = 2, 4, 8: a base and a grown run each, one scratch run a seed; every run but the bases evaluated,
    # of the cooldowns the f = 1 ones (4 a seed)
    assert table["runs"].to_dict() == {"base": 9, "grown": 9, "scratch": 3, "cooldown": 33, "total": 54}
    assert table.loc["cooldown", "eval_runs"] == 12 and table.loc["base", "eval_runs"] == 0
    assert table.loc["total", "train_wall_h"] == pytest.approx(sum(train.values()) / 3600, rel=1e-9)


def test_the_report_section_shows_the_total():
    sec = compute_section(load_sweep(SWEEP))
    total = compute_table(load_sweep(SWEEP)).iloc[-1]
    assert "## Compute" in sec.markdown
    assert f"| **total** | 54 | **{total['train_wall_h']:.2f}** |" in "\n".join(sec.markdown)
    assert list(sec.csv) == ["compute.csv"]
