"""State-dict layout and fresh parameters, shared by every growth operator.

Layout facts used across the package (litgpt 0.5.13, read from litgpt/model.py):
  * per-layer keys are ``transformer.h.{i}.<rest>``; everything else (wte, ln_f, lm_head) is shared;
  * ``attn.qkv.weight`` is ``[all Q heads | all K groups | all V groups]``, rows ``(n_head + 2·n_query_groups)·hs``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from dataclasses import fields
from typing import Any

import torch
from litgpt import Config

from stacking.checkpoint import check_state_dict, expected_shapes
from stacking.errors import GrowthError

_LAYER_KEY = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")


def split_layer_key(key: str) -> tuple[int, str] | None:
    """``"transformer.h.3.attn.qkv.weight"`` -> ``(3, "attn.qkv.weight")``; ``None`` for non-layer keys."""
    m = _LAYER_KEY.match(key)
    return (int(m[1]), m[2]) if m else None


def layer_key(i: int, rest: str) -> str:
    return f"transformer.h.{i}.{rest}"


def derive_config(config: Config, **changes: Any) -> Config:
    """A new Config with some fields changed (``__post_init__`` re-derives rope_n_elem etc.); input untouched."""
    values = copy.deepcopy({f.name: getattr(config, f.name) for f in fields(Config)})  # lists/dicts not shared
    values.update(changes)
    try:
        return Config(**values)
    except (AssertionError, ValueError, TypeError) as e:
        raise GrowthError(f"the grown config is not a valid litgpt Config ({changes}): {e}") from None


# ---- deterministic random init for new parameters --------------------------------------------------------------
def generator_for(seed: int, key: str) -> torch.Generator:
    """One generator per (seed, parameter name): the result does not depend on the order tensors are made in, so the
    streaming and in-memory paths agree and adding a key never shifts another key's random numbers."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def init_std(rest_or_key: str, config: Config) -> float:
    """TinyLlama / lit-gpt pretrain init (same as stacking.module.init_weights): N(0, √(2/(5d))), output projections
    N(0, 1/(√d·L)) so a deep residual stream does not blow up at init."""
    if rest_or_key.endswith(("attn.proj.weight", "mlp.proj.weight")):
        return 1.0 / math.sqrt(config.n_embd) / config.n_layer
    return math.sqrt(2.0 / (5 * config.n_embd))


def init_like(key: str, shape: tuple[int, ...], dtype: torch.dtype, config: Config, seed: int) -> torch.Tensor:
    """A freshly initialised parameter: norm weights 1, biases 0, matrices normal with `init_std`."""
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype) if key.endswith("weight") else torch.zeros(shape, dtype=dtype)
    out = torch.empty(shape, dtype=torch.float32)
    out.normal_(0.0, init_std(key, config), generator=generator_for(seed, key))
    return out.to(dtype)


__all__ = [
    "check_state_dict",
    "derive_config",
    "expected_shapes",
    "generator_for",
    "init_like",
    "init_std",
    "layer_key",
    "split_layer_key",
]
