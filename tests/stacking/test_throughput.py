"""Throughput features: the chunked loss equals the plain one, compile keeps litgpt's checkpoint keys, and the
benchmark (benchmarks/throughput.py) prints its ratio lines in the fixed format."""

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_run_config
from litgpt import GPT

import stacking.module
from stacking import models
from stacking.checkpoint import load_litgpt_checkpoint
from stacking.module import lm_loss
from stacking.train import run

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


def _bench():
    spec = importlib.util.spec_from_file_location("throughput_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _skip_without_compile():
    try:
        torch.compile(lambda t: t * 2)(torch.ones(2))
    except Exception as e:  # noqa: BLE001 - any failure (no C++ compiler, unsupported Python, …) means: skip
        pytest.skip(f"torch.compile is unavailable in this environment ({type(e).__name__}: {str(e)[:100]})")


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_chunked_loss_equals_plain_loss_and_gradients():
    cfg = models.model_config("tiny-L2-D64", vocab_size=512, block_size=40)
    torch.manual_seed(0)
    model = GPT(cfg)
    x, y = torch.randint(0, 512, (3, 40)), torch.randint(0, 512, (3, 40))
    params = list(model.parameters())
    plain = lm_loss(model, x, y)
    chunked = lm_loss(model, x, y, chunk=16)  # chunks of 16, 16, 8 positions: the last one is ragged
    assert chunked.item() == pytest.approx(plain.item(), abs=1e-6)
    for a, b in zip(torch.autograd.grad(plain, params), torch.autograd.grad(chunked, params)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_run_with_chunked_loss_gives_the_same_numbers(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(stacking.module, "LOSS_CHUNK", 8)  # seq_len 32 → 4 chunks per sequence
    kw = dict(max_tokens=1280, val_every_tokens=512)
    run(tiny_run_config(tmp_path / "plain", tiny_data, **kw))
    run(tiny_run_config(tmp_path / "chunked", tiny_data, chunked_loss=True, **kw))
    plain, chunked = _rows(tmp_path / "plain/run/metrics.csv"), _rows(tmp_path / "chunked/run/metrics.csv")
    assert len(plain) == len(chunked) == 6  # step 0 and 5 optimizer steps
    for a, b in zip(plain, chunked):
        for k in ("train_loss", "val_loss"):
            if a[k]:
                assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-5, abs=1e-6)


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_compiled_run_writes_litgpt_checkpoints_with_plain_keys(tiny_data, tmp_path):
    _skip_without_compile()
    kw = dict(max_tokens=1024, val_every_tokens=512, save_at_tokens=[512])
    run(tiny_run_config(tmp_path / "eager", tiny_data, **kw))
    s = run(tiny_run_config(tmp_path / "compiled", tiny_data, compile=True, chunked_loss=True, **kw))
    assert s["status"] == "done"
    ckpts = tmp_path / "compiled/run/checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["tokens-000000000512", "tokens-000000001024"]
    for d in ckpts.iterdir():
        sd, cfg, _, _ = load_litgpt_checkpoint(d)
        assert not [k for k in sd if "_orig_mod" in k]
        GPT(cfg).load_state_dict(sd, strict=True)  # litgpt itself loads it
    last = torch.load(tmp_path / "compiled/run/last.ckpt", map_location="cpu", weights_only=True)
    assert all(k.startswith(("model.transformer.", "model.lm_head.")) for k in last["state_dict"])
    # compiling changes float rounding only: the same training run
    eager, compiled = _rows(tmp_path / "eager/run/metrics.csv"), _rows(tmp_path / "compiled/run/metrics.csv")
    for a, b in zip(eager, compiled):
        for k in ("train_loss", "val_loss"):
            if a[k]:
                assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-3)


def test_ratio_lines_format_and_parse():
    bench = _bench()
    medians = {
        "32-true": {"trainer": 990.0, "loop": 1000.0, "litgpt": 900.0},
        "bf16-mixed": {"trainer": 2000.0, "loop": 2000.0, "litgpt": 1000.0},
    }
    lines = bench.format_ratios(medians)
    assert lines[-2:] == ["ratio_vs_loop=0.990", "ratio_vs_litgpt=1.100"]  # the first precision's pair, last
    parsed = bench.parse_ratios("table …\n" + "\n".join(lines) + "\n")
    assert parsed == {
        "32-true ratio_vs_loop": 0.99,
        "32-true ratio_vs_litgpt": 1.1,
        "bf16-mixed ratio_vs_loop": 1.0,
        "bf16-mixed ratio_vs_litgpt": 2.0,
        "ratio_vs_loop": 0.99,
        "ratio_vs_litgpt": 1.1,
    }


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_benchmark_smoke_runs_all_three_modes(tmp_path):
    _skip_without_compile()  # litgpt's pretrain compiles unconditionally
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-2].startswith("ratio_vs_loop=") and lines[-1].startswith("ratio_vs_litgpt=")
    ratios = _bench().parse_ratios(done.stdout)
    assert ratios["ratio_vs_loop"] > 0 and ratios["ratio_vs_litgpt"] > 0
    assert {f"{m}.log" for m in ("trainer", "loop", "litgpt")} <= {p.name for p in tmp_path.iterdir()}
