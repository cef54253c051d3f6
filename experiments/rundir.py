"""A run dir's state, read and held: its JSON files, whether it is done, and its lock.

``runs/<id>/.lock`` is held (flock) by the process executing the run, so two processes never train the same run at
once (an orphaned worker finishes before a restarted sweep touches its run), and ``stacking sweep status`` can tell
running from interrupted. Both the executors and the results table read run state through this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from experiments.plan import PlannedRun
from stacking.config import config_hash


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_done(sweep_dir: Path, run: PlannedRun) -> bool:
    """summary.json says done, for this exact config (a changed config is a different run id anyway)."""
    s = read_json(sweep_dir / run.config.out_dir / "summary.json")
    return bool(s) and s.get("status") == "done" and s.get("config_hash") == config_hash(run.config)


def missing_states(sweep_dir: Path, runs: list[PlannedRun]) -> list[str]:
    """One line per cooldown run still to do whose finished main run lacks the saved state it branches from: the
    sweep does not retrain the main run (it is done), so that cooldown would fail."""
    by_id = {r.id: r for r in runs}
    lines = []
    for r in runs:
        branch, main = r.config.branch_from, by_id.get(r.branch_of or "")
        if branch is None or main is None or (sweep_dir / branch).is_file() or not is_done(sweep_dir, main):
            continue
        if is_done(sweep_dir, r) or (sweep_dir / r.config.out_dir / "last.ckpt").is_file():
            continue
        tokens = int(Path(branch).stem.removeprefix("tokens-"))
        lines.append(
            f"error: {main.id} is done but has no saved state at {tokens:,} tokens ({branch}): cooldown {r.id} "
            "cannot branch from it and will fail"
        )
    return lines


def lock_held(run_dir: Path) -> bool:
    """Whether some process is executing this run now (holds runs/<id>/.lock)."""
    try:
        fd = os.open(run_dir / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive lock on the run for as long as this process executes it (released by the kernel if it dies)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[sweep] {run_dir.name} is being executed by another process; waiting for it", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a filesystem without flock (some network mounts): run unlocked
        yield
    finally:
        os.close(fd)


def load_plan(sweep_dir: str | Path) -> list[PlannedRun]:
    """Every planned run of a sweep dir, from its plan.json."""
    path = Path(sweep_dir) / "plan.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {str(sweep_dir)!r} a sweep dir written by `stacking sweep`?")
    return [PlannedRun.from_json(r) for r in json.loads(path.read_text())["runs"]]


__all__ = ["is_done", "load_plan", "lock_held", "missing_states", "read_json", "run_lock"]
