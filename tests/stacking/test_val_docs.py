"""`stacking val-docs` (stacking/val_docs.py): per-token attribution of validation losses to val documents, the
check against the run's final_val_loss on a real tiny run, and the command's one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_run_config

from stacking.cli import main as cli_main
from stacking.data import load_tokens, read_meta
from stacking.errors import EvalError
from stacking.val_docs import FILE, attribute, document_starts, is_current, val_docs, write_val_docs

EOT = 9


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # module-wide: the tiny run trains on one thread too
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_window_across_a_document_end_is_split_per_token():
    # documents [5 6 EOT] [7 8 1 EOT] [2 EOT] start at 0, 3, 7
    tokens = np.array([5, 6, EOT, 7, 8, 1, EOT, 2, EOT])
    starts = document_starts(tokens, EOT)
    assert starts.tolist() == [0, 3, 7]
    # window at 1 (seq_len 4): targets at 2 (doc 0's EOT), 3, 4, 5 (doc 1); window at 4: targets 5, 6 | 7, 8
    losses = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    counts, sums = attribute(losses, np.array([1, 4]), starts)
    assert counts.tolist() == [1, 5, 2]
    assert sums.tolist() == [1.0, 2.0 + 3.0 + 4.0 + 10.0 + 20.0, 30.0 + 40.0]
    # no EOT: one document
    counts, sums = attribute(losses[:1], np.array([1]), document_starts(tokens, None))
    assert counts.tolist() == [4] and sums.tolist() == [10.0]


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    """A finished 4-step run (tiny-L2-D64, 64 validation windows of 32 tokens)."""
    from stacking.train import run

    tmp = tmp_path_factory.mktemp("valdocs")
    summary = run(tiny_run_config(tmp, tiny_data, max_tokens=1024, val_every_tokens=1024, warmup_tokens=256))
    assert summary["status"] == "done"
    return tmp / "run"


def test_documents_average_to_the_runs_final_val_loss(tiny_run, tiny_data):
    path, rec = write_val_docs(tiny_run)
    assert path == tiny_run / FILE and json.loads(path.read_text()) == rec
    final = json.loads((tiny_run / "summary.json").read_text())["final_val_loss"]
    docs = rec["documents"]
    tokens, loss = sum(d["tokens"] for d in docs), sum(d["loss_sum"] for d in docs)
    assert tokens == rec["n_windows"] * rec["seq_len"] == 64 * 32
    assert loss / tokens == pytest.approx(final, rel=1e-6) and rec["loss"] == pytest.approx(loss / tokens)
    windows = json.loads((tiny_run / "val_windows.json").read_text())
    assert (rec["data_id"], rec["seq_len"], rec["n_windows"]) == (windows["data_id"], 32, len(windows["offsets"]))
    starts = document_starts(np.asarray(load_tokens(tiny_data, "val")), read_meta(tiny_data)["eot_id"])
    assert rec["val_documents"] == len(starts) and len(docs) >= 2
    assert [d["start"] for d in docs] == [int(starts[d["index"]]) for d in docs]
    assert is_current(tiny_run)


def test_a_loss_that_does_not_reproduce_is_refused(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / FILE).unlink(missing_ok=True)
    summary = json.loads((run / "summary.json").read_text())
    summary["final_val_loss"] *= 1.001
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(EvalError, match=r"average to \d\.\d{6} but summary.json's final_val_loss is \d\.\d{6}"):
        val_docs(run)
    assert not (run / FILE).exists()


def test_the_command_writes_then_skips_a_current_file(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / FILE).unlink(missing_ok=True)
    assert cli_main(["val-docs", str(run)]) == 0
    assert "documents, 2048 target tokens, loss " in capsys.readouterr().out and (run / FILE).is_file()
    assert cli_main(["val-docs", str(run)]) == 0
    assert "current, skipped" in capsys.readouterr().out


def test_errors_are_one_line(tiny_run, tiny_data, tmp_path, capsys):
    fresh = shutil.copytree(tiny_run, tmp_path / "fresh")
    (fresh / FILE).unlink(missing_ok=True)
    no_ckpt = shutil.copytree(fresh, tmp_path / "no_ckpt")
    shutil.rmtree(no_ckpt / "checkpoints")
    (no_ckpt / "checkpoints").mkdir()
    cases = [
        ([str(tmp_path / "nope")], "does not exist (expected a run dir or a sweep dir)"),
        ([str(tmp_path)], "is neither a run dir (config.yaml, checkpoints/) nor a sweep dir (results.csv)"),
        ([str(no_ckpt)], "has no checkpoints/tokens-… dir"),
        ([str(fresh), "--data_dir", str(tmp_path)], "has no meta.json"),
    ]
    for argv, message in cases:
        assert cli_main(["val-docs", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("stacking val-docs: error: ") and message in err and err.count("\n") == 1, err


def test_a_sweep_names_each_failed_run_and_goes_on(tiny_run, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    good = shutil.copytree(tiny_run, sweep / "runs" / "good")
    (good / FILE).unlink(missing_ok=True)
    bad = shutil.copytree(tiny_run, sweep / "runs" / "bad")
    shutil.rmtree(bad / "checkpoints")
    rows = [
        "run_id,kind,status,run_dir,anneal_fraction",
        "bad,scratch,done,runs/bad,",
        "good,cooldown,done,runs/good,1.0",
    ]
    (sweep / "results.csv").write_text("\n".join(rows + ["base,base,done,runs/base,", "half,cooldown,done,x,0.5"]))
    assert cli_main(["val-docs", str(sweep)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[1/2] bad: failed: run dir ") and "has no checkpoints/tokens-" in out[0]
    assert out[1].startswith("[2/2] good: ") and (good / FILE).is_file()
