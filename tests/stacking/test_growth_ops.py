"""Growth operators as pure functions: function preservation (logits before == after), G_direct width's uneven split
(copies get different gradients), exact layer maps, purity, determinism, G_random masks, G_learn and its FLOPs,
optimizer moments carried through depth plans, and the one-line errors. Tiny Llama-style models, fp32, CPU."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from litgpt import GPT, Config
from torch.utils.flop_counter import FlopCounterMode

from stacking.growth import OPERATORS, GrowthError, carry_moments, grow, learn_flops, width
from stacking.growth.io import split_layer_key
from stacking.growth.learn import map_flops_per_step
from stacking.growth.masks import GrowthMask, apply_trainable, ramp_value
from stacking.models import flops_per_token

LLAMA = dict(
    bias=False,
    norm_class_name="RMSNorm",
    mlp_class_name="LLaMAMLP",
    parallel_residual=False,
    rotary_percentage=1.0,
    block_size=16,
    vocab_size=50,
    padded_vocab_size=64,
    norm_eps=1e-5,
)
# MHA, GQA, MQA with head_size != n_embd/n_head, a 3-layer GQA model, and one with biases
CONFIGS = {
    "mha": dict(n_layer=2, n_embd=32, n_head=4, n_query_groups=4, head_size=8, intermediate_size=48),
    "gqa": dict(n_layer=2, n_embd=32, n_head=4, n_query_groups=2, head_size=8, intermediate_size=40),
    "mqa": dict(n_layer=2, n_embd=24, n_head=4, n_query_groups=1, head_size=16, intermediate_size=36),
    "gqa3": dict(n_layer=3, n_embd=48, n_head=6, n_query_groups=2, head_size=8, intermediate_size=64),
    "bias": dict(n_layer=2, n_embd=32, n_head=4, n_query_groups=2, head_size=8, intermediate_size=48, bias=True),
}


def make_config(kind: str = "gqa", **overrides) -> Config:
    return Config(name=f"test-{kind}", **{**LLAMA, **CONFIGS[kind], **overrides})


def random_state_dict(config: Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights with non-trivial norms: matrices N(0, 0.25²·…), norm weights U(0.5, 1.5), biases N(0, 0.1²)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in GPT(config).state_dict().items():
        if v.dim() > 1:
            sd[k] = torch.randn(v.shape, generator=gen) * (1.5 / v.shape[-1] ** 0.5)
        elif k.endswith("bias"):
            sd[k] = torch.randn(v.shape, generator=gen) * 0.1
        else:
            sd[k] = 0.5 + torch.rand(v.shape, generator=gen)
    return sd


def logits(sd, config, x, mask_spec=None, scale=None) -> torch.Tensor:
    model = GPT(config)
    model.load_state_dict(sd, strict=True)
    model.eval()
    if mask_spec is not None:
        GrowthMask.from_spec(mask_spec).attach(model).set_scale(scale)
    with torch.no_grad():
        return model(x)


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


TOKENS = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))

# ---- function preservation -------------------------------------------------------------------------------------
FP_OPS = [
    ("G_direct", "width", {}),
    ("G_direct", "width", {"symmetric": True}),
    ("G_zero", "width", {}),
    ("G_zero", "depth", {}),
    ("G_zero", "depth", {"order": "stack"}),
    ("llama_pro", "depth", {}),
    ("G_random", "depth", {}),
    ("G_random", "width", {}),
]


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("g", [2, 3])
@pytest.mark.parametrize("op,direction,opts", FP_OPS, ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(v))
def test_function_preserving(kind, g, op, direction, opts):
    config = make_config(kind)
    sd = random_state_dict(config)
    ref = logits(sd, config, TOKENS)
    res = grow(sd, config, op, direction=direction, g=g, seed=3, return_info=True, **opts)
    out = logits(res.state_dict, res.config, TOKENS, res.mask, 0.0)  # G_random: at c = 0
    assert rel_err(out, ref) <= 1e-5
    if direction == "depth":
        assert res.config.n_layer == g * config.n_layer
    else:
        c = res.config
        assert (c.n_embd, c.n_head, c.n_query_groups, c.intermediate_size, c.head_size) == (
            g * config.n_embd,
            g * config.n_head,
            g * config.n_query_groups,
            g * config.intermediate_size,
            config.head_size,
        )
        assert c.padded_vocab_size == config.padded_vocab_size


def test_fp_check_is_sensitive():
    """Tiling the fused qkv as one matrix (the classic mistake) must fail the same check; G_stack is not FP."""
    config = make_config("gqa")
    sd = random_state_dict(config)
    ref = logits(sd, config, TOKENS)
    good, new_cfg = grow(sd, config, "G_direct", direction="width", g=2)
    naive = dict(good)
    for i in range(config.n_layer):
        k = f"transformer.h.{i}.attn.qkv.weight"
        naive[k] = sd[k].repeat(2, 2) / 2
    assert rel_err(logits(naive, new_cfg, TOKENS), ref) > 1e-2
    stacked, stack_cfg = grow(sd, config, "G_stack", g=2)
    assert rel_err(logits(stacked, stack_cfg, TOKENS), ref) > 1e-2


def test_width_growth_with_target_config_and_fractional_g():
    config = make_config("gqa")
    sd = random_state_dict(config)
    ref = logits(sd, config, TOKENS)
    # G_zero to an arbitrary larger shape (not a multiple), heads-per-group 2 kept
    to = make_config("gqa", n_embd=40, n_head=6, n_query_groups=3, intermediate_size=56)
    sd2, cfg2 = grow(sd, config, "G_zero", direction="width", to=to)
    assert (cfg2.n_embd, cfg2.n_head, cfg2.intermediate_size) == (40, 6, 56)
    assert rel_err(logits(sd2, cfg2, TOKENS), ref) <= 1e-5
    res = grow(sd, config, "G_random", direction="width", g=1.5, return_info=True)
    assert (res.config.n_embd, res.config.n_head, res.config.n_query_groups) == (48, 6, 3)
    assert rel_err(logits(res.state_dict, res.config, TOKENS, res.mask, 0.0), ref) <= 1e-5


# ---- G_direct width: uneven split -------------------------------------------------------------------------------
def _grads(sd, config) -> dict[str, torch.Tensor]:
    """Parameter gradients after one backward pass of next-token loss on TOKENS."""
    model = GPT(config)
    model.load_state_dict(sd, strict=True)
    out = model(TOKENS[:, :-1])
    F.cross_entropy(out.reshape(-1, out.size(-1)), TOKENS[:, 1:].reshape(-1)).backward()
    return {k: p.grad for k, p in model.named_parameters()}


def _copies(key: str, t: torch.Tensor, old: Config, new: Config) -> list[torch.Tensor] | None:
    """The f copies of a grown tensor's units, flattened: rows (a unit's incoming weights, per q/k/v piece of the
    fused qkv) or, for the embedding, columns. None for tensors whose rows are the vocabulary (LM head)."""
    ow, nw = width.Widths.of(old), width.Widths.of(new)
    spaces = width.layout(key)
    if key == "transformer.wte.weight":
        return list(t.reshape(t.shape[0], nw.embd // ow.embd, ow.embd).unbind(1))
    if spaces[0] == "vocab":
        return None
    pieces = list(zip(t.split((nw.q, nw.kv, nw.kv)), ("q", "kv", "kv"))) if spaces[0] == "qkv" else [(t, spaces[0])]
    blocks = [p.reshape(nw.size(s) // ow.size(s), ow.size(s), *p.shape[1:]) for p, s in pieces]
    return [torch.cat([b[k].reshape(-1) for b in blocks]) for k in range(blocks[0].shape[0])]


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("g", [2, 3])
def test_direct_width_copies_get_different_gradients(kind, g):
    """Uneven split (default): every unit's gradient differs from its copies' (>= 5% of its size) after one backward;
    symmetric: identical up to fp rounding, so the copies could never diverge."""
    config = make_config(kind)
    sd = random_state_dict(config)
    for symmetric in (False, True):
        res = grow(sd, config, "G_direct", direction="width", g=g, seed=3, symmetric=symmetric, return_info=True)
        assert res.options == {"symmetric": symmetric}
        diffs = {}
        for key, grad in _grads(res.state_dict, res.config).items():
            copies = _copies(key, grad, config, res.config)
            if copies is not None:
                diffs[key] = min(float((c - copies[0]).abs().max() / copies[0].abs().max()) for c in copies[1:])
        assert len(diffs) == len(res.state_dict) - 1  # every tensor but the LM head
        if symmetric:
            assert max(diffs.values()) <= 1e-5, diffs
        else:
            assert min(diffs.values()) >= 0.05, diffs


def test_direct_width_split_shares():
    """Rows tiled; the column copies of every weight sum to it, with shares in [1/4, 3/4] (g=2); embedding columns
    copied; symmetric is HyperCloning's exact halving; different seeds split differently."""
    config = make_config("gqa")
    sd = random_state_dict(config)
    out, _ = grow(sd, config, "G_direct", direction="width", g=2, seed=1)
    w = sd["transformer.h.0.mlp.proj.weight"]  # (embd, ffn)
    grown = out["transformer.h.0.mlp.proj.weight"]
    tiled = w.repeat(2, 1)
    a, b = grown[:, :40], grown[:, 40:]
    assert torch.allclose(a + b, tiled, rtol=1e-6, atol=1e-7)
    share = a / tiled
    assert 0.25 - 1e-6 <= float(share.min()) and float(share.max()) <= 0.75 + 1e-6
    assert float(share.std()) > 0.1 and not torch.allclose(share[:32], share[32:])  # per element, rows too
    assert torch.equal(out["transformer.wte.weight"], sd["transformer.wte.weight"].repeat(1, 2))
    sym, _ = grow(sd, config, "G_direct", direction="width", g=2, symmetric=True)
    assert torch.equal(sym["transformer.h.0.mlp.proj.weight"], w.repeat(2, 2) / 2)
    other, _ = grow(sd, config, "G_direct", direction="width", g=2, seed=2)
    assert not torch.equal(other["transformer.h.0.mlp.proj.weight"], grown)


