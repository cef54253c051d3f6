"""Paper-scale rehearsal (issue 20): a paper-size G_stack growth at its true shapes, through `stacking sweep`.

    python benchmarks/paper_rehearsal.py                        # stack-410m on CPU, fp32, micro-batch 1: 20-40 min
    python benchmarks/paper_rehearsal.py --dry --out /tmp/r     # the same plumbing at toy size (bytes data): ~1 min
    python benchmarks/paper_rehearsal.py --device cuda          # one GPU: bf16-mixed, compile, micro-batch 8

It runs the command a GPU user runs — ``stacking sweep GRID --scale paper --only 'grown-<target>-G_stack-depth-g4-*'``
— on a *derived* grid: the grid file's ``paper`` scale with only the token budgets, the batch and the settings this
machine cannot run (accelerator, precision, devices, nodes, strategy, compile) replaced by an override dict, which is
printed and written to OUT/override.json; the derived grid is OUT/grid-paper-rehearsal.yaml (the shipped grids are
not changed). Model shapes, seq_len 2048, LRs, g = 4, the op, the FLOP accounting and the data stream are the
paper scale's own. Steps:

  1. memory: params × 16 bytes (fp32 weights, grads, AdamW moments) + activations at the micro-batch + the grown
     run's init state dict, against MemAvailable; a target that does not fit is refused (--force tries anyway);
  2. data: a SentencePiece BPE tokenizer (vocab 32000, byte fallback, split digits: Llama 2's recipe) trained here
     on the local Python sources, then ``stacking data --tokenizer OUT/spm/tokenizer.model --sources stdlib``
     (``--tokenizer PATH`` uses an existing tokenizer.model, e.g. Llama 2's; ``bpe``: stacking's own byte-level BPE
     at vocab 32000; --dry: bytes);
  3. the sweep: the base (the target's depth / g) trains --steps optimizer steps and saves at d = steps × batch
     tokens, G_stack grows it, the grown run trains --steps steps writing last.ckpt after every step; once its
     first last.ckpt exists the sweep's process group is SIGKILLed, and the same command is run again;
  4. checks and numbers → OUT/rehearsal.json (exit status 1 if a check fails): the grown run resumed from its
     last.ckpt (train.log, status.json attempts, metrics.csv steps once each), exact final token counts, the grown
     run's FLOP counter starting at the base's FLOPs at d; seconds per optimizer step (metrics.csv tokens_per_s:
     training time only, no eval or checkpoint), peak RSS (the sweep's process tree, polled from /proc, and
     getrusage(RUSAGE_CHILDREN)), params, FLOPs/token, kill → resume times, load average.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPM_VOCAB = 32000
DRY_TARGET = "tiny-L8-D64"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="stack-410m", help="a paper-scale target of the grid (default stack-410m)")
    p.add_argument("--grid", default="experiments/grids/scaling.yaml", help="grid file with a `paper` scale")
    p.add_argument("--g", type=int, default=4, help="growth factor in depth (the paper's 4: a 6-layer base)")
    p.add_argument(
        "--steps", type=int, help="optimizer steps of the base and of the grown run (default 3; cuda 6; --dry 20)"
    )
    p.add_argument("--out", default="out/paper-rehearsal", help="output dir (data, tokenizer, sweep, JSON)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--micro_batch", type=int, help="sequences per micro-batch = per step (cpu 1, cuda 8)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads of the run (stacking sweep --threads; default 2, "
        "--dry 1: a tiny model's OpenMP threads spin against other load)",
    )
    p.add_argument(
        "--tokenizer",
        default="spm",
        help="spm (train a SentencePiece model here), a tokenizer.model "
        "path, or bpe (stacking's byte-level BPE, vocab 32000)",
    )
    p.add_argument("--data", help="an existing dataset dir to use instead of building one")
    p.add_argument("--dry", action="store_true", help=f"toy size: {DRY_TARGET}, seq_len 64, bytes data")
    p.add_argument("--force", action="store_true", help="run even if the memory estimate exceeds MemAvailable")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 20 if args.dry else (6 if args.device == "cuda" else 3)
    if args.threads is None:
        args.threads = 1 if args.dry else 2
    if args.micro_batch is None:
        args.micro_batch = 4 if args.dry else (8 if args.device == "cuda" else 1)
    if args.steps < 2:
        p.error("--steps must be >= 2 (the kill comes after the grown run's first step)")
    return args


def echo(msg: str) -> None:
    print(f"[rehearsal] {msg}", flush=True)


def stacking_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "stacking", *map(str, args)]


# ----------------------------------------------------------------------------------------------------------------
# 1. memory


def mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def memory_estimate(
    model: str, seq_len: int, micro_batch: int, vocab: int = SPM_VOCAB, model_overrides: dict | None = None
) -> dict:
    """fp32 + AdamW bytes of one training process: 16 per parameter (weights, grads, two moments), the saved
    activations of one micro-batch (per token and layer ≈ 8 d_model + 4 FFN + 2 KV widths; the logits and their
    softmax grad ≈ 3 × vocab per token), the grown run's init state dict (4 per parameter) and ~1 GB of runtime."""
    from stacking import models

    c = models.model_config(model, vocab_size=vocab, block_size=seq_len, **(model_overrides or {}))
    p = models.param_breakdown(c)
    tokens = seq_len * micro_batch
    per_layer = 8 * c.n_embd + 4 * c.intermediate_size + 2 * c.n_query_groups * c.head_size
    act = 4 * tokens * (c.n_layer * per_layer + 3 * c.padded_vocab_size)
    gb = 1e9
    est = {
        "model": model,
        "params_total": p["total"],
        "params_non_embedding": p["non_embedding"],
        "states_gb": 16 * p["total"] / gb,
        "activations_gb": act / gb,
        "init_state_gb": 4 * p["total"] / gb,
        "runtime_gb": 1.0,
        "flops_per_token": models.flops_per_token(c, seq_len),
    }
    est["total_gb"] = round(sum(v for k, v in est.items() if k.endswith("_gb")), 2)
    return est


