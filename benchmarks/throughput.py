"""Throughput: our trainer vs a hand-written PyTorch loop vs `litgpt pretrain`'s own loop, side by side.

    python benchmarks/throughput.py                 # CPU: 32-true and bf16-mixed, tiny-L4-D128, 2-4 min
    python benchmarks/throughput.py --smoke         # 2 steps per mode, one precision: checks that everything runs
    python benchmarks/throughput.py --device cuda   # GPU: TinyLlama-1.1B shape, bf16-mixed, with MFU

The three modes train the same litgpt model (same Config, same init distribution) on the same batches (one synthetic
token dataset in `stacking data`'s format; throughput does not depend on the token values), at the same precision,
for the same number of optimizer steps:

  trainer  `stacking.train.run` itself (Lightning Trainer + GPTModule + RunBookkeeping). Step times are read back from
           the run's metrics.csv (`tokens_per_s`, one row per step), i.e. the trainer's own throughput log.
  loop     a hand-written PyTorch loop: forward + loss, backward, clip, AdamW step, with the trainer's loss function
           and compile setting, so trainer/loop is what Lightning and our bookkeeping cost.
  litgpt   `litgpt.pretrain.main` → `fit`, driven programmatically on the same data (litgpt always compiles the
           model and uses its chunked cross-entropy). Step times are the gaps between consecutive batch fetches.

Every mode times whole steps (data, forward, loss, backward, clip, optimizer, per-step logging) and syncs with the
host once per step (each logs the loss as a float). Before the timed repetitions every mode runs once untimed to
pay for compilation; repetitions are interleaved with the mode order rotating, and the first --warmup-steps of each
repetition are dropped. tokens/s of a repetition = timed tokens / timed seconds; the table shows the median over
repetitions and the ratios of the medians. (litgpt's final "Tok/sec" line divides by an absolute clock and is not
used.) The last two lines are always `ratio_vs_loop=…` and `ratio_vs_litgpt=…` for the first --precision.
Results and their reading: docs/throughput.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import itertools
import json
import logging
import math
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock

import lightning as L
import numpy as np
import torch
from litgpt import GPT

from stacking import models
from stacking.bookkeeping import RunBookkeeping
from stacking.config import RunConfig
from stacking.data import _TrainStream, val_windows
from stacking.module import LOSS_CHUNK, init_weights, lm_loss, mfu, peak_flops
from stacking.train import run

MODES = ("trainer", "loop", "litgpt")
# Optimiser settings shared by the three modes (values do not change the work done per step).
LR, MIN_LR, WEIGHT_DECAY, BETAS, EPS, GRAD_CLIP = 3e-4, 3e-5, 0.1, (0.9, 0.95), 1e-8, 1.0
# Per-device defaults: a CPU shape whose step takes ~0.2-0.3 s on one core, and TinyLlama-1.1B on a GPU
# (vocab 32000, seq 2048, micro-batch 4 = 8192 tokens/step, 7.31 GFLOP/token; reference/ecosystem.md §1.6).
# One CPU thread by default: with two threads on two cores, any co-tenant process stalls every OpenMP barrier and
# single steps take 10× longer at random (docs/throughput.md); pass --threads 2 on an idle machine.
DEFAULTS = {
    "cpu": dict(
        model="tiny-L4-D128",
        vocab_size=4096,
        seq_len=256,
        micro_batch_size=8,
        precision="32-true,bf16-mixed",
        steps=8,
        reps=7,
        threads=1,
    ),
    "cuda": dict(
        model="tiny-llama-1.1b",
        vocab_size=32000,
        seq_len=2048,
        micro_batch_size=4,
        precision="bf16-mixed",
        steps=20,
        reps=3,
        threads=0,
    ),
}
RATIO_LINE = re.compile(r"^(?:(?P<precision>\S+) )?(?P<key>ratio_vs_(?:loop|litgpt))=(?P<value>\S+)$")


# ---- data --------------------------------------------------------------------------------------------------------


def write_synthetic_dataset(
    out: Path, vocab_size: int, train_tokens: int = 1 << 20, val_tokens: int = 1 << 16, seed: int = 0
) -> Path:
    """Uniform random tokens in the format `stacking data` writes (train.bin, val.bin, meta.json)."""
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if vocab_size < 1 << 16 else np.uint32
    rng = np.random.default_rng(seed)
    counts = {"train": train_tokens, "val": val_tokens}
    for split, n in counts.items():
        rng.integers(0, vocab_size, size=n, dtype=dtype).tofile(out / f"{split}.bin")
    meta = {
        "vocab_size": vocab_size,
        "dtype": np.dtype(dtype).name,
        "tokenizer": "synthetic",
        "eot_id": 0,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "sources": ["synthetic uniform tokens"],
        "n_files": 0,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


class _TimedBlocks(torch.utils.data.IterableDataset):
    """The trainer's batches as litgpt wants them, (B, T+1) blocks, stamping the time of every fetch."""

    def __init__(self, stream: _TrainStream, stamps: list[float]):
        self.stream, self.stamps = stream, stamps

    def __iter__(self):
        for x, y in self.stream:
            self.stamps.append(time.perf_counter())
            yield torch.cat([x, y[:, -1:]], dim=1)