# ---- exact layer maps ------------------------------------------------------------------------------------------
def _layer_sources(sd_new, sd_old, config_new, config_old):
    """For each new layer, the old layer whose tensors it equals exactly (all tensors, output proj included)."""
    sources = []
    for i in range(config_new.n_layer):
        match = [
            j
            for j in range(config_old.n_layer)
            if all(
                torch.equal(sd_new[k], sd_old[f"transformer.h.{j}.{p[1]}"])
                for k in sd_new
                if (p := split_layer_key(k)) and p[0] == i
            )
        ]
        sources.append(match[0] if len(match) == 1 else None)
    return sources


@pytest.mark.parametrize(
    "op,opts,g,expected",
    [
        ("G_stack", {}, 2, [0, 1, 2, 0, 1, 2]),
        ("G_direct", {}, 3, [0, 1, 2] * 3),
        ("interpolate", {}, 2, [0, 0, 1, 1, 2, 2]),
        ("interpolate", {}, 3, [0, 0, 0, 1, 1, 1, 2, 2, 2]),
        ("G_stack", {"layers": [0, 1, 1, 2, 2, 0, 1]}, 2, [0, 1, 1, 2, 2, 0, 1]),
        ("solar_dus", {"m": 1}, 2, [0, 1, 1, 2]),
        ("solar_dus", {}, 2, [0, 1, 2, 0, 1, 2]),  # m defaults to L//4 = 0 for L=3
    ],
)
def test_layer_mapping(op, opts, g, expected):
    config = make_config("gqa3")
    sd = random_state_dict(config)
    out, cfg = grow(sd, config, op, g=g, **opts)
    assert cfg.n_layer == len(expected)
    assert _layer_sources(out, sd, cfg, config) == expected
    for k in ("transformer.wte.weight", "transformer.ln_f.weight", "lm_head.weight"):
        assert torch.equal(out[k], sd[k])