def check_memory(args, seq_len: int) -> dict:
    """Print the estimate of the target and of the next sizes up; refuse the target if it does not fit."""
    avail = mem_available_gb()
    names = [DRY_TARGET] if args.dry else ["stack-410m", "stack-1.1b", "stack-3b", "stack-7b"]
    if not args.dry and args.target not in names:
        names.insert(0, args.target)
    rows = {n: memory_estimate(n, seq_len, args.micro_batch) for n in names}
    for n, e in rows.items():
        echo(
            f"memory estimate {n}: {e['params_total'] / 1e6:,.0f}M params × 16 B = {e['states_gb']:.1f} GB + "
            f"activations {e['activations_gb']:.1f} GB + init state {e['init_state_gb']:.1f} GB + runtime 1 GB = "
            f"{e['total_gb']:.1f} GB (MemAvailable {avail:.1f} GB)" + ("  ← target" if n == args.target else "")
        )
    est = rows.get(args.target) or rows[names[0]]
    if args.device == "cpu" and est["total_gb"] > 0.95 * avail and not args.force:
        raise SystemExit(
            f"[rehearsal] {args.target} needs ≈ {est['total_gb']:.1f} GB on CPU in fp32 with AdamW; "
            f"{avail:.1f} GB are available: pick a smaller --target (or --force)"
        )
    return {"available_gb": round(avail, 2), "estimates": rows}


# ----------------------------------------------------------------------------------------------------------------
# 2. data


def python_sources_text(path: Path, max_chars: int) -> int:
    """The standard library's and site-packages' .py files, concatenated into one text file (≤ max_chars)."""
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for root in dict.fromkeys([sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]]):
            for f in sorted(Path(root).rglob("*.py")):
                if n >= max_chars:
                    return n
                try:
                    text = f.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                out.write(text + "\n")
                n += len(text) + 1
    return n


