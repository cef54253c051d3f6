"""Grid files → plans: budgets, FLOP matching, shapes, ids, and one-line errors before any compute."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from sweep_helpers import DEFAULTS, E2E_GRID, write_grid

from experiments.cli import sweep_main
from experiments.grid import GridError, expand, load_grid, select
from experiments.table import results_frame
from stacking.models import flops_per_token, model_config

REPO = Path(__file__).resolve().parents[2]


def _plan(tmp_path, data, grid, **defaults):
    return expand(load_grid(write_grid(tmp_path / "grid.yaml", data, grid, **defaults)))


def test_e2e_plan_budgets_and_dependencies(tmp_path, tiny_data):
    runs = _plan(tmp_path, tiny_data, E2E_GRID)
    kinds = [r.kind for r in runs]
    assert kinds == ["base"] + ["grown"] * 4 + ["scratch"]
    base = runs[0]
    # one base serves every d: trained to the largest d, checkpointed at all of them
    assert base.model == "tiny-L2-D32" and base.config.model_overrides == {"n_layer": 2}
    assert base.config.max_tokens == 2048 and base.config.save_at_tokens == [1024, 2048]
    fb = flops_per_token(model_config("tiny-L2-D32", vocab_size=512, block_size=32), 32)
    ft = flops_per_token(model_config("tiny-L4-D32", vocab_size=512, block_size=32), 32)
    for r in runs[1:5]:
        assert r.deps == [base.id] and r.parent == base.id
        assert r.config.init_from == r.grow.dst and r.grow.dst.startswith("grown/")
        assert r.grow.src == f"runs/{base.id}/checkpoints/tokens-{r.grow_at_tokens:012d}"
        assert r.flops_offset == pytest.approx(r.grow_at_tokens * fb)
        assert r.tokens == 3072 and r.flops == pytest.approx(r.grow_at_tokens * fb + 3072 * ft)
    scratch = runs[-1]
    largest = max(r.flops for r in runs[1:5])
    assert scratch.flops >= largest and scratch.tokens % 256 == 0 and scratch.flops - 256 * ft < largest
    assert not scratch.deps and scratch.config.init_from is None
    assert runs[1].id.startswith("grown-tiny-L4-D32-G_stack-depth-g2-d1024-s0-") and len(runs[1].id.split("-")[-1]) == 8


def test_total_flops_budget_and_width_bases(tmp_path, tiny_data):
    fb = flops_per_token(model_config("tiny-L2-D32", vocab_size=512, block_size=32), 32)
    ft = flops_per_token(model_config("tiny-L4-D32", vocab_size=512, block_size=32), 32)
    total = 2048 * fb + 5000 * ft
    grid = dict(E2E_GRID, ops=["G_stack"], grown={"total_flops": f"{total:.6e}"})  # YAML 1.1 reads 1e9 as a string
    runs = _plan(tmp_path, tiny_data, grid)
    for r in runs[1:3]:
        expect = math.floor((float(f"{total:.6e}") - r.grow_at_tokens * fb) / ft / 256) * 256
        assert r.tokens == expect and r.flops <= float(f"{total:.6e}")
    width = dict(
        E2E_GRID,
        targets=["tiny-L2-D64"],
        ops=[{"op": "G_direct", "direction": "width"}],
        d=[512],
        grown={"tokens": 512},
    )
    base = _plan(tmp_path, tiny_data, width)[0]
    assert base.config.model_overrides == {
        "n_embd": 32,
        "n_head": 1,
        "n_query_groups": 1,
        "intermediate_size": 96,
        "head_size": 32,
    }
    assert base.model == "tiny-L2-D32"


def test_g_learn_map_flops_come_out_of_the_total_flops_budget(tmp_path, tiny_data):
    # G_learn trains its maps on the grown model before the grown run trains: with grown.total_flops, base FLOPs at
    # d + the maps' FLOPs (as the grow step records them, growth.json extra_flops) + the run's own training fit in
    # the budget, to within one optimizer step; scratch is matched to that, not to an overrun.
    from stacking.growth import learn_flops

    base_mc, target_mc = (model_config(n, vocab_size=512, block_size=32) for n in ("tiny-L2-D32", "tiny-L4-D32"))
    fb, ft = flops_per_token(base_mc, 32), flops_per_token(target_mc, 32)
    maps = learn_flops(target_mc, base_mc, learn_steps=8, batch_size=4, seq_len=32)  # > 4 optimizer steps' FLOPs
    total = 2048 * fb + 5000 * ft + maps
    options = {"learn_steps": 8, "batch_size": 4, "seq_len": 32}
    grid = dict(E2E_GRID, ops=[{"op": "G_learn", "options": options}, "G_stack"], grown={"total_flops": f"{total:.6e}"})
    runs = _plan(tmp_path, tiny_data, grid)
    total = float(f"{total:.6e}")
    learned = [r for r in runs if r.op == "G_learn"]
    assert len(learned) == 2
    for r in learned:
        assert r.flops_offset == pytest.approx(r.grow_at_tokens * fb + maps)
        assert r.flops == pytest.approx(r.grow_at_tokens * fb + maps + r.tokens * ft)
        assert total - 256 * ft < r.flops <= total
    stacked = {r.grow_at_tokens: r for r in runs if r.op == "G_stack"}
    assert all(stacked[r.grow_at_tokens].tokens > r.tokens for r in learned)  # the maps' share is not trained
    largest = max(r.flops for r in runs if r.kind == "grown")
    scratch = next(r for r in runs if r.kind == "scratch")
    assert largest <= total and largest <= scratch.flops < largest + 256 * ft


def test_ids_are_deterministic_and_only_an_override_changes_them(tmp_path, tiny_data):
    a = _plan(tmp_path / "a", tiny_data, E2E_GRID)
    b = _plan(tmp_path / "b", tiny_data, E2E_GRID)
    assert [r.id for r in a] == [r.id for r in b]  # the sweep dir's location is not part of an id
    over = dict(E2E_GRID, overrides=[{"match": "grown-*-G_zero-*-d2048-*", "set": {"lr": 1e-3}}])
    c = _plan(tmp_path / "c", tiny_data, over)
    changed = [x.name for x, y in zip(a, c, strict=True) if x.id != y.id]
    assert changed == ["grown-tiny-L4-D32-G_zero-depth-g2-d2048-s0"]
    assert c[4].config.lr == 1e-3 and c[1].config.lr == DEFAULTS["lr"]
    only = select(a, "*G_zero*d1024*")
    assert [r.kind for r in only] == ["base", "grown"]  # the base comes along


def test_one_op_with_two_option_sets_gets_a_variant_per_label(tmp_path, tiny_data):
    # llama_pro.yaml's case: the same op twice with different options must stay two methods in the analyses, while a
    # label that only moves the d (same options) stays the op's method.
    grid = dict(
        E2E_GRID,
        ops=[
            {"op": "G_random", "direction": "depth", "label": "G_random_slow", "options": {"ramp_tokens": 512}},
            {"op": "G_random", "direction": "depth", "label": "G_random_fast", "options": {"ramp_tokens": 256}},
            "G_stack",
            {"op": "G_stack", "label": "G_stack_dsweep", "d": [512]},
        ],
        anneal={"fractions": [1.0]},
        defaults={"schedule": "constant"},
    )
    runs = [r for r in _plan(tmp_path, tiny_data, grid) if r.op is not None]
    variants = {(r.name.split("-")[4], r.kind, r.variant) for r in runs}
    assert variants == {
        ("G_random_slow", "grown", "G_random_slow"),
        ("G_random_slow", "cooldown", "G_random_slow"),
        ("G_random_fast", "grown", "G_random_fast"),
        ("G_random_fast", "cooldown", "G_random_fast"),
        ("G_stack", "grown", None),
        ("G_stack", "cooldown", None),
        ("G_stack_dsweep", "grown", None),
        ("G_stack_dsweep", "cooldown", None),
    }
    assert {r.op for r in runs} == {"G_random", "G_stack"}
    table = results_frame(tmp_path / "sweep", runs)  # the results table carries it (runs still pending)
    assert table["op"].tolist() == [r.op for r in runs]
    assert [v if isinstance(v, str) else None for v in table["variant"]] == [r.variant for r in runs]


def test_scratch_lr_sweep_plans_one_run_per_lr(tmp_path, tiny_data):
    grid = dict(
        name="lr", targets=["tiny-L4-D32"], scratch={"flop_matched": False, "tokens": [2048], "lrs": [1e-3, 3e-3, 1e-2]}
    )
    runs = _plan(tmp_path, tiny_data, grid)
    assert [r.name for r in runs] == [f"scratch-tiny-L4-D32-t2048-lr{x}-s0" for x in ("0.001", "0.003", "0.01")]
    assert [r.config.lr for r in runs] == [1e-3, 3e-3, 1e-2]
    # min_lr keeps the defaults' min_lr / lr ratio (3e-4 / 3e-3 = 0.1)
    assert [r.config.min_lr for r in runs] == pytest.approx([1e-4, 3e-4, 1e-3])
    assert len({r.id for r in runs}) == 3 and all(r.tokens == 2048 for r in runs)


def _bad(**changes):
    """E2E_GRID with top-level changes (None deletes a key)."""
    g = copy.deepcopy(E2E_GRID)
    for k, v in changes.items():
        if v is None:
            g.pop(k, None)
        else:
            g[k] = v
    return g


BAD_GRIDS = {
    "unknown op": (_bad(ops=["G_stack", "G_foo"]), "ops[1].op: unknown operator 'G_foo'"),
    "op without that direction": (_bad(ops=[{"op": "G_stack", "direction": "width"}]), "does not support direction"),
    "unknown field": (_bad(seed=[0]), "unknown field 'seed' (did you mean 'seeds'?)"),
    "unknown RunConfig field": (_bad(defaults={"lrr": 0.1}), "unknown RunConfig field 'lrr' (did you mean 'lr'?)"),
    "managed field": (_bad(defaults={"max_tokens": 4096}), "defaults.max_tokens is set by the sweep"),
    "d beyond base budget": (_bad(base={"tokens": 1024}), "d = 2048 is beyond the base's budget base.tokens = 1024"),
    "d not a batch multiple": (_bad(d=[1000]), "d = 1000 must be a positive multiple of the base's global_batch"),
    "no budget left": (_bad(grown={"total_flops": 1e6}), "leaving no budget in grown.total_flops"),
    "g does not fit depth": (_bad(g=[3]), "g = 3 does not fit target tiny-L4-D32: depth growth needs n_layer = 4"),
    "g does not fit width": (
        _bad(targets=["tiny-L2-D64"], ops=[{"op": "G_zero", "direction": "width"}], g=[4]),
        "g = 4 does not fit target tiny-L2-D64: width growth",
    ),
    "duplicate d": (_bad(d=[1024, 1024]), "d lists 1024 twice (duplicate run ids)"),
    "duplicate op": (_bad(ops=["G_stack", "G_stack"]), "repeats an earlier entry (duplicate run ids)"),
    "bad op option": (_bad(ops=[{"op": "G_random", "options": {"ramp": 5}}]), "option(s) ['ramp'] are not used"),
    "both budgets": (_bad(grown={"tokens": 1024, "total_flops": 1e12}), "exactly one of tokens"),
    "override matches nothing": (
        _bad(overrides=[{"match": "grown-*-G_typo-*", "set": {"lr": 1}}]),
        "overrides[0].match 'grown-*-G_typo-*' matches no run",
    ),
    "wrong type": (_bad(d="many"), "d[0]: expected an integer, got 'many'"),
    "LR sweep beside growth runs": (_bad(scratch={"lrs": [1e-3, 3e-3]}), "scratch.lrs is an LR sweep on scratch alone"),
    "LR sweep with a bad LR": (
        _bad(ops=[], d=[], scratch={"tokens": [1024], "lrs": [1e-3, 0.0]}),
        "scratch.lrs must be distinct positive learning rates",
    ),
}


@pytest.mark.parametrize("case", list(BAD_GRIDS))
def test_bad_grids_fail_before_compute_with_one_line(case, tmp_path, tiny_data, capsys):
    grid, message = BAD_GRIDS[case]
    path = write_grid(tmp_path / "grid.yaml", tiny_data, grid)
    out = tmp_path / "sweep"
    assert sweep_main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stacking sweep: error: ") and "\n" not in err, err
    assert message in err, err
    assert not out.exists()  # nothing written, nothing trained


def test_missing_data_dir_is_one_line(tmp_path, capsys):
    path = write_grid(tmp_path / "grid.yaml", tmp_path / "nope", E2E_GRID)
    assert sweep_main([str(path), "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stacking sweep: error: data_dir") and "does not exist" in err and "\n" not in err
    assert not (tmp_path / "sweep").exists()


def test_grid_error_names_yaml_problems(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("targets: [tiny-L4-D32\n")
    with pytest.raises(GridError, match="broken.yaml: not valid YAML"):
        load_grid(p)


def test_docs_describe_every_grid_field():
    """docs/sweeps.md's schema table names every field of the grid dataclasses."""
    from dataclasses import fields

    from experiments.grid import BaseSpec, EvalSpec, Grid, GrownSpec, OpSpec, OverrideSpec, ScratchSpec, SlurmSpec

    doc = (REPO / "docs" / "sweeps.md").read_text()
    prefixes = {
        Grid: "",
        BaseSpec: "base.",
        GrownSpec: "grown.",
        ScratchSpec: "scratch.",
        SlurmSpec: "slurm.",
        EvalSpec: "eval.",
    }
    for cls, prefix in prefixes.items():
        for f in fields(cls):
            assert f"`{prefix}{f.name}`" in doc or f"`{f.name}." in doc, f"{prefix}{f.name}"
    for cls in (OpSpec, OverrideSpec):
        for f in fields(cls):
            assert f.name in doc
