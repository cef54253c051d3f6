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

Data is a token dataset dir (docs/formats.md): its train split, read with ``stacking.data.load_tokens``.

Compute: learning the maps is training, so `learn_flops` counts it (from the two configs alone, no weights) and
`grow_checkpoint` records it as growth.json ``extra_flops``; a grid planner adds it to the grown run's FLOPs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from litgpt import GPT, Config
from torch.func import functional_call

from stacking.data import load_tokens
from stacking.errors import DataError, GrowthError
from stacking.growth import depth, width
from stacking.growth.layout import expected_shapes, layer_key, split_layer_key
from stacking.growth.operator import GrowthResult
from stacking.models import flops_per_token

# LiGO's README trains the operator for 100 steps at lr 2e-4 (RoBERTa); prts issue #2 also uses 100 steps.
DEFAULT_STEPS = 100
DEFAULT_LR = 2e-4
DEFAULT_BATCH_SIZE = 8


def default_seq_len(config: Config) -> int:
    """G_learn's default sequence length: min(block_size, 256)."""
    return min(config.block_size, 256)


def _check_sizes(learn_steps, seq_len, batch_size, config: Config) -> int:
    """Validate the options that set G_learn's token count; returns seq_len with its default filled in."""
    if isinstance(learn_steps, bool) or not isinstance(learn_steps, int) or learn_steps < 0:
        raise GrowthError(f"learn_steps must be an integer >= 0 for G_learn (got {learn_steps!r})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GrowthError(f"batch_size must be an integer >= 1 for G_learn (got {batch_size!r})")
    seq_len = default_seq_len(config) if seq_len is None else seq_len
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= config.block_size:
        raise GrowthError(f"seq_len must be an integer in 1..block_size={config.block_size} (got {seq_len!r})")
    return seq_len


def _check_learn_options(learn_steps, lr, seq_len, batch_size, data, config: Config) -> int:
    seq_len = _check_sizes(learn_steps, seq_len, batch_size, config)
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise GrowthError(f"lr must be a positive number for G_learn (got {lr!r})")
    if learn_steps > 0:
        open_tokens(data)  # fail on a missing or unreadable data dir before any compute
    return seq_len


def open_tokens(data):
    """The train split of a token dataset dir (``stacking.data.load_tokens``: train.bin, or its train shards)."""
    if data is None:
        raise GrowthError("G_learn needs data=DATA_DIR (a token dataset dir with train.bin and meta.json)")
    try:
        return load_tokens(data, "train")
    except DataError as e:
        raise GrowthError(f"data dir {str(data)!r} needs meta.json and train.bin or train shards ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise GrowthError(f"data dir {str(data)!r}: cannot read train.bin with meta.json's dtype ({e})") from None


def _batches(tokens, seq_len: int, batch_size: int, vocab: int, seed: int):
    """Random windows (seeded), as (inputs, targets) int64 tensors."""
    if len(tokens) < seq_len + 2:
        raise GrowthError(f"the train split has {len(tokens)} tokens; G_learn needs more than seq_len+1={seq_len + 1}")
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
        window = torch.from_numpy(np.stack([np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts]))
        if int(window.max()) >= vocab:
            raise GrowthError(f"data has token id {int(window.max())} >= the model's padded_vocab_size={vocab}")
        yield window[:, :-1], window[:, 1:]


def _train_maps(
    maps: dict[str, torch.Tensor],
    materialise,
    config: Config,
    data,
    steps: int,
    lr: float,
    seq_len: int,
    batch_size: int,
    seed: int,
) -> list[float]:
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


def _finish(
    dtype_of, materialise, config: Config, g: float, options: dict, losses: list[float], extra_flops: float
) -> GrowthResult:
    """Materialise the grown weights once more without autograd, in the source's dtypes."""
    with torch.no_grad():
        grown = materialise()
    out = {k: v.detach().to(dtype_of(k)).contiguous() for k, v in grown.items()}
    return GrowthResult(out, config, g, options, log={"learn_losses": losses}, extra_flops=extra_flops)


# ---- compute ---------------------------------------------------------------------------------------------------
def _check_pair(grown_config: Config, base_config: Config, direction: str) -> None:
    """The two configs must be a G_learn (direction) pair: same blocks and more layers, or same depth and wider."""
    for name, c in (("grown_config", grown_config), ("base_config", base_config)):
        if not isinstance(c, Config):
            raise GrowthError(f"{name} must be a litgpt.Config (got {type(c).__name__})")
    if direction == "depth":
        if width.Widths.of(grown_config) != width.Widths.of(base_config) or (
            grown_config.n_layer < base_config.n_layer or grown_config.n_layer % base_config.n_layer
        ):
            raise GrowthError(
                f"G_learn (depth) needs grown_config to be base_config with n_layer a multiple of "
                f"{base_config.n_layer} and the same widths (got n_layer={grown_config.n_layer}, "
                f"n_embd={grown_config.n_embd} from n_embd={base_config.n_embd})"
            )
    elif direction == "width":
        old, new = width.Widths.of(base_config), width.Widths.of(grown_config)
        if grown_config.n_layer != base_config.n_layer or any(
            new.size(s) < old.size(s) for s in ("embd", "q", "kv", "ffn")
        ):
            raise GrowthError(
                f"G_learn (width) needs grown_config to keep n_layer={base_config.n_layer} and not "
                f"shrink any width (got n_layer={grown_config.n_layer}, {old} -> {new})"
            )
    else:
        raise GrowthError(f"direction must be 'depth' or 'width' for G_learn (got {direction!r})")


def _map_products(
    key: str, shape: tuple[int, ...], old: width.Widths, new: width.Widths
) -> list[tuple[int, int, int, int, bool, bool]]:
    """(r0, c0, r1, c1, row map?, column map?) of each product ``R·W·Cᵀ`` that width materialisation computes for
    one parameter (the fused qkv is three: q, k, v)."""
    spaces = width.layout(key)
    c0 = shape[1] if len(shape) > 1 else 1
    col = spaces[1] if len(spaces) > 1 and spaces[1] != "vocab" else None
    c1 = new.size(col) if col else c0
    rows = (
        [("q", old.q, new.q), ("kv", old.kv, new.kv), ("kv", old.kv, new.kv)]
        if spaces[0] == "qkv"
        else [(spaces[0], shape[0], shape[0] if spaces[0] == "vocab" else new.size(spaces[0]))]
    )
    return [(r0, c0, r1, c1, space != "vocab", col is not None) for space, r0, r1 in rows]


def map_flops_per_step(grown_config: Config, base_config: Config, direction: str) -> float:
    """FLOPs of one step's materialisation of the grown weights from the maps, forward + backward (gradients flow to
    the maps only; the source weights are frozen). Matmuls only, 2 FLOPs per multiply-add.

    depth: ``W'_l = Σ_j D[l, j]·W_j`` is a (L'×L)·(L×P) product over the P parameters of a block: 2·L'·L·P forward,
    the same again for dD. width, per parameter ``R·W·Cᵀ`` (R: r1×r0, C: c1×c0): forward 2·r1·r0·c0 + 2·r1·c0·c1;
    backward dC, d(RW) and dR = 4·r1·c0·c1 + 2·r1·r0·c0. One-sided products (norms, biases: R·w; embedding and
    LM head: W·Cᵀ) cost 4·m·n·k.
    """
    _check_pair(grown_config, base_config, direction)
    shapes = expected_shapes(base_config)
    if direction == "depth":
        block = sum(math.prod(s) for k, s in shapes.items() if (p := split_layer_key(k)) and p[0] == 0)
        return 4.0 * grown_config.n_layer * base_config.n_layer * block
    old, new = width.Widths.of(base_config), width.Widths.of(grown_config)
    total = 0
    for key, shape in shapes.items():
        for r0, c0, r1, c1, has_r, has_c in _map_products(key, tuple(shape), old, new):
            if has_r and has_c:
                total += 4 * r1 * r0 * c0 + 6 * r1 * c0 * c1
            elif has_r:
                total += 4 * r1 * r0 * c0
            elif has_c:
                total += 4 * r0 * c0 * c1
    return float(total)


def learn_flops(
    grown_config: Config,
    base_config: Config,
    *,
    learn_steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seq_len: int | None = None,
    direction: str = "depth",
) -> float:
    """Training FLOPs G_learn spends learning its maps; from the configs alone (no weights), so a planner can call it.

    ``learn_steps · (batch_size · seq_len · flops_per_token(grown_config, seq_len) + map_flops_per_step(...))``:

    * the grown model's forward + backward on every token, with `stacking.models.flops_per_token` (6·N_non-embedding
      + attention, the trainer's count). The full backward is needed: the maps' gradients come through the
      gradients of the materialised weights;
    * materialising the grown weights from the maps every step, forward + backward (`map_flops_per_step`). In depth
      it is ≈ 2L/(3·tokens per step) of the first term (negligible); in width the products are dense and their
      share grows like D/(tokens per step): for g=2 with 8×256 tokens a step and a 4·d MLP, about 2% of the first
      term at D=64 and about 115% at D=2048.

    Left out: the Adam update of the maps (a few FLOPs per map entry), building ``kron(B, I_hs)`` (elementwise), the
    final no-grad materialisation (a weight copy, like any other operator's), the loss and data loading.
    ``learn_steps=0`` (G_learn = G_stack) costs 0. ``seq_len`` defaults to G_learn's own default, min(block_size of
    the base, 256).
    """
    _check_pair(grown_config, base_config, direction)
    seq_len = _check_sizes(learn_steps, seq_len, batch_size, base_config)
    if learn_steps == 0:
        return 0.0
    tokens = batch_size * seq_len
    per_step = tokens * flops_per_token(grown_config, seq_len) + map_flops_per_step(
        grown_config, base_config, direction
    )
    return float(learn_steps * per_step)


# ---- depth -----------------------------------------------------------------------------------------------------
def grow_depth_learn(
    state_dict,
    config: Config,
    *,
    g=2,
    seed: int = 0,
    data=None,
    learn_steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    seq_len: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    to: Config | None = None,
) -> GrowthResult:
    """G_learn (depth): per-parameter-kind layer-mixing matrices, starting at G_stack, trained on ``data``."""
    seq_len = _check_learn_options(learn_steps, lr, seq_len, batch_size, data, config)
    L = config.n_layer
    L2 = depth.target_layers(config, g, to, "G_learn")
    new_cfg = depth.grown_config(config, [i % L for i in range(L2)], to)
    qkv_split = (
        config.n_head * config.head_size,
        config.n_query_groups * config.head_size,
        config.n_query_groups * config.head_size,
    )

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

    flops = learn_flops(
        new_cfg, config, learn_steps=learn_steps, batch_size=batch_size, seq_len=seq_len, direction="depth"
    )
    return _finish(dtype_of, materialise, new_cfg, L2 / L, options, losses, flops)


# ---- width -----------------------------------------------------------------------------------------------------
def _init_map(new: int, old: int, gen: torch.Generator) -> torch.Tensor:
    """[I; N(0, 1/new)]: old units kept, new units random combinations of old ones."""
    extra = torch.randn(new - old, old, generator=gen) / math.sqrt(new)
    return torch.cat([torch.eye(old), extra]).requires_grad_(True)


def grow_width_learn(
    state_dict,
    config: Config,
    *,
    g=2,
    seed: int = 0,
    data=None,
    learn_steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    seq_len: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    to: Config | None = None,
) -> GrowthResult:
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
    flops = learn_flops(
        new_cfg, config, learn_steps=learn_steps, batch_size=batch_size, seq_len=seq_len, direction="width"
    )
    return _finish(lambda k: state_dict[k].dtype, materialise, new_cfg, new.embd / old.embd, options, losses, flops)