def test_solar_dus_paper_shape():
    config = make_config("gqa", n_layer=8)
    out, cfg = grow(random_state_dict(config), config, "solar_dus", m=2)
    assert cfg.n_layer == 12  # 2·(8-2): layers 0..5 then 2..7
    assert _layer_sources(out, random_state_dict(config), cfg, config) == [0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 6, 7]


def _zeroed_layers(sd, config):
    return [
        i
        for i in range(config.n_layer)
        if not sd[f"transformer.h.{i}.attn.proj.weight"].any() and not sd[f"transformer.h.{i}.mlp.proj.weight"].any()
    ]


@pytest.mark.parametrize(
    "opts,g,n_layer,zeroed,copied_from",
    [
        ({}, 2, 8, [1, 3, 5, 7], [0, 0, 1, 1, 2, 2, 3, 3]),  # every block its own group
        ({"groups": 2}, 1.5, 6, [2, 5], [0, 1, 1, 2, 3, 3]),  # LLaMA Pro: top block of each group
        ({"groups": 2, "copies": 2}, 2, 8, [2, 3, 6, 7], [0, 1, 0, 1, 2, 3, 2, 3]),  # top 2 blocks, in order
        ({"groups": 1, "copies": 1}, 2, 5, [4], [0, 1, 2, 3, 3]),
        ({}, 3, 12, [1, 2, 4, 5, 7, 8, 10, 11], [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]),
    ],
)
def test_llama_pro_layout(opts, g, n_layer, zeroed, copied_from):
    config = make_config("gqa", n_layer=4)
    sd = random_state_dict(config)
    res = grow(sd, config, "llama_pro", g=g, train_new_only=True, return_info=True, **opts)
    assert res.config.n_layer == n_layer
    assert _zeroed_layers(res.state_dict, res.config) == zeroed
    for i, j in enumerate(copied_from):  # everything but the zeroed projections is the source block's
        for rest in ("norm_1.weight", "attn.qkv.weight", "mlp.fc_1.weight", "mlp.fc_2.weight", "norm_2.weight"):
            assert torch.equal(res.state_dict[f"transformer.h.{i}.{rest}"], sd[f"transformer.h.{j}.{rest}"])
    assert sorted({split_layer_key(k)[0] for k in res.trainable}) == zeroed
    model = GPT(res.config)
    n_trainable = apply_trainable(model, res.trainable)
    assert n_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == len(zeroed) * sum(p.numel() for p in model.transformer.h[0].parameters())
    assert not model.lm_head.weight.requires_grad and not model.transformer.wte.weight.requires_grad


