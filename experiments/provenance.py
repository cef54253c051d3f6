"""Provenance of a sweep: the code's git state (in plan.json and every status.json), the software versions and the
identity of every data dir the plan reads (plan.json), and the plan as run."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from experiments.grid import EvalSpec, Grid, PlannedRun
from experiments.rundir import read_json
from stacking.fsutil import write_json

_GIT: dict | None = None
PACKAGES = ("torch", "numpy", "lightning", "litgpt")
"""The packages whose versions can change a run's numbers (recorded in plan.json's ``versions``)."""


def git_info() -> dict:
    """The code's git SHA and whether the tree had uncommitted changes (provenance in status.json)."""
    global _GIT
    if _GIT is None:
        root = Path(__file__).resolve().parent.parent
        try:
            sha = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
            dirty = bool(
                subprocess.run(
                    ["git", "status", "--porcelain", "--untracked-files=no"],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                ).stdout.strip()
            )
            _GIT = {"sha": sha or None, "dirty": dirty}
        except (OSError, subprocess.SubprocessError):
            _GIT = {"sha": None, "dirty": None}
    return _GIT


def versions() -> dict:
    """{"python": "3.12.3", "torch": …, "numpy": …, "lightning": …, "litgpt": …}: None for a package not installed."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def data_ids(runs: list[PlannedRun], sweep_dir: str | Path = ".") -> dict:
    """{data dir path: data_id} of every data dir the plan reads (training data and eval sets), sorted by path; a
    relative path is read from the sweep dir, where the runs execute."""
    from stacking.config import data_id

    dirs = set()
    for r in runs:
        dirs.add(str(r.config.data_dir))
        dirs.update(str(v) for v in (r.config.eval_data_dirs or {}).values())
    return {d: data_id(Path(sweep_dir) / d) for d in sorted(dirs)}


def write_plan(
    sweep_dir: Path, grid_path: str | Path, grid: Grid, runs: list[PlannedRun], evaluation: EvalSpec | None = None
) -> None:
    """SWEEP_DIR/grid.yaml (the grid as given) and plan.json (every resolved run and its dependencies, with the
    git state, the software versions and the data ids the plan was made with; ``eval``: the grid's evaluation
    settings, include paths absolute, when it has some; ``history``: the provenance of earlier sweeps of this dir
    made with other code, versions or data, see `_history`)."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "grid.yaml").write_text(Path(grid_path).read_text())
    extra = {"eval": asdict(evaluation)} if evaluation is not None else {}
    now = {
        "grid": str(Path(grid_path).resolve()),
        "name": grid.name,
        "created_at": time.time(),
        "git": git_info(),
        "versions": versions(),
        "data": data_ids(runs, sweep_dir),
    }
    history = _history(sweep_dir / "plan.json", now)
    write_json(
        sweep_dir / "plan.json",
        now | extra | ({"history": history} if history else {}) | {"runs": [r.to_json() for r in runs]},
    )


PROVENANCE_KEYS = ("grid", "created_at", "git", "versions", "data")
"""What plan.json's ``history`` keeps of each earlier sweep of the dir whose code, versions or data differed."""


def _history(path: Path, now: dict) -> list[dict]:
    """The earlier plan.json's ``history`` and, when its git state, versions or data ids differ from ``now``, its own
    provenance appended (oldest first): a re-sweep with other code (e.g. runs added to a finished sweep) keeps the
    record of the code that trained the runs before it."""
    prev = read_json(path) if path.is_file() else None
    if not prev:
        return []
    history = list(prev.get("history") or [])
    if any(prev.get(k) != now[k] for k in ("git", "versions", "data")):
        history.append({k: prev.get(k) for k in PROVENANCE_KEYS})
    return history


__all__ = ["PACKAGES", "data_ids", "git_info", "versions", "write_plan"]
