"""The extra loggers (RunConfig.logger = tensorboard | wandb) on a real tiny run, read back with their own readers."""

from __future__ import annotations

import csv
import time

import pytest
from conftest import tiny_run_config

from stacking.train import run

pytestmark = pytest.mark.slow  # end to end: `make test-fast` (-m 'not slow') leaves it out


def metric_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tensorboard_logger_writes_the_metrics_rows(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 8 optimizer steps of 256 tokens, validation at the start and every 4 steps
    cfg = tiny_run_config(tmp_path, tiny_data, logger="tensorboard", max_tokens=2048, val_every_tokens=1024)
    assert run(cfg)["status"] == "done"
    run_dir = tmp_path / "run"
    event_dirs = sorted({p.parent for p in (run_dir / "tb").rglob("events.out.tfevents.*")})
    assert len(event_dirs) == 1, event_dirs
    acc = EventAccumulator(str(event_dirs[0]))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    for tag in ("train_loss", "val_loss", "tokens", "flops", "lr", "tokens_per_s"):
        assert tag in scalars, (tag, scalars)

    # the same rows as metrics.csv: train loss at every optimizer step, val loss at step 0 and every 4 steps
    rows = metric_rows(run_dir)
    train = acc.Scalars("train_loss")
    assert [e.step for e in train] == list(range(1, 9))
    assert [e.step for e in train] == [int(r["step"]) for r in rows if r["train_loss"]]
    assert [e.value for e in train] == pytest.approx(
        [float(r["train_loss"]) for r in rows if r["train_loss"]], rel=1e-6
    )
    val = acc.Scalars("val_loss")
    assert [e.step for e in val] == [0, 4, 8]
    assert val[-1].value == pytest.approx(float(rows[-1]["val_loss"]), rel=1e-6)
    assert val[-1].value < val[0].value  # it learned something
    assert [e.value for e in acc.Scalars("tokens")][-1] == cfg.max_tokens


def test_wandb_logger_writes_an_offline_run(tiny_data, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # never the network
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-dir").mkdir()
    cfg = tiny_run_config(tmp_path, tiny_data, logger="wandb", max_tokens=1024, val_every_tokens=512)
    assert run(cfg)["status"] == "done"
    runs = sorted(tmp_path.rglob("offline-run-*"))
    assert len(runs) == 1, runs
    files = list(runs[0].glob("*.wandb"))
    assert len(files) == 1, list(runs[0].iterdir())
    # protobuf records: the metric names are stored as plain strings. wandb's service process writes the file
    # after `finish()` returns (offline mode; seen on a loaded machine: only the header at first), so wait for it
    keys = (b"train_loss", b"val_loss", b"tokens_per_s")
    deadline = time.monotonic() + 60
    while not all(k in files[0].read_bytes() for k in keys) and time.monotonic() < deadline:
        time.sleep(0.5)
    records = files[0].read_bytes()
    for key in keys:
        assert key in records, key
    assert wandb.run is None  # the run was finished by `stacking.train.run`, not left open for the next run
