"""Fair controls at the sweep level (issue 10): the LR policy of bases and grown runs, cooldown branches end to end,
epoch warnings and refusals, and run ids that do not depend on where the data lives."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from sweep_helpers import E2E_GRID, run_sweep, write_grid

from experiments.grid import GridError, epoch_warnings, expand, load_grid, parse_grid


def plan(tmp_path, data, **grid):
    path = write_grid(tmp_path / "g.yaml", data, {**E2E_GRID, **grid})
    return expand(load_grid(path), where="g.yaml")


def test_lr_policies(tmp_path, tiny_data):
    runs = plan(
        tmp_path,
        tiny_data,
        defaults={"schedule": "cosine"},
        scratch={"set": {"lr": 1.0e-3}},
        base={"set": {"lr": 5.0e-3}},
    )
    by_kind = {r.kind: r for r in runs}
    assert by_kind["base"].config.schedule == "constant"  # every d at the same, un-annealed LR
    assert by_kind["base"].config.lr == 5.0e-3
    assert by_kind["grown"].config.lr == 1.0e-3  # the target's LR, as scratch runs use it
    assert by_kind["scratch"].config.lr == 1.0e-3
    old = plan(
        tmp_path,
        tiny_data,
        defaults={"schedule": "cosine"},
        base={"schedule": "defaults", "set": {"lr": 5.0e-3}},
        grown={"tokens": 3072, "lr": "base"},
    )
    assert {r.kind: r.config.schedule for r in old}["base"] == "cosine"
    assert {r.kind: r.config.lr for r in old}["grown"] == 5.0e-3
    with pytest.raises(GridError, match="grown.lr must be one of target, base, got 'scratch'"):
        plan(tmp_path, tiny_data, grown={"tokens": 3072, "lr": "scratch"})
    with pytest.raises(GridError, match="base.schedule must be one of constant, defaults"):
        plan(tmp_path, tiny_data, base={"schedule": "cosine"})


def test_anneal_plan_errors(tmp_path, tiny_data):
    with pytest.raises(GridError, match="anneal branches need a constant LR on the main run"):
        plan(tmp_path, tiny_data, defaults={"schedule": "cosine"}, anneal={"fractions": [1.0]})
    with pytest.raises(GridError, match=r"anneal.fractions must be distinct numbers in \(0, 1\]"):
        plan(tmp_path, tiny_data, anneal={"fractions": [0.5, 1.5]})
    with pytest.raises(GridError, match="inside the warmup"):
        plan(
            tmp_path, tiny_data, defaults={"schedule": "constant", "warmup_tokens": 2048}, anneal={"fractions": [0.25]}
        )


def test_epochs_warn_and_refuse(tmp_path, tiny_data):
    train_tokens = 246_180  # the session's test dataset (tests/conftest.py)
    runs = plan(tmp_path, tiny_data, grown={"tokens": 256 * 1200})
    lines = epoch_warnings(runs)
    assert any("grown-tiny-L4-D32-G_stack-depth-g2-d2048-s0 reads 1.26 epochs" in x for x in lines), lines
    assert all(r.epochs == pytest.approx(r.data_tokens / train_tokens) for r in runs)
    grown = next(r for r in runs if r.kind == "grown" and r.grow_at_tokens == 2048)
    assert grown.data_tokens == 2048 + 256 * 1200  # the grown run reads on from where its base stopped
    with pytest.raises(GridError, match=r"reads 4\.\d epochs of 246,180 training tokens \(> 4\).*allow_epochs"):
        plan(tmp_path, tiny_data, grown={"tokens": 256 * 4000})
    assert plan(tmp_path, tiny_data, grown={"tokens": 256 * 4000}, allow_epochs=True)


def test_run_ids_do_not_depend_on_where_the_data_lives(tmp_path, tiny_data):
    ids = []
    for where in ("checkout_a", "checkout_b"):
        data = tmp_path / where / "data" / "ds"
        shutil.copytree(tiny_data, data)
        grid = write_grid(tmp_path / where / "grid.yaml", data, E2E_GRID)
        ids.append([r.id for r in expand(load_grid(grid), where="grid.yaml")])
    assert ids[0] == ids[1]


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_cooldown_branches_end_to_end(tmp_path, tiny_data):
    grid = write_grid(
        tmp_path / "anneal.yaml",
        tiny_data,
        {**E2E_GRID, "d": [1024], "anneal": {"fractions": [0.5, 1.0], "decay_fraction": 0.25}},
        schedule="constant",
    )
    runs = expand(load_grid(grid), where="anneal.yaml")
    cool = [r for r in runs if r.kind == "cooldown"]
    assert len(cool) == 6  # 2 grown + 1 scratch main runs × 2 fractions
    proc = run_sweep(grid, "--out", tmp_path / "sweep", "--threads", "1", "--jobs", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert (df["status"] == "done").all()
    c = df[df["kind"] == "cooldown"]
    assert sorted(c["anneal_fraction"].unique()) == [0.5, 1.0]
    for _, row in c.iterrows():
        main = df[df["run_id"] == row["parent_run"]].iloc[0]
        assert main["kind"] in ("grown", "scratch")
        assert row["tokens"] == pytest.approx(row["anneal_fraction"] * main["tokens"], abs=256)
        m = pd.read_csv(tmp_path / "sweep" / main["run_dir"] / "metrics.csv")
        rows = pd.read_csv(tmp_path / "sweep" / row["run_dir"] / "metrics.csv")
        assert rows["tokens"].iloc[0] == row["tokens"] - row["decay_tokens"] + 256
        # the same FLOP counter as the main run (base FLOPs included for a grown main)
        fpt = (m["flops"].iloc[-1] - m["flops"].iloc[0]) / (m["tokens"].iloc[-1] - m["tokens"].iloc[0])
        assert row["flops"] == pytest.approx(m["flops"].iloc[0] + row["tokens"] * fpt, rel=1e-9)
        assert rows["lr"].iloc[-1] == pytest.approx(3.0e-4)
        if main["kind"] == "grown":
            assert row["op"] == main["op"] and row["grow_at_tokens"] == main["grow_at_tokens"]


def test_grid_schema_rejects_owned_fields(tmp_path, tiny_data):
    raw = yaml.safe_load(write_grid(tmp_path / "g.yaml", tiny_data, E2E_GRID).read_text())
    raw["defaults"]["branch_from"] = "x.ckpt"
    with pytest.raises(GridError, match="branch_from is set by the sweep: use anneal.fractions"):
        parse_grid(raw, "g.yaml")


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_carry_moments_end_to_end(tmp_path, tiny_data):
    with pytest.raises(GridError, match="carry is not defined for G_zero .depth.: layers .* zeroed output"):
        plan(tmp_path, tiny_data, grown={"tokens": 3072, "optimizer": "carry"})
    grid = write_grid(
        tmp_path / "carry.yaml",
        tiny_data,
        {**E2E_GRID, "ops": ["G_stack"], "d": [1024], "grown": {"tokens": 1024, "optimizer": "carry"}},
    )
    runs = expand(load_grid(grid), where="carry.yaml")
    fresh = expand(
        load_grid(
            write_grid(
                tmp_path / "fresh.yaml",
                tiny_data,
                {**E2E_GRID, "ops": ["G_stack"], "d": [1024], "grown": {"tokens": 1024}},
            )
        ),
        where="fresh.yaml",
    )
    g_carry = next(r for r in runs if r.kind == "grown")
    g_fresh = next(r for r in fresh if r.kind == "grown")
    assert g_carry.id != g_fresh.id and g_carry.config.optimizer_init == "carry"
    proc = run_sweep(grid, "--out", tmp_path / "sweep", "--threads", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import torch

    state = torch.load(tmp_path / "sweep" / g_carry.grow.dst / "optimizer_state.pt", weights_only=True)
    assert torch.equal(
        state["transformer.h.3.attn.qkv.weight"]["exp_avg"], state["transformer.h.1.attn.qkv.weight"]["exp_avg"]
    )  # layer 3 of G_stack copies layer 1
    assert state["transformer.h.0.attn.qkv.weight"]["exp_avg"].abs().sum() > 0
    log = (tmp_path / "sweep" / g_carry.config.out_dir / "train.log").read_text()
    assert "AdamW moments carried from" in log


def test_per_op_d_and_seeds(tmp_path, tiny_data):
    runs = plan(
        tmp_path,
        tiny_data,
        d=[1024],
        seeds=[0, 1],
        ops=["G_stack", {"op": "G_zero", "direction": "depth", "d": [512, 2048], "seeds": [0]}],
    )
    grown = {(r.op, r.grow_at_tokens, r.config.seed) for r in runs if r.kind == "grown"}
    assert grown == {("G_stack", 1024, 0), ("G_stack", 1024, 1), ("G_zero", 512, 0), ("G_zero", 2048, 0)}
    bases = {r.config.seed: r for r in runs if r.kind == "base"}
    assert bases[0].config.save_at_tokens == [512, 1024, 2048] and bases[0].tokens == 2048
    assert bases[1].config.save_at_tokens == [1024] and bases[1].tokens == 1024  # trains only as far as needed
    assert sorted(r.config.seed for r in runs if r.kind == "scratch") == [0, 1]