# ---- purity and determinism ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny token dataset dir: a repeating pattern (so a few steps can learn it) plus noise."""
    d = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    tokens = np.tile(np.arange(20, dtype=np.uint16), 200)
    tokens[rng.random(tokens.size) < 0.05] = 7
    tokens.tofile(d / "train.bin")
    (d / "meta.json").write_text(json.dumps({"vocab_size": 50, "dtype": "uint16", "train_tokens": tokens.size}))
    return d


def _all_ops(data_dir):
    learn = {"data": data_dir, "learn_steps": 2, "seq_len": 8, "batch_size": 2}
    extra = {"G_learn": learn, "solar_dus": {"m": 1}}
    return [(op, d, extra.get(op, {})) for op, d in OPERATORS]


def test_pure_and_deterministic(data_dir):
    config = make_config("gqa")
    sd = random_state_dict(config)
    sd_copy = {k: v.clone() for k, v in sd.items()}
    cfg_copy = copy.deepcopy(asdict(config))
    input_ptrs = {v.untyped_storage().data_ptr() for v in sd.values()}
    # seed drives new random parameters and, for G_learn, the sampled batches
    random_ops = {
        ("G_random", "depth"),
        ("G_random", "width"),
        ("G_zero", "width"),
        ("G_learn", "width"),
        ("G_learn", "depth"),
        ("G_direct", "width"),
    }
    for op, direction, opts in _all_ops(data_dir):
        a, cfg_a = grow(sd, config, op, direction=direction, seed=1, **opts)
        b, _ = grow(sd, config, op, direction=direction, seed=1, **opts)
        c, _ = grow(sd, config, op, direction=direction, seed=2, **opts)
        assert all(torch.equal(a[k], b[k]) for k in a), (op, direction)
        differs = any(not torch.equal(a[k], c[k]) for k in a)
        assert differs == ((op, direction) in random_ops), (op, direction)
        assert not input_ptrs & {v.untyped_storage().data_ptr() for v in a.values()}, f"{op} aliases its input"
        assert set(a) == set(GPT(cfg_a).state_dict())
    assert all(torch.equal(sd[k], sd_copy[k]) for k in sd_copy) and set(sd) == set(sd_copy)
    assert asdict(config) == cfg_copy


