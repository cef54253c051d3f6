"""Executors: run a plan's runs locally in isolated worker processes, or on SLURM through submitit.

Both call `execute(run, sweep_dir)` in the process that does the work: it grows the base checkpoint (grown runs),
then `stacking.train.run` trains — resuming the run's own ``last.ckpt`` when there is one — and records the outcome
in ``runs/<id>/status.json`` (+ ``error.txt`` with the traceback on failure). A run holds an exclusive lock on
``runs/<id>/.lock`` while it executes, so two processes never train the same run at once (an orphaned worker
finishes before a restarted sweep touches its run), and ``stacking sweep status`` can tell running from
interrupted.

Failure classes (status.json ``error_class``): ``nan_loss`` (loss went non-finite; never retried: CPU runs are
deterministic and it would recur), ``oom`` (out of memory), ``exception`` (anything raised), ``killed`` (the worker
died from a signal, e.g. the kernel's OOM killer). All but ``nan_loss`` are retried up to ``retries`` times.

**local**: ``jobs`` worker processes at a time, each run in its own process: forked from the runner, which has
imported torch/Lightning/litgpt already (a fresh ``python -m stacking train`` pays ~5 s of imports per run), or, on
GPU machines, from a forkserver that imported them once. A crash or kill of one run is isolated; workers die with
the sweep (PR_SET_PDEATHSIG), so a restarted sweep never races an orphan.

**slurm**: one submitit job per run; level 0 (bases, scratch) as one job array throttled by
``slurm.array_parallelism``, each grown run as a job with ``--dependency=afterok:<its base's job id>`` and
``--kill-on-invalid-dep=yes``. The job's callable is a ``submitit.helpers.Checkpointable``: on preemption or timeout
submitit resubmits it and the run resumes from ``last.ckpt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import submitit

from experiments.grid import Grid, PlannedRun, SlurmSpec
from stacking.fsutil import write_json
from stacking.train import CARRY_FILE, config_hash

KIND_ORDER = {"base": 0, "grown": 1, "scratch": 2, "cooldown": 3}
"""Start order among ready runs: bases first (they unblock grown runs), then grown runs, then baselines."""


# --------------------------------------------------------------------------------------------------------------
# Run-dir bookkeeping shared by every executor


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


_GIT: dict | None = None


def git_info() -> dict:
    """The code's git SHA and whether the tree had uncommitted changes (provenance in status.json)."""
    global _GIT
    if _GIT is None:
        root = Path(__file__).resolve().parent.parent
        try:
            sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                 timeout=10).stdout.strip()
            dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                        capture_output=True, text=True, timeout=10).stdout.strip())
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


def is_done(sweep_dir: Path, run: PlannedRun) -> bool:
    """summary.json says done, for this exact config (a changed config is a different run id anyway)."""
    s = read_json(sweep_dir / run.config.out_dir / "summary.json")
    return bool(s) and s.get("status") == "done" and s.get("config_hash") == config_hash(run.config)


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
def _run_lock(run_dir: Path) -> Iterator[None]:
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


def _classify(exc: BaseException) -> str:
    import torch

    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom"
    return "exception"