def train_sentencepiece(out: Path, threads: int, vocab: int = SPM_VOCAB, max_chars: int = 40_000_000) -> dict:
    """A SentencePiece BPE model with Llama 2's recipe (byte fallback, split digits, no normalisation), trained on
    the local Python sources: OUT/spm/tokenizer.model. Reused when present."""
    import sentencepiece as spm

    model = out / "spm" / "tokenizer.model"
    info_path = out / "spm" / "info.json"
    if model.is_file() and info_path.is_file():
        return json.loads(info_path.read_text())
    model.parent.mkdir(parents=True, exist_ok=True)
    text = out / "spm" / "corpus.txt"
    chars = python_sources_text(text, max_chars)
    t0 = time.perf_counter()
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(model.with_suffix("")),
        vocab_size=vocab,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        character_coverage=0.9999,
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        max_sentence_length=4192,
        num_threads=threads,
        minloglevel=2,
    )
    n = spm.SentencePieceProcessor(model_file=str(model)).vocab_size()
    info = {
        "path": str(model),
        "vocab_size": n,
        "train_chars": chars,
        "train_s": round(time.perf_counter() - t0, 1),
        "model_type": "bpe",
        "byte_fallback": True,
    }
    text.unlink()
    info_path.write_text(json.dumps(info, indent=1))
    echo(f"SentencePiece: vocab {n} trained on {chars:,} chars in {info['train_s']} s → {model}")
    return info


def spm_supported() -> bool:
    """Whether the installed `stacking data` takes a SentencePiece tokenizer.model as --tokenizer."""
    out = subprocess.run(stacking_cmd("data", "--help"), check=False, capture_output=True, text=True, cwd=ROOT)
    return "sentencepiece" in out.stdout.lower()


def build_data(args, out: Path) -> tuple[Path, dict]:
    """The dataset dir the rehearsal trains on, built with `stacking data` (reused when its meta.json exists)."""
    if args.data:
        return Path(args.data).resolve(), {"tokenizer": "given", "dir": str(Path(args.data).resolve())}
    info: dict = {}
    if args.dry:
        data, extra = out / "data-bytes", ["--tokenizer", "bytes", "--max_files", "60"]
    elif args.tokenizer == "bpe":
        data, extra = out / "data-bpe32000", ["--tokenizer", "bpe", "--vocab_size", str(SPM_VOCAB)]
    else:
        if args.tokenizer == "spm":
            info = train_sentencepiece(out, args.threads)
            model = info["path"]
        else:
            model = str(Path(args.tokenizer).resolve())
        if not spm_supported():
            raise SystemExit(
                "[rehearsal] the installed `stacking data` does not take a SentencePiece tokenizer.model "
                "as --tokenizer (its --help does not mention sentencepiece); update stacking, or run "
                "with --tokenizer bpe (stacking's byte-level BPE, vocab 32000)"
            )
        data, extra = out / "data-spm32000", ["--tokenizer", model]
    data = data.resolve()
    cmd = stacking_cmd("data", "--out", data, "--sources", "stdlib", *extra)
    if not (data / "meta.json").is_file():
        echo("data: " + " ".join(cmd[2:]))
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        info["build_s"] = round(time.perf_counter() - t0, 1)
    meta = json.loads((data / "meta.json").read_text())
    info.update(
        dir=str(data),
        command="stacking " + " ".join(map(str, cmd[3:])),
        vocab_size=meta["vocab_size"],
        train_tokens=meta.get("train_tokens"),
        val_tokens=meta.get("val_tokens"),
        tokenizer=meta.get("tokenizer"),
    )
    return data, info


# ----------------------------------------------------------------------------------------------------------------
# 3. the derived grid


def merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base`` as grid scales merge (experiments.schema): mappings key by key, else replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_override(args, data_dir: Path, seq_len: int) -> dict:
    """What the rehearsal changes in the paper scale: token budgets, batch, hardware settings, no cooldowns."""
    gb = args.micro_batch * seq_len
    d = args.steps * gb
    hardware = (
        {"accelerator": "gpu", "precision": "bf16-mixed", "compile": True}
        if args.device == "cuda"
        else {"accelerator": "cpu", "precision": "32-true", "compile": False}
    )
    defaults = {
        "data_dir": str(data_dir),
        "micro_batch_size": args.micro_batch,
        "global_batch_tokens": gb,
        "warmup_tokens": gb,
        "val_every_tokens": d,
        "val_tokens": seq_len,
        **hardware,
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
    }
    override = {
        "defaults": defaults,
        "d": [d],
        "base": {"tokens": d},
        "grown": {"tokens": d, "total_flops": None, "set": {"checkpoint_every_tokens": gb}},
        "anneal": {"fractions": []},
    }
    if args.dry:  # toy shapes; the paper scale's per-size LR overrides name sizes that are gone
        override["defaults"]["seq_len"] = seq_len
        override.update(targets=[DRY_TARGET], overrides=[])
    return override