# ---- G_random masks --------------------------------------------------------------------------------------------
def _old_region(key, shape, old: Config, new: Config) -> torch.Tensor:
    """Boolean mask of the entries a width G_random copied from the base (top-left blocks of every space)."""
    spaces = width.layout(key)
    ow, nw = width.Widths.of(old), width.Widths.of(new)

    def index(space, n):
        if space == "vocab":
            return torch.ones(n, dtype=torch.bool)
        if space == "qkv":
            return torch.cat([torch.arange(nw.q) < ow.q, torch.arange(nw.kv) < ow.kv, torch.arange(nw.kv) < ow.kv])
        return torch.arange(nw.size(space)) < ow.size(space)

    rows = index(spaces[0], shape[0])
    return rows if len(shape) == 1 else rows[:, None] & index(spaces[1], shape[1])[None, :]


@pytest.mark.parametrize("kind", ["gqa", "mqa", "bias"])
@pytest.mark.parametrize("direction", ["depth", "width"])
def test_random_mask_gates_whatever_new_params_hold(kind, direction):
    config = make_config(kind)
    sd = random_state_dict(config)
    ref = logits(sd, config, TOKENS)
    res = grow(sd, config, "G_random", direction=direction, g=2, ramp_tokens=1000, return_info=True)
    gen = torch.Generator().manual_seed(5)
    perturbed = {}
    for k, t in res.state_dict.items():  # big noise on every new parameter entry
        noise = torch.randn(t.shape, generator=gen) * 3.0
        if direction == "depth":
            p = split_layer_key(k)
            new = (
                torch.ones(t.shape, dtype=torch.bool)
                if p and p[0] >= config.n_layer
                else torch.zeros(t.shape, dtype=torch.bool)
            )
        else:
            new = ~_old_region(k, t.shape, config, res.config)
        perturbed[k] = torch.where(new, t + noise, t)
    assert rel_err(logits(perturbed, res.config, TOKENS, res.mask, 0.0), ref) <= 1e-5
    assert rel_err(logits(perturbed, res.config, TOKENS, res.mask, 0.5), ref) > 1e-3
    # at c = 1 the hooks are no-ops: bit-identical to the plain grown model
    assert torch.equal(logits(perturbed, res.config, TOKENS, res.mask, 1.0), logits(perturbed, res.config, TOKENS))


def test_mask_detach_and_gradients():
    config = make_config("gqa")
    res = grow(random_state_dict(config), config, "G_random", direction="width", return_info=True)
    model = GPT(res.config)
    model.load_state_dict(res.state_dict)
    plain = model(TOKENS).detach()
    mask = GrowthMask.from_spec(res.mask).attach(model)
    mask.set_scale(0.25)
    loss = model(TOKENS).float().logsumexp(-1).mean()
    loss.backward()  # hooks are differentiable; new units get gradient once c > 0
    assert model.transformer.h[0].mlp.fc_1.weight.grad[config.intermediate_size :].abs().sum() > 0
    mask.detach()
    assert torch.equal(model(TOKENS).detach(), plain)


def test_ramp_value():
    assert ramp_value(0, 100) == 0.0
    assert ramp_value(25, 100) == 0.25
    assert ramp_value(100, 100) == 1.0 and ramp_value(10**9, 100) == 1.0
    assert ramp_value(0, 0) == 1.0 and ramp_value(5, 0) == 1.0


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"direction": "sideways"}, "mask.direction"),
        ({"direction": "depth", "ramp_tokens": 10}, "missing"),
        ("G_random", "must be a dict"),
    ],
)
def test_mask_spec_errors(spec, match):
    with pytest.raises(GrowthError, match=match):
        GrowthMask.from_spec(spec)


def test_mask_layers_must_exist():
    model = GPT(make_config("gqa"))
    with pytest.raises(GrowthError, match="not layers of this model"):
        GrowthMask.from_spec({"direction": "depth", "ramp_tokens": 1, "layers": [5]}).attach(model)
    with pytest.raises(GrowthError, match="not in the model"):
        apply_trainable(model, ["transformer.h.9.attn.qkv.weight"])


# ---- G_learn ---------------------------------------------------------------------------------------------------
def test_learn_depth_starts_at_stack_and_learns(data_dir):
    config = make_config("gqa")
    sd = random_state_dict(config)
    start, cfg0 = grow(sd, config, "G_learn", data=data_dir, learn_steps=0)
    stacked, cfg1 = grow(sd, config, "G_stack")
    assert asdict(cfg0) == asdict(cfg1)
    assert all(torch.equal(start[k], stacked[k]) for k in stacked)
    res = grow(
        sd, config, "G_learn", data=data_dir, learn_steps=12, lr=3e-2, seq_len=12, batch_size=4, return_info=True
    )
    losses = res.log["learn_losses"]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert any(not torch.equal(res.state_dict[k], stacked[k]) for k in stacked)
    assert torch.equal(res.state_dict["lm_head.weight"], sd["lm_head.weight"])  # only layer maps are learned


