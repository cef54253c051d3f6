"""Grown checkpoints inside real training runs: G_random's mask ramp and llama_pro's frozen blocks."""

import csv
import json

import pytest
import torch
from conftest import tiny_run_config
from litgpt import GPT

from stacking.checkpoint import load_litgpt_checkpoint
from stacking.data import val_windows
from stacking.growth import grow_checkpoint
from stacking.train import run


@pytest.fixture(scope="module")
def base_ckpt(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    run(tiny_run_config(tmp, tiny_data, max_tokens=1024, val_every_tokens=1024))
    return tmp / "run/checkpoints/tokens-000000001024"


def first_rows(path, n=3):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))[:n]


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_g_random_starts_at_the_base_function_and_ramps(tiny_data, base_ckpt, tmp_path):
    grown = grow_checkpoint(base_ckpt, tmp_path / "grown", "G_random", direction="depth", g=2, seed=0, ramp_tokens=1024)
    base_val = json.loads((base_ckpt.parent.parent / "summary.json").read_text())["final_val_loss"]
    # compile=True: the ramp runs eager (a changing mask would recompile every step), the compiled loss after it
    run(tiny_run_config(tmp_path, tiny_data, model="tiny-L4-D64", init_from=str(grown), max_tokens=2048, compile=True))
    rows = first_rows(tmp_path / "run/metrics.csv")
    # the mask is 0 at the start: the grown model computes exactly the base model's function
    assert float(rows[0]["val_loss"]) == pytest.approx(base_val, rel=1e-5)
    # after the ramp the new blocks are fully on: the final checkpoint equals the model with the mask at 1,
    # i.e. plain litgpt weights that a fresh GPT evaluates without any hooks
    sd, cfg, _meta, _ = load_litgpt_checkpoint(tmp_path / "run/checkpoints/tokens-000000002048")
    model = GPT(cfg)
    model.load_state_dict(sd)
    w = val_windows(tiny_data, 32, 2048)
    with torch.no_grad():
        logits = model(w[:, :-1])
        plain = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1))
    final = json.loads((tmp_path / "run/summary.json").read_text())["final_val_loss"]
    assert float(plain) == pytest.approx(final, rel=1e-5)


@pytest.mark.slow  # > 5 s: out of the fast lane (make test-fast), in make test and CI
def test_llama_pro_train_new_only_freezes_the_old_blocks(tiny_data, base_ckpt, tmp_path):
    grown = grow_checkpoint(
        base_ckpt, tmp_path / "grown", "llama_pro", direction="depth", g=2, seed=0, train_new_only=True
    )
    growth = json.loads((grown / "growth.json").read_text())
    assert growth["trainable"]
    run(
        tiny_run_config(
            tmp_path, tiny_data, model="tiny-L4-D64", init_from=str(grown), max_tokens=512, val_every_tokens=512
        )
    )
    before, _, _, _ = load_litgpt_checkpoint(grown)
    after, _, _, _ = load_litgpt_checkpoint(tmp_path / "run/checkpoints/tokens-000000000512")
    trainable = set(growth["trainable"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= trainable  # only new-block parameters moved
    assert all(not torch.equal(before[k], after[k]) for k in trainable if k.endswith("attn.qkv.weight"))
