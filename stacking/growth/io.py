"""Checkpoint-dir I/O for growth: reading a source dir and the output dir's rules.

The reader is training's too (`stacking.checkpoint.load_checkpoint`: one set of checks, `CheckpointError` — a
GrowthError — naming the dir and what is missing); the streaming writer is in `tensorfile`; layout and init helpers in
`layout`; `GrowthResult` and the argument checks in `operator`. The names this module has always exported are
re-exported here, so ``from stacking.growth.io import …`` keeps working.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from litgpt import Config

from stacking.checkpoint import (
    CONFIG,
    GROWTH,
    META,
    WEIGHTS,
    Checkpoint,
    check_state_dict,
    expected_shapes,
    load_checkpoint,
    load_weights,
)
from stacking.checkpoint import load_model_config as load_config
from stacking.checkpoint import save_model_config as save_config
from stacking.errors import GrowthError
from stacking.fsutil import sha256_file
from stacking.growth.layout import derive_config, generator_for, init_like, init_std, layer_key, split_layer_key
from stacking.growth.operator import GrowthResult, check_g, check_target
from stacking.growth.tensorfile import TensorFileWriter, release_pages, save_state_dict


def check_new_dir(dst: str | Path) -> Path:
    """GrowthError unless ``dst`` is free (absent or an empty dir): growth never overwrites a checkpoint. Called
    before any compute; the dir is then written with `stacking.fsutil.atomic_dir`."""
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise GrowthError(f"output dir {str(dst)!r} already exists and is not empty; pick a new path")
    return dst


def json_safe(value: Any) -> Any:
    """Options as they go into growth.json: paths as strings, a target Config as its field dict."""
    if isinstance(value, Config):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


__all__ = [
    "CONFIG",
    "GROWTH",
    "META",
    "WEIGHTS",
    "Checkpoint",
    "GrowthError",
    "GrowthResult",
    "TensorFileWriter",
    "check_g",
    "check_new_dir",
    "check_state_dict",
    "check_target",
    "derive_config",
    "expected_shapes",
    "generator_for",
    "init_like",
    "init_std",
    "json_safe",
    "layer_key",
    "load_checkpoint",
    "load_config",
    "load_weights",
    "release_pages",
    "save_config",
    "save_state_dict",
    "sha256_file",
    "split_layer_key",
]