def test_learn_width_maps_keep_old_block_and_learn(data_dir):
    config = make_config("gqa")
    sd = random_state_dict(config)
    start, cfg = grow(sd, config, "G_learn", direction="width", data=data_dir, learn_steps=0)
    assert (cfg.n_embd, cfg.n_head, cfg.n_query_groups) == (64, 8, 4)
    # maps start at [I; N]: the old top-left block of every matrix is the old matrix
    assert torch.allclose(start["transformer.h.0.mlp.proj.weight"][:32, :40], sd["transformer.h.0.mlp.proj.weight"])
    assert torch.allclose(start["transformer.wte.weight"][:, :32], sd["transformer.wte.weight"])
    q_old = sd["transformer.h.1.attn.qkv.weight"][:32]
    assert torch.allclose(start["transformer.h.1.attn.qkv.weight"][:32, :32], q_old)
    res = grow(
        sd,
        config,
        "G_learn",
        direction="width",
        data=data_dir,
        learn_steps=12,
        lr=3e-2,
        seq_len=12,
        batch_size=4,
        return_info=True,
    )
    losses = res.log["learn_losses"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    GPT(res.config).load_state_dict(res.state_dict, strict=True)


def test_learn_needs_data(tmp_path):
    config = make_config("gqa")
    with pytest.raises(GrowthError, match="G_learn needs data"):
        grow(random_state_dict(config), config, "G_learn", learn_steps=1)
    with pytest.raises(GrowthError, match="train.bin"):
        grow(random_state_dict(config), config, "G_learn", data=tmp_path, learn_steps=1)


@pytest.mark.parametrize("direction", ["depth", "width"])
def test_learn_flops(data_dir, direction):
    """learn_flops = steps · (tokens · the trainer's flops_per_token + map materialisation); G_learn records it; it is
    close to (and, being the trainer's 6N convention, not below) what torch's FLOP counter measures. At 36 tokens a
    step the width maps cost more than the model itself, so the measurement checks map_flops_per_step too."""
    config = make_config("gqa")
    sd = random_state_dict(config)
    opts = {"data": data_dir, "learn_steps": 2, "seq_len": 12, "batch_size": 3}
    with FlopCounterMode(display=False) as trained:
        res = grow(sd, config, "G_learn", direction=direction, return_info=True, **opts)
    with FlopCounterMode(display=False) as untrained:  # the final materialisation alone
        grow(sd, config, "G_learn", direction=direction, **{**opts, "learn_steps": 0})
    expected = 2 * (3 * 12 * flops_per_token(res.config, 12) + map_flops_per_step(res.config, config, direction))
    assert (
        res.extra_flops
        == expected
        == learn_flops(res.config, config, learn_steps=2, batch_size=3, seq_len=12, direction=direction)
    )
    assert 1.0 <= expected / (trained.get_total_flops() - untrained.get_total_flops()) <= 1.3
    # defaults: the paper's 100 steps, batch 8, seq_len min(block_size, 256) = 16; no steps, no FLOPs
    assert learn_flops(res.config, config, direction=direction) == 100 * (
        8 * 16 * flops_per_token(res.config, 16) + map_flops_per_step(res.config, config, direction)
    )
    assert learn_flops(res.config, config, learn_steps=0, direction=direction) == 0.0
    assert grow(sd, config, "G_stack", return_info=True).extra_flops == 0.0


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"learn_steps": -1}, "learn_steps must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"seq_len": 17}, r"seq_len must be an integer in 1..block_size=16"),
        ({"direction": "sideways"}, "direction must be 'depth' or 'width'"),
        ({"direction": "width"}, r"G_learn \(width\) needs grown_config to keep n_layer=2"),
        ({"base": "gqa-wide"}, r"G_learn \(depth\) needs grown_config"),
        ({"grown": None}, "grown_config must be a litgpt.Config"),
    ],
)
def test_learn_flops_errors(kw, match):
    base = make_config("gqa")
    grown = kw.pop("grown", make_config("gqa", n_layer=4))
    if kw.pop("base", None):
        base = make_config("gqa", n_embd=16, n_head=2, n_query_groups=1, intermediate_size=20)
    with pytest.raises(GrowthError, match=match) as e:
        learn_flops(grown, base, **kw)
    assert "\n" not in str(e.value)


