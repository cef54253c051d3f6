"""The full plan of every shipped grid at every scale it defines — every run's ``to_json()``, ids included, in
order — and of a few variants that take the planner's other paths (VARIANTS) is the one recorded in
tests/fixtures/plans.json.gz. A refactor of the planner must leave it unchanged; a change that means to move plans
rewrites the fixture and says which run ids moved:

    PYTHONPATH=tests python tests/experiments/test_plans_unchanged.py            # rewrite tests/fixtures/plans.json.gz

Planning reads only the data dirs' meta.json and file sizes, so the corpora the grids name are faked (sparse
files) with their real token counts and vocabularies (tests/experiments/test_grids.py's CORPORA; SlimPajama-627B for the
paper scales), under a temporary root written as ``$ROOT`` in the fixture. Run ids hash the data dirs' content
(meta.json), not their paths, so they do not depend on where the root lies.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from sweep_helpers import write_fake_corpus

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "plans.json.gz"
GRIDS = sorted((REPO / "experiments" / "grids").glob("*.yaml")) + sorted(
    (REPO / "experiments" / "grids" / "ablations").glob("*.yaml")
)

# name → (train tokens, vocab size): tests/experiments/test_grids.py's measured corpora, and SlimPajama-627B under the Llama 2
# tokenizer (docs/paper_scale.md: 627B tokens, ≈ 1.25 TB of uint16) for the paper scales.
CORPORA = {
    "stdlib-bpe4096": (3_284_652, 4096),
    "stdlib-bytes": (11_445_242, 257),
    "code-bpe4096": (75_000_000, 4096),
    "c-headers-bytes": (54_105_499, 257),
    "slimpajama-llama2": (627_000_000_000, 32000),
}


def fake_corpora(root: Path) -> None:
    """root/data/<name> for every corpus in CORPORA: meta.json and sparse train.bin / val.bin of the right size."""
    for name, (train, vocab) in CORPORA.items():
        write_fake_corpus(root / "data" / name, train, vocab, 4_194_304, None if vocab == 257 else f"fake-{name}")


# Planner paths no shipped grid takes, as small variants of shipped grids (a patch merged over the file):
# AdamW moments carried over, the base's LR and a base on the defaults' schedule, a replayed data stream, extra
# scratch budgets, G_learn with a total FLOP budget (one step and in a chain), chains with carried moments.
VARIANTS = {
    "demo+carry": ("demo.yaml", {"grown": {"optimizer": "carry"}, "ops": ["G_stack"]}),
    "demo+base_lr+replay": (
        "demo.yaml",
        {
            "base": {"schedule": "defaults", "tokens": 393216, "set": {"lr": 6.0e-3, "min_lr": 6.0e-4}},
            "grown": {"lr": "base", "set": {"data_stream": "replay"}},
            "d": [196608, 327680],
            "scratch": {"tokens": [262144], "flops": [1.0e12]},
            "anneal": {"fractions": [0.5, 1.0]},
        },
    ),
    "midas+carry": (
        "midas.yaml",
        {
            "grown": {"optimizer": "carry"},
            "chains": [
                {
                    "label": "stacked",
                    "op": "G_stack",
                    "stages": [{"g": 2, "tokens": 196608}, {"g": 2, "tokens": 327680}],
                    "seeds": [0, 1],
                }
            ],
        },
    ),
    "midas+G_learn": (
        "midas.yaml",
        {
            "ops": [{"op": "G_learn", "options": {"learn_steps": 20, "batch_size": 4, "seq_len": 64}}, "G_stack"],
            "chains": [
                {
                    "label": "learned",
                    "op": ["G_learn", "G_stack"],
                    "stages": [
                        {"g": 2, "tokens": 196608, "options": {"learn_steps": 20, "batch_size": 4}},
                        {"g": 2, "tokens": 327680},
                    ],
                },
                {
                    "label": "learned_last",
                    "op": ["G_stack", "G_learn"],
                    "total_flops": 2.0e12,
                    "stages": [{"g": 2, "tokens": 196608}, {"g": 2, "tokens": 327680, "options": {"seq_len": 64}}],
                },
            ],
        },
    ),
    "operators+total_flops": ("operators.yaml", {"grown": {"tokens": None, "total_flops": 1.6e13}}),
}


def grid_cases() -> list[tuple[Path, str | None]]:
    """(grid file, scale) for every shipped grid (each scale it defines, or None for a grid without scales), then
    (variant name, None) for every VARIANTS entry."""
    cases = []
    for path in GRIDS:
        scales = yaml.safe_load(path.read_text()).get("scales") or {None: None}
        cases += [(path, scale) for scale in scales]
    return cases + [(Path(name), None) for name in VARIANTS]


def case_key(path: Path, scale: str | None) -> str:
    if str(path) in VARIANTS:
        return f"variant:{path}"
    return f"{path.relative_to(REPO / 'experiments' / 'grids')}[{scale or '-'}]"


def _merge(raw: dict, patch: dict) -> dict:
    return {
        **raw,
        **{
            k: _merge(raw[k], v) if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
            for k, v in patch.items()
        },
    }


def load_case(path: Path, scale: str | None):
    from experiments.grid import apply_scale, load_grid, parse_grid

    if str(path) not in VARIANTS:
        return load_grid(path, scale=scale)
    file, patch = VARIANTS[str(path)]
    raw, _ = apply_scale(yaml.safe_load((REPO / "experiments" / "grids" / file).read_text()), None, file)
    return parse_grid(_merge(raw, patch), str(path))


def plan_of(path: Path, scale: str | None, root: Path) -> dict:
    """{"runs": [run.to_json(), …]} of one grid at one scale, or {"error": message}; ``root`` written as $ROOT."""
    from experiments.grid import expand

    old = os.getcwd()
    os.chdir(root)  # the grids' data dirs (data/…) resolve under the fake root
    try:
        out = {"runs": [r.to_json() for r in expand(load_case(path, scale), where=path.name)]}
    except Exception as e:  # noqa: BLE001 - a grid that does not plan is recorded as such
        out = {"error": f"{type(e).__name__}: {e}"}
    finally:
        os.chdir(old)
    return json.loads(json.dumps(out, default=str).replace(str(root), "$ROOT"))


def all_plans(root: Path) -> dict[str, dict]:
    fake_corpora(root)
    return {case_key(p, s): plan_of(p, s, root) for p, s in grid_cases()}


def _first_difference(old, new, at: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            if k not in old or k not in new:
                return f"{at}.{k}: {'added' if k not in old else 'removed'}"
            diff = _first_difference(old[k], new[k], f"{at}.{k}")
            if diff:
                return diff
        return None
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return f"{at}: {len(old)} entries recorded, {len(new)} now"
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            diff = _first_difference(a, b, f"{at}[{i}]" + (f"({a['id']})" if isinstance(a, dict) and "id" in a else ""))
            if diff:
                return diff
        return None
    return None if old == new and type(old) is type(new) else f"{at}: {old!r} recorded, {new!r} now"


def _recorded() -> dict[str, dict]:
    return json.loads(gzip.decompress(FIXTURE.read_bytes()))


@pytest.mark.parametrize("path,scale", grid_cases(), ids=[case_key(p, s) for p, s in grid_cases()])
def test_plan_unchanged(path, scale, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "plans-root"
    if not (root / "data").is_dir():
        fake_corpora(root)
    recorded = _recorded()
    key = case_key(path, scale)
    assert key in recorded, (
        f"{key} is not in {FIXTURE.name}; rewrite it: python tests/experiments/test_plans_unchanged.py"
    )
    now = plan_of(path, scale, root.resolve())
    diff = _first_difference(recorded[key], now, key)
    assert diff is None, diff


def test_every_recorded_grid_still_ships():
    assert set(_recorded()) == {case_key(p, s) for p, s in grid_cases()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plans = all_plans(Path(tmp).resolve())
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_bytes(gzip.compress(json.dumps(plans, indent=None, sort_keys=False).encode(), mtime=0))
    n_runs = sum(len(p.get("runs", [])) for p in plans.values())
    errors = {k: p["error"] for k, p in plans.items() if "error" in p}
    print(f"{FIXTURE}: {len(plans)} grid × scale plans, {n_runs} runs, {FIXTURE.stat().st_size:,} bytes")
    for k, e in errors.items():
        print(f"  {k}: {e}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
