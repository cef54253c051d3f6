"""Every shipped grid, at every scale it defines, parses and plans (the `--dry-run` path) — on the test dataset."""

from pathlib import Path

import pytest
import yaml
from sweep_helpers import write_fake_corpus

from experiments.grid import GridError, apply_scale, expand, parse_grid

GRIDS = sorted((Path(__file__).parents[2] / "experiments" / "grids").rglob("*.yaml"))


def _cases():
    for path in GRIDS:
        raw = yaml.safe_load(path.read_text())
        for scale in raw.get("scales") or {None: None}:
            yield pytest.param(path, scale, id=f"{path.stem}-{scale or 'default'}")


def _with_data_dirs(raw: dict, new) -> dict:
    """Every data dir a grid names (defaults, the kinds' and overrides' ``set``, ``eval_data_dirs`` values) → new(it)."""
    sets = (
        [raw["defaults"]]
        + [raw.get(k, {}).get("set", {}) for k in ("base", "grown", "scratch")]
        + [o.get("set", {}) for o in raw.get("overrides", [])]
    )
    for s in sets:
        if "data_dir" in s:
            s["data_dir"] = new(s["data_dir"])
        if "eval_data_dirs" in s:
            s["eval_data_dirs"] = {k: new(v) for k, v in s["eval_data_dirs"].items()}
    return raw


@pytest.mark.parametrize("path,scale", list(_cases()))
def test_shipped_grid_plans(path, scale, tiny_data):
    raw, _ = apply_scale(yaml.safe_load(path.read_text()), scale, path.name)
    _with_data_dirs(raw, lambda _: str(tiny_data))  # the paper's corpus is not on a CI machine; shapes still check
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
            scratch = [
                s for s in runs if s.kind == "scratch" and s.target == r.target and s.config.seed == r.config.seed
            ]
            assert max(s.flops for s in scratch) >= r.flops


def test_shipped_grids_cover_the_paper_experiments():
    names = {p.stem for p in GRIDS}
    assert {"demo", "operators", "timing", "factor", "scaling", "llama_pro"} <= names
    raw = yaml.safe_load((Path(__file__).parents[2] / "experiments/grids/operators.yaml").read_text())
    combos = {(o["op"], o.get("direction", "depth")) for o in raw["ops"]}
    assert combos == {
        ("G_stack", "depth"),
        ("G_zero", "depth"),
        ("G_random", "depth"),
        ("G_learn", "depth"),
        ("G_direct", "width"),
        ("G_zero", "width"),
        ("G_random", "width"),
        ("G_learn", "width"),
    }


def test_unknown_scale_is_one_clear_line(tmp_path):
    with pytest.raises(GridError, match="unknown scale 'huge'; valid: tiny, small, paper"):
        apply_scale(
            yaml.safe_load((Path(__file__).parents[2] / "experiments/grids/operators.yaml").read_text()),
            "huge",
            "operators.yaml",
        )


# Training tokens of the corpora the CPU and GPU scales name (docs/formats.md; measured with `stacking data` on
# Python 3.11.7; code-bpe4096 as a conservative lower bound of the ≈ 79.7M that its three parts hold when built
# one by one).
CORPORA = {
    "data/stdlib-bpe4096": (3_284_652, 4096),
    "data/stdlib-bytes": (11_445_242, 257),
    "data/code-bpe4096": (75_000_000, 4096),
    "data/c-headers-bytes": (54_105_499, 257),
}


def fake_corpus(root: Path, name: str) -> Path:
    """A dataset dir with the real corpus's token count (sparse files: planning reads only meta.json and sizes)."""
    train, vocab = CORPORA[name]
    return write_fake_corpus(root / name, train, vocab, 100_000, None if vocab == 257 else f"fake-bpe{vocab}")


@pytest.mark.parametrize("path,scale", [c for c in _cases() if c.values[1] != "paper"])
def test_shipped_cpu_and_gpu_scales_stay_under_one_epoch(path, scale, tmp_path):
    raw, _ = apply_scale(yaml.safe_load(path.read_text()), scale, path.name)

    def fake(name):
        assert name in CORPORA, f"{path.name} [{scale}] names an unmeasured corpus {name}"
        return str(fake_corpus(tmp_path, name))

    _with_data_dirs(raw, fake)
    runs = expand(parse_grid(raw, path.name), where=path.name)
    worst = max(runs, key=lambda r: r.epochs)
    assert worst.epochs <= 1.0, (worst.name, worst.epochs)