def write_derived_grid(args, out: Path, override: dict) -> Path:
    """The grid file with its `paper` scale = the shipped paper scale + the override (other scales dropped)."""
    raw = yaml.safe_load((ROOT / args.grid).read_text())
    scales = raw.get("scales") or {}
    if "paper" not in scales:
        raise SystemExit(f"[rehearsal] {args.grid} has no `paper` scale; scales: {', '.join(scales) or 'none'}")
    derived = copy.deepcopy(raw)
    derived["scales"] = {"paper": merge(scales["paper"] or {}, override)}
    derived["name"] = f"{raw.get('name') or Path(args.grid).stem}-rehearsal"
    path = out / "grid-paper-rehearsal.yaml"
    header = (
        f"# {args.grid}'s `paper` scale with the rehearsal's override (benchmarks/paper_rehearsal.py; "
        "override.json):\n# " + json.dumps(override) + "\n"
    )
    path.write_text(header + yaml.safe_dump(derived, sort_keys=False, width=118))
    (out / "override.json").write_text(json.dumps(override, indent=1) + "\n")
    return path


def plan_runs(grid_path: Path, pattern: str) -> dict:
    """The base and grown run the sweep's --only pattern selects (the sweep's own expansion and selection)."""
    from experiments.grid import expand, load_grid, select

    runs = select(expand(load_grid(grid_path, scale="paper"), where=grid_path.name), pattern)
    kinds = {r.kind: r for r in runs}
    if sorted(r.kind for r in runs) != ["base", "grown"]:
        raise SystemExit(
            f"[rehearsal] --only {pattern!r} selects {[r.name for r in runs]}; expected one base and one grown run"
        )
    return kinds


# ----------------------------------------------------------------------------------------------------------------
# 4. running the sweep: process-tree memory, kill, resume


def _proc_rows() -> list[tuple[int, int, int, int]]:
    """(pid, process group, VmRSS KiB, VmHWM KiB) of every process readable in /proc."""
    rows = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        pgrp = int(stat.rsplit(")", 1)[1].split()[2])
        mem = {ln.split(":")[0]: int(ln.split()[1]) for ln in status.splitlines() if ln.startswith(("VmRSS", "VmHWM"))}
        rows.append((int(name), pgrp, mem.get("VmRSS", 0), mem.get("VmHWM", 0)))
    return rows


class TreeMonitor(threading.Thread):
    """Polls the sweep's process group: peak summed RSS, each process's VmHWM, the load average; which process
    executes which run (runs/<id>/status.json pid)."""

    def __init__(self, run_dirs: dict[str, Path], interval: float):
        super().__init__(daemon=True)
        self.run_dirs, self.interval = run_dirs, interval
        self.pgids: set[int] = set()
        self.peak_tree_kib, self.hwm_kib, self.pid_run = 0, {}, {}
        self.load: list[float] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(self.interval):
            rows = [r for r in _proc_rows() if r[1] in self.pgids]
            self.peak_tree_kib = max(self.peak_tree_kib, sum(r[2] for r in rows))
            for pid, _, _, hwm in rows:
                self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), hwm)
            for kind, d in self.run_dirs.items():
                st = read_json(d / "status.json")
                if st and st.get("pid"):
                    self.pid_run[int(st["pid"])] = kind
            self.load.append(os.getloadavg()[0])

    def peak_of(self, kind: str) -> float | None:
        kib = [v for pid, v in self.hwm_kib.items() if self.pid_run.get(pid) == kind]
        return round(max(kib) / 2**20, 3) if kib else None


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def metrics_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def count_lines(path: Path, text: str) -> int:
    try:
        return sum(text in line for line in path.read_text().splitlines())
    except OSError:
        return 0


class Sweep:
    """One `stacking sweep` process in its own process group (so a SIGKILL takes its workers with it)."""

    current: Sweep | None = None

    def __init__(self, cmd: list[str], log: Path, monitor: TreeMonitor):
        self.log = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        monitor.pgids.add(self.proc.pid)
        Sweep.current = self

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        rc = self.proc.wait()
        deadline = time.time() + 120  # the workers die with their group; wait until /proc shows none
        while time.time() < deadline and any(r[1] == self.proc.pid for r in _proc_rows()):
            time.sleep(0.2)
        self.log.close()
        Sweep.current = None
        return rc


