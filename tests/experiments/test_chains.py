"""Growth chains in grid files (``chains:``): the plan (stage shapes, FLOP offsets, data stream, scratch budget,
names), one-line errors before compute, the docs, and a 3-stage tiny chain swept for real and reported."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from sweep_helpers import run_sweep, write_grid

from experiments.grid import ChainSpec, GridError, StageSpec, expand, load_grid, parse_grid
from stacking.growth.layout import split_layer_key
from stacking.models import flops_per_token, model_config

REPO = Path(__file__).resolve().parents[2]

CHAIN_GRID = dict(
    name="chain",
    targets=["tiny-L4-D32"],
    chains=[
        dict(
            label="grad3",
            op=["midas", "gradual"],
            options={"block": 1},
            stages=[{"g": 2, "tokens": 1024}, {"g": 2, "tokens": 768}],
            tokens=1536,
        )
    ],
)
"""Three runs: tiny-L1-D32 (1024 tokens) → midas → tiny-L2-D32 (768) → gradual → tiny-L4-D32 (1536), + scratch."""


def _plan(tmp_path, data, grid, **defaults):
    return expand(load_grid(write_grid(tmp_path / "grid.yaml", data, grid, **defaults)))


def _fpt(name: str) -> float:
    return flops_per_token(model_config(name, vocab_size=512, block_size=32), 32)


def test_chain_plan(tmp_path, tiny_data):
    runs = _plan(tmp_path, tiny_data, CHAIN_GRID)
    assert [r.kind for r in runs] == ["base", "base", "grown", "scratch"]
    s0, s1, last, scratch = runs
    assert [r.model for r in runs] == ["tiny-L1-D32", "tiny-L2-D32", "tiny-L4-D32", "tiny-L4-D32"]
    assert [r.stage for r in runs[:3]] == [0, 1, 2] and {r.chain for r in runs[:3]} == {"grad3"}
    assert s0.name == "stage0-tiny-L4-D32-grad3-depth-s0" and s1.name == "stage1-tiny-L4-D32-grad3-depth-s0"
    assert last.name == "grown-tiny-L4-D32-grad3-depth-g4-d1792-s0"  # g = the chain's factor, d = earlier tokens
    assert (last.op, last.g, last.grow_at_tokens, last.direction) == ("grad3", 4, 1792, "depth")
    # each stage: trained to its tokens, checkpointed there, on a constant LR; the next grows from that checkpoint
    assert [r.tokens for r in runs[:3]] == [1024, 768, 1536]
    assert s0.config.save_at_tokens == [1024] and s1.config.save_at_tokens == [768] and not last.config.save_at_tokens
    assert s0.config.schedule == s1.config.schedule == "constant" and s0.config.init_from is None
    for prev, r, op in ((s0, s1, "midas"), (s1, last, "gradual")):
        assert r.deps == [prev.id] and r.parent == prev.id
        assert r.grow.src == f"runs/{prev.id}/checkpoints/tokens-{prev.tokens:012d}"
        assert (r.grow.op, r.grow.g, r.grow.options) == (op, 2, {"block": 1})
        assert r.config.init_from == r.grow.dst and r.config.optimizer_init == "fresh"
        assert r.data_tokens == prev.data_tokens + r.tokens  # the stream continues
    # FLOPs: every stage's offset is the sum of the earlier stages' FLOPs
    f1, f2, f4 = _fpt("tiny-L1-D32"), _fpt("tiny-L2-D32"), _fpt("tiny-L4-D32")
    assert s0.flops_offset == 0 and s1.flops_offset == pytest.approx(1024 * f1)
    assert last.flops_offset == pytest.approx(1024 * f1 + 768 * f2)
    assert last.flops == pytest.approx(1024 * f1 + 768 * f2 + 1536 * f4)
    assert scratch.flops >= last.flops and scratch.flops - 256 * f4 < last.flops and not scratch.deps


def test_chain_total_flops_seeds_and_cooldowns(tmp_path, tiny_data):
    f1, f2, f4 = _fpt("tiny-L1-D32"), _fpt("tiny-L2-D32"), _fpt("tiny-L4-D32")
    total = 1024 * f1 + 768 * f2 + 3000 * f4
    chain = dict(CHAIN_GRID["chains"][0], tokens=None, total_flops=f"{total:.6e}", seeds=[1, 2])
    grid = dict(
        CHAIN_GRID,
        chains=[chain],
        ops=["G_stack"],
        g=[2],
        d=[512],
        grown={"tokens": 2048},
        anneal={"fractions": [1.0]},
        defaults={"schedule": "constant"},
    )
    runs = _plan(tmp_path, tiny_data, grid)
    last = [r for r in runs if r.kind == "grown" and r.chain]
    assert [r.config.seed for r in last] == [1, 2]
    assert all(r.tokens == 2816 and r.flops <= float(f"{total:.6e}") for r in last)  # ⌊3000/256⌋·256
    cool = [r for r in runs if r.kind == "cooldown" and r.branch_of == last[0].id]
    assert len(cool) == 1 and cool[0].op == "grad3" and cool[0].grow_at_tokens == 1792
    assert {r.config.seed for r in runs if r.kind == "scratch"} == {0, 1, 2}
    for seed in (1, 2):  # the FLOP-matched baseline of each seed covers its chain
        sc = [r for r in runs if r.kind == "scratch" and r.config.seed == seed]
        assert max(s.flops for s in sc) >= next(r.flops for r in last if r.config.seed == seed)
    # no budget of its own: the chain takes the grid's grown budget
    chain = dict(CHAIN_GRID["chains"][0], tokens=None)
    runs = _plan(tmp_path, tiny_data, dict(CHAIN_GRID, chains=[chain], grown={"tokens": 512}))
    assert runs[2].tokens == 512


def test_a_stage_0_planned_already_is_trained_once(tmp_path, tiny_data):
    """Two chains with the same first stage, and a grid base of that shape, seed and budget: one run, which both
    chains' stage 1 grow from (midas.yaml's G_stack base and its gradual and MIDAS chains)."""
    grad = dict(label="grad", op=["gradual"], stages=[{"g": 2, "tokens": 1024}, {"g": 2, "tokens": 768}], tokens=1536)
    mid = dict(grad, label="mid", op=["midas"], options={"block": 1})
    grid = dict(
        name="chain",
        targets=["tiny-L4-D32"],
        ops=["G_stack"],
        g=[4],
        d=[1024],
        grown={"tokens": 1536},
        chains=[grad, mid],
        defaults={"schedule": "constant"},
    )
    runs = _plan(tmp_path, tiny_data, grid)
    base = [r for r in runs if r.model == "tiny-L1-D32"]
    assert len(base) == 1 and base[0].name == "base-tiny-L4-D32-depth-g4-s0" and base[0].config.save_at_tokens == [1024]
    stage1 = [r for r in runs if r.name.startswith("stage1-")]
    assert len(stage1) == 2 and all(r.deps == [base[0].id] and r.parent == base[0].id for r in stage1)
    assert all(r.grow.src == f"runs/{base[0].id}/checkpoints/tokens-000000001024" for r in stage1)
    assert all(r.flops_offset == pytest.approx(base[0].flops) for r in stage1)
    assert not [r for r in runs if r.name.startswith("stage0-")]
    # without the grid base, the first chain's stage 0 serves the second chain
    runs = _plan(tmp_path, tiny_data, dict(grid, ops=[], g=[2], d=[], grown={}))
    s0 = [r for r in runs if r.name.startswith("stage0-")]
    assert [r.name for r in s0] == ["stage0-tiny-L4-D32-grad-depth-s0"]
    assert {r.parent for r in runs if r.name.startswith("stage1-")} == {s0[0].id}


def test_chain_counts_g_learn_map_training(tmp_path, tiny_data):
    from stacking.growth import learn_flops

    chain = dict(CHAIN_GRID["chains"][0], op="G_learn", options={"learn_steps": 2, "batch_size": 2, "seq_len": 16})
    s0, s1, last, _ = _plan(tmp_path, tiny_data, dict(CHAIN_GRID, chains=[chain]))
    cfg = {n: model_config(n, vocab_size=512, block_size=32) for n in ("tiny-L1-D32", "tiny-L2-D32", "tiny-L4-D32")}
    extra = [
        learn_flops(cfg[b], cfg[a], learn_steps=2, batch_size=2, seq_len=16)
        for a, b in (("tiny-L1-D32", "tiny-L2-D32"), ("tiny-L2-D32", "tiny-L4-D32"))
    ]
    assert s1.flops_offset == pytest.approx(s0.flops + extra[0])
    assert last.flops_offset == pytest.approx(s1.flops + extra[1])
    assert s1.grow.options["data"] == str(Path(tiny_data).resolve())  # LiGO learns on the run's own data


def test_chain_total_flops_leaves_room_for_the_last_g_learn_step(tmp_path, tiny_data):
    from stacking.growth import learn_flops

    chain = dict(
        CHAIN_GRID["chains"][0],
        op=["G_stack", "G_learn"],
        options={},
        stages=[{"g": 2, "tokens": 1024}, {"g": 2, "tokens": 768, "options": {"learn_steps": 8, "batch_size": 4}}],
        tokens=None,
        total_flops=4.0e9,
    )
    _s0, s1, last, _ = _plan(tmp_path, tiny_data, dict(CHAIN_GRID, chains=[chain]))
    maps = learn_flops(
        *(model_config(n, vocab_size=512, block_size=32) for n in ("tiny-L4-D32", "tiny-L2-D32")),
        learn_steps=8,
        batch_size=4,
        seq_len=32,
    )  # 1024 tokens: > 4 optimizer steps' FLOPs
    assert last.flops_offset == pytest.approx(s1.flops + maps)
    assert 4.0e9 - 256 * _fpt("tiny-L4-D32") < last.flops <= 4.0e9


def test_dry_run_shows_each_stage(tmp_path, tiny_data, capsys):
    from experiments.cli import sweep_main

    grid = write_grid(tmp_path / "chain.yaml", tiny_data, CHAIN_GRID)
    assert sweep_main([str(grid), "--out", str(tmp_path / "sweep"), "--dry-run", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 runs (2 base, 1 grown, 1 scratch)" in out
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.startswith("  ")}
    s0, s1, last = (next(v for k, v in lines.items() if k.startswith(p)) for p in ("stage0-", "stage1-", "grown-"))
    assert re.search(r"base +tiny-L1-D32 +1,024 .* - \(chain grad3 stage 0 of 3\)", s0)
    assert re.search(
        r"base +tiny-L2-D32 +768 .* stage0-\S+ @ 1,024 \(chain grad3 stage 1: midas depth g=2; FLOPs "
        r"incl\. \S+ of stage 0; stage 0 at \S+ tok/param\)",
        s1,
    )
    assert re.search(
        r"grown +tiny-L4-D32 +1,536 .* stage1-\S+ @ 768 \(chain grad3 stage 2: gradual depth g=2; "
        r"FLOPs incl\. \S+ of stages 0–1;",
        last,
    )


BAD_CHAINS = [
    (
        {"stages": [{"g": 3, "tokens": 1024}]},
        r"chains\[0\] \(c\): stages\[0\].g: g = 3 does not fit target tiny-L4-D32: .*valid g: \[2, 4\] \(the product",
    ),
    (
        {"stages": [{"g": 2, "tokens": 1024}, {"g": 4, "tokens": 1024}]},
        (
            r"chains\[0\] \(c\): stages\[0\].g: g = 2 does not fit target tiny-L1-D32 \(stage 1\): depth growth needs "
            r"n_layer = 1 divisible by g; valid g: none \(the product of the stages' g, 8, must divide"
        ),
    ),
    (
        {"stages": [{"g": 2, "tokens": 1000}]},
        r"chains\[0\] \(c\): stages\[0\].tokens = 1000 must be a positive multiple of global_batch_tokens = 256",
    ),
    (
        {"stages": [{"g": 2, "tokens": 1024}], "tokens": 1000},
        r"chains\[0\] \(c\): tokens = 1000 must be a positive multiple of global_batch_tokens = 256",
    ),
    (
        {"stages": [{"g": 2, "tokens": 1024}], "tokens": None, "total_flops": 1e6},
        r"chains\[0\] \(c\): its stages use \S+ FLOPs, leaving no budget in total_flops = 1e\+06 for run grown-",
    ),
    (
        {"op": "G_learn", "options": {"learn_steps": 0, "data": "/nonexistent"}, "tokens": None, "total_flops": 1e6},
        r"its stages use",
    ),
    ({"op": "G_stak"}, r"chains\[0\].op: unknown operator 'G_stak' \(did you mean 'G_stack'\?\)"),
    ({"op": ["G_stack", "G_foo"]}, r"chains\[0\].op\[1\]: unknown operator 'G_foo'"),
    ({"op": ["G_stack", "midas", "G_stack"]}, r"chains\[0\].op lists 3 operators for 2 stages"),
    ({"op": "llama_pro", "direction": "width"}, r"chains\[0\].op: llama_pro does not support direction 'width'"),
    ({"stages": []}, r"chains\[0\].stages is empty"),
    ({"stages": [{"g": 1, "tokens": 256}]}, r"chains\[0\].stages\[0\].g = 1 must be an integer >= 2"),
    ({"stages": [{"g": 2}]}, r"chains\[0\].stages\[0\]: missing field 'tokens'"),
    ({"stages": [{"g": 2, "tokens": 256, "d": 3}]}, r"chains\[0\].stages\[0\]: unknown field 'd'"),
    ({"label": "G_stack"}, r"chains\[0\].label 'G_stack' repeats an op label"),
    ({"label": "a b"}, r"chains\[0\].label must be a non-empty name"),
    ({"tokens": 512, "total_flops": 1e9}, r"chains\[0\]: give at most one of tokens"),
    ({"tokens": None}, r"chains\[0\]: give tokens"),
    (
        {"op": "midas", "options": {"block": 2}},
        r"run stage1-tiny-L4-D32-c-depth-s0: block must divide n_layer=1 for midas \(got 2\); valid: \[1\]",
    ),
    ({"options": {"m": 1}}, r"run stage1-.*: option\(s\) \['m'\] are not used by G_stack"),
    (
        {"stages": [{"g": 2, "tokens": 1024}, {"g": 2, "tokens": 1024, "options": {"block": 3}}], "op": "gradual"},
        r"run grown-.*: block must divide n_layer=2 for gradual \(got 3\)",
    ),
]


@pytest.mark.parametrize("change,match", BAD_CHAINS)
def test_chain_errors_are_one_line(tmp_path, tiny_data, change, match):
    chain = {
        "label": "c",
        "op": "G_stack",
        "stages": [{"g": 2, "tokens": 1024}, {"g": 2, "tokens": 512}],
        "tokens": 512,
        **change,
    }
    grid = dict(name="bad", targets=["tiny-L4-D32"], chains=[chain])
    if chain.get("tokens") is not None:  # beside an ops axis (labels must differ)
        grid.update(ops=["G_stack"], d=[256], grown={"tokens": 512})
    with pytest.raises(GridError, match=match) as e:
        _plan(tmp_path, tiny_data, grid)
    assert "\n" not in str(e.value)


def test_chain_beyond_the_corpus_and_stream_settings(tmp_path, tiny_data):
    train = json.loads((tiny_data / "meta.json").read_text())["train_tokens"]
    big = (train * 5 // 256 + 1) * 256
    grid = dict(CHAIN_GRID, chains=[dict(CHAIN_GRID["chains"][0], tokens=big)])
    with pytest.raises(GridError, match=r"run grown-tiny-L4-D32-grad3-.* reads [\d.]+ epochs .*allow_epochs: true"):
        _plan(tmp_path, tiny_data, grid)
    grid = dict(CHAIN_GRID, grown={"set": {"micro_batch_size": 4}})
    with pytest.raises(
        GridError,
        match=r"run stage1-.* continues the data stream of stage0-.*, so its "
        r"micro_batch_size must be 8 \(got 4\)",
    ):
        _plan(tmp_path, tiny_data, grid)


def test_docs_describe_chains():
    doc = (REPO / "docs" / "sweeps.md").read_text()
    assert "`chains`" in doc
    for cls, prefix in ((ChainSpec, "chains[]."), (StageSpec, "chains[].stages[].")):
        for f in fields(cls):
            assert f"`{prefix}{f.name}`" in doc, f"{prefix}{f.name}"
    # the copy-pasteable example plans
    block = re.search(r"```yaml\n(# growth chains.*?)```", doc, re.DOTALL)
    assert block, "docs/sweeps.md: the chains example"
    grid = parse_grid(yaml.safe_load(block.group(1)), "docs")
    assert [c.label for c in grid.chains] == ["gradual", "midas"]
    growth = (REPO / "docs" / "growth.md").read_text()
    assert "| `gradual` | depth |" in growth and "| `midas` | depth |" in growth


# ---- a 3-stage chain for real ----------------------------------------------------------------------------------
def _layers(path: Path) -> dict[int, dict[str, torch.Tensor]]:
    sd = torch.load(path / "lit_model.pth", weights_only=True)
    out: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if (p := split_layer_key(k)) is not None:
            out.setdefault(p[0], {})[p[1]] = v
    return out


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_chain_sweeps_for_real_and_reports(tmp_path, tiny_data):
    grid = write_grid(tmp_path / "chain.yaml", tiny_data, CHAIN_GRID)
    sweep = tmp_path / "sweep"
    proc = run_sweep(grid, "--out", sweep, "--threads", "1", "--jobs", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = pd.read_csv(sweep / "results.csv")
    assert list(df["kind"]) == ["base", "base", "grown", "scratch"] and set(df["status"]) == {"done"}
    s0, s1, last, scratch = (df.iloc[i] for i in range(4))
    # stage models' shapes
    ck0 = sweep / s0["run_dir"] / "checkpoints" / f"tokens-{1024:012d}"
    ck1 = sweep / s1["run_dir"] / "checkpoints" / f"tokens-{768:012d}"
    for ck, n in ((ck0, 1), (ck1, 2), (sweep / s1["grown_dir"], 2), (sweep / last["grown_dir"], 4)):
        assert yaml.safe_load((ck / "model_config.yaml").read_text())["n_layer"] == n
    assert list(df["model"]) == ["tiny-L1-D32", "tiny-L2-D32", "tiny-L4-D32", "tiny-L4-D32"]
    # each growth copies the layers its map names from the previous stage's checkpoint
    for ck, grown_dir, sources in ((ck0, s1["grown_dir"], [0, 0]), (ck1, last["grown_dir"], [0, 1, 1, 1])):
        old, new = _layers(ck), _layers(sweep / grown_dir)
        for i, src in enumerate(sources):
            assert all(torch.equal(new[i][k], old[src][k]) for k in new[i])
    # FLOP offsets: each stage starts at the sum of the earlier stages' FLOPs (metrics.csv and summary.json)
    assert s0["flops_offset"] == 0
    assert s1["flops_offset"] == pytest.approx(s0["flops"]) and last["flops_offset"] == pytest.approx(s1["flops"])
    assert last["flops_offset"] == pytest.approx(1024 * s0["flops_per_token"] + 768 * s1["flops_per_token"])
    for r in (s1, last):
        first = pd.read_csv(sweep / r["run_dir"] / "metrics.csv").iloc[0]
        assert first["tokens"] == 0 and first["flops"] == pytest.approx(r["flops_offset"])
    # data stream: each stage's first micro-batch is the one after the previous stage's last
    from stacking.config import RunConfig
    from stacking.train import data_stream

    meta0 = json.loads((ck0 / "stacking_meta.json").read_text())
    meta1 = json.loads((ck1 / "stacking_meta.json").read_text())
    assert meta0["data"]["micro_batches"] == 1024 // 256 and meta1["data"]["micro_batches"] == (1024 + 768) // 256
    for r, parent_meta in ((s1, meta0), (last, meta1)):
        cfg = RunConfig(**yaml.safe_load((sweep / r["run_dir"] / "config.yaml").read_text()))
        assert json.loads((sweep / r["grown_dir"] / "stacking_meta.json").read_text()) == parent_meta
        assert data_stream(cfg, parent_meta)["offset_micro_batches"] == parent_meta["data"]["micro_batches"]
    assert (last["op"], last["g"], last["grow_at_tokens"]) == ("grad3", 4, 1792)
    assert scratch["flops"] >= last["flops"]
    # the report pairs the chain's last run with scratch, like one grown run
    from stacking.cli import main as cli_main

    assert cli_main(["report", str(sweep)]) == 0
    sp = pd.read_csv(sweep / "report" / "speedups.csv")
    rows = sp[sp["op"] == "grad3"]
    assert len(rows) and set(rows["g"]) == {4} and set(rows["grow_at_tokens"]) == {1792}
    assert "| tiny-L4-D32 | grad3 | 4 |" in (sweep / "report" / "report.md").read_text()
    # the curves put each stage where its tokens begin: stage 1 after stage 0's 1,024, the target after 1,792
    from analysis.plots import tokens_before

    by_id = df.set_index("run_id")
    assert [tokens_before(by_id, r["run_id"]) for r in (s0, s1, last, scratch)] == [0, 1024, 1792, 0]
