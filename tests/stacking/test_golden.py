"""Golden numbers: the first losses of one fixed tiny run, pinned to 1e-5, so that any change in the numerics (init,
data order, LR schedule, loss, validation windows, optimizer) is seen, not only run-to-run determinism.

The dataset is synthetic and written here (no corpus, no tokenizer), so the numbers depend only on our code,
torch and litgpt. If a change is meant to alter them, update GOLDEN in the same commit and say why.
"""

import csv
import json

import numpy as np
import pytest
from conftest import tiny_run_config

from stacking.train import run

GOLDEN_TRAIN = [4.3832631, 4.2559977, 4.0446954, 3.8611689, 3.7882936]
"""train_loss of optimizer steps 1–5 (tokens 256 … 1280)."""
GOLDEN_VAL = [4.3762591, 3.7862213]
"""val_loss at tokens 0 and 1024."""


def synthetic_data(path, vocab=64, n_train=40_000, n_val=8_000, eot=63):
    """A deterministic token stream with learnable structure: a noisy walk mod vocab, documents split by EOT."""
    rng = np.random.default_rng(1234)
    path.mkdir(parents=True)
    for split, n in (("train", n_train), ("val", n_val)):
        steps = rng.choice([1, 2, 3, 5], size=n, p=[0.4, 0.3, 0.2, 0.1])
        tokens = (np.cumsum(steps) % (vocab - 1)).astype(np.uint16)
        tokens[rng.integers(0, n, size=n // 500)] = eot
        tokens.tofile(path / f"{split}.bin")
    meta = {
        "vocab_size": vocab,
        "dtype": "uint16",
        "tokenizer": "synthetic",
        "eot_id": eot,
        "train_tokens": n_train,
        "val_tokens": n_val,
        "sources": ["tests/stacking/test_golden.py"],
    }
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_first_losses_are_pinned(tmp_path):
    data = synthetic_data(tmp_path / "data")
    run(tiny_run_config(tmp_path, data, max_tokens=1280, val_every_tokens=1024, schedule="constant"))
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    val = [float(r["val_loss"]) for r in rows if r["val_loss"]][:2]
    print("train", [f"{x:.7f}" for x in train], "val", [f"{x:.7f}" for x in val])
    assert train == pytest.approx(GOLDEN_TRAIN, abs=1e-5)
    assert val == pytest.approx(GOLDEN_VAL, abs=1e-5)


GOLDEN_GROWN_TRAIN = [3.7441373, 3.6952720, 3.5941868]
"""train_loss of the G_stack-grown run's optimizer steps 1–3 (tokens 256 … 768 after growth)."""
GOLDEN_GROWN_VAL = [3.7986025, 3.5348407]
"""val_loss of the grown run at its tokens 0 and 512."""


def test_grown_run_losses_are_pinned(tmp_path):
    """The same pin for the growth path: the golden base grown ×2 in depth by G_stack at 1,280 tokens, then trained
    on (data stream continued after the base's tokens, fresh AdamW, re-warmup): catches a change in an operator's
    numerics, in the grown run's data offset or in its optimizer/LR start, none of which the base's pin sees."""
    from stacking.growth import grow_checkpoint

    data = synthetic_data(tmp_path / "data")
    run(tiny_run_config(tmp_path / "base", data, max_tokens=1280, val_every_tokens=1024, schedule="constant"))
    grown = grow_checkpoint(
        tmp_path / "base/run/checkpoints/tokens-000000001280",
        tmp_path / "grown",
        "G_stack",
        direction="depth",
        g=2,
        seed=0,
    )
    run(
        tiny_run_config(
            tmp_path / "grown_run",
            data,
            model="tiny-L4-D64",
            init_from=str(grown),
            max_tokens=768,
            val_every_tokens=512,
            schedule="constant",
            warmup_tokens=256,
        )
    )
    with open(tmp_path / "grown_run/run/metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    val = [float(r["val_loss"]) for r in rows if r["val_loss"]][:2]
    print("train", [f"{x:.7f}" for x in train], "val", [f"{x:.7f}" for x in val])
    assert train == pytest.approx(GOLDEN_GROWN_TRAIN, abs=1e-5)
    assert val == pytest.approx(GOLDEN_GROWN_VAL, abs=1e-5)
