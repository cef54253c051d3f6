"""Shared fixtures: one tiny token dataset per test session (40 stdlib files, BPE vocab 512)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from stacking.corpus import DataConfig, build_dataset

    return build_dataset(DataConfig(out=str(tmp_path_factory.mktemp("data") / "ds"), max_files=40, vocab_size=512))


def tiny_run_config(tmp_path: Path, data: Path | None = None, **kw):
    """A RunConfig that trains a 2-layer, 64-wide model for 20 steps in ~2 s on one CPU core."""
    from stacking.config import RunConfig

    base = dict(
        out_dir=str(tmp_path / "run"),
        data_dir=data,
        model="tiny-L2-D64",
        seq_len=32,
        micro_batch_size=4,
        global_batch_tokens=256,
        max_tokens=5120,
        warmup_tokens=512,
        val_every_tokens=1024,
        val_tokens=2048,
        lr=3e-3,
        min_lr=3e-4,
        progress_bar=False,
    )
    base.update(kw)
    base["data_dir"] = str(base["data_dir"])
    return RunConfig(**base)