def _on_term(signum, frame):  # `timeout` (gpu_run.sh) stops us: the sweep is in another group, stop it too
    if Sweep.current is not None:
        Sweep.current.kill()
    raise SystemExit(128 + signum)


def run_until_checkpoint(cmd, out: Path, grown_dir: Path, monitor: TreeMonitor, poll: float) -> dict:
    """Session 1: the sweep until the grown run's first last.ckpt exists, then SIGKILL of its process group."""
    sweep = Sweep(cmd, out / "sweep-1.log", monitor)
    t0 = time.perf_counter()
    last = grown_dir / "last.ckpt"
    while sweep.proc.poll() is None and not last.is_file():
        time.sleep(poll)
    if sweep.proc.poll() is not None:
        rc = sweep.wait()
        raise SystemExit(
            f"[rehearsal] the sweep exited (status {rc}) before the grown run wrote last.ckpt; "
            f"see {out / 'sweep-1.log'} and the run dirs' worker.log"
        )
    rows = metrics_rows(grown_dir / "metrics.csv")
    sweep.kill()
    t_kill = time.perf_counter()
    rc = sweep.wait()
    done = (read_json(grown_dir / "summary.json") or {}).get("status") == "done"
    info = {
        "t_kill": t_kill,
        "session1_s": round(t_kill - t0, 1),
        "exit_status": rc,
        "grown_step_at_kill": int(rows[-1]["step"]) if rows else None,
        "grown_tokens_at_kill": int(rows[-1]["tokens"]) if rows else None,
        "grown_done_at_kill": done,
    }
    echo(
        f"SIGKILL of the sweep's process group after {info['session1_s']} s: grown run at step "
        f"{info['grown_step_at_kill']} ({info['grown_tokens_at_kill']} tokens), last.ckpt written, done={done}"
    )
    return info


RESUME_LINE = re.compile(r"resuming from (\S+) at tokens=([\d,]+) \(step (\d+)\)")


def resume_lines(train_log: Path) -> list[tuple[str, int, int]]:
    """(checkpoint, tokens, step) of every "resuming from" line of a run's train.log."""
    try:
        text = train_log.read_text()
    except OSError:
        return []
    return [(m[1], int(m[2].replace(",", "")), int(m[3])) for m in RESUME_LINE.finditer(text)]


def run_resume(cmd, out: Path, grown_dir: Path, monitor: TreeMonitor, poll: float, t_kill: float) -> dict:
    """Session 2: the same command; times from the kill to the resume log line and to the first new step."""
    sweep = Sweep(cmd, out / "sweep-2.log", monitor)
    t_log = t_step = None
    n_rows = 0
    while sweep.proc.poll() is None:
        if t_log is None and resume_lines(grown_dir / "train.log"):
            t_log = time.perf_counter() - t_kill
            n_rows = len(metrics_rows(grown_dir / "metrics.csv"))  # truncated to the checkpoint's step by now
        elif t_log is not None and t_step is None and len(metrics_rows(grown_dir / "metrics.csv")) > n_rows:
            t_step = time.perf_counter() - t_kill
        time.sleep(poll)
    rc = sweep.wait()
    t_end = time.perf_counter() - t_kill
    lines = resume_lines(grown_dir / "train.log")
    echo(
        f"resumed sweep exited with status {rc}, {t_end:.1f} s after the kill; grown run's train.log: "
        + ("; ".join(f"resumed from {c} at tokens={t} (step {s})" for c, t, s in lines) or "no resume line")
    )
    return {
        "exit_status": rc,
        "resume_lines": [list(x) for x in lines],
        "kill_to_resume_log_s": round(t_log, 2) if t_log else None,
        "kill_to_first_step_s": round(t_step, 2) if t_step else None,
        "kill_to_end_s": round(t_end, 1),
    }


# ----------------------------------------------------------------------------------------------------------------
# 5. reading the run dirs back


