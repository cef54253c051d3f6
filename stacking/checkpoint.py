"""Checkpoint files: litgpt checkpoint dirs — one reader and one writer, shared by training (init_from, the
exact-token saves) and growth (`stacking grow`, HF import/export) — and the Lightning full-state files a run resumes
(last.ckpt) or branches from (states/tokens-….ckpt).

A litgpt checkpoint dir (docs/formats.md) holds ``lit_model.pth`` (a state dict with litgpt key names) and
``model_config.yaml`` (litgpt Config fields), optionally ``stacking_meta.json`` (tokens, flops, data stream of the run
that wrote it), ``growth.json`` (written by `stacking grow`) and ``optimizer_state.pt`` (moments carried by a grow).
Every defect is a `CheckpointError` naming the dir or file and what is wrong with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import yaml
from litgpt import GPT, Config

from stacking.errors import CheckpointError, GrowthError
from stacking.fsutil import atomic_dir

WEIGHTS = "lit_model.pth"
CONFIG = "model_config.yaml"
META = "stacking_meta.json"
GROWTH = "growth.json"
CARRY_FILE = "optimizer_state.pt"
"""In a grown checkpoint dir: AdamW moments keyed by the grown model's parameter names (grown.optimizer: carry)."""

SHAPE_FIELDS = (
    "n_layer",
    "n_embd",
    "n_head",
    "n_query_groups",
    "head_size",
    "intermediate_size",
    "padded_vocab_size",
    "bias",
    "mlp_class_name",
    "norm_class_name",
)
"""Config fields that decide parameter shapes: an init_from checkpoint must agree with the run's model on all."""


def _first_line(e: BaseException, n: int = 160) -> str:
    return (str(e).strip().splitlines() or [""])[0][:n]


# ---- model configs and state dicts ------------------------------------------------------------------------------
def load_model_config(path: str | Path) -> Config:
    """A litgpt Config from a model_config.yaml (unknown keys such as rope_n_elem are ignored)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path} is not a readable YAML model config: {_first_line(e)}") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} must hold a mapping of litgpt Config fields, got {type(values).__name__}")
    known = {f.name for f in fields(Config)}
    try:
        return Config(**{k: v for k, v in values.items() if k in known})
    except (AssertionError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not a valid litgpt Config: {e}") from None


def save_model_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(asdict(config), sort_keys=False))


def expected_shapes(config: Config) -> dict[str, torch.Size]:
    """Parameter names and shapes of ``litgpt.GPT(config)``, from a model on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            model = GPT(config)
    except Exception as e:  # noqa: BLE001 (litgpt asserts / divides by zero on inconsistent configs)
        raise GrowthError(f"model_config is not a buildable litgpt model: {type(e).__name__}: {e}") from None
    return {k: v.shape for k, v in model.state_dict().items()}


def check_state_dict(state_dict: Mapping[str, torch.Tensor], config: Config, where: str = "state_dict") -> None:
    """Raise GrowthError unless ``state_dict`` has exactly the keys and shapes of ``GPT(config)``."""
    want = expected_shapes(config)
    missing = [k for k in want if k not in state_dict]
    extra = [k for k in state_dict if k not in want]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(s)}"
        for k, s in want.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(s)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
        if items:
            more = f" (+{len(items) - 2} more)" if len(items) > 2 else ""
            problems.append(f"{label}: {', '.join(items[:2])}{more}")
    if problems:
        raise GrowthError(
            f"{where} does not match its model config (n_layer={config.n_layer}, "
            f"n_embd={config.n_embd}): {'; '.join(problems)}"
        )


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Memory-mapped, weights-only load of a state-dict file; a missing, truncated or foreign file is a one-line
    CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint weights {str(path)!r} do not exist (expected {WEIGHTS} in the checkpoint dir)"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 (RuntimeError from the zip reader, UnpicklingError, EOFError, ...)
        raise CheckpointError(
            f"{path} is truncated or corrupt (not a readable torch checkpoint): {type(e).__name__}: {_first_line(e)}"
        ) from None
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):  # litgpt pretrain format {"model": ..., ...}
        sd = sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} must hold a state dict of tensors (litgpt key names)")
    return sd


# ---- checkpoint dirs --------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A checkpoint dir read lazily: tensors are views of the memory-mapped lit_model.pth."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: Config
    meta: dict | None
    """stacking_meta.json (None when absent, e.g. a checkpoint converted from HF)."""
    growth: dict | None = None
    """growth.json (None unless `stacking grow` wrote the dir)."""


def _read_json(path: Path) -> dict | None:
    """A checkpoint's side file (stacking_meta.json, growth.json), None when absent. Unlike a run dir's status files
    (experiments.rundir.read_json: half-written reads as not yet there), a corrupt one is a CheckpointError: a
    checkpoint is never used with its metadata silently dropped."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {_first_line(e)}") from None


def load_checkpoint(ckpt_dir: str | Path) -> Checkpoint:
    """Read and validate a checkpoint dir: both files present, the config a valid litgpt Config, the weights a
    readable state dict whose keys and shapes are exactly ``GPT(config)``'s, the JSON side files parseable."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint dir {str(d)!r} does not exist")
    missing = [name for name in (WEIGHTS, CONFIG) if not (d / name).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint dir {str(d)!r} has no {' and no '.join(missing)} (files that do not exist; "
            f"a litgpt checkpoint dir holds {WEIGHTS} and {CONFIG})"
        )
    config = load_model_config(d / CONFIG)
    sd = load_weights(d / WEIGHTS)
    try:
        check_state_dict(sd, config, where=str(d / WEIGHTS))
    except GrowthError as e:
        raise CheckpointError(str(e)) from None
    return Checkpoint(d, sd, config, _read_json(d / META), _read_json(d / GROWTH))


def save_litgpt_checkpoint(path: str | Path, state_dict: dict, model_config: Config, meta: dict) -> None:
    """Write a checkpoint dir atomically (readers never see a half-written one)."""
    with atomic_dir(path) as tmp:
        torch.save(state_dict, tmp / WEIGHTS)
        save_model_config(model_config, tmp / CONFIG)
        (tmp / META).write_text(json.dumps(meta, indent=1))


def load_litgpt_checkpoint(ckpt_dir: str | Path) -> tuple[dict, Config, dict, dict | None]:
    """(state_dict, Config, stacking_meta or {}, growth or None) of a checkpoint dir: `load_checkpoint` as a tuple."""
    ckpt = load_checkpoint(ckpt_dir)
    return ckpt.state_dict, ckpt.config, ckpt.meta or {}, ckpt.growth


# ---- Lightning full-state files ---------------------------------------------------------------------------------
def read_run_state(path: Path) -> dict:
    """The ``stacking`` entry (tokens, flops, wall time, best/last val loss) of a last.ckpt or states/….ckpt."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return ckpt["stacking"]
    except Exception as e:  # noqa: BLE001 (torch raises RuntimeError / pickle errors / zipfile errors)
        raise CheckpointError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {_first_line(e, 120)}); "
            "delete it to restart this run from scratch"
        ) from None
