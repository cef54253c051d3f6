"""benchmarks/paper_rehearsal.py (issue 20): the override keeps the paper scale's shapes and changes only budgets,
batch and hardware; ``--dry`` runs the whole plumbing (derived grid → sweep → SIGKILL → resumed sweep) at toy size
and its JSON says the grown run resumed from last.ckpt, ended at exact token counts and started its FLOP counter at
the base's FLOPs at d."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "paper_rehearsal.py"


def _bench():
    spec = importlib.util.spec_from_file_location("paper_rehearsal", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_override_changes_budgets_batch_and_hardware_only(tmp_path):
    bench = _bench()
    args = bench.parse_args(["--out", str(tmp_path)])
    override = bench.make_override(args, tmp_path / "data", 2048)
    path = bench.write_derived_grid(args, tmp_path, override)
    shipped = yaml.safe_load((ROOT / "experiments/grids/scaling.yaml").read_text())["scales"]["paper"]
    derived = yaml.safe_load(path.read_text())["scales"]["paper"]
    assert derived["targets"] == shipped["targets"] and derived["g"] == shipped["g"] == [4]
    assert derived["overrides"] == shipped["overrides"]  # the per-size LRs stay
    d = derived["defaults"]
    for key in ("seq_len", "lr", "min_lr"):
        assert d[key] == shipped["defaults"][key]
    assert d["seq_len"] == 2048 and d["micro_batch_size"] == 1 and d["global_batch_tokens"] == 2048
    assert (d["accelerator"], d["precision"], d["devices"], d["num_nodes"], d["strategy"], d["compile"]) == (
        "cpu",
        "32-true",
        1,
        1,
        "auto",
        False,
    )
    assert derived["d"] == [3 * 2048] and derived["grown"]["tokens"] == 3 * 2048
    assert derived["grown"]["set"] == {"checkpoint_every_tokens": 2048} and derived["anneal"] == {"fractions": []}
    assert json.loads((tmp_path / "override.json").read_text()) == override


def test_memory_estimate_picks_410m_over_1b():
    est = _bench().memory_estimate
    small, big = est("stack-410m", 2048, 1), est("stack-1.1b", 2048, 1)
    assert small["params_total"] == 421_053_440 and big["params_total"] == 1_364_297_728
    assert small["total_gb"] < 20 < big["total_gb"]


@pytest.mark.slow
def test_dry_rehearsal_resumes_with_exact_tokens_and_flop_offset(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--dry", "--out", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r = json.loads((tmp_path / "rehearsal.json").read_text())
    assert r["ok"] and all(v for k, v in r["checks"].items() if isinstance(v, bool))
    base, grown = r["base"], r["grown"]
    assert base["model"] == "tiny-L2-D64" and grown["model"] == "tiny-L8-D64"  # g = 4 in depth
    assert base["tokens"] == r["grow_at_tokens"] == 20 * 256 and grown["tokens"] == grown["max_tokens"] == 20 * 256
    assert grown["flops_offset"] == r["checks"]["base_flops_at_d"] == base["flops"]
    assert grown["resumed"] and grown["attempts"] == 2 and r["kill"]["grown_done_at_kill"] is False
    ((ckpt, tokens, step),) = r["resume"]["resume_lines"]
    assert ckpt.endswith("last.ckpt") and tokens == 256 * step and 1 <= step < 20
    assert grown["steps_in_metrics"] == list(range(21)) and len(grown["sec_per_step"]) == 20
    assert r["peak_rss_gb"]["sweep_tree_sum"] > 0 and r["resume"]["kill_to_resume_log_s"] > 0