def run_numbers(run_dir: Path, planned, monitor: TreeMonitor, kind: str) -> dict:
    """A run's summary, its seconds per optimizer step (training time only) and its worker's peak RSS."""
    s = read_json(run_dir / "summary.json") or {}
    st = read_json(run_dir / "status.json") or {}
    rows = metrics_rows(run_dir / "metrics.csv")
    gb = planned.config.global_batch_tokens
    secs = [round(gb / float(r["tokens_per_s"]), 3) for r in rows if r.get("tokens_per_s")]
    return {
        "id": planned.id,
        "model": planned.model,
        "status": s.get("status"),
        "attempts": st.get("attempts"),
        "params_total": s.get("params_total"),
        "params_non_embedding": s.get("params_non_embedding"),
        "flops_per_token": s.get("flops_per_token"),
        "tokens": s.get("tokens"),
        "max_tokens": planned.config.max_tokens,
        "global_batch_tokens": gb,
        "flops": s.get("flops"),
        "flops_offset": s.get("flops_offset"),
        "resumed": s.get("resumed"),
        "wall_time_s": s.get("wall_time_s"),
        "sec_per_step": secs,
        "sec_per_step_median": statistics.median(secs[1:] or secs) if secs else None,
        "steps_in_metrics": [int(r["step"]) for r in rows],
        "peak_rss_gb": monitor.peak_of(kind),
    }


def checks(base: dict, grown: dict, base_dir: Path, grown_dir: Path, d: int, resume: dict) -> dict:
    """Resumed rather than restarted; exact token counts; the grown FLOP counter starts at the base's FLOPs at d."""
    meta = read_json(base_dir / "checkpoints" / f"tokens-{d:012d}" / "stacking_meta.json") or {}
    lines = resume["resume_lines"]
    base_flops = meta.get("flops")
    return {
        "base_tokens_exact": base["tokens"] == d == meta.get("tokens"),
        "grown_tokens_exact": grown["tokens"] == grown["max_tokens"],
        "flop_offset_is_base_flops_at_d": base_flops is not None
        and grown["flops_offset"] == base_flops
        and abs(base_flops - d * base["flops_per_token"]) <= 1e-9 * base_flops,
        "grown_flops_exact": grown["flops"] is not None
        and abs(grown["flops"] - grown["flops_offset"] - grown["tokens"] * grown["flops_per_token"])
        <= 1e-9 * grown["flops"],
        "resumed_from_last_ckpt": bool(grown["resumed"])
        and len(lines) == 1
        and lines[0][0].endswith("last.ckpt")
        and 0 < lines[0][2] < len(grown["steps_in_metrics"]) - 1
        and count_lines(grown_dir / "train.log", "initialised from") == 1,
        "grown_attempts_2": grown["attempts"] == 2,
        "metrics_steps_once": all(
            r["steps_in_metrics"] == list(range(r["max_tokens"] // r["global_batch_tokens"] + 1)) for r in (base, grown)
        ),
        "both_done": base["status"] == "done" and grown["status"] == "done",
        "base_flops_at_d": base_flops,
    }


# ----------------------------------------------------------------------------------------------------------------


def prepare(args, out: Path) -> tuple[dict, Path, dict]:
    """Memory check, data, override, derived grid, the two planned runs."""
    raw = yaml.safe_load((ROOT / args.grid).read_text())
    paper = (raw.get("scales") or {}).get("paper") or {}
    seq_len = 64 if args.dry else int(merge(raw.get("defaults") or {}, paper.get("defaults") or {})["seq_len"])
    if not args.dry and args.target not in (paper.get("targets") or raw.get("targets") or []):
        raise SystemExit(f"[rehearsal] {args.target} is not a target of {args.grid}'s paper scale")
    memory = check_memory(args, seq_len)
    data_dir, data_info = build_data(args, out)
    override = make_override(args, data_dir, seq_len)
    grid_path = write_derived_grid(args, out, override)
    echo("override of the paper scale: " + json.dumps(override))
    pattern = f"grown-{DRY_TARGET if args.dry else args.target}-G_stack-depth-g{args.g}-*"
    runs = plan_runs(grid_path, pattern)
    return {"memory": memory, "data": data_info, "override": override, "pattern": pattern}, grid_path, runs


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    signal.signal(signal.SIGTERM, _on_term)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sweep_dir = out / "sweep"
    if sweep_dir.exists():
        echo(f"removing the previous rehearsal's sweep dir {sweep_dir}")
        shutil.rmtree(sweep_dir)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    info, grid_path, runs = prepare(args, out)
    base_dir, grown_dir = sweep_dir / runs["base"].config.out_dir, sweep_dir / runs["grown"].config.out_dir
    cmd = stacking_cmd(
        "sweep",
        grid_path,
        "--scale",
        "paper",
        "--only",
        info["pattern"],
        "--out",
        sweep_dir,
        "--jobs",
        "1",
        "--threads",
        args.threads,
    )
    echo("sweep: " + " ".join(map(str, cmd[2:])))
    monitor = TreeMonitor({"base": base_dir, "grown": grown_dir}, interval=0.05 if args.dry else 0.5)
    monitor.start()
    poll = 0.01 if args.dry else 0.5
    kill = run_until_checkpoint(cmd, out, grown_dir, monitor, poll)
    resume = run_resume(cmd, out, grown_dir, monitor, poll, kill.pop("t_kill"))
    monitor.stop.set()
    monitor.join()
    base = run_numbers(base_dir, runs["base"], monitor, "base")
    grown = run_numbers(grown_dir, runs["grown"], monitor, "grown")
    d = runs["grown"].grow_at_tokens
    check = checks(base, grown, base_dir, grown_dir, d, resume)
    result = report(args, info, base, grown, kill, resume, monitor, load0, check, cmd, d, time.perf_counter() - t0)
    (out / "rehearsal.json").write_text(json.dumps(result, indent=1) + "\n")
    echo(f"wrote {out / 'rehearsal.json'}")
    return 0 if result["ok"] else 1


def git_state() -> dict:
    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], check=False, capture_output=True, text=True, cwd=ROOT)
        return r.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def num(x) -> str:
    """4 significant digits for floats, thousands separators for ints, None as is."""
    if isinstance(x, bool) or x is None:
        return str(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:.4g}"


