"""G_learn: LiGO (Wang et al., ICLR 2023) — learn linear maps from the small model's weights to the large model's.

The grown weights are a differentiable function of the frozen source weights and a few small matrices ("maps");
only the maps are trained, for ``learn_steps`` steps of next-token loss on ``data``, then the grown weights are
materialised into a plain litgpt state dict (the official code, tongxuluo/prts ``ligo.py``, does the same, 100 steps).

* depth: ``W'_l = Σ_j D[l, j]·W_j`` with one L'×L matrix D per parameter kind (q, k and v of the fused qkv
  separately, as the paper), initialised to tiled identities — exactly the G_stack order, so ``learn_steps=0`` is
  G_stack.
* width: one residual map ``E`` (D×d), per layer a query-head map, a key-group and a value-group map (acting on whole
  heads, ``kron(B, I_hs)``, so RoPE pairs within a head are never mixed) and an MLP map. Every parameter becomes
  ``R·W·Cᵀ`` with R/C the maps of its row/column spaces (embedding ``W·Eᵀ``, norms ``E·μ``). The attention output
  projection's input uses the query-head map (its inputs are query heads; with GQA the value map has the wrong size).
  Maps start at ``[I; N(0, 1/new)]`` (prts ligo.py); not function preserving.

Data is a token dataset dir (docs/formats.md): ``train.bin`` read with ``np.memmap`` and ``meta.json``'s dtype.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from litgpt import GPT, Config
from torch.func import functional_call

from stacking.growth import depth, width
from stacking.growth.io import GrowthError, GrowthResult, layer_key, split_layer_key

# LiGO's README trains the operator for 100 steps at lr 2e-4 (RoBERTa); prts issue #2 also uses 100 steps.
DEFAULT_STEPS = 100
DEFAULT_LR = 2e-4


def _check_learn_options(learn_steps, lr, seq_len, batch_size, data, config: Config) -> int:
    if isinstance(learn_steps, bool) or not isinstance(learn_steps, int) or learn_steps < 0:
        raise GrowthError(f"learn_steps must be an integer >= 0 for G_learn (got {learn_steps!r})")
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise GrowthError(f"lr must be a positive number for G_learn (got {lr!r})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GrowthError(f"batch_size must be an integer >= 1 for G_learn (got {batch_size!r})")
    seq_len = min(config.block_size, 256) if seq_len is None else seq_len
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= config.block_size:
        raise GrowthError(f"seq_len must be an integer in 1..block_size={config.block_size} (got {seq_len!r})")
    if learn_steps > 0:
        open_tokens(data)  # fail on a missing or unreadable data dir before any compute
    return seq_len


def open_tokens(data) -> np.memmap:
    """The train split of a token dataset dir, memory-mapped with the dtype meta.json names."""
    if data is None:
        raise GrowthError("G_learn needs data=DATA_DIR (a token dataset dir with train.bin and meta.json)")
    d = Path(data)
    if not (d / "train.bin").is_file() or not (d / "meta.json").is_file():
        raise GrowthError(f"data dir {str(d)!r} needs train.bin and meta.json (see docs/formats.md)")
    try:
        meta = json.loads((d / "meta.json").read_text())
        return np.memmap(d / "train.bin", dtype=np.dtype(meta["dtype"]), mode="r")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise GrowthError(f"data dir {str(d)!r}: cannot read train.bin with meta.json's dtype ({e})") from None


def _batches(tokens: np.memmap, seq_len: int, batch_size: int, vocab: int, seed: int):
    """Random windows (seeded), as (inputs, targets) int64 tensors."""
    if len(tokens) < seq_len + 2:
        raise GrowthError(f"train.bin has {len(tokens)} tokens; G_learn needs more than seq_len+1={seq_len + 1}")
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
        window = torch.from_numpy(np.stack([np.asarray(tokens[s:s + seq_len + 1], dtype=np.int64) for s in starts]))
        if int(window.max()) >= vocab:
            raise GrowthError(f"data has token id {int(window.max())} >= the model's padded_vocab_size={vocab}")
        yield window[:, :-1], window[:, 1:]


def _train_maps(maps: dict[str, torch.Tensor], materialise, config: Config, data, steps: int, lr: float,
                seq_len: int, batch_size: int, seed: int) -> list[float]:
    """Adam on the maps only; the grown model is evaluated with torch.func.functional_call on materialised weights."""
    if steps == 0:
        return []
    tokens = open_tokens(data)
    model = GPT(config)  # its own parameters are never used: functional_call substitutes the materialised ones
    opt = torch.optim.Adam(list(maps.values()), lr=lr)
    losses = []
    for _, (x, y) in zip(range(steps), _batches(tokens, seq_len, batch_size, config.padded_vocab_size, seed)):
        logits = functional_call(model, materialise(), (x,))
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _finish(dtype_of, materialise, config: Config, g: float, options: dict, losses: list[float]) -> GrowthResult:
    """Materialise the grown weights once more without autograd, in the source's dtypes."""
    with torch.no_grad():
        grown = materialise()
    out = {k: v.detach().to(dtype_of(k)).contiguous() for k, v in grown.items()}
    return GrowthResult(out, config, g, options, log={"learn_losses": losses})


