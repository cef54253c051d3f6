"""``anneal.at_scratch_flops``: grown cooldowns at the FLOPs of their seed's scratch cooldowns — the FLOP points
worked out by hand, the points outside a grown run left out with a note, no duplicate of an own cooldown, every
other run (and its id) unchanged, a missing branch state named in one line, and (slow) a sweep that runs them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sweep_helpers import E2E_GRID, run_sweep, write_grid

from experiments.grid import GridError, expand, load_grid, parse_grid
from experiments.rundir import missing_states
from stacking.config import config_hash

REPO = Path(__file__).resolve().parents[2]
ANNEAL = {"fractions": [0.25, 0.5, 0.75, 1.0], "decay_fraction": 0.25}
GRID = {**E2E_GRID, "ops": ["G_stack"], "d": [1024, 2048], "anneal": ANNEAL}
"""Base tiny-L2-D32 (F = 283,584 FLOPs/token at seq 32, vocab 512), grown at d = 1024 and 2048 to tiny-L4-D32
(F = 468,672) for 3072 tokens each; steps of 256 tokens."""


def _plan(tmp_path, data, notes=None, **anneal):
    path = write_grid(tmp_path / "g.yaml", data, {**GRID, "anneal": {**ANNEAL, **anneal}}, schedule="constant")
    return expand(load_grid(path), where="g.yaml", notes=notes)


def test_flop_points_by_hand(tmp_path, tiny_data):
    notes = []
    runs = _plan(tmp_path, tiny_data, notes, at_scratch_flops=True)
    assert [r.flops_per_token for r in runs[:2]] == [283584.0, 468672.0]
    # scratch matches the larger grown run: 2048·283,584 + 3072·468,672 = 2,020,540,416 FLOPs → ⌈4311.2 / 256⌉ = 17
    # steps = 4352 tokens; its cooldowns end at round(f·17) steps = 1024, 2048 (8.5 → 8), 3328, 4352 tokens
    scratch = {r.anneal_fraction: r for r in runs if r.branch_of and r.branch_of.startswith("scratch-")}
    assert {f: c.tokens for f, c in scratch.items()} == {0.25: 1024, 0.5: 2048, 0.75: 3328, 1.0: 4352}
    new = {r.name.split("-G_stack-depth-g2-")[1]: r for r in runs if r.at_flops_of and "-at-scratch-" in r.name}
    assert list(new) == ["d1024-s0-at-scratch-f25", "d1024-s0-at-scratch-f75", "d2048-s0-at-scratch-f75"]
    # d = 1024: offset 1024·283,584 = 290,390,016. f = 0.25: (1024·468,672 − offset) / 468,672 = 404.4 tokens →
    # 2 steps = 512; decay max(1 step, round(0.25·512/256 = 0.5 → 0)) = 256, branch at 256: the run saves no state
    # before it (its states: 512, 1024, 1792, 2304), so the cooldown trains from the grown run's start
    c = new["d1024-s0-at-scratch-f25"]
    assert (c.tokens, c.decay_tokens, c.start_tokens, c.trained_tokens) == (512, 256, 0, 512)
    main = next(r for r in runs if r.id == c.branch_of)
    assert c.config.branch_from is None and c.config.init_from == main.config.init_from == main.grow.dst
    assert c.flops == 290_390_016 + 512 * 468_672 and c.at_flops_of == scratch[0.25].id
    # f = 0.75: (3328·468,672 − offset) / 468,672 = 2708.4 → 11 steps = 2816; decay round(2.75) = 3 steps = 768,
    # branch at 2048: from the state at 1792, 256 tokens on the constant LR first
    c = new["d1024-s0-at-scratch-f75"]
    assert (c.tokens, c.decay_tokens, c.start_tokens, c.trained_tokens) == (2816, 768, 1792, 1024)
    assert c.config.branch_from.endswith("/states/tokens-000000001792.ckpt")
    assert c.config.schedule == "wsd" and c.config.max_tokens == 2816 and c.config.decay_tokens == 768
    # d = 2048: offset 580,780,032. f = 0.75: 2088.8 → 8 steps = 2048, decay 2 steps, branch 1536, state 1024
    c = new["d2048-s0-at-scratch-f75"]
    assert (c.tokens, c.decay_tokens, c.start_tokens) == (2048, 512, 1024)
    # f = 0.5 lands on own cooldowns (d1024: 1428.4 → 6 steps = 1536 = its f = 0.5; d2048: 808.8 → 3 steps = 768 =
    # its f = 0.25) and f = 1 of d2048 on its end (3112.8 → 12 steps = 3072): marked, not planned twice
    marked = {r.name.split("-g2-")[1]: r.at_flops_of for r in runs if r.at_flops_of and "-at-scratch-" not in r.name}
    assert marked == {
        "d1024-s0-f50": scratch[0.5].id,
        "d2048-s0-f25": scratch[0.5].id,
        "d2048-s0-f100": scratch[1.0].id,
    }
    # left out, with a line each: d1024 at f = 1 (3732.4 → 3840 > 3072 + 2 steps), d2048 at f = 0.25 (before d)
    head = "anneal.at_scratch_flops: no cooldown at scratch's f = {} for grown-tiny-L4-D32-G_stack-depth-g2-{}-s0: "
    assert notes == [
        head.format(1, "d1024") + "its FLOPs lie past the grown run's budget",
        head.format(0.25, "d2048") + "its FLOPs are spent before the growth",
    ]
    assert len({r.id for r in runs}) == len(runs)


def test_option_only_adds_cooldowns(tmp_path, tiny_data):
    off = _plan(tmp_path, tiny_data)
    on = _plan(tmp_path, tiny_data, at_scratch_flops=True)
    assert [(r.id, r.config) for r in on[: len(off)]] == [(r.id, r.config) for r in off]
    assert [r.kind for r in on[len(off) :]] == ["cooldown"] * 3
    assert all("start_tokens" not in r.to_json() and "at_flops_of" not in r.to_json() for r in off)


def test_save_branch_states_branches_each_new_cooldown_at_its_own_state(tmp_path, tiny_data):
    """With save_branch_states the grown runs also save their state at the new cooldowns' branch points (their ids
    change, nothing else of them), so every new cooldown branches right there: no replay on the constant LR. The
    cooldowns end where they did, at the same FLOPs; scratch and the bases keep their ids."""
    replay = _plan(tmp_path, tiny_data, at_scratch_flops=True)
    saved = _plan(tmp_path, tiny_data, at_scratch_flops=True, save_branch_states=True)
    assert len(saved) == len(replay)
    for a, b in zip(replay, saved, strict=True):
        assert (a.name, a.kind, a.tokens, a.flops) == (b.name, b.kind, b.tokens, b.flops)
        if a.kind in ("base", "scratch") or (a.branch_of or "").startswith("scratch-"):
            assert a.id == b.id
    grown = {r.name: r for r in saved if r.kind == "grown"}
    old = {r.name: r for r in replay if r.kind == "grown"}
    # d = 1024: the states at 256 (f = 0.25's branch, was replayed from the start) and 2048 (f = 0.75's) join
    # 512, 1024, 1792, 2304; d = 2048: 1536 joins
    d1024, d2048 = (f"grown-tiny-L4-D32-G_stack-depth-g2-{d}-s0" for d in ("d1024", "d2048"))
    assert grown[d1024].config.save_state_at_tokens == [256, 512, 1024, 1792, 2048, 2304]
    assert set(grown[d2048].config.save_state_at_tokens) - set(old[d2048].config.save_state_at_tokens) == {1536}
    assert grown[d1024].id != old[d1024].id
    new = [r for r in saved if "-at-scratch-" in r.name]
    assert len(new) == 3
    for c in new:
        branch = c.config.max_tokens - c.config.decay_tokens
        assert c.start_tokens == branch and c.trained_tokens == c.config.decay_tokens
        assert c.config.branch_from.endswith(f"/states/tokens-{branch:012d}.ckpt")
        assert c.branch_of in {r.id for r in grown.values()}
    with pytest.raises(GridError, match="expected true or false"):
        _plan(tmp_path, tiny_data, at_scratch_flops=True, save_branch_states="yes")
    with pytest.raises(GridError, match="g.yaml: anneal.save_branch_states needs anneal.at_scratch_flops: true"):
        _plan(tmp_path, tiny_data, save_branch_states=True)


def test_seeds_demo_plan(tmp_path, monkeypatch):
    """seeds.yaml --scale demo with the option: the 184 runs of the plan without it unchanged (g = 2, 4, 8 on 8 seeds),
    3 cooldowns more per grown run (f = 1 is each grown run's own end: FLOP-matched to within the two budgets'
    rounding)."""
    from test_plans_unchanged import fake_corpora

    fake_corpora(tmp_path)
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO / "experiments" / "grids" / "seeds.yaml").read_text())
    assert raw["anneal"]["at_scratch_flops"] is True  # the shipped grid has it on (results/seeds-demo ran with it)
    plans = {}
    for flag in (False, True):
        raw["anneal"]["at_scratch_flops"] = flag
        (tmp_path / f"seeds-{flag}.yaml").write_text(yaml.safe_dump(raw))
        notes = []
        plans[flag] = expand(load_grid(tmp_path / f"seeds-{flag}.yaml", scale="demo"), where="seeds.yaml", notes=notes)
    off, on = plans[False], plans[True]
    assert len(off) == 184 and [(r.id, r.config) for r in on[:184]] == [(r.id, r.config) for r in off]
    assert len(on) == 184 + 3 * 24
    assert not notes
    # seed 2, g = 2: offset 327,680·579,264 = 1.898e11 FLOPs = 173,048.7 target tokens; scratch's cooldowns end at
    # 452,608 / 905,216 / 1,359,872 tokens → 279,559 / 732,167 / 1,186,823 → 137 / 358 / 580 steps of 2048
    new = {r.name: r for r in on[184:] if r.config.seed == 2}
    g2 = [new[f"cooldown-tiny-L8-D32-G_stack-depth-g2-d327680-s2-at-scratch-f{p}"] for p in (25, 50, 75)]
    assert [(c.tokens, c.decay_tokens, c.start_tokens) for c in g2] == [
        (280_576, 55_296, 0),
        (733_184, 147_456, 327_680),
        (1_187_840, 237_568, 655_360),
    ]


def test_errors(tmp_path, tiny_data):
    raw = yaml.safe_load(write_grid(tmp_path / "g.yaml", tiny_data, GRID).read_text())
    for anneal, scratch, msg in (
        ({"at_scratch_flops": True}, {}, "needs anneal.fractions"),
        ({**ANNEAL, "at_scratch_flops": True}, {"flop_matched": False}, "needs scratch.flop_matched: true"),
    ):
        with pytest.raises(GridError, match=f"g.yaml: anneal.at_scratch_flops {msg}"):
            expand(parse_grid({**raw, "anneal": anneal, "scratch": scratch}, "g.yaml"), where="g.yaml")
    with pytest.raises(GridError, match="expected true or false"):
        parse_grid({**raw, "anneal": {"at_scratch_flops": "yes"}}, "g.yaml")


def test_missing_branch_state_is_named(tmp_path, tiny_data):
    runs = _plan(tmp_path, tiny_data, at_scratch_flops=True)
    sweep = tmp_path / "sweep"
    cool = next(r for r in runs if r.name.endswith("d1024-s0-at-scratch-f75"))
    main = next(r for r in runs if r.id == cool.branch_of)
    (sweep / main.config.out_dir).mkdir(parents=True)
    (sweep / main.config.out_dir / "summary.json").write_text(
        json.dumps({"status": "done", "config_hash": config_hash(main.config)})
    )
    lines = missing_states(sweep, runs)
    # every cooldown of the done main run that branches from a state names it (the from-start one needs none)
    assert len(lines) == sum(1 for r in runs if r.branch_of == main.id and r.config.branch_from)
    assert f"error: {main.id} is done but has no saved state at 1,792 tokens" in "\n".join(lines)
    assert f"cooldown {cool.id} cannot branch from it" in "\n".join(lines)
    state = sweep / cool.config.branch_from
    state.parent.mkdir(parents=True)
    state.touch()
    assert not any(cool.id in line for line in missing_states(sweep, runs))


@pytest.mark.slow
def test_sweep_runs_them(tmp_path, tiny_data):
    """The sweep trains the new cooldowns (one from the grown run's start, two from earlier states), results.csv
    names their scratch cooldowns, and `stacking loss-table` prints the equal-FLOPs reading."""
    grid = write_grid(
        tmp_path / "g.yaml", tiny_data, {**GRID, "anneal": {**ANNEAL, "at_scratch_flops": True}}, schedule="constant"
    )
    proc = run_sweep(grid, "--out", tmp_path / "sweep", "--threads", "1", "--jobs", str(min(4, os.cpu_count())))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no cooldown at scratch's f = 0.25 for grown-tiny-L4-D32-G_stack-depth-g2-d2048-s0" in proc.stderr
    df = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert (df["status"] == "done").all() and df.columns[-1] == "at_flops_of"
    new = df[df["run_id"].str.contains("-at-scratch-")]
    assert len(new) == 3 and new["at_flops_of"].notna().all()
    for _, c in new.iterrows():
        s = df[df["run_id"] == c["at_flops_of"]].iloc[0]
        assert abs(c["flops"] - s["flops"]) <= 256 * c["flops_per_token"]  # within one step
        m = pd.read_csv(tmp_path / "sweep" / c["run_dir"] / "metrics.csv")
        assert m["lr"].iloc[-1] == pytest.approx(3.0e-4)
    from_start = new[new["run_id"].str.contains("d1024-s0-at-scratch-f25")].iloc[0]
    m = pd.read_csv(tmp_path / "sweep" / from_start["run_dir"] / "metrics.csv")
    assert m["tokens"].iloc[0] == 0  # trained from the grown run's start: its first evaluation at 0 tokens
    # from an earlier state, the main run's own steps first: the same train losses up to the branch point
    replay = new[new["run_id"].str.contains("d1024-s0-at-scratch-f75")].iloc[0]
    m = pd.read_csv(tmp_path / "sweep" / replay["run_dir"] / "metrics.csv").dropna(subset=["train_loss"])
    main = df[df["run_id"] == replay["parent_run"]].iloc[0]
    ref = pd.read_csv(tmp_path / "sweep" / main["run_dir"] / "metrics.csv").dropna(subset=["train_loss"])
    both = m.merge(ref, on="tokens", suffixes=("", "_main"))
    both = both[both["tokens"] <= 2048]
    assert list(both["tokens"]) == [2048] and m["tokens"].iloc[0] == 2048
    assert both["train_loss"].to_numpy() == pytest.approx(both["train_loss_main"].to_numpy(), rel=1e-5)
    out = run_loss_table(tmp_path / "sweep")
    assert "annealed loss at equal FLOPs" in out and "| tiny-L4-D32 | G_stack g=2 d=1.02K | 0.25 |" in out


def run_loss_table(sweep: Path) -> str:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "stacking", "loss-table", str(sweep)], capture_output=True, text=True, check=True
    )
    return proc.stdout


@pytest.mark.slow
def test_saved_branch_states_give_the_replays_losses(tmp_path, tiny_data):
    """save_branch_states trains the new cooldowns from states the grown run saved at their branch points; their
    final losses are those of the replaying cooldowns (same numerics, fewer tokens trained), and the grown runs'
    own losses do not move."""
    losses = {}
    for flag in (False, True):
        anneal = {**ANNEAL, "at_scratch_flops": True, "save_branch_states": flag}
        grid = write_grid(tmp_path / f"g{flag}.yaml", tiny_data, {**GRID, "anneal": anneal}, schedule="constant")
        out = tmp_path / f"sweep-{flag}"
        proc = run_sweep(grid, "--out", out, "--threads", "1", "--jobs", str(min(4, os.cpu_count())))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        df = pd.read_csv(out / "results.csv")
        assert (df["status"] == "done").all()
        losses[flag] = dict(zip(df["run_id"].str.rsplit("-", n=1).str[0], df["final_val_loss"]))
        if flag:
            new = df[df["run_id"].str.contains("-at-scratch-")]
            for _, c in new.iterrows():
                m = pd.read_csv(out / c["run_dir"] / "metrics.csv").dropna(subset=["train_loss"])
                assert m["tokens"].iloc[0] > c["tokens"] - c["decay_tokens"]  # no step before its branch point
    assert losses[False].keys() == losses[True].keys()
    for name, loss in losses[False].items():
        assert losses[True][name] == pytest.approx(loss, rel=1e-5), name
