"""Block-wise depth operators for chains: `gradual` (copy the top block; gradual stacking, Reddi et al. 2023) and
`midas` (copy the middle block; MIDAS, Saunshi et al. 2024). Exact layer maps, the grown tensors equal the source
layers the map names (in memory, streamed from a checkpoint dir, and through `stacking grow`), and one-line errors."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
import yaml
from litgpt import GPT, Config

from stacking.growth import OPERATORS, GrowthError, carry_moments, grow, grow_checkpoint
from stacking.growth.cli import main as grow_main
from stacking.growth.depth import PLANNERS, block_sources
from stacking.growth.layout import split_layer_key

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


def make_config(n_layer: int) -> Config:
    return Config(
        name=f"test-L{n_layer}",
        n_layer=n_layer,
        n_embd=32,
        n_head=4,
        n_query_groups=2,
        head_size=8,
        intermediate_size=40,
        **LLAMA,
    )


def random_state_dict(config: Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor distinct, so a layer's tensors identify the layer they were copied from."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in GPT(config).state_dict().items()}


def layer_sources(sd_new, sd_old, n_new: int, n_old: int) -> list[int | None]:
    """For each new layer, the one old layer whose every tensor it equals exactly (None: no or several)."""
    out = []
    for i in range(n_new):
        keys = [(k, p[1]) for k in sd_new if (p := split_layer_key(k)) and p[0] == i]
        match = [
            j
            for j in range(n_old)
            if all(torch.equal(sd_new[k], sd_old[f"transformer.h.{j}.{rest}"]) for k, rest in keys)
        ]
        out.append(match[0] if len(match) == 1 else None)
    return out


# The documented layer maps (docs/growth.md): source layer of every layer of the grown model.
MAPS = [
    # n=2 → 4 (the first growth of midas.yaml's chains) and n=4 → 8 (the second)
    ("gradual", 2, 2, None, [0, 1, 0, 1]),
    ("midas", 2, 2, None, [0, 1, 0, 1]),
    ("gradual", 2, 2, 2, [0, 1, 0, 1]),
    ("midas", 2, 2, 2, [0, 1, 0, 1]),
    ("gradual", 2, 2, 1, [0, 1, 1, 1]),
    ("midas", 2, 2, 1, [0, 0, 0, 1]),
    ("gradual", 4, 2, None, [0, 1, 2, 3, 0, 1, 2, 3]),  # default block = n_layer: G_stack's map
    ("midas", 4, 2, None, [0, 1, 2, 3, 0, 1, 2, 3]),
    ("gradual", 4, 2, 2, [0, 1, 2, 3, 2, 3, 2, 3]),
    ("midas", 4, 2, 2, [0, 1, 0, 1, 0, 1, 2, 3]),
    ("gradual", 4, 2, 1, [0, 1, 2, 3, 3, 3, 3, 3]),
    ("midas", 4, 2, 1, [0, 1, 1, 1, 1, 1, 2, 3]),
    # odd block counts: the middle block is the true middle one
    ("midas", 3, 2, 1, [0, 1, 1, 1, 1, 2]),
    ("gradual", 6, 2, 2, [0, 1, 2, 3, 4, 5, 4, 5, 4, 5, 4, 5]),
    ("midas", 6, 2, 2, [0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 4, 5]),
    ("midas", 2, 4, 1, [0, 0, 0, 0, 0, 0, 0, 1]),
    ("gradual", 2, 4, 2, [0, 1, 0, 1, 0, 1, 0, 1]),
]


@pytest.mark.parametrize("op,n,g,block,expected", MAPS, ids=[f"{m[0]}-L{m[1]}-g{m[2]}-b{m[3]}" for m in MAPS])
def test_layer_maps(op, n, g, block, expected):
    config = make_config(n)
    opts = {} if block is None else {"block": block}
    assert list(PLANNERS[op](config, g=g, **opts).sources) == expected
    sd = random_state_dict(config)
    res = grow(sd, config, op, g=g, return_info=True, **opts)
    assert res.config.n_layer == n * g == len(expected)
    assert layer_sources(res.state_dict, sd, res.config.n_layer, n) == expected
    for k in ("transformer.wte.weight", "transformer.ln_f.weight", "lm_head.weight"):
        assert torch.equal(res.state_dict[k], sd[k])
    assert res.options == {"block": block or n, "layers": expected}


def test_single_block_steps():
    """block_sources is the papers' one-block-per-stage growth repeated: MIDAS inserts next to the middle block."""
    assert block_sources(4, 1, 2, "middle") == [0, 1, 0, 1, 2, 3]  # 2 blocks: the lower middle one
    assert block_sources(6, 1, 2, "middle") == [0, 1, 2, 3, 2, 3, 4, 5]  # 3 blocks: block 1
    assert block_sources(6, 1, 2, "top") == [0, 1, 2, 3, 4, 5, 4, 5]
    assert block_sources(4, 0, 1, "middle") == [0, 1, 2, 3]