def execute(run: PlannedRun, sweep_dir: str | Path) -> dict:
    """Grow (grown runs) and train one run in this process; write and return its status.json. Never raises.

    Paths in the run's config are relative to the sweep dir, so this runs with the sweep dir as working directory
    (restored afterwards)."""
    sweep_dir = Path(sweep_dir).resolve()
    run_dir = sweep_dir / run.config.out_dir
    old_cwd = os.getcwd()
    with _run_lock(run_dir):
        prev = read_json(run_dir / "status.json") or {}
        status: dict[str, Any] = {
            "run_id": run.id, "status": "running", "error_class": None, "reason": None,
            "attempts": int(prev.get("attempts", 0)) + 1, "host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "started_at": time.time(), "git": git_info(),
        }
        write_json(run_dir / "status.json", status)
        (run_dir / "error.txt").unlink(missing_ok=True)
        try:
            os.chdir(sweep_dir)
            if run.grow is not None:
                _grow(run)
            from stacking.train import run as train

            summary = train(dataclasses.replace(run.config))
            if summary["status"] == "done":
                status["status"] = "done"
            else:
                status.update(status="failed", reason=summary["status"].removeprefix("failed: "),
                              error_class="nan_loss" if "nan" in summary["status"] else "exception")
        except Exception as e:  # noqa: BLE001 - every failure is recorded, none stops the sweep
            status.update(status="failed", error_class=_classify(e),
                          reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
            (run_dir / "error.txt").write_text(traceback.format_exc())
        except BaseException as e:  # Ctrl-C, or submitit's exit after requeueing a preempted job: resumable
            status.update(status="interrupted", reason=type(e).__name__, ended_at=time.time())
            write_json(run_dir / "status.json", status)
            raise
        finally:
            os.chdir(old_cwd)
        status["ended_at"] = time.time()
        write_json(run_dir / "status.json", status)
    return status


def _grow(run: PlannedRun) -> None:
    """The grow step: base checkpoint at d → grown/<id> (skipped when that dir is already complete)."""
    spec = run.grow
    assert spec is not None
    dst = Path(spec["dst"])
    if not ((dst / "lit_model.pth").is_file() and (dst / "growth.json").is_file()):
        from stacking.growth import grow_checkpoint

        grow_checkpoint(spec["src"], spec["dst"], spec["op"], direction=spec["direction"], g=spec["g"],
                        seed=spec["seed"], **spec["options"])
    if spec.get("carry_state") and not (dst / CARRY_FILE).is_file():
        carry_optimizer_state(spec, dst / CARRY_FILE)


def carry_optimizer_state(spec: dict, out: Path) -> None:
    """grown.optimizer: carry — the base's AdamW moments at d (its full state file), keyed by name and mapped
    through the operator's plan onto the grown model's parameters; written atomically to ``out``."""
    import torch
    from litgpt import GPT

    from stacking.growth import carry_moments
    from stacking.module import named_optimizer_state
    from stacking.train import load_litgpt_checkpoint

    _, base_cfg, _, _ = load_litgpt_checkpoint(spec["src"])
    state = torch.load(spec["carry_state"], map_location="cpu", weights_only=True)
    with torch.device("meta"):
        model = GPT(base_cfg)
    named = named_optimizer_state(state["optimizer_states"][0], model)
    options = {k: v for k, v in spec["options"].items()}
    grown = carry_moments(named, base_cfg, spec["op"], direction=spec["direction"], g=spec["g"], seed=spec["seed"],
                          **options)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(grown, tmp)
    os.replace(tmp, out)


# --------------------------------------------------------------------------------------------------------------
# Local executor


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


def _worker(spec: dict, sweep_dir: str, threads: int, gpu: str | None) -> None:
    """Entry point of a local worker process: one run, its output in runs/<id>/worker.log."""
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
    log = open(run_dir / "worker.log", "a")
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    status = execute(run, sweep_dir)
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
    ctx.set_forkserver_preload(["experiments.runner", "stacking.train"])
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

    def __init__(self, sweep_dir: Path, runs: list[PlannedRun], *, jobs: int, threads: int, retries: int = 1,
                 gpus: int = 0, echo: Callable[[str], None] = print):
        self.sweep_dir, self.runs, self.jobs, self.threads = Path(sweep_dir), runs, jobs, threads
        self.retries, self.gpus, self.echo = retries, gpus, echo
        self.by_id = {r.id: r for r in runs}
        self.state: dict[str, str] = {}
        self.reason: dict[str, str] = {}
        self.tries: dict[str, int] = {r.id: 0 for r in runs}

    def _line(self, msg: str) -> None:
        n = len(self.runs)
        count = {s: sum(1 for v in self.state.values() if v == s) for s in ("done", "running", "failed", "skipped")}
        extra = f", {count['skipped']} skipped" if count["skipped"] else ""
        self.echo(f"[sweep] {count['done']}/{n} done, {count['running']} running, {count['failed']} failed{extra}: "
                  f"{msg}")

    def _source_ready(self, r: PlannedRun, dep: str) -> bool:
        """A grown run needs its base's checkpoint at d (and, with carry, its state file), not the whole base; a
        cooldown run needs its main run's state at the branch point. Either may start while its source trains on,
        and is not blocked by a source that fails later. (Both are written atomically.)"""
        if r.grow is not None and dep == r.parent:
            carry = r.grow.get("carry_state")
            return (self.sweep_dir / r.grow["src"] / "stacking_meta.json").is_file() and \
                (carry is None or (self.sweep_dir / carry).is_file())
        return r.kind == "cooldown" and dep == r.branch_of and (self.sweep_dir / r.config.branch_from).is_file()

    def _ready(self, r: PlannedRun) -> bool:
        return all(self.state[d] == "done" or self._source_ready(r, d) for d in r.deps)

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
                    write_json(self.sweep_dir / r.config.out_dir / "status.json",
                               {"run_id": r.id, "status": "skipped", "error_class": None, "reason": why,
                                "attempts": (read_json(self.sweep_dir / r.config.out_dir / "status.json") or {})
                                .get("attempts", 0)})
                    self._line(f"skipped {r.id} ({why})")
                    changed = True

    def run(self) -> dict[str, str]:
        """Execute every run that is not done; return run id → final state (done | failed | skipped)."""
        for r in self.runs:
            self.state[r.id] = "done" if is_done(self.sweep_dir, r) else "pending"
        n_done = sum(1 for s in self.state.values() if s == "done")
        if n_done:
            self._line(f"{n_done} run(s) already done, skipped")
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
                        p = ctx.Process(target=_worker, args=(r.to_json(), str(self.sweep_dir), self.threads, gpu),
                                        name=f"sweep-{r.id}")
                        p.start()
                        running[p.sentinel] = (r, p, gpu)
                        self.tries[r.id] += 1
                        self.state[r.id] = "running"
                        again = f" (attempt {self.tries[r.id]})" if self.tries[r.id] > 1 else ""
                        self._line(f"started {r.id}{again}")
                if not running:
                    break
                # poll while a grown run waits on a base that is still training (its checkpoint may appear)
                poll = len(running) < self.jobs and any(
                    self.state[r.id] == "pending" and r.grow and self.state.get(r.parent) == "running"
                    for r in self.runs)
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
            if last is None:
                self.echo(f"[sweep]   {r.id}: starting")
                continue
            tps = f", {float(last['tokens_per_s']):,.0f} tokens/s" if last.get("tokens_per_s") else ""
            loss = f", train loss {float(last['train_loss']):.3f}" if last.get("train_loss") else ""
            self.echo(f"[sweep]   {r.id}: {int(last['tokens']):,}/{r.config.max_tokens:,} tokens{loss}{tps}")

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
            self._line(f"done {r.id} (val loss {s.get('final_val_loss', float('nan')):.4f}, "
                       f"{s.get('wall_time_s', 0):.1f}s)")
            return
        cls, why = st.get("error_class"), st.get("reason")
        if cls != "nan_loss" and self.tries[r.id] <= self.retries:
            self.state[r.id] = "pending"
            self._line(f"failed {r.id} ({cls}: {why}); retrying")
            return
        self.state[r.id], self.reason[r.id] = "failed", f"{cls}: {why}"
        self._line(f"failed {r.id} ({cls}: {why})")


# --------------------------------------------------------------------------------------------------------------
# SLURM executor (submitit)


class SlurmRun(submitit.helpers.Checkpointable):
    """The callable of one run's SLURM job. On preemption/timeout submitit calls ``checkpoint()``, which resubmits
    this same callable (Checkpointable's default); the run then resumes from its ``last.ckpt``.

    A multi-GPU run is one task per device (srun starts this callable on each; Lightning reads the SLURM
    environment): rank 0 grows, locks and records; the other ranks wait for the grown dir and join the fit. Such
    jobs are not retried in-job (the ranks would have to agree); SLURM's requeue and a re-sweep cover them."""

    def __init__(self, spec: dict, sweep_dir: str, retries: int = 1):
        self.spec, self.sweep_dir, self.retries = spec, sweep_dir, retries

    def __call__(self) -> dict:
        run = PlannedRun.from_json(self.spec)
        sweep = Path(self.sweep_dir)
        for dep in run.deps:  # afterok guarantees this on SLURM; other submitit clusters do not order jobs
            if not is_done(sweep, PlannedRun.from_json(_plan_entry(sweep, dep))):
                st = {"run_id": run.id, "status": "skipped", "error_class": None, "reason": f"dependency {dep} is "
                      "not done", "attempts": 0}
                write_json(sweep / run.config.out_dir / "status.json", st)
                return st
        if int(os.environ.get("SLURM_PROCID", "0")) > 0:
            return _follow(run, sweep)
        retries = self.retries if int(os.environ.get("SLURM_NTASKS", "1")) == 1 else 0
        for _ in range(retries + 1):
            status = execute(run, sweep)
            if status["status"] == "done" or status["error_class"] == "nan_loss":
                break
        try:
            from experiments.results import write_results

            write_results(sweep)
        except Exception as e:  # noqa: BLE001 - the table is rebuilt again by `stacking sweep status`
            print(f"[sweep] could not rebuild the results table: {e}", flush=True)
        return status


def _follow(run: PlannedRun, sweep: Path, wait_s: float = 3600) -> dict:
    """A DDP rank > 0: wait for rank 0's grow step, then take part in the fit (rank 0 records the outcome)."""
    from stacking.train import run as train

    if run.grow is not None:
        deadline = time.time() + wait_s
        while not (sweep / run.grow["dst"] / "growth.json").is_file():
            if time.time() > deadline:
                raise TimeoutError(f"rank {os.environ.get('SLURM_PROCID')}: {run.grow['dst']} never appeared")
            time.sleep(2)
    old = os.getcwd()
    os.chdir(sweep)
    try:
        return train(dataclasses.replace(run.config))
    finally:
        os.chdir(old)


def _tasks(run: PlannedRun) -> dict:
    """One SLURM task per device (what Lightning expects under SLURM), on num_nodes nodes."""
    devices = run.config.devices if isinstance(run.config.devices, int) else 1
    return {"tasks_per_node": devices, "nodes": run.config.num_nodes}


def _by_resources(runs: list[PlannedRun]) -> list[list[PlannedRun]]:
    groups: dict[tuple, list[PlannedRun]] = {}
    for r in runs:
        groups.setdefault(tuple(sorted(_tasks(r).items())), []).append(r)
    return list(groups.values())


def _plan_entry(sweep_dir: Path, run_id: str) -> dict:
    plan = json.loads((sweep_dir / "plan.json").read_text())
    return next(r for r in plan["runs"] if r["id"] == run_id)


def submit_slurm(sweep_dir: Path, runs: list[PlannedRun], slurm: SlurmSpec, *, cluster: str | None = "slurm",
                 retries: int = 1, name: str | None = None) -> list[dict]:
    """Submit every run that is not done; return one record per job: run_id, job_id, dependency, job.

    ``cluster``: "slurm", or submitit's "local"/"debug" (tests: the same job graph without a cluster). Job names
    are ``<name>`` (the level-0 array) and ``<name>:<run name>``; ``name`` defaults to the plan's sweep name."""
    name = name or (read_json(Path(sweep_dir) / "plan.json") or {}).get("name") or "sweep"
    executor = submitit.AutoExecutor(folder=str(Path(sweep_dir).resolve() / ".submitit" / "%j"), cluster=cluster,
                                     slurm_max_num_timeout=slurm.max_num_timeout)
    common = dict(timeout_min=slurm.timeout_min, gpus_per_node=slurm.gpus_per_node, cpus_per_task=slurm.cpus_per_task,
                  mem_gb=slurm.mem_gb, slurm_partition=slurm.partition,
                  slurm_array_parallelism=slurm.array_parallelism, name=name)
    todo = [r for r in runs if not is_done(sweep_dir, r)]
    records: list[dict] = []
    job_of: dict[str, str] = {}
    first = [r for r in todo if not any(d in {t.id for t in todo} for d in r.deps)]
    rest = [r for r in todo if r not in first]
    for group in _by_resources(first):  # one job array per resource shape, throttled by array_parallelism
        executor.update_parameters(**common, **_tasks(group[0]), slurm_additional_parameters=dict(slurm.additional))
        with executor.batch():
            jobs = [executor.submit(SlurmRun(r.to_json(), str(sweep_dir), retries)) for r in group]
        for r, job in zip(group, jobs, strict=True):
            job_of[r.id] = job.job_id
            records.append({"run_id": r.id, "job_id": job.job_id, "dependency": None, "job": job})
    for r in rest:  # in plan order, so a dependency is always submitted before its dependents
        dep = "afterok:" + ":".join(job_of[d] for d in r.deps if d in job_of)
        executor.update_parameters(**{**common, "name": f"{name}:{r.name}"}, **_tasks(r), slurm_additional_parameters={
            **slurm.additional, "dependency": dep, "kill-on-invalid-dep": "yes"})
        job = executor.submit(SlurmRun(r.to_json(), str(sweep_dir), retries))
        job_of[r.id] = job.job_id
        records.append({"run_id": r.id, "job_id": job.job_id, "dependency": dep, "job": job})
    write_json(Path(sweep_dir) / "slurm_jobs.json", {"cluster": cluster, "submitted_at": time.time(), "jobs": [
        {k: v for k, v in rec.items() if k != "job"} for rec in records]})
    return records


__all__ = [
    "LocalExecutor",
    "SlurmRun",
    "default_jobs",
    "execute",
    "is_done",
    "lock_held",
    "submit_slurm",
    "visible_gpus",
    "worker_context",
    "write_plan",
]