def report(args, info, base, grown, kill, resume, monitor, load0, check, cmd, d, wall) -> dict:
    """rehearsal.json's content, and its summary printed."""
    ok = all(v for k, v in check.items() if isinstance(v, bool))
    result = {
        "ok": ok,
        "target": DRY_TARGET if args.dry else args.target,
        "dry": args.dry,
        "device": args.device,
        "grid": args.grid,
        "scale": "paper",
        "command": "stacking " + " ".join(map(str, cmd[3:])),
        "grow_at_tokens": d,
        "steps": args.steps,
        "micro_batch": args.micro_batch,
        "threads": args.threads,
        **info,
        "base": base,
        "grown": grown,
        "kill": kill,
        "resume": resume,
        "checks": check,
        "peak_rss_gb": {
            "sweep_tree_sum": round(monitor.peak_tree_kib / 2**20, 3),
            "max_process": round(max(monitor.hwm_kib.values(), default=0) / 2**20, 3),
            "rusage_children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3),
        },
        "loadavg": {
            "start": [round(x, 2) for x in load0],
            "end": [round(x, 2) for x in os.getloadavg()],
            "mean_1min_during": round(statistics.mean(monitor.load), 2) if monitor.load else None,
        },
        "cpus": os.cpu_count(),
        "wall_s": round(wall, 1),
        "git": git_state(),
    }
    for kind, r in (("base", base), ("grown", grown)):
        echo(
            f"{kind} {r['model']}: {num(r['params_total'])} params ({num(r['params_non_embedding'])} non-embedding), "
            f"{num(r['flops_per_token'])} FLOPs/token, {num(r['tokens'])} tokens, {num(r['flops'])} FLOPs "
            f"(offset {num(r['flops_offset'])}), sec/step {r['sec_per_step']} (median {r['sec_per_step_median']}), "
            f"peak RSS {r['peak_rss_gb']} GB"
        )
    echo(
        f"kill → resume log {resume['kill_to_resume_log_s']} s, → first new step "
        f"{resume['kill_to_first_step_s']} s; peak RSS {result['peak_rss_gb']}; load {result['loadavg']}"
    )
    echo("checks: " + ", ".join(f"{k}={v}" for k, v in check.items()) + f" → {'OK' if ok else 'FAILED'}")
    return result


if __name__ == "__main__":
    sys.exit(main())
