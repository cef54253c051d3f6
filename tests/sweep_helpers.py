"""Tiny grids for the sweep tests (tests/*/test_sweep_*.py) and synthetic results.csv rows for the analysis tests: L1/L2 bases grown to L2/L4 targets, 32-token sequences,
a few thousand tokens, one torch thread per run so results do not depend on the thread count."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

DEFAULTS = dict(
    seq_len=32,
    micro_batch_size=8,
    global_batch_tokens=256,
    lr=3.0e-3,
    min_lr=3.0e-4,
    warmup_tokens=256,
    val_every_tokens=1024,
    val_tokens=1024,
)

E2E_GRID = dict(
    name="e2e",
    targets=["tiny-L4-D32"],
    ops=["G_stack", {"op": "G_zero", "direction": "depth"}],
    g=[2],
    d=[1024, 2048],
    grown={"tokens": 3072},
)
"""One base (tiny-L2-D32 to 2048 tokens, checkpoints at 1024 and 2048), four grown runs, one scratch baseline."""


def write_grid(path: Path, data_dir: Path, grid: dict, **defaults) -> Path:
    g = copy.deepcopy(grid)
    g["defaults"] = {**DEFAULTS, "data_dir": str(data_dir), **g.get("defaults", {}), **defaults}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(g, sort_keys=False))
    return path


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "stacking", "sweep", *map(str, args)]


def run_sweep(*args: str, timeout: float = 240, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        sweep_cmd(*args), check=False, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def results_row(rid: str, kind: str, seed: int, loss: float, **extra) -> dict:
    """One results.csv row of a synthetic sweep (analysis tests that read no curve): every required column, a done
    run of the 'tiny' target on 1000 tokens and 1e9 FLOPs, then ``extra`` (op, g, anneal_fraction, …)."""
    from analysis.sweep import REQUIRED_RESULTS_COLUMNS

    base = {
        "run_id": rid,
        "kind": kind,
        "target": "tiny",
        "model": "tiny",
        "seed": seed,
        "final_val_loss": loss,
        "status": "done",
        "run_dir": f"runs/{rid}",
        "tokens": 1000,
        "flops": 1e9,
        "params_total": 10,
        "flops_per_token": 1e6,
        "flops_offset": 0.0,
    }
    return dict.fromkeys(REQUIRED_RESULTS_COLUMNS) | base | extra


def write_fake_corpus(d: Path, train_tokens: int, vocab: int, val_tokens: int, tokenizer_sha256: str | None) -> Path:
    """A dataset dir with a real corpus's token counts as sparse train.bin / val.bin and its meta.json (planning
    reads only meta.json and file sizes); ``tokenizer_sha256`` (None for bytes) enters the data id."""
    import json

    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        with open(d / f"{split}.bin", "wb") as f:
            f.truncate(2 * n)
    meta = {
        "vocab_size": vocab,
        "dtype": "uint16",
        "eot_id": 0,
        "train_tokens": train_tokens,
        "val_tokens": val_tokens,
        "tokenizer": "bytes" if vocab == 257 else "bpe",
        "tokenizer_sha256": tokenizer_sha256,
    }
    (d / "meta.json").write_text(json.dumps(meta))
    return d
