"""Width growth: n_embd, n_head, n_query_groups and intermediate_size grow; head_size and heads-per-group are kept.

Every parameter dimension lives in one of five spaces: the residual stream (``embd``, n_embd), query heads (``q``,
n_head·hs), KV groups (``kv``, n_query_groups·hs), MLP units (``ffn``, intermediate_size) or the vocabulary
(never grown). The fused ``attn.qkv`` rows are ``[q | kv | kv]`` (litgpt ≥ 0.5.5) and are split before growing —
tiling the fused matrix as one block scrambles heads (reference/operators.md §8, Δlogit 1.3).

Why head_size and heads-per-group are kept: head_size fixes RoPE frequencies and the 1/√hs attention scale, and
query head j reads KV group j // (n_head/n_query_groups); keeping that ratio keeps every old head on its old group
and puts new heads on new groups.

* G_direct (HyperCloning / Net2Net): every space tiled f times; the embedding's columns are copied. Rows (a unit's
  incoming weights) are tiled; the f column blocks that read the f copies of one input feature share its weight:
  ``W'[i, k·c + j] = a_k[i, j]·W[i mod r, j]`` with ``Σ_k a_k = 1`` elementwise. Input [x, x] therefore gives output
  [y, y]: exact. RMSNorm of [x, x] equals RMSNorm of x, weights tiled.
  - default (uneven, LEMON / the paper's App. A): ``a_k = u_k / Σ_m u_m`` with ``u_k ~ U(0.5, 1.5)`` drawn per element
    and seeded (for f = 2 each share lies in [1/4, 3/4]). A copy of a feature then gets a different back-propagated
    gradient (``a_k·Wᵀ·δ``) than the original, so copies drift apart and the grown model can learn past the base.
  - ``symmetric=True``: ``a_k = 1/f`` (HyperCloning's ``W.repeat(f_out, f_in) / f_in``). Every copy then receives
    exactly the same gradient forever: the grown model trains like the base at f² times the FLOPs.
* G_zero: old weights top-left, new outputs read from old inputs through zeros, everything else random; embedding
  gets zero new columns. New dims therefore stay 0 through the network. RMSNorm over [x, 0] sees a mean square
  d/D times smaller: weights × √(d/D) and norm_eps × d/D compensate exactly.
* G_random: old weights top-left, everything new random; masks.GrowthMask gates the new units (see masks.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from litgpt import Config

from stacking.errors import GrowthError
from stacking.growth.layout import derive_config, generator_for, init_std, split_layer_key
from stacking.growth.operator import GrowthResult, check_g, check_target

_WIDTH_FIELDS = {"n_embd", "n_head", "n_query_groups", "intermediate_size", "head_size"}

# (row space, column space) of each parameter; 1-D tensors have only a row space.
_LAYER_LAYOUT = {
    "norm_1.weight": ("norm",),
    "norm_2.weight": ("norm",),
    "attn.qkv.weight": ("qkv", "embd"),
    "attn.qkv.bias": ("qkv",),
    "attn.proj.weight": ("embd", "q"),
    "attn.proj.bias": ("embd",),
    "mlp.fc_1.weight": ("ffn", "embd"),
    "mlp.fc_1.bias": ("ffn",),
    "mlp.fc_2.weight": ("ffn", "embd"),
    "mlp.fc_2.bias": ("ffn",),
    "mlp.proj.weight": ("embd", "ffn"),
    "mlp.proj.bias": ("embd",),
}
_TOP_LAYOUT = {
    "transformer.wte.weight": ("vocab", "embd"),
    "transformer.ln_f.weight": ("norm",),
    "lm_head.weight": ("vocab", "embd"),
    "lm_head.bias": ("vocab",),
}


def layout(key: str) -> tuple[str, ...]:
    parsed = split_layer_key(key)
    table, name = (_LAYER_LAYOUT, parsed[1]) if parsed else (_TOP_LAYOUT, key)
    if name not in table:
        raise GrowthError(f"width growth does not know how to grow parameter {key!r}")
    return table[name]


@dataclass(frozen=True)
class Widths:
    """Sizes of the growable spaces of one config."""

    embd: int
    q: int
    kv: int
    ffn: int

    @classmethod
    def of(cls, c: Config) -> Widths:
        return cls(c.n_embd, c.n_head * c.head_size, c.n_query_groups * c.head_size, c.intermediate_size)

    def size(self, space: str) -> int:
        return self.embd if space == "norm" else getattr(self, space)


def check_supported(config: Config, op: str) -> None:
    """Width operators are written for Llama-style blocks; anything else gets a clear refusal."""
    problems = []
    if config.norm_class_name != "RMSNorm":
        problems.append(f"norm_class_name={config.norm_class_name!r} (needs 'RMSNorm')")
    if config.mlp_class_name not in ("LLaMAMLP", "GemmaMLP"):
        problems.append(f"mlp_class_name={config.mlp_class_name!r} (needs 'LLaMAMLP' or 'GemmaMLP')")
    for name in ("norm_qk", "post_attention_norm", "post_mlp_norm", "scale_embeddings"):
        if getattr(config, name):
            problems.append(f"{name}=True")
    if config.latent_attention:
        problems.append("latent_attention")
    if "Gemma" in config.name:
        problems.append(f"name={config.name!r} (Gemma RMSNorm adds 1 to its weight)")
    if problems:
        raise GrowthError(f"{op} (width) supports Llama-style configs only; unsupported: {', '.join(problems)}")


def target_config(config: Config, g, to: Config | None, op: str, *, integer: bool) -> Config:
    """The grown config: ``to`` (validated) or every width field × g; head_size and heads-per-group kept."""
    if to is not None:
        new = check_target(config, to, _WIDTH_FIELDS, op)
    else:
        g = check_g(g, op, integer=integer)
        sizes = {}
        for name in ("n_embd", "n_head", "n_query_groups", "intermediate_size"):
            value = getattr(config, name) * g
            if abs(value - round(value)) > 1e-9:
                raise GrowthError(
                    f"{name} × g = {getattr(config, name)} × {g} = {value:g} is not an integer; "
                    f"width growth keeps head_size={config.head_size}, so choose g making every width "
                    f"field integral"
                )
            sizes[name] = round(value)
        new = derive_config(config, head_size=config.head_size, **sizes)
    if new.head_size != config.head_size:
        raise GrowthError(
            f"width growth keeps head_size={config.head_size}; the target has head_size="
            f"{new.head_size} (set head_size explicitly or change n_head)"
        )
    if new.n_head * config.n_query_groups != config.n_head * new.n_query_groups:
        raise GrowthError(
            f"width growth keeps heads per KV group = n_head/n_query_groups = "
            f"{config.n_head}/{config.n_query_groups}; the target has {new.n_head}/{new.n_query_groups}"
        )
    old_w, new_w = Widths.of(config), Widths.of(new)
    for space in ("embd", "q", "kv", "ffn"):
        a, b = old_w.size(space), new_w.size(space)
        if b < a:
            raise GrowthError(f"width growth cannot shrink: {space} size {a} -> {b}")
        if integer and b % a:
            raise GrowthError(
                f"{op} (width) tiles whole copies: every width must grow by an integer factor ({space}: {a} -> {b})"
            )
    return new


# ---- per-tensor growth -----------------------------------------------------------------------------------------
def _pieces(t: torch.Tensor, space: str, w: Widths) -> list[tuple[torch.Tensor, str]]:
    """Split qkv rows into their q/k/v blocks; other tensors are one piece."""
    if space != "qkv":
        return [(t, space)]
    q, k, v = t.split((w.q, w.kv, w.kv), dim=0)
    return [(q, "q"), (k, "kv"), (v, "kv")]


def _random(shape: tuple[int, ...], std: float, gen: torch.Generator) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=gen)


# Uneven split of G_direct: shares u / Σu with u ~ U(_SPLIT_LOW, _SPLIT_HIGH), so no share exceeds 3× another.
_SPLIT_LOW, _SPLIT_HIGH = 0.5, 1.5


def split_shares(copies: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """``copies`` fp32 tensors of ``shape`` (stacked on dim 0) that sum to 1 elementwise: ``u_k / Σ_m u_m`` with
    ``u_k ~ U(0.5, 1.5)`` i.i.d. For two copies each share lies in [1/4, 3/4], mean 1/2."""
    u = torch.empty((copies, *shape), dtype=torch.float32).uniform_(_SPLIT_LOW, _SPLIT_HIGH, generator=gen)
    return u / u.sum(dim=0, keepdim=True)


def _direct_matrix(t: torch.Tensor, r1: int, c1: int, key: str, symmetric: bool, gen) -> torch.Tensor:
    """G_direct for one matrix: rows tiled; each input feature's weight split over its column copies (see module
    docstring). The embedding is a lookup, not a sum over inputs: its columns are copied, not split."""
    r0, c0 = t.shape
    fan_in = c1 // c0
    tiled = t.repeat(r1 // r0, 1)
    if key == "transformer.wte.weight" or fan_in == 1:
        return tiled.repeat(1, fan_in)
    if symmetric:
        return tiled.repeat(1, fan_in) / fan_in
    shares = split_shares(fan_in, (r1, c0), gen)
    return torch.cat([share * tiled for share in shares], dim=1)


def _grow_piece(
    t, row_space, col_space, old: Widths, new: Widths, op: str, key: str, std: float, gen, symmetric: bool = False
):
    """Grow one matrix or vector (in fp32) according to `op`; see the module docstring for the three rules."""
    t = t.float()
    r0 = t.shape[0]
    r1 = r0 if row_space == "vocab" else new.size(row_space)
    is_norm = row_space == "norm"
    if t.dim() == 1:
        if op == "G_direct":
            return t.repeat(r1 // r0)
        if op == "G_zero" and is_norm:  # RMSNorm over [x, 0]: see module docstring
            alpha = math.sqrt(old.embd / new.embd)
            return torch.cat([t * alpha, torch.full((r1 - r0,), alpha)])
        fill = torch.ones(r1 - r0) if is_norm else torch.zeros(r1 - r0)  # new norm weights 1, new biases 0
        return torch.cat([t, fill])
    c0 = t.shape[1]
    c1 = new.size(col_space)
    if op == "G_direct":
        return _direct_matrix(t, r1, c1, key, symmetric, gen)
    out = _random((r1, c1), std, gen)
    out[:r0, :c0] = t
    if op == "G_zero":
        out[r0:, :c0] = 0.0  # new outputs read nothing from old inputs
        if key == "transformer.wte.weight":
            out[:, c0:] = 0.0  # new residual dims start at zero
    return out


def grow_tensor(
    key: str, t: torch.Tensor, old_cfg: Config, new_cfg: Config, op: str, seed: int, symmetric: bool = False
) -> torch.Tensor:
    """One parameter grown by `op` (random draws from a generator seeded by (seed, key)), in the source dtype."""
    spaces = layout(key)
    old, new = Widths.of(old_cfg), Widths.of(new_cfg)
    gen = generator_for(seed, key)
    std = init_std(key, new_cfg)
    parts = [
        _grow_piece(p, space, spaces[1] if len(spaces) > 1 else None, old, new, op, key, std, gen, symmetric)
        for p, space in _pieces(t, spaces[0], old)
    ]
    return torch.cat(parts, dim=0).to(t.dtype)


def _grow(state_dict, config, op, new_cfg, seed, symmetric: bool = False) -> dict:
    return {key: grow_tensor(key, t, config, new_cfg, op, seed, symmetric) for key, t in state_dict.items()}


# ---- operators -------------------------------------------------------------------------------------------------
def grow_width_direct(
    state_dict, config: Config, *, g=2, seed: int = 0, symmetric: bool = False, to: Config | None = None
) -> GrowthResult:
    """G_direct (width): tiled units, exact function preservation. Integer factors only.

    Each input feature's weight is split unevenly over its copies (seeded shares summing to 1) so copies get
    different gradients; ``symmetric=True`` splits it evenly (HyperCloning), and copies then never diverge.
    """
    if not isinstance(symmetric, bool):
        raise GrowthError(f"symmetric must be true or false for G_direct (width) (got {symmetric!r})")
    check_supported(config, "G_direct")
    new = target_config(config, g, to, "G_direct", integer=True)
    sd = _grow(state_dict, config, "G_direct", new, seed, symmetric)
    return GrowthResult(sd, new, new.n_embd / config.n_embd, {"symmetric": symmetric})


def grow_width_zero(state_dict, config: Config, *, g=2, seed: int = 0, to: Config | None = None) -> GrowthResult:
    """G_zero (width): new fan-out zero, the rest random, RMSNorm × √(d/D) and norm_eps × d/D (exact)."""
    check_supported(config, "G_zero")
    new = target_config(config, g, to, "G_zero", integer=False)
    new = derive_config(new, norm_eps=config.norm_eps * config.n_embd / new.n_embd)
    sd = _grow(state_dict, config, "G_zero", new, seed)
    return GrowthResult(sd, new, new.n_embd / config.n_embd, {})


def grow_width_random(
    state_dict, config: Config, *, g=2, seed: int = 0, ramp_tokens: int = 1_000_000, to: Config | None = None
) -> GrowthResult:
    """G_random (width, MSG-style): random new units, gated by a mask ramping 0→1 over ``ramp_tokens``."""
    if isinstance(ramp_tokens, bool) or not isinstance(ramp_tokens, int) or ramp_tokens < 0:
        raise GrowthError(f"ramp_tokens must be an integer >= 0 for G_random (got {ramp_tokens!r})")
    check_supported(config, "G_random")
    new = target_config(config, g, to, "G_random", integer=False)
    sd = _grow(state_dict, config, "G_random", new, seed)
    mask = {
        "direction": "width",
        "ramp_tokens": ramp_tokens,
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "intermediate_size": config.intermediate_size,
    }
    return GrowthResult(sd, new, new.n_embd / config.n_embd, {"ramp_tokens": ramp_tokens}, mask=mask)
