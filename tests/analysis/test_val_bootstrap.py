"""The bootstrap over validation documents (analysis/val_bootstrap.py) on synthetic per-document losses: identical
runs give a zero-width interval, a difference carried by one document widens the doc CI (and one spread evenly over
the documents does not), the rng's seed makes it reproducible, runs of other windows are refused, and the loss
table and report show it only when the runs have val_docs.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sweep_helpers import results_row

from analysis.cli import loss_table_main
from analysis.loss_table import format_loss_table, loss_table
from analysis.speedup import mean_ci
from analysis.sweep import AnalysisError, load_sweep
from analysis.val_bootstrap import (
    DocLosses,
    paired_bootstrap,
    resample_counts,
    val_bootstrap_section,
    val_bootstrap_table,
)
from stacking.val_docs import FILE

GROWN = {"op": "G_stack", "direction": "depth", "g": 2, "grow_at_tokens": 100}
TOKENS = np.full(10, 100.0)  # 10 documents of 100 target tokens
BASE = 2.0 + 0.1 * np.arange(10)  # scratch's per-token loss on each document


def write_sweep(path, grown_loss, *, with_files: bool = True):
    """Seeds 0–2: scratch and G_stack runs with f = 1 cooldowns; each run's val_docs.json holds per-token losses
    ``BASE + seed offset`` (scratch; its cooldown 0.3 lower) and ``grown_loss(seed)`` (grown; cooldown 0.3 lower)."""
    rows = []
    for seed in range(3):
        scratch = BASE + 0.02 * seed
        per_run = {
            f"scratch-s{seed}": scratch,
            f"scratch-s{seed}-f100": scratch - 0.3,
            f"grown-s{seed}": grown_loss(seed, scratch),
            f"grown-s{seed}-f100": grown_loss(seed, scratch) - 0.3,
        }
        rows += [
            results_row(f"scratch-s{seed}", "scratch", seed, 0.0),
            results_row(
                f"scratch-s{seed}-f100", "cooldown", seed, 0.0, parent_run=f"scratch-s{seed}", anneal_fraction=1
            ),
            results_row(f"grown-s{seed}", "grown", seed, 0.0, **GROWN),
            results_row(
                f"grown-s{seed}-f100", "cooldown", seed, 0.0, parent_run=f"grown-s{seed}", anneal_fraction=1, **GROWN
            ),
        ]
        for row in rows[-4:]:
            row["final_val_loss"] = float(np.average(per_run[row["run_id"]], weights=TOKENS))
            if with_files:
                write_val_docs(path / row["run_dir"], per_run[row["run_id"]])
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    return path


def write_val_docs(run_dir, per_token_loss, offsets="abc"):
    docs = [
        {"index": i, "start": 1000 * i, "tokens": int(t), "loss_sum": float(t * x)}
        for i, (t, x) in enumerate(zip(TOKENS, per_token_loss))
    ]
    record = {"format": 1, "data_id": "data:x", "seq_len": 100, "n_windows": 10, "offsets_sha256": offsets}
    (run_dir / FILE).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / FILE).write_text(json.dumps(record | {"documents": docs}))


def shifted(seed, scratch):  # grown 0.05 lower on every document, a little more for seed 1
    return scratch - 0.05 - 0.01 * (seed == 1)


def one_document(seed, scratch):  # the same total difference, all of it on document 0
    out = scratch.copy()
    out[0] -= 10 * (0.05 + 0.01 * (seed == 1))
    return out


def test_identical_runs_give_a_zero_width_interval(tmp_path):
    t = val_bootstrap_table(load_sweep(write_sweep(tmp_path / "s", lambda seed, scratch: scratch)))
    assert list(t["reading"]) == ["mid", "annealed"] and list(t["seeds"]) == [3, 3]
    assert (t[["diff", "seed_lo", "seed_hi", "doc_lo", "doc_hi", "doc_sd"]].to_numpy() == 0).all()


def test_a_difference_on_one_document_widens_the_doc_ci(tmp_path):
    even = val_bootstrap_table(load_sweep(write_sweep(tmp_path / "even", shifted)))
    one = val_bootstrap_table(load_sweep(write_sweep(tmp_path / "one", one_document)))
    # the same per-seed differences (−0.05, −0.06, −0.05): the same mean and seed CI, the loss table's
    m, lo, hi = mean_ci([-0.05, -0.06, -0.05])
    for t in (even, one):
        assert t["diff"].to_numpy() == pytest.approx([m, m]) and t["seed_lo"].to_numpy() == pytest.approx([lo, lo])
        assert t["seed_hi"].to_numpy() == pytest.approx([hi, hi]) and list(t["documents"]) == [10, 10]
    losses = loss_table(load_sweep(tmp_path / "one")).set_index("method").loc["G_stack g=2 d=100"]
    assert losses["final_val_loss_vs_scratch"] == pytest.approx(m)
    # spread evenly, any draw of documents gives the same difference; on one document it hangs on that document
    assert even["doc_hi"].to_numpy() - even["doc_lo"].to_numpy() == pytest.approx([0, 0], abs=1e-12)
    width = one["doc_hi"] - one["doc_lo"]
    assert (width > 0.05).all() and (width > one["seed_hi"] - one["seed_lo"]).all()
    assert (one["doc_lo"] < m).all() and (one["doc_hi"] == 0).all()  # a draw without document 0: no difference


def test_the_rng_seed_makes_it_reproducible(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "s", one_document))
    a, b = val_bootstrap_table(sweep, resamples=200, seed=1), val_bootstrap_table(sweep, resamples=200, seed=1)
    pd.testing.assert_frame_equal(a, b)
    c = val_bootstrap_table(sweep, resamples=200, seed=2)
    assert not np.allclose(a["doc_sd"], c["doc_sd"]) and (a["resamples"] == 200).all()


def test_resamples_are_draws_of_all_documents_shared_by_every_run():
    counts = resample_counts(10, 500, 0)
    assert counts.shape == (500, 10) and (counts.sum(axis=1) == 10).all()
    assert 0.3 < (counts[:, 0] == 0).mean() < 0.4  # (1 − 1/10)^10 ≈ 0.35 of the draws leave a document out
    run = lambda x: DocLosses(("d", 1, "o"), np.arange(3), np.array([1.0, 2.0, 3.0]), np.array(x))
    pairs = [(run([1.0, 2.0, 3.0]), run([2.0, 2.0, 3.0])), (run([1.0, 4.0, 3.0]), run([1.0, 2.0, 3.0]))]
    # seed 0: −1/6; seed 1: +2/6; one draw: documents 0, 0, 2 → weights 2, 0, 1: (−2/5 + 0) / 2
    boot = paired_bootstrap(pairs, np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0]]))
    assert boot == pytest.approx([(-1 / 6 + 2 / 6) / 2, (-2 / 5 + 0) / 2])


def test_runs_of_other_windows_are_refused(tmp_path):
    path = write_sweep(tmp_path / "s", shifted)
    write_val_docs(path / "runs" / "scratch-s1", BASE, offsets="other")
    with pytest.raises(AnalysisError, match=r"runs grown-s1 and scratch-s1 have per-document validation losses of"):
        val_bootstrap_table(load_sweep(path))


def test_shown_only_with_val_docs(tmp_path, capsys):
    without = load_sweep(write_sweep(tmp_path / "without", shifted, with_files=False))
    assert val_bootstrap_table(without).empty and val_bootstrap_section(without).markdown == []
    assert loss_table_main([str(without.path)]) == 0
    assert capsys.readouterr().out == format_loss_table(loss_table(without)) + "\n"
    with_files = write_sweep(tmp_path / "with", one_document)
    sec = val_bootstrap_section(load_sweep(with_files))
    assert list(sec.csv) == ["val_bootstrap.csv"] and "| doc CI (95 %) |" in "\n".join(sec.markdown)
    assert loss_table_main([str(with_files)]) == 0
    out = capsys.readouterr().out
    assert "doc CI (95 %)" in out and "| tiny | G_stack g=2 d=100 | annealed | 3 | 10 | -0.0533 |" in out
