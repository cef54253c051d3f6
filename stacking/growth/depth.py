"""Depth growth: build an n_layer·g model out of a model's own blocks (all ops but G_learn, which is in learn.py).

Each operator here is a *plan*: for every new layer, the source layer it copies (or ``None`` for a freshly initialised
block) and whether its output projections are zeroed. One plan applies two ways with identical results:

* `apply_plan` — in memory, for `grow(state_dict, config, ...)`;
* `stream_plan` — tensor by tensor from a memory-mapped checkpoint into a `TensorFileWriter`, which is how
  `grow_checkpoint` grows checkpoints larger than RAM (peak memory ≈ one tensor).

Zeroing ``attn.proj`` and ``mlp.proj`` makes a pre-norm block the identity: ``x + 0·attn(norm(x)) + 0·mlp(...)``.
That is what makes G_zero and llama_pro exactly function preserving (reference/operators.md §1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from litgpt import Config

from stacking.errors import GrowthError
from stacking.growth.layout import derive_config, expected_shapes, init_like, layer_key, split_layer_key
from stacking.growth.operator import GrowthResult, check_g, check_target
from stacking.growth.tensorfile import TensorFileWriter, release_pages

# The output projections of a block's two residual branches (weights and, for bias=True configs, biases).
_ZEROED = re.compile(r"^(attn\.proj|mlp\.proj)\.(weight|bias)$")
# Config fields that hold one entry per layer and must follow the layers around.
_PER_LAYER_FIELDS = ("sliding_window_indices", "rope_indices")
_DEPTH_FIELDS = {"n_layer", *_PER_LAYER_FIELDS}


@dataclass(frozen=True)
class DepthPlan:
    op: str
    config: Config
    """The grown config."""
    sources: tuple[int | None, ...]
    """Source layer of each new layer; None = a freshly initialised block (G_random)."""
    zeroed: frozenset[int]
    """New layers whose attn.proj / mlp.proj are zero (identity blocks)."""
    seed: int
    options: dict
    mask: dict | None = None
    trainable_layers: tuple[int, ...] | None = None

    @property
    def new_layers(self) -> list[int]:
        """Layers that did not exist as such in the source: zeroed copies or fresh blocks."""
        return [i for i, s in enumerate(self.sources) if s is None or i in self.zeroed]


# ---- building plans --------------------------------------------------------------------------------------------
def grown_config(config: Config, sources: list[int | None], to: Config | None) -> Config:
    """n_layer = len(sources); per-layer config lists follow their source layer (fresh blocks: layer i mod L)."""
    L = config.n_layer
    if config.first_k_dense_replace is not None:
        raise GrowthError(
            "depth growth does not support first_k_dense_replace (MoE models with leading dense "
            "layers): copied layers would change MLP type"
        )
    changes: dict = {"n_layer": len(sources)}
    for name in _PER_LAYER_FIELDS:
        values = getattr(config, name)
        if values is not None:
            changes[name] = [values[s if s is not None else i % L] for i, s in enumerate(sources)]
    return derive_config(to if to is not None else config, **changes)


def target_layers(config: Config, g, to: Config | None, op: str) -> int:
    """New n_layer: from `to` (a multiple of n_layer) or n_layer·g (g an integer)."""
    L = config.n_layer
    if to is None:
        return L * check_g(g, op, integer=True)
    check_target(config, to, _DEPTH_FIELDS, op)
    if to.n_layer % L or to.n_layer < L:
        raise GrowthError(
            f"to.n_layer={to.n_layer} must be a multiple of n_layer={L} for {op} "
            f"(use G_stack with layers=[...] for partial stacking)"
        )
    return to.n_layer


def _need_dense_blocks(config: Config, op: str) -> None:
    if config.mlp_class_name not in ("LLaMAMLP", "GemmaMLP", "GptNeoxMLP") or config.latent_attention:
        raise GrowthError(
            f"{op} zeroes attn.proj/mlp.proj and supports dense MLPs and standard attention "
            f"(mlp_class_name={config.mlp_class_name!r})"
        )


def plan_stack(
    config: Config, *, g=2, seed: int = 0, layers: list[int] | None = None, to: Config | None = None
) -> DepthPlan:
    """G_stack (= G_direct in depth): the whole model g times, layers 0..L-1, 0..L-1, ...

    ``layers``: explicit source layer for every new layer (partial stacking, e.g. ``[0,1,2,3,4,5,2,3,4,5]``);
    it replaces g (the effective g is len(layers)/n_layer).
    """
    L = config.n_layer
    if layers is not None:
        if isinstance(layers, (str, bytes)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            raise GrowthError(f"layers must be a list of integer layer indices (got {layers!r})")
        sources = list(layers)
        if not sources or any(not 0 <= i < L for i in sources):
            raise GrowthError(f"layers must be a non-empty list of indices in 0..{L - 1} (got {sources})")
        if to is not None:
            check_target(config, to, _DEPTH_FIELDS, "G_stack")
            if to.n_layer != len(sources):
                raise GrowthError(f"to.n_layer={to.n_layer} differs from len(layers)={len(sources)}")
    else:
        sources = [i % L for i in range(target_layers(config, g, to, "G_stack"))]
    return DepthPlan(
        "G_stack", grown_config(config, sources, to), tuple(sources), frozenset(), seed, {"layers": sources}
    )


def plan_interpolate(config: Config, *, g=2, seed: int = 0, to: Config | None = None) -> DepthPlan:
    """Each layer repeated in place: 0,0,1,1,... (the paper's interpolation ablation, App. H.2)."""
    L2 = target_layers(config, g, to, "interpolate")
    gi = L2 // config.n_layer
    sources = [i // gi for i in range(L2)]
    return DepthPlan("interpolate", grown_config(config, sources, to), tuple(sources), frozenset(), seed, {})


def plan_zero(config: Config, *, g=2, seed: int = 0, order: str = "interleave", to: Config | None = None) -> DepthPlan:
    """G_zero: copies whose attn.proj/mlp.proj are zero, so every copy is an identity block (function preserving).

    ``order="interleave"`` (default, as the official G_zero_depthwise.py): 0,0',1,1',... with the first copy of each
    layer intact; ``order="stack"``: 0..L-1 intact, then zeroed copies 0'..(L-1)'.
    """
    _need_dense_blocks(config, "G_zero")
    L = config.n_layer
    L2 = target_layers(config, g, to, "G_zero")
    gi = L2 // L
    if order == "interleave":
        sources = [i // gi for i in range(L2)]
        zeroed = {i for i in range(L2) if i % gi}
    elif order == "stack":
        sources = [i % L for i in range(L2)]
        zeroed = set(range(L, L2))
    else:
        raise GrowthError(f"order must be 'interleave' or 'stack' for G_zero (got {order!r})")
    return DepthPlan(
        "G_zero", grown_config(config, sources, to), tuple(sources), frozenset(zeroed), seed, {"order": order}
    )


def plan_random(
    config: Config, *, g=2, seed: int = 0, ramp_tokens: int = 1_000_000, to: Config | None = None
) -> DepthPlan:
    """G_random: (g-1)·L freshly initialised blocks on top of the L trained ones (as the official msg.py does),
    their branch outputs gated by a mask c ramping 0→1 over ``ramp_tokens`` of training:
    ``Y = X + c·MHA(norm(X))``, ``Y = X + c·MLP(norm(X))``. At c=0 the model is the base model."""
    if isinstance(ramp_tokens, bool) or not isinstance(ramp_tokens, int) or ramp_tokens < 0:
        raise GrowthError(f"ramp_tokens must be an integer >= 0 for G_random (got {ramp_tokens!r})")
    L = config.n_layer
    L2 = target_layers(config, g, to, "G_random")
    sources = list(range(L)) + [None] * (L2 - L)
    mask = {"direction": "depth", "ramp_tokens": ramp_tokens, "layers": list(range(L, L2))}
    return DepthPlan(
        "G_random",
        grown_config(config, sources, to),
        tuple(sources),
        frozenset(),
        seed,
        {"ramp_tokens": ramp_tokens},
        mask=mask,
    )


def plan_llama_pro(
    config: Config,
    *,
    g=2,
    seed: int = 0,
    groups: int | None = None,
    copies: int | None = None,
    train_new_only: bool = False,
    to: Config | None = None,
) -> DepthPlan:
    """LLaMA Pro block expansion: split the L blocks into ``groups`` (N) groups of consecutive blocks; after each
    group insert ``copies`` (P) copies of its top blocks with attn.proj/mlp.proj zeroed (identity blocks).

    N defaults to L. P defaults to L·(g-1)/N (so g may be fractional: 32 layers, N=8, g=1.25 is LLaMA-Pro-8B's
    32→40). The copies are of the group's top min(P, group size) blocks in order, repeated when P > group size.
    ``train_new_only``: growth.json lists the new blocks' parameters as the only trainable ones (norms included,
    as LLaMA Pro's open-instruct trainer does).
    """
    _need_dense_blocks(config, "llama_pro")
    L = config.n_layer
    N = L if groups is None else groups
    if isinstance(N, bool) or not isinstance(N, int) or N < 1 or L % N:
        divisors = [d for d in range(1, L + 1) if L % d == 0]
        raise GrowthError(f"groups must divide n_layer={L} for llama_pro (got {groups!r}); valid: {divisors}")
    if to is not None:
        check_target(config, to, _DEPTH_FIELDS, "llama_pro")
        if (to.n_layer - L) % N or to.n_layer < L:
            raise GrowthError(f"to.n_layer - n_layer = {to.n_layer - L} must be a multiple of groups={N} for llama_pro")
        P = (to.n_layer - L) // N
    elif copies is not None:
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
            raise GrowthError(f"copies must be an integer >= 0 for llama_pro (got {copies!r})")
        P = copies
    else:
        g = check_g(g, "llama_pro", integer=False)
        P_float = L * (g - 1) / N
        if abs(P_float - round(P_float)) > 1e-9:
            raise GrowthError(
                f"g={g} gives n_layer·(g-1)/groups = {P_float:g} copies per group for llama_pro; "
                f"it must be an integer (n_layer={L}, groups={N}) — or pass copies"
            )
        P = round(P_float)
    size = L // N
    top = min(P, size)
    sources: list[int] = []
    zeroed: set[int] = set()
    for grp in range(N):
        block = list(range(grp * size, (grp + 1) * size))
        sources += block
        for k in range(P):
            zeroed.add(len(sources))
            sources.append(block[size - top + k % top])
    trainable = tuple(sorted(zeroed)) if train_new_only else None
    return DepthPlan(
        "llama_pro",
        grown_config(config, sources, to),
        tuple(sources),
        frozenset(zeroed),
        seed,
        {"groups": N, "copies": P, "train_new_only": bool(train_new_only)},
        trainable_layers=trainable,
    )


def plan_solar(config: Config, *, g=2, seed: int = 0, m: int | None = None, to: Config | None = None) -> DepthPlan:
    """SOLAR depth up-scaling: two copies; drop the last m layers of the first and the first m of the second:
    layers 0..L-m-1 then m..L-1 (2·(L-m) layers). m defaults to L//4 (SOLAR: 32 layers, m=8 → 48)."""
    L = config.n_layer
    if to is not None:
        check_target(config, to, _DEPTH_FIELDS, "solar_dus")
        if to.n_layer % 2 or not L <= to.n_layer <= 2 * L:
            raise GrowthError(
                f"to.n_layer={to.n_layer} must be even and in {L}..{2 * L} for solar_dus (2·(n_layer - m))"
            )
        m = L - to.n_layer // 2
    else:
        if check_g(g, "solar_dus", integer=True) != 2:
            raise GrowthError(f"g must be 2 for solar_dus (two copies, got {g}); choose m to set the size")
        m = L // 4 if m is None else m
    if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < L:
        raise GrowthError(f"m must be an integer in 0..{L - 1} for solar_dus (n_layer={L}, got {m!r})")
    sources = list(range(L - m)) + list(range(m, L))
    return DepthPlan("solar_dus", grown_config(config, sources, to), tuple(sources), frozenset(), seed, {"m": m})


def block_sources(n_layer: int, insertions: int, block: int, where: str) -> list[int]:
    """The layer map of ``insertions`` one-block growth steps on an n_layer model cut into blocks of ``block``
    consecutive layers, done one after another with no training in between: after each step the model has one
    block more. ``where="top"`` (gradual stacking) copies the current top block onto the top; ``where="middle"``
    (MIDAS) inserts a copy of the current middle block right after it — block ⌈k/2⌉ of k counting from 1, i.e. the
    lower of the two middle blocks when k is even. Returns the source layer of every layer of the result."""
    blocks = [list(range(i, i + block)) for i in range(0, n_layer, block)]
    for _ in range(insertions):
        if where == "top":
            blocks.append(blocks[-1])
        else:
            m = (len(blocks) + 1) // 2 - 1
            blocks.insert(m + 1, blocks[m])
    return [s for b in blocks for s in b]


def _plan_block(op: str, where: str, config: Config, g, seed: int, block: int | None, to: Config | None) -> DepthPlan:
    L = config.n_layer
    L2 = target_layers(config, g, to, op)
    b = L if block is None else block
    if isinstance(b, bool) or not isinstance(b, int) or b < 1 or L % b:
        divisors = [d for d in range(1, L + 1) if L % d == 0]
        raise GrowthError(f"block must divide n_layer={L} for {op} (got {block!r}); valid: {divisors}")
    sources = block_sources(L, (L2 - L) // b, b, where)
    return DepthPlan(
        op, grown_config(config, sources, to), tuple(sources), frozenset(), seed, {"block": b, "layers": sources}
    )


def plan_gradual(
    config: Config, *, g=2, seed: int = 0, block: int | None = None, to: Config | None = None
) -> DepthPlan:
    """Gradual stacking (Reddi et al. 2023; the GradStack of Saunshi et al. 2024): the model is cut into blocks of
    ``block`` consecutive layers and grows one block at a time, each new block a copy of the top block, until it
    has g·n_layer layers: L=4, block=2, g=2 → 0,1,2,3,2,3,2,3. ``block`` must divide n_layer; the default
    n_layer (one block = the whole model) gives G_stack's map. Not function preserving."""
    return _plan_block("gradual", "top", config, g, seed, block, to)


def plan_midas(config: Config, *, g=2, seed: int = 0, block: int | None = None, to: Config | None = None) -> DepthPlan:
    """MIDAS (Saunshi et al. 2024): like gradual stacking, one block of ``block`` layers at a time until g·n_layer
    layers, but each new block is a copy of the current *middle* block (block ⌈k/2⌉ of k), inserted right after
    it: L=4, block=2, g=2 → 0,1,0,1,0,1,2,3; L=4, block=1, g=2 → 0,1,1,1,1,1,2,3. ``block`` must divide n_layer;
    the default n_layer gives G_stack's map. Not function preserving."""
    return _plan_block("midas", "middle", config, g, seed, block, to)


PLANNERS = {
    "G_stack": plan_stack,
    "interpolate": plan_interpolate,
    "G_zero": plan_zero,
    "G_random": plan_random,
    "llama_pro": plan_llama_pro,
    "solar_dus": plan_solar,
    "gradual": plan_gradual,
    "midas": plan_midas,
}


# ---- applying plans --------------------------------------------------------------------------------------------
def plan_entries(plan: DepthPlan) -> Iterator[tuple[str, str | None, bool]]:
    """(new key, source key or None for a fresh tensor, zeroed?) in litgpt's own parameter order."""
    for key in expected_shapes(plan.config):
        parsed = split_layer_key(key)
        if parsed is None:
            yield key, key, False
            continue
        i, rest = parsed
        s = plan.sources[i]
        if s is None:
            yield key, None, False
        else:
            yield key, layer_key(s, rest), i in plan.zeroed and bool(_ZEROED.match(rest))


def _make(
    plan: DepthPlan, key: str, src_key: str | None, zero: bool, state_dict: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    if src_key is None:  # a fresh block: same shape/dtype as the source's layer 0
        template = state_dict[layer_key(0, split_layer_key(key)[1])]
        return init_like(key, tuple(template.shape), template.dtype, plan.config, plan.seed)
    t = state_dict[src_key]
    return torch.zeros_like(t, device="cpu") if zero else t


def _result(plan: DepthPlan, state_dict: dict, src_config: Config) -> GrowthResult:
    trainable = None
    if plan.trainable_layers is not None:
        keep = set(plan.trainable_layers)
        trainable = [k for k in expected_shapes(plan.config) if (p := split_layer_key(k)) and p[0] in keep]
    return GrowthResult(
        state_dict,
        plan.config,
        plan.config.n_layer / src_config.n_layer,
        plan.options,
        mask=plan.mask,
        trainable=trainable,
    )


def apply_plan(plan: DepthPlan, state_dict: Mapping[str, torch.Tensor], src_config: Config) -> GrowthResult:
    """In memory. Copies are clones, so the result never aliases (and cannot later modify) the input."""
    out = {}
    for key, src_key, zero in plan_entries(plan):
        t = _make(plan, key, src_key, zero, state_dict)
        out[key] = t.clone() if src_key is not None and t is state_dict[src_key] else t
    return _result(plan, out, src_config)


def stream_plan(
    plan: DepthPlan, state_dict: Mapping[str, torch.Tensor], src_config: Config, writer: TensorFileWriter
) -> GrowthResult:
    """Tensor by tensor into ``writer``; source tensors are written straight from their mmap and then released.

    The returned result's state_dict is empty (the tensors live in the file)."""
    for key, src_key, zero in plan_entries(plan):
        t = _make(plan, key, src_key, zero, state_dict)
        writer.add(key, t)
        if src_key is not None:
            release_pages(state_dict[src_key])
        del t
    return _result(plan, {}, src_config)


def check_carry(plan: DepthPlan, op: str) -> None:
    """GrowthError unless every tensor of ``plan`` is a copy of a source tensor (what carrying moments needs)."""
    fresh = [i for i, s in enumerate(plan.sources) if s is None]
    if fresh:
        raise GrowthError(
            f"carry is not defined for {op} (depth): new layers {fresh} are freshly initialised, so "
            f"their moments have no source tensor; use the fresh optimizer"
        )
    if plan.zeroed:
        raise GrowthError(
            f"carry is not defined for {op} (depth): layers {sorted(plan.zeroed)} have zeroed output "
            f"projections, which are not copies of a source tensor; use the fresh optimizer"
        )


def carry_state(
    plan: DepthPlan, named_state: Mapping[str, Mapping[str, torch.Tensor]], src_config: Config, op: str
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-parameter optimizer state of the source mapped through ``plan``: every grown parameter gets a clone of its
    source parameter's state (layer keys from their source layer, embeddings / final norm / LM head from themselves).

    Defined only for plans whose every tensor is a copy: a fresh block (``sources[i] is None``) or a zeroed output
    projection has no source tensor whose moments would describe it. Validates everything before copying anything.
    """
    check_carry(plan, op)
    if not isinstance(named_state, Mapping):
        raise GrowthError(
            f"optimizer state must be a dict of parameter name -> state dict (got {type(named_state).__name__})"
        )
    want = expected_shapes(src_config)
    missing = [k for k in want if k not in named_state]
    extra = [k for k in named_state if k not in want]
    if missing or extra:
        parts = [
            f"{label}: {', '.join(map(str, items[:2]))}{f' (+{len(items) - 2} more)' if len(items) > 2 else ''}"
            for label, items in (("missing", missing), ("unexpected", extra))
            if items
        ]
        raise GrowthError(f"optimizer state keys must be the base model's parameter names ({'; '.join(parts)})")
    for key, state in named_state.items():
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise GrowthError(
                f"optimizer state of {key!r} must be a dict of name -> tensor (got {type(state).__name__})"
            )
        for name, t in state.items():
            if t.numel() != 1 and tuple(t.shape) != tuple(want[key]):
                raise GrowthError(
                    f"optimizer state {key!r}[{name!r}] has shape {tuple(t.shape)}; the parameter's is "
                    f"{tuple(want[key])} (only per-element or scalar state can be carried)"
                )
    return {
        key: {name: t.detach().clone() for name, t in named_state[src_key].items()}
        for key, src_key, _ in plan_entries(plan)
    }


def as_operator(planner):
    """Turn a planner into a `grow` operator ``(state_dict, config, *, g, seed, **options) -> GrowthResult``."""

    def operator(state_dict, config, *, g=2, seed=0, **options):
        return apply_plan(planner(config, g=g, seed=seed, **options), state_dict, config)

    operator.__name__ = operator.__qualname__ = planner.__name__.replace("plan_", "grow_depth_")
    operator.__doc__ = planner.__doc__
    operator.planner = planner
    return operator