# ---- optimizer moments through depth plans ---------------------------------------------------------------------
def _adamw_state(config: Config) -> dict[str, dict[str, torch.Tensor]]:
    """Real AdamW state after two steps, keyed by litgpt parameter name."""
    torch.manual_seed(0)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        out = model(TOKENS[:, :-1])
        F.cross_entropy(out.reshape(-1, out.size(-1)), TOKENS[:, 1:].reshape(-1)).backward()
        opt.step()
        opt.zero_grad()
    return {name: opt.state[p] for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    "op,opts,sources",
    [
        ("G_stack", {"g": 2}, [0, 1, 2, 0, 1, 2]),
        ("G_direct", {"g": 3}, [0, 1, 2] * 3),
        ("G_stack", {"layers": [0, 2, 2, 1]}, [0, 2, 2, 1]),
        ("interpolate", {"g": 2}, [0, 0, 1, 1, 2, 2]),
        ("solar_dus", {"m": 1}, [0, 1, 1, 2]),
    ],
)
def test_carry_moments(op, opts, sources):
    config = make_config("gqa3")
    state = _adamw_state(config)
    before = {k: {n: t.clone() for n, t in v.items()} for k, v in state.items()}
    carried = carry_moments(state, config, op, **opts)
    _, grown_cfg = grow(random_state_dict(config), config, op, **opts)
    model = GPT(grown_cfg)
    params = dict(model.named_parameters())
    assert list(carried) == list(params)
    for key, st in carried.items():
        parsed = split_layer_key(key)
        src = f"transformer.h.{sources[parsed[0]]}.{parsed[1]}" if parsed else key
        assert set(st) == {"exp_avg", "exp_avg_sq", "step"}
        assert st["exp_avg"].shape == st["exp_avg_sq"].shape == params[key].shape
        assert all(torch.equal(st[n], state[src][n]) for n in st)
        assert all(st[n].untyped_storage().data_ptr() != state[src][n].untyped_storage().data_ptr() for n in st)
    assert all(torch.equal(state[k][n], before[k][n]) for k in before for n in before[k])
    # the result loads into the grown model's AdamW and steps
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt_state = opt.state_dict()
    opt_state["state"] = {i: carried[name] for i, name in enumerate(params)}
    opt.load_state_dict(opt_state)
    model(TOKENS).sum().backward()
    opt.step()
    assert int(opt.state[params["lm_head.weight"]]["step"]) == 3


@pytest.mark.parametrize(
    "op,direction,opts,match",
    [
        ("G_zero", "depth", {}, r"carry is not defined for G_zero \(depth\): layers \[1, 3, 5\] have zeroed"),
        ("llama_pro", "depth", {}, r"carry is not defined for llama_pro \(depth\): layers .* zeroed"),
        ("G_random", "depth", {}, r"carry is not defined for G_random \(depth\): new layers \[3, 4, 5\] are fresh"),
        ("G_learn", "depth", {}, r"carry is not defined for G_learn \(depth\): its layers are learned mixtures"),
        ("G_direct", "width", {}, r"carry is not defined for G_direct \(width\): grown tensors change shape"),
        ("G_zero", "width", {}, r"carry is not defined for G_zero \(width\)"),
        ("G_random", "width", {}, r"carry is not defined for G_random \(width\)"),
        ("G_learn", "width", {}, r"carry is not defined for G_learn \(width\)"),
        ("G_stack", "depth", {"order": "stack"}, r"option\(s\) \['order'\] are not used by G_stack"),
        ("G_stack", "depth", {"g": 1.5}, "g must be an integer"),
    ],
)
def test_carry_refused(op, direction, opts, match):
    config = make_config("gqa3")
    state = {k: {"exp_avg": torch.zeros(v.shape)} for k, v in GPT(config).named_parameters()}
    with pytest.raises(GrowthError, match=match) as e:
        carry_moments(state, config, op, direction=direction, **opts)
    assert "\n" not in str(e.value)