# ---- depth -----------------------------------------------------------------------------------------------------
def grow_depth_learn(state_dict, config: Config, *, g=2, seed: int = 0, data=None, learn_steps: int = DEFAULT_STEPS,
                     lr: float = DEFAULT_LR, seq_len: int | None = None, batch_size: int = 8,
                     to: Config | None = None) -> GrowthResult:
    """G_learn (depth): per-parameter-kind layer-mixing matrices, starting at G_stack, trained on ``data``."""
    seq_len = _check_learn_options(learn_steps, lr, seq_len, batch_size, data, config)
    L = config.n_layer
    L2 = depth.target_layers(config, g, to, "G_learn")
    new_cfg = depth.grown_config(config, [i % L for i in range(L2)], to)
    qkv_split = (config.n_head * config.head_size, config.n_query_groups * config.head_size,
                 config.n_query_groups * config.head_size)

    # source weights stacked over layers, per parameter kind (qkv split into q/k/v)
    rests = [p[1] for k in state_dict if (p := split_layer_key(k)) and p[0] == 0]
    stacks: dict[str, torch.Tensor] = {}
    for rest in rests:
        stacked = torch.stack([state_dict[layer_key(j, rest)].float() for j in range(L)])
        if rest.startswith("attn.qkv."):
            for part, piece in zip("qkv", stacked.split(qkv_split, dim=1)):
                stacks[f"{rest}:{part}"] = piece
        else:
            stacks[rest] = stacked
    tiled = torch.zeros(L2, L)
    tiled[torch.arange(L2), torch.arange(L2) % L] = 1.0
    maps = {name: tiled.clone().requires_grad_(True) for name in stacks}
    # clone: the result must never alias the caller's tensors (float() is a no-op on fp32)
    fixed = {k: v.detach().float().clone() for k, v in state_dict.items() if split_layer_key(k) is None}

    def materialise() -> dict[str, torch.Tensor]:
        mixed = {name: torch.einsum("ij,j...->i...", maps[name], s) for name, s in stacks.items()}
        out = dict(fixed)
        for rest in rests:
            if rest.startswith("attn.qkv."):
                w = torch.cat([mixed[f"{rest}:{p}"] for p in "qkv"], dim=1)
            else:
                w = mixed[rest]
            for i in range(L2):
                out[layer_key(i, rest)] = w[i]
        return out

    losses = _train_maps(maps, materialise, new_cfg, data, learn_steps, lr, seq_len, batch_size, seed)
    options = {"data": data, "learn_steps": learn_steps, "lr": lr, "seq_len": seq_len, "batch_size": batch_size}

    def dtype_of(key: str) -> torch.dtype:  # a grown layer key has its source layer-0 twin's dtype
        parsed = split_layer_key(key)
        return state_dict[layer_key(0, parsed[1]) if parsed else key].dtype

    return _finish(dtype_of, materialise, new_cfg, L2 / L, options, losses)


# ---- width -----------------------------------------------------------------------------------------------------
def _init_map(new: int, old: int, gen: torch.Generator) -> torch.Tensor:
    """[I; N(0, 1/new)]: old units kept, new units random combinations of old ones."""
    extra = torch.randn(new - old, old, generator=gen) / math.sqrt(new)
    return torch.cat([torch.eye(old), extra]).requires_grad_(True)


def grow_width_learn(state_dict, config: Config, *, g=2, seed: int = 0, data=None, learn_steps: int = DEFAULT_STEPS,
                     lr: float = DEFAULT_LR, seq_len: int | None = None, batch_size: int = 8,
                     to: Config | None = None) -> GrowthResult:
    """G_learn (width): LiGO width maps (residual, per-layer heads / KV groups / MLP units), trained on ``data``."""
    seq_len = _check_learn_options(learn_steps, lr, seq_len, batch_size, data, config)
    width.check_supported(config, "G_learn")
    new_cfg = width.target_config(config, g, to, "G_learn", integer=False)
    old, new = width.Widths.of(config), width.Widths.of(new_cfg)
    hs = config.head_size
    gen = torch.Generator().manual_seed(seed)
    maps = {"embd": _init_map(new.embd, old.embd, gen)}
    for i in range(config.n_layer):
        maps[f"q.{i}"] = _init_map(new_cfg.n_head, config.n_head, gen)
        maps[f"k.{i}"] = _init_map(new_cfg.n_query_groups, config.n_query_groups, gen)
        maps[f"v.{i}"] = _init_map(new_cfg.n_query_groups, config.n_query_groups, gen)
        maps[f"ffn.{i}"] = _init_map(new.ffn, old.ffn, gen)
    eye_hs = torch.eye(hs)

    def space_map(space: str | None, layer: int | None) -> torch.Tensor | None:
        if space in (None, "vocab"):
            return None
        if space in ("embd", "norm"):
            return maps["embd"]
        if space == "ffn":
            return maps[f"ffn.{layer}"]
        return torch.kron(maps[f"{space}.{layer}"], eye_hs)  # q / k / v: whole heads

    def grow_one(key: str, t: torch.Tensor) -> torch.Tensor:
        spaces = width.layout(key)
        parsed = split_layer_key(key)
        layer = parsed[0] if parsed else None
        if spaces[0] == "qkv":
            rows = list(zip(t.split((old.q, old.kv, old.kv)), ("q", "k", "v")))
        else:
            rows = [(t, spaces[0])]
        out = []
        for w, row_space in rows:
            R = space_map(row_space, layer)
            C = space_map(spaces[1], layer) if len(spaces) > 1 else None
            w = w if R is None else R @ w
            if C is not None:
                w = w @ C.T
            out.append(w)
        return torch.cat(out)

    sources = {k: v.detach().float().clone() for k, v in state_dict.items()}  # never alias the caller's tensors

    def materialise() -> dict[str, torch.Tensor]:
        return {k: grow_one(k, v) for k, v in sources.items()}

    losses = _train_maps(maps, materialise, new_cfg, data, learn_steps, lr, seq_len, batch_size, seed)
    options = {"data": data, "learn_steps": learn_steps, "lr": lr, "seq_len": seq_len, "batch_size": batch_size}
    return _finish(lambda k: state_dict[k].dtype, materialise, new_cfg, new.embd / old.embd, options, losses)
