"""The local executor: a plan's DAG on ``jobs`` concurrent worker processes, one run each.

Each run is its own process: forked from the runner, which has imported torch/Lightning/litgpt already (a fresh
``python -m stacking train`` pays ~5 s of imports per run), or, on GPU machines, from a forkserver that imported
them once. A crash or kill of one run is isolated; workers die with the sweep (PR_SET_PDEATHSIG), so a restarted
sweep never races an orphan. A worker calls `experiments.execute.execute` (training, then the grid's ``eval:``; a
run an earlier sweep trained that lacks its evaluation gets a worker that only evaluates); this module schedules,
retries, and prints one line per state change.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.evaluation import evaluated, needs_eval, summary_line
from experiments.execute import execute
from experiments.plan import PlannedRun
from experiments.rundir import is_done, read_json
from experiments.schema import EvalSpec
from stacking.fsutil import write_json

KIND_ORDER = {"base": 0, "grown": 1, "scratch": 2, "cooldown": 3}
"""Start order among ready runs: bases first (they unblock grown runs), then grown runs, then baselines."""


def default_jobs(n_cpus: int | None = None, n_gpus: int = 0) -> tuple[int, int]:
    """(jobs, torch threads per job). One job per GPU. On CPUs: up to 2 cores, one single-threaded job per core —
    measured on a busy 2-core machine, a tiny model ran at 16k tokens/s with 1 thread and 330 tokens/s with 2
    (OpenMP threads spin against the other load); above that, 4 threads per job (16 cores → 4 jobs × 4)."""
    n_cpus = n_cpus or len(os.sched_getaffinity(0))
    if n_gpus:
        return n_gpus, max(1, n_cpus // n_gpus)
    if n_cpus <= 2:
        return n_cpus, 1
    jobs = n_cpus // 4 or 1
    return jobs, n_cpus // jobs


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent (the runner, or the forkserver that exits with it) dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _worker(spec: dict, sweep_dir: str, threads: int, gpu: str | None, evaluation: EvalSpec | None = None) -> None:
    """Entry point of a local worker process: one run (and its evaluation), its output in runs/<id>/worker.log."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C goes to the runner, which terminates its workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    import torch

    torch.set_num_threads(threads)
    run = PlannedRun.from_json(spec)
    run_dir = Path(sweep_dir) / run.config.out_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "worker.log", "a")  # noqa: SIM115 - stays open as this process's stdout/stderr
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    status = execute(run, sweep_dir, evaluation)
    sys.stdout.flush(), sys.stderr.flush()
    sys.exit(0 if status["status"] == "done" else 1)


