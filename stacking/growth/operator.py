"""What every growth operator returns (`GrowthResult`) and the argument checks they share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from litgpt import Config

from stacking.errors import GrowthError


@dataclass
class GrowthResult:
    """What an operator returns. `grow(...)` hands back ``(state_dict, config)``; ``return_info=True`` gives this."""

    state_dict: dict[str, torch.Tensor]
    config: Config
    g: float
    """Effective growth factor: n_layer ratio (depth) or n_embd ratio (width)."""
    options: dict = field(default_factory=dict)
    """Options as resolved (defaults filled in); recorded in growth.json."""
    mask: dict | None = None
    """G_random: the spec `masks.GrowthMask.from_spec` takes (growth.json "mask")."""
    trainable: list[str] | None = None
    """llama_pro train_new_only: names of the only parameters to train (growth.json "trainable")."""
    log: dict = field(default_factory=dict)
    """Diagnostics not written to growth.json (e.g. G_learn's loss per step)."""
    extra_flops: float = 0.0
    """Training FLOPs the operator itself spent (G_learn's map training, `learn.learn_flops`); growth.json
    "extra_flops"."""


def check_g(g: Any, op: str, *, integer: bool) -> float | int:
    """g is a number >= 1; an int when the operator copies whole models/units."""
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g < 1:
        raise GrowthError(f"g must be a number >= 1 for {op} (got {g!r})")
    if integer:
        if float(g) != int(g):
            raise GrowthError(f"g must be an integer >= 1 for {op} (got {g}); {op} copies whole layers/units")
        return int(g)
    return float(g)


# Fields that may differ between a source config and a `to=` target besides the grown dimensions.
_FREE_FIELDS = {"name", "hf_config", "block_size"}


def check_target(config: Config, to: Any, grown: set[str], op: str) -> Config:
    """Validate a `to=` target: a litgpt Config equal to the source except the grown fields (and name, block_size)."""
    if not isinstance(to, Config):
        raise GrowthError(f"to must be a litgpt Config for {op} (got {type(to).__name__})")
    for f in fields(Config):
        if f.name in grown or f.name in _FREE_FIELDS:
            continue
        a, b = getattr(config, f.name), getattr(to, f.name)
        if a != b:
            raise GrowthError(
                f"to.{f.name}={b!r} differs from the source's {a!r}; {op} only changes {', '.join(sorted(grown))}"
            )
    return to


__all__ = ["GrowthError", "GrowthResult", "check_g", "check_target"]
