"""Model presets (litgpt `Config`s) and their parameter / FLOP accounting.

Two families:

* ``tiny-…``: Llama-style models small enough for a 2-core CPU. One dial, ``tiny-d{depth}``, gives
  ``n_layer = depth`` and ``n_embd = 32 * depth`` (nanochat's idea: width follows depth). ``tiny-L{L}-D{D}`` names
  the two explicitly, which is what growth needs (a base has the target's width and fewer layers, or the
  target's depth and a narrower width).
* ``stack-…``: the shapes of Du et al. 2024 (reference/stacking.md, "Model configurations"), the 410M/1.1B/3B/7B
  targets and the bases they were grown from (g = 4 in depth: 6L for the 24-layer targets, 8L for the 32-layer
  ones).

Any other name is looked up in litgpt's own zoo (``Config.from_name``), e.g. ``tiny-llama-1.1b``.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

import torch
from litgpt import GPT, Config

from stacking.errors import ModelConfigError

# Shared Llama-style architecture: pre-RMSNorm, SwiGLU, RoPE, no biases, untied embeddings (TinyLlama / lit-gpt).
_LLAMA = dict(
    bias=False,
    norm_class_name="RMSNorm",
    norm_eps=1e-5,
    mlp_class_name="LLaMAMLP",
    parallel_residual=False,
    rotary_percentage=1.0,
    rope_base=10000,
)

# Paper shapes (vocab 32000 = the Llama tokenizer; block 2048 = the paper's context).  Counts in
# reference/stacking.md's table.  Bases divide n_layer by the paper's g = 4.
_PAPER = {
    "stack-410m": dict(n_layer=24, n_embd=1024, n_head=16, n_query_groups=1, intermediate_size=4096),
    "stack-1.1b": dict(n_layer=24, n_embd=2048, n_head=32, n_query_groups=32, intermediate_size=5632),
    "stack-3b": dict(n_layer=32, n_embd=2560, n_head=20, n_query_groups=4, intermediate_size=7040),
    "stack-7b": dict(n_layer=32, n_embd=4096, n_head=32, n_query_groups=32, intermediate_size=11008),
}
_PAPER_BASE_LAYERS = {"stack-410m": 6, "stack-1.1b": 6, "stack-3b": 8, "stack-7b": 8}

TINY_HEAD_SIZE = 32
"""head_size of the tiny family; width growth keeps head_size, so n_head = n_embd / 32."""


def preset_names() -> list[str]:
    """The named presets (the tiny family is open-ended: tiny-d{N}, tiny-L{L}-D{D})."""
    names = []
    for name in _PAPER:
        names += [name, f"{name}-base"]
    return ["tiny-d{N}", "tiny-L{L}-D{D}"] + names


def _tiny(n_layer: int, n_embd: int) -> dict[str, Any]:
    if n_layer < 1 or n_embd < TINY_HEAD_SIZE or n_embd % TINY_HEAD_SIZE:
        raise ModelConfigError(
            f"tiny model needs n_layer >= 1 and n_embd a positive multiple of {TINY_HEAD_SIZE}, got L={n_layer} D={n_embd}"
        )
    n_head = n_embd // TINY_HEAD_SIZE
    # 3·D rather than Llama's ~8/3·D: a width-grown target must have exactly g × the base's intermediate size,
    # and 3·D divides evenly for every g that divides D.
    return dict(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_query_groups=n_head,
        intermediate_size=3 * n_embd,
        head_size=TINY_HEAD_SIZE,
    )


def model_config(
    name: str, *, vocab_size: int | None = None, block_size: int | None = None, **overrides: Any
) -> Config:
    """Build the litgpt ``Config`` for a preset name, with the data's vocabulary and the run's sequence length.

    ``overrides`` are litgpt ``Config`` fields (e.g. ``n_layer=2`` for a base model of a tiny preset).
    """
    fields: dict[str, Any]
    if m := re.fullmatch(r"tiny-d(\d+)", name):
        fields = dict(_LLAMA, **_tiny(int(m[1]), 32 * int(m[1])))
    elif m := re.fullmatch(r"tiny-L(\d+)-D(\d+)", name):
        fields = dict(_LLAMA, **_tiny(int(m[1]), int(m[2])))
    elif name in _PAPER or (name.endswith("-base") and name[: -len("-base")] in _PAPER):
        target = name.removesuffix("-base")
        fields = dict(_LLAMA, vocab_size=32000, block_size=2048, **_PAPER[target])
        if name.endswith("-base"):
            fields["n_layer"] = _PAPER_BASE_LAYERS[target]
    else:
        try:
            base = Config.from_name(name)
        except ValueError:
            base = None
        if base is None:
            raise ModelConfigError(
                f"unknown model preset {name!r}; valid: {', '.join(preset_names())} or a litgpt model name"
            )
        fields = {k: v for k, v in asdict(base).items() if k not in ("rope_n_elem",)}
    fields["name"] = name
    unknown = sorted(set(overrides) - set(Config.__dataclass_fields__))
    if unknown:
        raise ModelConfigError(f"model_overrides has unknown litgpt Config fields {unknown}")
    fields.update(overrides)
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
        fields["padded_vocab_size"] = None
        fields["padding_multiple"] = 64
    if block_size is not None:
        fields["block_size"] = block_size
    try:
        return Config(**fields)
    except (TypeError, ValueError, AssertionError, ZeroDivisionError) as e:
        raise ModelConfigError(f"model {name!r} with overrides {overrides} is not a valid litgpt Config: {e}") from e


def param_breakdown(config: Config) -> dict[str, int]:
    """Exact parameter counts, from a model built on the meta device (no memory, no compute).

    ``non_embedding`` excludes only the input embedding (``transformer.wte``); the LM head is a matmul every token
    pays for, so it counts (as in Kaplan's and Lightning's FLOP accounting).
    """
    with torch.device("meta"):
        model = GPT(config)
    total = sum(p.numel() for p in model.parameters())
    wte = model.transformer.wte.weight.numel()
    head = model.lm_head.weight.numel()
    return {"total": total, "embedding": wte, "lm_head": head, "non_embedding": total - wte}


def flops_per_token(config: Config, seq_len: int, n_non_embedding: int | None = None) -> float:
    """Training FLOPs per token (forward + backward), the PaLM / Chinchilla count.

    6 · N_non-embedding (2 for the forward matmuls, 4 for the backward) plus the attention scores and the weighted
    sum of values: 2 matmuls × 2 FLOPs × T keys × head_size × n_head per layer in the forward, ×3 with the backward
    = 12 · L · H · Q · T. Full (unmasked) attention is counted, as `lightning.fabric.utilities.measure_flops` does.
    """
    n = param_breakdown(config)["non_embedding"] if n_non_embedding is None else n_non_embedding
    return 6.0 * n + 12.0 * config.n_layer * config.n_head * config.head_size * seq_len


def describe(config: Config, seq_len: int) -> dict[str, Any]:
    """The numbers printed at start-up and written to the run's ``model.json``."""
    p = param_breakdown(config)
    return {
        "name": config.name,
        "n_layer": config.n_layer,
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_query_groups": config.n_query_groups,
        "head_size": config.head_size,
        "intermediate_size": config.intermediate_size,
        "padded_vocab_size": config.padded_vocab_size,
        "seq_len": seq_len,
        "params_total": p["total"],
        "params_embedding": p["embedding"],
        "params_non_embedding": p["non_embedding"],
        "flops_per_token": flops_per_token(config, seq_len, p["non_embedding"]),  # one meta build, not two
    }


def format_description(d: dict[str, Any]) -> str:
    return (
        f"model {d['name']}: {d['n_layer']} layers × {d['n_embd']} wide, {d['n_head']} heads "
        f"({d['n_query_groups']} KV groups), FFN {d['intermediate_size']}, vocab {d['padded_vocab_size']} | "
        f"params {d['params_total']:,} total, {d['params_non_embedding']:,} non-embedding | "
        f"{d['flops_per_token'] / 1e6:.2f} MFLOP/token at seq_len {d['seq_len']}"
    )
