"""The training backbone: accounting, determinism, exact checkpoints, exact resume after SIGKILL, DDP, errors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_run_config
from lightning.fabric.utilities.throughput import measure_flops
from litgpt import GPT

from stacking import models
from stacking.checkpoint import load_litgpt_checkpoint
from stacking.cli import main as cli_main
from stacking.corpus import DataConfig, build_dataset
from stacking.data import load_tokens, read_meta
from stacking.errors import CheckpointError, DataError, RunError
from stacking.module import lr_at, mfu, peak_flops
from stacking.train import run

DETERMINISTIC = ["step", "tokens", "flops", "train_loss", "val_loss", "lr"]  # tokens_per_s / mfu are wall-clock


def read_metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- models ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,T", [("tiny-L2-D64", 32), ("tiny-d3", 64), ("stack-410m-base", 16)])
def test_flops_per_token_matches_lightning_measure_flops(name, T):
    cfg = models.model_config(name, vocab_size=512, block_size=T)
    with torch.device("meta"):
        model = GPT(cfg)
        x = torch.randint(0, 512, (1, T))
    measured = measure_flops(model, lambda: model(x), lambda y: y.sum()) / T
    # measure_flops counts matmuls only; the formula's 6N also covers the norm gains (< 0.3 % of N here)
    assert models.flops_per_token(cfg, T) == pytest.approx(measured, rel=5e-3)


def test_presets_and_param_breakdown():
    cfg = models.model_config("stack-1.1b")  # paper's 24L2048H target: 1.36B with vocab 32000 (stacking.md)
    p = models.param_breakdown(cfg)
    assert p["total"] == pytest.approx(1.36e9, rel=0.01)
    assert models.model_config("stack-1.1b-base").n_layer == 6
    assert models.model_config("stack-3b-base").n_layer == 8
    tiny = models.model_config("tiny-d4")
    assert (tiny.n_layer, tiny.n_embd, tiny.head_size) == (4, 128, 32)
    assert models.model_config("tiny-L4-D64", n_layer=2).n_layer == 2
    with pytest.raises(models.ModelConfigError, match="unknown model preset 'nope'"):
        models.model_config("nope")


def test_mfu_arithmetic_and_unknown_device_warning():
    # 1e9 FLOPs/token × 1000 tok/s on a fake 1e13 FLOP/s device = 10 %
    assert mfu(1e9, 1000.0, 1e13) == pytest.approx(0.1)
    assert peak_flops("NVIDIA H200", "bf16-mixed") == 989.5e12  # the name Lightning's own table misses
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989.5e12
    with pytest.warns(UserWarning, match="no peak FLOP/s known"):
        assert peak_flops("Imaginary GPU 9000", "bf16-mixed") is None


def test_lr_schedule_in_tokens():
    kw = dict(lr=1.0, min_lr=0.1, warmup_tokens=100, max_tokens=1000, decay_tokens=200)
    assert lr_at(50, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_at(100, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(1000, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(700, schedule="wsd", **kw) == pytest.approx(1.0)
    assert lr_at(900, schedule="wsd", **kw) == pytest.approx(0.55)


# ---- data ------------------------------------------------------------------------------------------------------


def test_stdlib_dataset_is_deterministic_and_split_by_file(tiny_data, tmp_path):
    meta = read_meta(tiny_data)
    assert meta["tokenizer"] == "bpe" and meta["vocab_size"] == 512 and meta["n_files"] == 40
    assert meta["train_tokens"] > meta["val_tokens"] > 0  # 40 files: the split is by file, so it is lumpy
    again = build_dataset(DataConfig(out=str(tmp_path / "again"), max_files=40, vocab_size=512))
    for split in ("train", "val"):
        assert np.array_equal(np.asarray(load_tokens(again, split)), np.asarray(load_tokens(tiny_data, split)))
    assert (Path(again) / "tokenizer.json").read_bytes() == (tiny_data / "tokenizer.json").read_bytes()
    # the EOT separator ends every document
    assert int(load_tokens(tiny_data, "val")[-1]) == meta["eot_id"]


def test_dataset_from_jsonl_parquet_and_bytes(tmp_path):
    import pandas as pd

    docs = [f"def f{i}(x):\n    return x * {i}\n" * 20 for i in range(30)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs[:15]))
    pd.DataFrame({"text": docs[15:]}).to_parquet(tmp_path / "b.parquet")
    out = build_dataset(
        DataConfig(
            out=str(tmp_path / "ds"),
            sources=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet")],
            tokenizer="bytes",
            val_fraction=0.5,
        )
    )
    meta = read_meta(out)
    assert meta["vocab_size"] == 257 and meta["train_tokens"] + meta["val_tokens"] == sum(len(d) + 1 for d in docs)


def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(DataConfig(out=str(tmp_path / "x"), sources=[str(tmp_path / "missing.txt")]))
    with pytest.raises(DataError, match="has no meta.json"):
        read_meta(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_meta(tmp_path / "nothing")


# ---- runs ------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_run_is_bitwise_reproducible_and_checkpoints_land_exactly(tiny_data, tmp_path):
    a = run(tiny_run_config(tmp_path / "a", tiny_data, save_at_tokens=[1024, 2560]))
    b = run(tiny_run_config(tmp_path / "b", tiny_data, save_at_tokens=[1024, 2560]))
    assert a["status"] == b["status"] == "done"
    ma, mb = read_metrics(tmp_path / "a/run/metrics.csv"), read_metrics(tmp_path / "b/run/metrics.csv")
    assert [[r[k] for k in DETERMINISTIC] for r in ma] == [[r[k] for k in DETERMINISTIC] for r in mb]
    assert [int(r["tokens"]) for r in ma] == list(range(0, 5120 + 1, 256))
    # loss goes down on real data in 20 steps
    assert float(ma[-1]["val_loss"]) < float(ma[0]["val_loss"]) - 0.5
    ckpts = sorted(p.name for p in (tmp_path / "a/run/checkpoints").iterdir())
    assert ckpts == ["tokens-000000001024", "tokens-000000002560", "tokens-000000005120"]
    for name in ckpts:
        sd, cfg, meta, _ = load_litgpt_checkpoint(tmp_path / "a/run/checkpoints" / name)
        GPT(cfg).load_state_dict(sd, strict=True)  # litgpt itself loads it
        assert meta["tokens"] == int(name.split("-")[1])
        assert meta["flops"] == pytest.approx(meta["tokens"] * a["flops_per_token"])
    summary = json.loads((tmp_path / "a/run/summary.json").read_text())
    assert summary["tokens"] == 5120 and summary["final_val_loss"] == pytest.approx(float(ma[-1]["val_loss"]))
    # training-only throughput is at least the end-to-end one (evaluation and checkpoints excluded); no CPU peak
    assert summary["train_tokens_per_s"] >= summary["tokens_per_s"] > 0 and summary["mfu"] is None
    assert yaml.safe_load((tmp_path / "a/run/config.yaml").read_text())["max_tokens"] == 5120


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_init_from_checkpoint_offsets_flops_and_is_not_a_resume(tiny_data, tmp_path):
    run(tiny_run_config(tmp_path / "base", tiny_data, save_at_tokens=[1024]))
    parent = tmp_path / "base/run/checkpoints/tokens-000000001024"
    parent_flops = json.loads((parent / "stacking_meta.json").read_text())["flops"]
    s = run(tiny_run_config(tmp_path / "child", tiny_data, init_from=str(parent), max_tokens=1024))
    rows = read_metrics(tmp_path / "child/run/metrics.csv")
    assert float(rows[0]["flops"]) == pytest.approx(parent_flops) and s["flops_offset"] == parent_flops
    # the child's first val loss is the parent's at 1024 tokens (same weights, same fixed val set)
    base_rows = read_metrics(tmp_path / "base/run/metrics.csv")
    assert float(rows[0]["val_loss"]) == pytest.approx(
        float(next(r for r in base_rows if r["tokens"] == "1024")["val_loss"])
    )
    log = (tmp_path / "child/run/train.log").read_text()
    assert "initialised from" in log and "resuming" not in log


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_exactly(tiny_data, tmp_path):
    kw = dict(max_tokens=10240, checkpoint_every_tokens=256, val_every_tokens=1024)
    run(tiny_run_config(tmp_path / "ref", tiny_data, **kw))
    cfg_path = tmp_path / "cfg.yaml"
    cfg = tiny_run_config(tmp_path / "killed", tiny_data, **kw)
    cfg_path.write_text(yaml.safe_dump(cfg.__dict__))
    cmd = [sys.executable, "-m", "stacking", "train", str(cfg_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = Path(cfg.out_dir) / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) > 12):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((Path(cfg.out_dir) / "summary.json").read_text())["status"] == "running"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    ref, res = read_metrics(tmp_path / "ref/run/metrics.csv"), read_metrics(metrics)
    assert [[r[k] for k in DETERMINISTIC] for r in res] == [[r[k] for k in DETERMINISTIC] for r in ref]
    sd_ref = torch.load(tmp_path / "ref/run/checkpoints/tokens-000000010240/lit_model.pth", weights_only=True)
    sd_res = torch.load(Path(cfg.out_dir) / "checkpoints/tokens-000000010240/lit_model.pth", weights_only=True)
    assert all(torch.equal(sd_ref[k], sd_res[k]) for k in sd_ref)


@pytest.mark.slow
def test_ddp_two_cpu_processes_count_tokens_globally(tiny_data, tmp_path):
    cfg = tiny_run_config(
        tmp_path, tiny_data, devices=2, strategy="ddp", accelerator="cpu", max_tokens=2048, micro_batch_size=2
    )
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.__dict__))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "stacking", "train", str(cfg_path)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads((tmp_path / "run/summary.json").read_text())
    assert s["world_size"] == 2 and s["tokens"] == 2048
    rows = read_metrics(tmp_path / "run/metrics.csv")
    assert [int(r["tokens"]) for r in rows] == list(range(0, 2048 + 1, 256))  # 8 steps of 256 global tokens
    fp = s["rank_weight_fingerprints"]
    assert len(fp) == 2 and fp[0] == fp[1]


def test_nan_loss_stops_the_run_with_status(tiny_data, tmp_path):
    s = run(tiny_run_config(tmp_path, tiny_data, lr=1e6, min_lr=1e5, warmup_tokens=0, grad_clip=0.0))
    assert s["status"].startswith("failed: nan at tokens=")
    assert json.loads((tmp_path / "run/summary.json").read_text())["status"] == s["status"]


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(model="tiny-huge-9"), "unknown model preset 'tiny-huge-9'"),
        (dict(save_at_tokens=[99999999]), "save_at_tokens entry 99999999 is beyond max_tokens"),
        (dict(global_batch_tokens=300), "global_batch_tokens 300 is not divisible by micro_batch_size"),
        (dict(max_tokens=1000), "max_tokens = 1000 must be a non-negative multiple of global_batch_tokens"),
        (dict(data_dir="/nonexistent/ds"), "data_dir '/nonexistent/ds' does not exist"),
    ],
)
def test_user_errors_are_one_line_before_compute(tiny_data, tmp_path, capsys, kw, msg):
    cfg = tiny_run_config(tmp_path, tiny_data, **kw)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.__dict__))
    assert cli_main(["train", str(cfg_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_empty_dataset_dir_and_corrupt_checkpoints(tiny_data, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no meta.json"):
        run(tiny_run_config(tmp_path, tmp_path / "empty"))
    run(tiny_run_config(tmp_path / "base", tiny_data, max_tokens=512, val_every_tokens=512))
    ck = tmp_path / "base/run/checkpoints/tokens-000000000512"
    data = (ck / "lit_model.pth").read_bytes()
    (ck / "lit_model.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        run(tiny_run_config(tmp_path / "child", tiny_data, init_from=str(ck)))
    # a corrupt last.ckpt is an error, never a silent fresh start
    last = tmp_path / "base/run/last.ckpt"
    (tmp_path / "base/run/summary.json").unlink()
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="last.ckpt is truncated or corrupt"):
        run(tiny_run_config(tmp_path / "base", tiny_data, max_tokens=512, val_every_tokens=512))
    with pytest.raises(RunError, match="different config"):
        run(tiny_run_config(tmp_path / "base", tiny_data, max_tokens=1024, val_every_tokens=512))


def test_train_help_documents_every_field(capsys):
    from dataclasses import fields

    from stacking.config import RunConfig

    assert cli_main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for f in fields(RunConfig):
        assert f"--{f.name}" in out
    assert "Tokens per optimizer step over all devices" in out  # field docstrings, not just names
