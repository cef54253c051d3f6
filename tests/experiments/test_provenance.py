"""plan.json's provenance across re-sweeps: the code that trained a sweep's first runs is kept when runs are added
with other code (``history``), and nothing is added when the code, versions and data are the same."""

from __future__ import annotations

import json

from sweep_helpers import write_grid

from experiments import provenance
from experiments.grid import expand, load_grid
from experiments.provenance import write_plan

GRID = dict(name="prov", targets=["tiny-L2-D32"], ops=["G_stack"], g=[2], d=[256], seeds=[0], grown={"tokens": 256})


def test_a_resweep_with_other_code_keeps_the_earlier_provenance(tmp_path, tiny_data, monkeypatch):
    path = write_grid(tmp_path / "prov.yaml", tiny_data, GRID, val_every_tokens=256)
    grid = load_grid(path)
    runs, sweep = expand(grid), tmp_path / "sweep"

    def plan_with(sha):
        monkeypatch.setattr(provenance, "_GIT", {"sha": sha, "dirty": False})
        write_plan(sweep, path, grid, runs)
        return json.loads((sweep / "plan.json").read_text())

    first = plan_with("aaa")
    assert "history" not in first
    assert "history" not in plan_with("aaa")  # same code, versions and data: nothing to keep
    second = plan_with("bbb")
    assert second["git"]["sha"] == "bbb" and [h["git"]["sha"] for h in second["history"]] == ["aaa"]
    assert set(second["history"][0]) == {"grid", "created_at", "git", "versions", "data"}
    assert second["history"][0]["data"] == first["data"] and second["history"][0]["versions"] == first["versions"]
    third = plan_with("ccc")
    assert [h["git"]["sha"] for h in third["history"]] == ["aaa", "bbb"]  # oldest first