def test_chain_of_two_growths_2_4_8():
    """The chain of midas.yaml (block 2): 2 → 4 → 8 layers, as the second stage's model sees its own layers."""
    c2 = make_config(2)
    sd2 = random_state_dict(c2)
    for op, second in (("gradual", [0, 1, 2, 3, 2, 3, 2, 3]), ("midas", [0, 1, 0, 1, 0, 1, 2, 3])):
        sd4, c4 = grow(sd2, c2, op, g=2, block=2)
        assert layer_sources(sd4, sd2, 4, 2) == [0, 1, 0, 1]  # one block of 2 = the whole model
        sd4 = {k: v + 0.01 * torch.randn_like(v) for k, v in sd4.items()}  # stage 1 trains: its layers differ
        sd8, c8 = grow(sd4, c4, op, g=2, block=2)
        assert c8.n_layer == 8 and layer_sources(sd8, sd4, 8, 4) == second


def test_streamed_checkpoint_and_cli_equal_in_memory(tmp_path):
    config = make_config(4)
    sd = random_state_dict(config)
    src = tmp_path / "base"
    src.mkdir()
    torch.save(sd, src / "lit_model.pth")
    (src / "model_config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    (src / "stacking_meta.json").write_text(json.dumps({"tokens": 1024, "flops": 1e9}))
    dst = grow_checkpoint(src, tmp_path / "midas", "midas", g=2, block=2)
    assert OPERATORS[("midas", "depth")].planner is PLANNERS["midas"]  # streaming: the plan is applied per tensor
    out = torch.load(dst / "lit_model.pth", weights_only=True)
    assert layer_sources(out, sd, 8, 4) == [0, 1, 0, 1, 0, 1, 2, 3]
    record = json.loads((dst / "growth.json").read_text())
    assert (record["op"], record["g"], record["options"]["block"]) == ("midas", 2, 2)
    assert record["options"]["layers"] == [0, 1, 0, 1, 0, 1, 2, 3] and record["extra_flops"] == 0.0
    assert json.loads((dst / "stacking_meta.json").read_text())["flops"] == 1e9

    assert grow_main([str(src), str(tmp_path / "gradual"), "--op", "gradual", "--g", "2", "--block", "1"]) == 0
    out = torch.load(tmp_path / "gradual" / "lit_model.pth", weights_only=True)
    assert layer_sources(out, sd, 8, 4) == [0, 1, 2, 3, 3, 3, 3, 3]
    model = GPT(Config(**yaml.safe_load((tmp_path / "gradual" / "model_config.yaml").read_text())))
    model.load_state_dict(out, strict=True)

    assert grow_main([str(src), str(tmp_path / "bad"), "--op", "midas", "--g", "2", "--block", "3"]) == 2
    assert grow_main([str(src), str(tmp_path / "bad"), "--op", "G_stack", "--g", "2", "--block", "2"]) == 2


def test_carry_moments_follow_the_map():
    config = make_config(4)
    state = {
        k: {"exp_avg": torch.full(v.shape, float(i)), "step": torch.tensor(3.0)}
        for i, (k, v) in enumerate(GPT(config).state_dict().items())
    }
    grown = carry_moments(state, config, "midas", g=2, block=2)
    for i, src in enumerate([0, 1, 0, 1, 0, 1, 2, 3]):
        key = f"transformer.h.{i}.attn.qkv.weight"
        assert torch.equal(grown[key]["exp_avg"], state[f"transformer.h.{src}.attn.qkv.weight"]["exp_avg"])


@pytest.mark.parametrize(
    "op,kw,match",
    [
        ("midas", {"block": 3}, r"block must divide n_layer=4 for midas \(got 3\); valid: \[1, 2, 4\]"),
        ("gradual", {"block": 0}, r"block must divide n_layer=4 for gradual"),
        ("gradual", {"block": "2"}, r"block must divide n_layer=4 for gradual \(got '2'\)"),
        ("midas", {"g": 1.5}, r"g"),
        ("midas", {"m": 1}, r"option\(s\) \['m'\] are not used by midas \(depth\); valid options: block, to"),
    ],
)
def test_errors(op, kw, match):
    config = make_config(4)
    with pytest.raises(GrowthError, match=match):
        grow(random_state_dict(config), config, op, **kw)