def test_carry_bad_state():
    config = make_config("gqa")
    state = {k: {"exp_avg": torch.zeros(v.shape), "step": torch.tensor(1.0)} for k, v in GPT(config).named_parameters()}
    for bad, match in [
        ({k: v for k, v in state.items() if k != "lm_head.weight"}, "missing: lm_head.weight"),
        ({**state, "model.lm_head.weight": state["lm_head.weight"]}, "unexpected: model.lm_head.weight"),
        ({**state, "lm_head.weight": {"exp_avg": torch.zeros(3, 3)}}, r"has shape \(3, 3\); the parameter's is"),
        ({**state, "lm_head.weight": torch.zeros(2, 2)}, "must be a dict of name -> tensor"),
        ([1, 2], "must be a dict of parameter name"),
    ]:
        with pytest.raises(GrowthError, match=match):
            carry_moments(bad, config, "G_stack")
    with pytest.raises(GrowthError, match="config must be a litgpt.Config"):
        carry_moments(state, asdict(config), "G_stack")


# ---- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op,direction,kw,match",
    [
        ("G_sideways", "depth", {}, "unknown op 'G_sideways'; valid depth ops"),
        ("solar_dus", "width", {}, "no width variant"),
        ("G_stack", "diagonal", {}, "direction must be one of"),
        ("G_stack", "depth", {"g": 0.5}, "g must be a number >= 1"),
        ("G_stack", "depth", {"g": 2.5}, "g must be an integer >= 1 for G_stack"),
        ("G_direct", "width", {"g": 1.5}, "integer"),
        ("G_zero", "width", {"g": 1.25}, "n_query_groups × g"),
        ("solar_dus", "depth", {"m": 4}, "m must be an integer in 0..3"),
        ("solar_dus", "depth", {"g": 3}, "g must be 2 for solar_dus"),
        ("llama_pro", "depth", {"groups": 3}, r"groups must divide n_layer=4 .* valid: \[1, 2, 4\]"),
        ("llama_pro", "depth", {"groups": 4, "g": 1.5}, "must be an integer"),
        ("G_stack", "depth", {"layers": [0, 9]}, "indices in 0..3"),
        ("interpolate", "depth", {"layers": [0]}, r"option\(s\) \['layers'\] are not used by interpolate"),
        ("G_random", "depth", {"ramp_tokens": -1}, "ramp_tokens must be"),
        ("G_zero", "depth", {"order": "random"}, "order must be"),
        ("G_direct", "width", {"symmetric": "yes"}, "symmetric must be true or false"),
        ("G_direct", "depth", {"symmetric": True}, r"option\(s\) \['symmetric'\] are not used by G_direct \(depth\)"),
    ],
)
def test_errors(op, direction, kw, match):
    config = make_config("gqa", n_layer=4)
    with pytest.raises(GrowthError, match=match) as e:
        grow(random_state_dict(config), config, op, direction=direction, **kw)
    assert "\n" not in str(e.value)


def test_target_errors():
    config = make_config("gqa")
    sd = random_state_dict(config)
    with pytest.raises(GrowthError, match="keeps head_size=8"):
        grow(sd, config, "G_zero", direction="width", to=make_config("gqa", n_embd=64, n_head=4, head_size=16))
    with pytest.raises(GrowthError, match="heads per KV group"):
        grow(sd, config, "G_zero", direction="width", to=make_config("gqa", n_embd=64, n_head=8, n_query_groups=2))
    with pytest.raises(GrowthError, match="to.norm_eps"):
        grow(sd, config, "G_stack", to=make_config("gqa", n_layer=4, norm_eps=1e-6))
    with pytest.raises(GrowthError, match="multiple of n_layer=2"):
        grow(sd, config, "G_stack", to=make_config("gqa", n_layer=3))
    _, cfg = grow(sd, config, "G_stack", to=make_config("gqa", n_layer=6))
    assert cfg.n_layer == 6
    with pytest.raises(GrowthError, match="does not match its model config"):
        grow(sd, make_config("gqa", n_layer=3), "G_stack")
    with pytest.raises(GrowthError, match="supports Llama-style configs only"):
        cfg = make_config("gqa", norm_class_name="LayerNorm")
        grow(GPT(cfg).state_dict(), cfg, "G_direct", direction="width")