def visible_gpus() -> list[str]:
    """GPU ids a worker may be given (CUDA_VISIBLE_DEVICES entries, else the driver's list), found without
    initialising CUDA in this process — a process that has initialised CUDA cannot fork workers that use it."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [x for x in env.split(",") if x.strip() and x.strip() != "-1"]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def worker_context(use_gpus: bool = False):
    """How workers start. On Linux without GPUs: fork this process, which has imported torch/Lightning/litgpt
    already (``python -m stacking train`` pays ~5 s of imports per run, a fork nothing; PyTorch's DataLoader forks
    the same way). With GPUs, or elsewhere: a forkserver that imports the training stack once, so no worker
    inherits CUDA or macOS framework state."""
    if sys.platform == "linux" and not use_gpus:
        return mp.get_context("fork")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["experiments.local", "stacking.train"])
    return ctx


PROGRESS_EVERY_S = 30.0
"""How often the local executor prints the progress of the running runs."""


def _last_metrics_row(path: Path) -> dict[str, str] | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 2:
        return None
    return dict(zip(lines[0].split(","), lines[-1].split(",")))


class LocalExecutor:
    """Runs a plan's DAG with ``jobs`` concurrent worker processes; prints one line per state change."""

    def __init__(
        self,
        sweep_dir: Path,
        runs: list[PlannedRun],
        *,
        jobs: int,
        threads: int,
        retries: int = 1,
        gpus: int = 0,
        echo: Callable[[str], None] = print,
        on_finished: Callable[[], None] | None = None,
        evaluation: EvalSpec | None = None,
    ):
        self.sweep_dir, self.runs, self.jobs, self.threads = Path(sweep_dir), runs, jobs, threads
        self.retries, self.gpus, self.echo = retries, gpus, echo
        self.on_finished = on_finished
        """Called after every run that ends (done or failed): the CLI rebuilds results.csv, so `stacking report`
        reads a long sweep's finished runs while it goes on."""
        self.evaluation = evaluation
        """The grid's ``eval:`` (include paths absolute), or None."""
        self.trained: set[str] = set()
        """Runs an earlier sweep trained whose evaluation is missing: their workers only evaluate."""
        self.eval_failed: dict[str, str] = {}
        """Run id → why its evaluation failed (the run itself is done)."""
        self.by_id = {r.id: r for r in runs}
        self.state: dict[str, str] = {}
        self.reason: dict[str, str] = {}
        self.tries: dict[str, int] = {r.id: 0 for r in runs}

    def _line(self, msg: str) -> None:
        n = len(self.runs)
        count = {s: sum(1 for v in self.state.values() if v == s) for s in ("done", "running", "failed", "skipped")}
        extra = f", {count['skipped']} skipped" if count["skipped"] else ""
        self.echo(
            f"[sweep] {count['done']}/{n} done, {count['running']} running, {count['failed']} failed{extra}: {msg}"
        )

    def _source_ready(self, r: PlannedRun, dep: str) -> bool:
        """A grown run needs its base's checkpoint at d (and, with carry, its state file), not the whole base; a
        cooldown run needs its main run's state at the branch point. Either may start while its source trains on,
        and is not blocked by a source that fails later. (Both are written atomically.) A cooldown that starts at
        its main run's start (``anneal.at_scratch_flops``, no state to branch from) waits for the main run."""
        if r.grow is not None and dep == r.parent:
            carry = r.grow.carry_state
            return (self.sweep_dir / r.grow.src / "stacking_meta.json").is_file() and (
                carry is None or (self.sweep_dir / carry).is_file()
            )
        branch = r.config.branch_from
        return (
            r.kind == "cooldown" and dep == r.branch_of and branch is not None and (self.sweep_dir / branch).is_file()
        )

    def _ready(self, r: PlannedRun) -> bool:
        return all(self.state[d] == "done" or d in self.trained or self._source_ready(r, d) for d in r.deps)

    def _skip_blocked(self) -> None:
        changed = True
        while changed:
            changed = False
            for r in self.runs:
                if self.state[r.id] != "pending":
                    continue
                bad = [d for d in r.deps if self.state[d] in ("failed", "skipped") and not self._source_ready(r, d)]
                if bad:
                    why = f"{self.state[bad[0]]} dependency {bad[0]}"
                    self.state[r.id], self.reason[r.id] = "skipped", why
                    write_json(
                        self.sweep_dir / r.config.out_dir / "status.json",
                        {
                            "run_id": r.id,
                            "status": "skipped",
                            "error_class": None,
                            "reason": why,
                            "attempts": (read_json(self.sweep_dir / r.config.out_dir / "status.json") or {}).get(
                                "attempts", 0
                            ),
                        },
                    )
                    self._line(f"skipped {r.id} ({why})")
                    changed = True

    def run(self) -> dict[str, str]:
        """Execute every run that is not done; return run id → final state (done | failed | skipped)."""
        for r in self.runs:
            done = is_done(self.sweep_dir, r)
            if done and needs_eval(self.sweep_dir, r, self.evaluation):
                self.trained.add(r.id)
            self.state[r.id] = "done" if done and r.id not in self.trained else "pending"
        n_done = sum(1 for s in self.state.values() if s == "done")
        if n_done or self.trained:
            more = f"; {len(self.trained)} trained before, to evaluate" if self.trained else ""
            self._line(f"{n_done} run(s) already done, skipped{more}")
        free_gpus = visible_gpus()[: self.gpus]
        ctx = worker_context(use_gpus=bool(free_gpus))
        running: dict[Any, tuple[PlannedRun, Any, str | None]] = {}  # sentinel → (run, process, gpu)
        order = sorted(self.runs, key=lambda r: KIND_ORDER[r.kind])
        next_progress = time.monotonic() + PROGRESS_EVERY_S
        try:
            while True:
                self._skip_blocked()
                for r in order:
                    if len(running) >= self.jobs:
                        break
                    if self.state[r.id] == "pending" and self._ready(r):
                        gpu = free_gpus.pop(0) if free_gpus else None
                        p = ctx.Process(
                            target=_worker,
                            args=(r.to_json(), str(self.sweep_dir), self.threads, gpu, self.evaluation),
                            name=f"sweep-{r.id}",
                        )
                        p.start()
                        running[p.sentinel] = (r, p, gpu)
                        self.tries[r.id] += 1
                        self.state[r.id] = "running"
                        again = f" (attempt {self.tries[r.id]})" if self.tries[r.id] > 1 else ""
                        self._line(f"{'evaluating' if r.id in self.trained else 'started'} {r.id}{again}")
                if not running:
                    break
                # poll while a grown run waits on a base that is still training (its checkpoint may appear)
                poll = len(running) < self.jobs and any(
                    self.state[r.id] == "pending" and r.grow and self.state.get(r.parent) == "running"
                    for r in self.runs
                )
                timeout = min(0.5 if poll else PROGRESS_EVERY_S, max(0.0, next_progress - time.monotonic()))
                if time.monotonic() >= next_progress:
                    self._progress([r for r, _, _ in running.values()])
                    next_progress = time.monotonic() + PROGRESS_EVERY_S
                for sentinel in mp.connection.wait(list(running), timeout=timeout):
                    r, p, gpu = running.pop(sentinel)
                    p.join()
                    if gpu is not None:
                        free_gpus.append(gpu)
                    self._finished(r, p.exitcode)
                    if self.on_finished is not None:
                        self.on_finished()
        except BaseException:
            for _, p, _ in running.values():  # Ctrl-C / SIGTERM: take the workers down with us
                p.terminate()
            for _, p, _ in running.values():
                p.join()
            raise
        return dict(self.state)

    def _progress(self, running: list[PlannedRun]) -> None:
        """One line per running run from the last row of its metrics.csv: long runs are never silent."""
        for r in running:
            last = _last_metrics_row(self.sweep_dir / r.config.out_dir / "metrics.csv")
            if r.id in self.trained:
                self.echo(f"[sweep]   {r.id}: evaluating")
                continue
            if last is None:
                self.echo(f"[sweep]   {r.id}: starting")
                continue
            tps = f", {float(last['tokens_per_s']):,.0f} tokens/s" if last.get("tokens_per_s") else ""
            loss = f", train loss {float(last['train_loss']):.3f}" if last.get("train_loss") else ""
            self.echo(f"[sweep]   {r.id}: {int(last['tokens']):,}/{r.config.max_tokens:,} tokens{loss}{tps}")

    def _evaluated(self, r: PlannedRun, outcome: dict | None) -> None:
        """The line of a finished run's evaluation (runs the grid's ``eval:`` evaluates)."""
        if self.evaluation is None or not evaluated(r):
            return
        if outcome is None or outcome.get("state") == "done" and needs_eval(self.sweep_dir, r, self.evaluation):
            outcome = {"state": "failed", "reason": "the worker recorded no evaluation", "tasks": self.evaluation.tasks}
        detail = summary_line(self.sweep_dir / r.config.out_dir, outcome)
        if outcome.get("state") == "done":
            self._line(f"evaluated {r.id}: {detail}")
            return
        self.eval_failed[r.id] = detail
        self._line(f"evaluation failed {r.id} {detail} (training results kept; the next sweep tries again)")

    def _finished(self, r: PlannedRun, exitcode: int | None) -> None:
        path = self.sweep_dir / r.config.out_dir / "status.json"
        st = read_json(path) or {}
        if st.get("status") not in ("done", "failed"):  # the worker died before it could record anything
            why = f"killed by signal {-exitcode}" if exitcode and exitcode < 0 else f"worker exited with {exitcode}"
            st.update(run_id=r.id, status="failed", error_class="killed", reason=why, ended_at=time.time())
            write_json(path, st)
        if st["status"] == "done":
            self.state[r.id] = "done"
            s = read_json(self.sweep_dir / r.config.out_dir / "summary.json") or {}
            if r.id not in self.trained:
                self._line(
                    f"done {r.id} (val loss {s.get('final_val_loss', float('nan')):.4f}, "
                    f"{s.get('wall_time_s', 0):.1f}s)"
                )
            self._evaluated(r, st.get("eval"))
            return
        cls, why = st.get("error_class"), st.get("reason")
        if cls != "nan_loss" and self.tries[r.id] <= self.retries:
            self.state[r.id] = "pending"
            self._line(f"failed {r.id} ({cls}: {why}); retrying")
            return
        self.state[r.id], self.reason[r.id] = "failed", f"{cls}: {why}"
        self._line(f"failed {r.id} ({cls}: {why})")


__all__ = ["KIND_ORDER", "LocalExecutor", "default_jobs", "visible_gpus", "worker_context"]
