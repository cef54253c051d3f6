"""Provenance of a sweep: the code's git state (in plan.json and every status.json) and the plan as run."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from experiments.grid import Grid, PlannedRun
from stacking.fsutil import write_json

_GIT: dict | None = None


def git_info() -> dict:
    """The code's git SHA and whether the tree had uncommitted changes (provenance in status.json)."""
    global _GIT
    if _GIT is None:
        root = Path(__file__).resolve().parent.parent
        try:
            sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                 timeout=10, check=False).stdout.strip()
            dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                        capture_output=True, text=True, timeout=10, check=False).stdout.strip())
            _GIT = {"sha": sha or None, "dirty": dirty}
        except (OSError, subprocess.SubprocessError):
            _GIT = {"sha": None, "dirty": None}
    return _GIT


def write_plan(sweep_dir: Path, grid_path: str | Path, grid: Grid, runs: list[PlannedRun]) -> None:
    """SWEEP_DIR/grid.yaml (the grid as given) and plan.json (every resolved run and its dependencies)."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "grid.yaml").write_text(Path(grid_path).read_text())
    write_json(sweep_dir / "plan.json", {"grid": str(Path(grid_path).resolve()), "name": grid.name,
                                         "created_at": time.time(), "git": git_info(),
                                         "runs": [r.to_json() for r in runs]})


__all__ = ["git_info", "write_plan"]