def _litgpt_data(data_dir: Path, seed: int, stamps: list[float]):
    from litgpt.data import DataModule

    class StackingTokens(DataModule):
        """A litgpt DataModule over a `stacking data` dir (what TextFiles/TinyLlama are for litdata dirs)."""

        def connect(self, tokenizer=None, batch_size=1, max_seq_length=None, **kwargs):
            self.batch_size, self.seq_len = batch_size, max_seq_length

        def train_dataloader(self):
            stream = _TrainStream(str(data_dir), self.seq_len, self.batch_size, seed, 0, 0, 1)
            return torch.utils.data.DataLoader(_TimedBlocks(stream, stamps), batch_size=None)

        def val_dataloader(self):
            windows = val_windows(data_dir, self.seq_len, 2 * self.batch_size * self.seq_len)
            return torch.utils.data.DataLoader(windows, batch_size=self.batch_size)

    return StackingTokens()


# ---- the three modes ---------------------------------------------------------------------------------------------


class Bench:
    """One benchmark configuration; each ``run_*`` method trains ``n_steps`` and returns the per-step seconds."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, work_dir: Path):
        self.device, self.model, self.seq_len, self.mbs = args.device, args.model, args.seq_len, args.micro_batch_size
        self.compile, self.chunked_loss = args.compile, args.chunked_loss
        self.data_dir, self.work_dir, self.seed = data_dir, work_dir, 0
        self.model_config = models.model_config(args.model, vocab_size=args.vocab_size, block_size=args.seq_len)
        self.tokens_per_step = self.mbs * self.seq_len
        self.logged_mfu: list[float] = []

    def run_trainer(self, precision: str, n_steps: int, tag: str) -> list[float]:
        gbt = self.tokens_per_step
        cfg = RunConfig(
            out_dir=str(self.work_dir / tag),
            data_dir=str(self.data_dir),
            model=self.model,
            seed=self.seed,
            seq_len=self.seq_len,
            micro_batch_size=self.mbs,
            global_batch_tokens=gbt,
            max_tokens=gbt * n_steps,
            warmup_tokens=gbt,
            val_every_tokens=gbt * n_steps,
            val_tokens=gbt,
            lr=LR,
            min_lr=MIN_LR,
            weight_decay=WEIGHT_DECAY,
            beta1=BETAS[0],
            beta2=BETAS[1],
            eps=EPS,
            grad_clip=GRAD_CLIP,
            precision=precision,
            compile=self.compile,
            chunked_loss=self.chunked_loss,
            accelerator="gpu" if self.device == "cuda" else "cpu",
            devices=1,
            progress_bar=False,
        )
        # The checkpoints written at the end of a run come after the timed steps; at the 1.1B shape they are ~18 GB
        # per repetition (weights + AdamW state), so they are skipped here (tests/stacking/test_throughput.py covers them).
        with mock.patch.object(RunBookkeeping, "save_exact"), mock.patch.object(RunBookkeeping, "save_last"):
            summary = run(cfg)
        if summary["status"] != "done":
            raise RuntimeError(f"trainer run ended with status {summary['status']!r}")
        with open(self.work_dir / tag / "metrics.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["tokens_per_s"]]
        self.logged_mfu = [float(r["mfu"]) for r in rows if r["mfu"]]
        return [gbt / float(r["tokens_per_s"]) for r in rows]

    def run_loop(self, precision: str, n_steps: int, tag: str) -> list[float]:
        dev = torch.device(self.device)
        torch.manual_seed(self.seed)
        with dev:
            model = GPT(self.model_config)
            init_weights(model, self.model_config)  # GPTModule's init
        loss_fn = torch.compile(lm_loss) if self.compile else lm_loss
        chunk = LOSS_CHUNK if self.chunked_loss else 0
        params = list(model.parameters())
        opt = torch.optim.AdamW(
            [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=LR,
            betas=BETAS,
            eps=EPS,
            fused=dev.type == "cuda",
        )
        batches = iter(_TrainStream(str(self.data_dir), self.seq_len, self.mbs, self.seed, 0, 0, 1))
        times, t_last = [], time.perf_counter()
        for _ in range(n_steps):
            x, y = next(batches)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                loss = loss_fn(model, x, y, chunk)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()  # the per-step host sync every mode has (metrics row / litgpt log line)
            now = time.perf_counter()
            times.append(now - t_last)
            t_last = now
        return times

    def run_litgpt(self, precision: str, n_steps: int, tag: str) -> list[float]:
        import litgpt.pretrain as lp
        from litgpt.args import EvalArgs, TrainArgs
        from litgpt.utils import choose_logger

        out = self.work_dir / tag
        stamps: list[float] = []
        logger = choose_logger("csv", out, name="pretrain", log_interval=1)  # what `--logger_name csv` builds
        fabric = L.Fabric(
            accelerator="cuda" if self.device == "cuda" else "cpu",
            devices=1,
            strategy="auto",
            precision=precision,
            loggers=[logger],
        )
        fabric.launch()
        train = TrainArgs(
            save_interval=None,
            log_interval=1,
            global_batch_size=self.mbs,
            micro_batch_size=self.mbs,
            max_tokens=self.tokens_per_step * n_steps,
            max_norm=GRAD_CLIP,
            lr_warmup_steps=1,
            min_lr=MIN_LR,
            tie_embeddings=False,
        )
        optimizer = {
            "class_path": "torch.optim.AdamW",
            "init_args": {"lr": LR, "weight_decay": WEIGHT_DECAY, "betas": BETAS, "eps": EPS},
        }
        # main() ends by saving a checkpoint whose hyperparameters.yaml re-parses sys.argv as litgpt's CLI (and fails
        # on this script's flags); that save comes after the timed loop, so it is skipped.
        with mock.patch.object(lp, "save_checkpoint"):
            lp.main(
                fabric=fabric,
                devices=1,
                seed=self.seed,
                initial_checkpoint_dir=None,
                resume=False,
                config=self.model_config,
                data=_litgpt_data(self.data_dir, self.seed, stamps),
                out_dir=out,
                tokenizer_dir=None,
                tokenizer=None,
                train=train,
                eval=EvalArgs(interval=10**9, max_iters=2, initial_validation=False, final_validation=False),
                optimizer=optimizer,
            )
        # fit() fetches one batch more than it trains on (then sees iter_num >= max_iters and stops)
        if len(stamps) != n_steps + 1:
            raise RuntimeError(f"litgpt fetched {len(stamps)} batches for {n_steps} steps")
        return [b - a for a, b in itertools.pairwise(stamps)]


@contextlib.contextmanager
def _captured(log_path: Path):
    """Send a mode's chatter (Lightning banners, litgpt prints, [train] lines) to a log file; show it on failure."""
    with open(log_path, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            yield
        except Exception:
            traceback.print_exc(file=f)
            f.flush()
            tail = log_path.read_text().splitlines()[-40:]
            sys.__stderr__.write(f"--- tail of {log_path} ---\n" + "\n".join(tail) + "\n")
            raise


def run_mode(bench: Bench, mode: str, precision: str, n_steps: int, tag: str) -> list[float]:
    with _captured(bench.work_dir / f"{mode}.log"):
        times = getattr(bench, f"run_{mode}")(precision, n_steps, tag)
    shutil.rmtree(bench.work_dir / tag, ignore_errors=True)
    gc.collect()
    if bench.device == "cuda":
        torch.cuda.empty_cache()
        if (left := torch.cuda.memory_allocated()) > 1 << 30:  # the next mode would train next to a stale model
            print(f"warning: {left / 2**30:.1f} GiB still allocated on the GPU after {mode}", flush=True)
    return times


# ---- reporting ---------------------------------------------------------------------------------------------------


def format_ratios(medians: dict[str, dict[str, float]]) -> list[str]:
    """`<precision> ratio_vs_loop=…` and `…ratio_vs_litgpt=…` per precision, then the first precision's pair
    unprefixed: the last two lines of the output, which scripts (and tests/stacking/test_throughput.py) parse."""
    lines, final = [], []
    for precision, m in medians.items():
        pair = [f"ratio_vs_loop={m['trainer'] / m['loop']:.3f}", f"ratio_vs_litgpt={m['trainer'] / m['litgpt']:.3f}"]
        lines += [f"{precision} {p}" for p in pair]
        final = final or pair
    return lines + final


def parse_ratios(text: str) -> dict[str, float]:
    """{'ratio_vs_loop': …, 'ratio_vs_litgpt': …} from the final lines, plus '<precision> <key>' for each pair."""
    out = {}
    for line in text.strip().splitlines():
        if m := RATIO_LINE.match(line.strip()):
            key = f"{m['precision']} {m['key']}" if m["precision"] else m["key"]
            out[key] = float(m["value"])
    return out


def machine_description(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} ({torch.cuda.device_count()} visible)"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {torch.get_num_threads()} torch threads"


def versions() -> str:
    from importlib.metadata import version

    return f"torch {torch.__version__}, lightning {version('lightning')}, litgpt {version('litgpt')}"


# ---- main --------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", help="model preset (default: tiny-L4-D128 on cpu, tiny-llama-1.1b on cuda)")
    p.add_argument("--vocab-size", type=int, help="synthetic data vocabulary (default 4096 cpu / 32000 cuda)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default 256 cpu / 2048 cuda)")
    p.add_argument("--micro-batch-size", type=int, help="sequences per step (default 8 cpu / 4 cuda)")
    p.add_argument(
        "--precision",
        help="comma-separated: 32-true, bf16-mixed (default both on cpu, bf16-mixed cuda); "
        "the first one gives the final ratio lines",
    )
    p.add_argument("--steps", type=int, help="timed steps per repetition (default 8 cpu / 20 cuda)")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps dropped at the start of every repetition")
    p.add_argument("--reps", type=int, help="interleaved repetitions per mode (default 7 cpu / 3 cuda)")
    p.add_argument("--compile", type=int, default=1, choices=[0, 1], help="trainer and loop: RunConfig.compile")
    p.add_argument(
        "--chunked-loss", type=int, default=1, choices=[0, 1], help="trainer and loop: RunConfig.chunked_loss"
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads, 0 = torch's default (default 1 cpu / 0 cuda)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="2 steps per mode, one repetition, no warm-up run, first precision only, tiny-L2-D64 at seq 64 on cpu",
    )
    p.add_argument("--work-dir", help="keep data, run dirs and per-mode logs here (default: a temp dir, removed)")
    args = p.parse_args(argv)
    for k, v in DEFAULTS[args.device].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.precision = [s.strip() for s in args.precision.split(",") if s.strip()]
    bad = [s for s in args.precision if s not in ("32-true", "bf16-mixed")]
    if bad:
        p.error(f"--precision entries must be 32-true or bf16-mixed, got {bad}")
    if args.smoke:
        args.steps, args.warmup_steps, args.reps, args.precision = 2, 0, 1, args.precision[:1]
        if args.device == "cpu":
            args.model, args.vocab_size, args.seq_len, args.micro_batch_size = "tiny-L2-D64", 512, 64, 2
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="throughput-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    for name in ("lightning.pytorch", "lightning.fabric"):  # their banners bypass the captured streams
        logging.getLogger(name).setLevel("WARNING")
    t_start = time.perf_counter()
    try:
        data_dir = write_synthetic_dataset(work_dir / "data", args.vocab_size)
        bench = Bench(args, data_dir, work_dir)
        n_steps = args.warmup_steps + args.steps
        fpt = models.flops_per_token(bench.model_config, args.seq_len)
        print(f"# machine: {machine_description(args.device)} | {versions()}")
        print(
            f"# model {args.model} (vocab {args.vocab_size}), seq {args.seq_len} × batch {args.micro_batch_size} = "
            f"{bench.tokens_per_step} tokens/step, {fpt / 1e6:.2f} MFLOP/token | trainer & loop: compile="
            f"{bool(args.compile)}, chunked_loss={bool(args.chunked_loss)}; litgpt: compiled model, chunked CE"
        )
        print(
            f"# {args.reps} interleaved reps × {args.steps} timed steps (+{args.warmup_steps} dropped) per mode",
            flush=True,
        )
        results: dict[str, dict[str, list[float]]] = {}
        logged_mfu: dict[str, float] = {}
        for precision in args.precision:
            if not args.smoke:  # untimed: compiles every graph this precision needs
                for mode in MODES:
                    t0 = time.perf_counter()
                    run_mode(bench, mode, precision, args.warmup_steps + 2, f"warmup-{mode}")
                    print(f"[{precision}] warm-up {mode}: {time.perf_counter() - t0:.1f}s", flush=True)
            results[precision] = {m: [] for m in MODES}
            for rep in range(args.reps):
                order = MODES[rep % 3 :] + MODES[: rep % 3]
                for mode in order:
                    times = run_mode(bench, mode, precision, n_steps, f"{mode}-{rep}")[args.warmup_steps :]
                    results[precision][mode].append(bench.tokens_per_step * len(times) / sum(times))
                if bench.logged_mfu:
                    logged_mfu[precision] = statistics.median(bench.logged_mfu)
                print(
                    f"[{precision}] rep {rep + 1}/{args.reps}: "
                    + " | ".join(f"{m} {results[precision][m][-1]:,.0f} tok/s" for m in MODES),
                    flush=True,
                )

        peak = {
            p: peak_flops(torch.cuda.get_device_name(), p) if args.device == "cuda" else None for p in args.precision
        }
        medians = {p: {m: statistics.median(v) for m, v in r.items()} for p, r in results.items()}
        print(f"\n{'precision':<11} {'mode':<8} {'tokens/s':>10}  {'MFU':>6}  per repetition")
        for p, r in results.items():
            for m in MODES:
                u = mfu(fpt, medians[p][m], peak[p])
                print(
                    f"{p:<11} {m:<8} {medians[p][m]:>10,.0f}  {'n/a' if math.isnan(u) else f'{u:.1%}':>6}  "
                    + " ".join(f"{v:,.0f}" for v in r[m])
                )
            if p in logged_mfu:
                print(f"{p:<11} trainer metrics.csv median mfu: {logged_mfu[p]:.1%}")
        print(f"# wall time {time.perf_counter() - t_start:.0f}s")
        print("\n".join(format_ratios(medians)))
    finally:
        if not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
