"""Every shipped grid, at every scale it defines, parses and plans (the `--dry-run` path) — on the test dataset."""

from pathlib import Path

import pytest
import yaml

from experiments.grid import GridError, apply_scale, expand, parse_grid

GRIDS = sorted((Path(__file__).parent.parent / "experiments" / "grids").rglob("*.yaml"))


def _cases():
    for path in GRIDS:
        raw = yaml.safe_load(path.read_text())
        for scale in (raw.get("scales") or {None: None}):
            yield pytest.param(path, scale, id=f"{path.stem}-{scale or 'default'}")


@pytest.mark.parametrize("path,scale", list(_cases()))
def test_shipped_grid_plans(path, scale, tiny_data):
    raw, _ = apply_scale(yaml.safe_load(path.read_text()), scale, path.name)
    raw["defaults"]["data_dir"] = str(tiny_data)  # the paper's corpus is not on a CI machine; shapes still check
    raw["allow_epochs"] = True  # the test corpus is tiny; epochs are checked against the real corpora below
    runs = expand(parse_grid(raw, path.name), where=path.name)
    assert len({r.id for r in runs}) == len(runs)
    for r in runs:  # enough evaluations on every curve a speed-up is read from
        if r.kind in ("grown", "scratch"):
            assert r.n_evals >= 20, (r.name, r.n_evals)
    kinds = {r.kind for r in runs}
    assert "scratch" in kinds and ("grown" in kinds) == bool(raw.get("ops"))
    for r in runs:
        if r.kind == "grown":  # FLOP-matched: the scratch baseline of a target covers every grown run's FLOPs
            scratch = [s for s in runs if s.kind == "scratch" and s.target == r.target and
                       s.config.seed == r.config.seed]
            assert max(s.flops for s in scratch) >= r.flops


def test_shipped_grids_cover_the_paper_experiments():
    names = {p.stem for p in GRIDS}
    assert {"demo", "operators", "timing", "factor", "scaling", "llama_pro"} <= names
    raw = yaml.safe_load((Path(__file__).parent.parent / "experiments/grids/operators.yaml").read_text())
    combos = {(o["op"], o.get("direction", "depth")) for o in raw["ops"]}
    assert combos == {("G_stack", "depth"), ("G_zero", "depth"), ("G_random", "depth"), ("G_learn", "depth"),
                      ("G_direct", "width"), ("G_zero", "width"), ("G_random", "width"), ("G_learn", "width")}


def test_unknown_scale_is_one_clear_line(tmp_path):
    with pytest.raises(GridError, match="unknown scale 'huge'; valid: tiny, small, paper"):
        apply_scale(yaml.safe_load((Path(__file__).parent.parent / "experiments/grids/operators.yaml").read_text()),
                    "huge", "operators.yaml")
