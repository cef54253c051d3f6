"""One training run: scratch, initialised from a (grown) checkpoint, or resumed — and the code says which.

    stacking train CONFIG.yaml [--field value …]

Budgets are in tokens. ``global_batch_tokens = micro_batch_size × seq_len × grad_accum × world_size``; every token
budget (``max_tokens``, ``save_at_tokens``, ``val_every_tokens``, …) must be a multiple of it, so checkpoints land at
exactly the requested token counts. The run dir holds ``config.yaml``, ``model.json``, ``metrics.csv``,
``summary.json``, ``checkpoints/tokens-…/`` (litgpt checkpoint dirs) and ``last.ckpt`` (exact resume); see
docs/formats.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from litgpt import Config

from stacking import models
from stacking.data import DataError, TokenDataModule, read_meta, val_window_offsets, windows_at
from stacking.fsutil import atomic_dir, write_json
from stacking.module import GPTModule, NaNLossError, mfu, peak_flops

METRIC_COLUMNS = ["step", "tokens", "flops", "train_loss", "val_loss", "lr", "tokens_per_s", "mfu"]
"""metrics.csv columns; tokens_per_s and mfu are wall-clock measurements, everything else is deterministic."""


@dataclass
class RunConfig:
    """One training run. Budgets are in tokens; FLOPs are derived."""

    out_dir: str = "runs/default"
    """Run directory (config.yaml, metrics.csv, summary.json, checkpoints/, last.ckpt)."""
    data_dir: str = "data/stdlib-bpe4096"
    """Token dataset dir written by `stacking data`."""
    model: str = "tiny-d4"
    """Model preset: tiny-d{N}, tiny-L{L}-D{D}, stack-410m|1.1b|3b|7b[-base], or a litgpt model name."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """litgpt Config fields to override on the preset, e.g. {n_layer: 2}."""
    seed: int = 0
    """Seed for the init and the data order."""
    init: str = "tinyllama"
    """Weight init of a run that does not start from a checkpoint: tinyllama (N(0, √(2/5d)), output projections
    N(0, 1/(√d·L)); our default) | torch_default (PyTorch's module defaults: embeddings N(0, 1), Linear
    Kaiming-uniform; what the paper's released code used for its scratch baselines and bases)."""
    optimizer_init: str = "fresh"
    """With init_from: fresh (new AdamW moments: the paper's policy) | carry (the moments in
    init_from/optimizer_state.pt, which a grow step with carry mapped from the base's state at d)."""
    data_stream: str = "continue"
    """With init_from: continue (the run's first micro-batch is the one after the parent's last, so a grown run
    sees fresh data, as scratch does) | replay (restart the stream at micro-batch 0: re-read what the base saw)."""
    seq_len: int = 128
    """Tokens per training sequence (the model's block_size)."""
    micro_batch_size: int = 16
    """Sequences per forward/backward on one device."""
    global_batch_tokens: int = 2048
    """Tokens per optimizer step over all devices; = micro_batch_size × seq_len × grad_accum × world_size."""
    max_tokens: int = 1_048_576
    """Tokens to train this run for (not counting a parent's)."""
    lr: float = 6e-3
    """Peak learning rate (6e-3 and 2048-token batches: the best of a small sweep on tiny CPU models,
    docs/RESULTS.md; larger models want less, e.g. the paper's 3e-4 at 1.1B)."""
    min_lr: float = 6e-4
    """Final learning rate of the cosine / WSD decay."""
    warmup_tokens: int = 32768
    """Linear warmup length in tokens (a grown run re-warms, as in the paper)."""
    schedule: str = "cosine"
    """LR schedule after warmup: cosine | wsd | constant."""
    decay_tokens: int = 0
    """WSD only: length of the final linear decay in tokens."""
    weight_decay: float = 0.1
    """AdamW weight decay (matrices only)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 = off)."""
    val_every_tokens: int = 131072
    """Evaluate on the fixed validation set every this many tokens (and at the start and the end)."""
    val_tokens: int = 32768
    """Size of the fixed validation set (first tokens of val.bin)."""
    log_every_tokens: int = 0
    """Write a metrics row every this many tokens (0 = every optimizer step)."""
    save_at_tokens: list[int] = field(default_factory=list)
    """Token counts at which to write litgpt checkpoint dirs (checkpoints/tokens-…); the end is always saved."""
    checkpoint_every_tokens: int = 0
    """Refresh last.ckpt (exact resume) every this many tokens (0 = at every evaluation)."""
    init_from: str | None = None
    """Checkpoint dir (e.g. written by `stacking grow`) to initialise the weights from; not a resume. The model is
    built from the checkpoint's model_config.yaml (it must have the shape of ``model``)."""
    save_state_at_tokens: list[int] = field(default_factory=list)
    """Token counts at which to write the full training state (weights, AdamW moments, loops) to
    states/tokens-….ckpt: the branch points of WSD cooldown runs (branch_from)."""
    branch_from: str | None = None
    """A full-state file (another run's states/tokens-….ckpt) to continue from with this run's schedule: a WSD
    cooldown branch. Its tokens, FLOPs, data position and optimizer state carry on; metrics.csv starts there."""
    train_new_only: bool = True
    """With a llama_pro checkpoint that lists trainable params: train only the new blocks."""
    precision: str = "32-true"
    """Lightning precision: 32-true | bf16-mixed | bf16-true."""
    compile: bool = False
    """torch.compile the training loss (model forward + cross-entropy); checkpoint keys stay litgpt's."""
    chunked_loss: bool = False
    """Run the LM head and cross-entropy in chunks of 128 positions (same loss; no full fp32 logits tensor)."""
    accelerator: str = "auto"
    """cpu | gpu | auto."""
    devices: int | str = 1
    """Devices per node (int or 'auto')."""
    num_nodes: int = 1
    """Nodes (SLURM sets the rest of the environment)."""
    strategy: str = "auto"
    """auto | ddp | fsdp."""
    logger: str = "csv"
    """Extra logger besides metrics.csv: csv (none extra) | tensorboard | wandb."""
    progress_bar: bool = True
    """Show Lightning's progress bar."""


class RunError(ValueError):
    """A run config or run dir that cannot be used; raised before any compute."""


class CheckpointError(RunError):
    """A missing, truncated or corrupt checkpoint (never silently replaced by a fresh start)."""


# --------------------------------------------------------------------------------------------------------------
# Config helpers


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    return asdict(cfg)


def data_id(data_dir: str | Path) -> str:
    """The identity of a dataset dir by content, not by path: a hash of its meta.json without the source paths
    (token counts, tokenizer, vocab, the sha256 of every source file). Falls back to the path when there is no
    meta.json (the run will then fail with a DataError before compute)."""
    path = Path(data_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return str(data_dir)
    meta.pop("sources", None)
    return "data:" + hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(cfg: RunConfig) -> str:
    """Hash of everything that determines the run's numbers (out_dir and display options excluded). The data
    dir enters by content (`data_id`), so the same run in two checkouts or on two mounts has one identity."""
    d = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "progress_bar", "logger")}
    d["data_dir"] = data_id(cfg.data_dir)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_config(path: str | Path, **overrides: Any) -> RunConfig:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    raw.update(overrides)
    unknown = sorted(set(raw) - {f.name for f in fields(RunConfig)})
    if unknown:
        raise RunError(f"{path}: unknown RunConfig fields {unknown}")
    return RunConfig(**raw)


def resolve_model(cfg: RunConfig) -> tuple[Config, dict]:
    meta = read_meta(cfg.data_dir)
    mc = models.model_config(cfg.model, vocab_size=meta["vocab_size"], block_size=cfg.seq_len,
                             **cfg.model_overrides)
    return mc, meta


def validate(cfg: RunConfig, world_size: int = 1) -> None:
    """Every check that can fail before compute, each a one-line message naming the field."""
    if cfg.schedule not in ("cosine", "wsd", "constant"):
        raise RunError(f"schedule must be cosine, wsd or constant, got {cfg.schedule!r}")
    if cfg.strategy not in ("auto", "ddp", "fsdp"):
        raise RunError(f"strategy must be auto, ddp or fsdp, got {cfg.strategy!r}")
    if cfg.logger not in ("csv", "tensorboard", "wandb"):
        raise RunError(f"logger must be csv, tensorboard or wandb, got {cfg.logger!r}")
    if cfg.init not in ("tinyllama", "torch_default"):
        raise RunError(f"init must be tinyllama or torch_default, got {cfg.init!r}")
    if cfg.optimizer_init not in ("fresh", "carry"):
        raise RunError(f"optimizer_init must be fresh or carry, got {cfg.optimizer_init!r}")
    if cfg.optimizer_init == "carry" and not cfg.init_from:
        raise RunError("optimizer_init: carry needs init_from (a grown checkpoint dir with optimizer_state.pt)")
    if cfg.data_stream not in ("continue", "replay"):
        raise RunError(f"data_stream must be continue or replay, got {cfg.data_stream!r}")
    for name in ("seq_len", "micro_batch_size", "global_batch_tokens", "max_tokens", "val_tokens"):
        if getattr(cfg, name) <= 0:
            raise RunError(f"{name} must be positive, got {getattr(cfg, name)}")
    per_pass = cfg.micro_batch_size * cfg.seq_len * world_size
    if cfg.global_batch_tokens % per_pass:
        raise RunError(f"global_batch_tokens {cfg.global_batch_tokens} is not divisible by micro_batch_size × seq_len "
                       f"× world_size = {cfg.micro_batch_size} × {cfg.seq_len} × {world_size} = {per_pass}")
    gb = cfg.global_batch_tokens
    for name in ("max_tokens", "val_every_tokens", "log_every_tokens", "checkpoint_every_tokens", "warmup_tokens",
                 "decay_tokens"):
        v = getattr(cfg, name)
        if v < 0 or (name != "warmup_tokens" and name != "decay_tokens" and v % gb):
            raise RunError(f"{name} = {v} must be a non-negative multiple of global_batch_tokens = {gb}")
    if cfg.val_every_tokens == 0:
        raise RunError("val_every_tokens must be positive")
    for t in cfg.save_at_tokens:
        if t > cfg.max_tokens:
            raise RunError(f"save_at_tokens entry {t} is beyond max_tokens = {cfg.max_tokens}")
        if t <= 0 or t % gb:
            raise RunError(f"save_at_tokens entry {t} must be a positive multiple of global_batch_tokens = {gb}")
    for t in cfg.save_state_at_tokens:
        if not 0 < t <= cfg.max_tokens or t % gb:
            raise RunError(f"save_state_at_tokens entry {t} must be a positive multiple of global_batch_tokens = "
                           f"{gb} up to max_tokens = {cfg.max_tokens}")
    if cfg.schedule == "wsd" and not 0 < cfg.decay_tokens <= cfg.max_tokens:
        raise RunError(f"wsd schedule needs 0 < decay_tokens <= max_tokens, got {cfg.decay_tokens}")
    if not 0 <= cfg.min_lr <= cfg.lr:
        raise RunError(f"need 0 <= min_lr <= lr, got min_lr={cfg.min_lr} lr={cfg.lr}")


# --------------------------------------------------------------------------------------------------------------
# Checkpoints


def save_litgpt_checkpoint(path: Path, state_dict: dict, model_config: Config, meta: dict) -> None:
    with atomic_dir(path) as tmp:
        torch.save(state_dict, tmp / "lit_model.pth")
        (tmp / "model_config.yaml").write_text(yaml.safe_dump(asdict(model_config), sort_keys=False))
        (tmp / "stacking_meta.json").write_text(json.dumps(meta, indent=1))


def load_litgpt_checkpoint(ckpt_dir: str | Path) -> tuple[dict, Config, dict, dict | None]:
    """(state_dict, Config, stacking_meta, growth) of a checkpoint dir, with a clear error for every defect."""
    d = Path(ckpt_dir)
    for name in ("lit_model.pth", "model_config.yaml"):
        if not (d / name).is_file():
            raise CheckpointError(f"checkpoint dir {str(d)!r} has no {name}")
    try:
        sd = torch.load(d / "lit_model.pth", map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises RuntimeError / pickle errors / zipfile errors for truncated files
        raise CheckpointError(f"{d / 'lit_model.pth'} is truncated or corrupt ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]})") from None
    cfg_fields = yaml.safe_load((d / "model_config.yaml").read_text())
    mc = Config(**{k: v for k, v in cfg_fields.items() if k in Config.__dataclass_fields__})
    meta = json.loads((d / "stacking_meta.json").read_text()) if (d / "stacking_meta.json").exists() else {}
    growth = json.loads((d / "growth.json").read_text()) if (d / "growth.json").exists() else None
    return sd, mc, meta, growth


CARRY_FILE = "optimizer_state.pt"
"""In a grown checkpoint dir: AdamW moments keyed by the grown model's parameter names (grown.optimizer: carry)."""

SHAPE_FIELDS = ("n_layer", "n_embd", "n_head", "n_query_groups", "head_size", "intermediate_size",
                "padded_vocab_size", "bias", "mlp_class_name", "norm_class_name")
"""Config fields that decide parameter shapes: an init_from checkpoint must agree with the run's model on all."""


def data_stream(cfg: RunConfig, parent_meta: dict) -> dict:
    """Where this run's training stream starts: {seed, offset_micro_batches} (global micro-batches before it).

    A run initialised from a checkpoint continues the stream of the run that wrote it (``data_stream:
    continue``): grown runs see data their base never saw, and chains continue likewise. The parent's
    micro-batches were drawn with its seed, micro_batch_size and seq_len, so those must match this run's.
    """
    if not cfg.init_from or cfg.data_stream == "replay":
        return {"seed": cfg.seed, "offset_micro_batches": 0}
    parent = parent_meta.get("data") or {  # checkpoints written before the stream was recorded
        "seed": parent_meta.get("seed", cfg.seed), "micro_batch_size": cfg.micro_batch_size, "seq_len": cfg.seq_len,
        "micro_batches": int(parent_meta.get("tokens", 0)) // (cfg.micro_batch_size * cfg.seq_len)}
    for name in ("micro_batch_size", "seq_len"):
        if parent[name] != getattr(cfg, name):
            raise RunError(f"data_stream: continue needs the parent's {name} = {parent[name]} (this run has "
                           f"{getattr(cfg, name)}); match it or set data_stream: replay")
    return {"seed": int(parent["seed"]), "offset_micro_batches": int(parent["micro_batches"])}


def stream_start(stream: dict, cfg: RunConfig, world_size: int) -> int:
    """The per-rank micro-batch index at which this run's stream starts (rank r reads global index i·world + r)."""
    offset = stream["offset_micro_batches"]
    if offset % world_size:
        raise RunError(f"the parent's stream position ({offset} micro-batches) is not divisible by world size "
                       f"{world_size}; use a device count that divides it or data_stream: replay")
    return offset // world_size


def _check_lightning_ckpt(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return ckpt["stacking"]
    except Exception as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                              "delete it to restart this run from scratch") from None


# --------------------------------------------------------------------------------------------------------------
# The callback that does the bookkeeping at optimizer-step boundaries


class RunBookkeeping(Callback):
    """metrics.csv rows, validation, exact-token checkpoints, last.ckpt, NaN stop — all on step boundaries."""

    def __init__(self, cfg: RunConfig, run_dir: Path, model_config: Config, log: logging.Logger, stream: dict,
                 wall_offset: float):
        self.cfg, self.run_dir, self.model_config, self.runlog = cfg, run_dir, model_config, log
        self.stream = stream
        self.wall_offset = wall_offset
        self.t_start = time.perf_counter()
        self.peak: float | None = None
        self.best_val = math.inf
        self.last_val = math.nan
        self.extra_logger = None

    # wall time over all sessions of this run (resumes included)
    def wall(self) -> float:
        return self.wall_offset + time.perf_counter() - self.t_start

    def on_train_start(self, trainer, pl_module: GPTModule):
        self.t_last, self.tokens_last = time.perf_counter(), pl_module.tokens
        self.train_time_s, self.train_tokens = 0.0, 0  # this session's training steps only (no eval, no ckpt)
        self.seen_step = trainer.global_step
        # The LR of the next step by this run's schedule: after a branch_from restore the optimizer still holds the
        # main run's LR, which a cooldown branch must not use for its first decay step.
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = pl_module.lr_at_step(trainer.global_step)
        if trainer.strategy.root_device.type == "cuda":
            self.peak = peak_flops(torch.cuda.get_device_name(trainer.strategy.root_device), self.cfg.precision)
        else:
            self.peak = peak_flops("cpu", self.cfg.precision)
        if trainer.global_step == 0:  # the starting point of the curve (after growth, for a grown run)
            self._row(trainer, pl_module, train_loss=None, val_loss=self._validate(pl_module), tps=None)

    def _validate(self, pl_module: GPTModule) -> float:
        v = pl_module.evaluate()
        if not math.isfinite(v):
            raise NaNLossError(f"nan at tokens={pl_module.tokens}")
        self.best_val, self.last_val = min(self.best_val, v), v
        return v

    def _row(self, trainer, pl_module, *, train_loss, val_loss, tps):
        row = {"step": trainer.global_step, "tokens": pl_module.tokens, "flops": pl_module.flops,
               "train_loss": train_loss, "val_loss": val_loss, "lr": pl_module.lr_at_step(trainer.global_step - 1) if trainer.global_step else None,
               "tokens_per_s": tps,
               "mfu": mfu(pl_module.flops_per_token, tps, self.peak) if tps and self.peak else None}
        if trainer.is_global_zero:
            with open(self.run_dir / "metrics.csv", "a", newline="") as f:
                csv.DictWriter(f, METRIC_COLUMNS).writerow({k: ("" if v is None else v) for k, v in row.items()})
            if self.extra_logger is not None:
                self.extra_logger.log_metrics({k: v for k, v in row.items() if v is not None and k != "step"},
                                              step=row["step"])

    def on_train_batch_end(self, trainer, pl_module: GPTModule, outputs, batch, batch_idx):
        if trainer.global_step == self.seen_step:  # still accumulating gradients
            return
        self.seen_step = trainer.global_step
        cfg, tokens = self.cfg, pl_module.tokens
        log_every = cfg.log_every_tokens or cfg.global_batch_tokens
        is_end = tokens >= cfg.max_tokens
        do_val = tokens % cfg.val_every_tokens == 0 or is_end
        if tokens % log_every and not do_val:
            return
        train_loss = pl_module.pop_train_loss()
        if not math.isfinite(train_loss):
            raise NaNLossError(f"nan at tokens={tokens}")
        now = time.perf_counter()
        tps = (tokens - self.tokens_last) / max(now - self.t_last, 1e-9)
        self.train_time_s += now - self.t_last
        self.train_tokens += tokens - self.tokens_last
        val = self._validate(pl_module) if do_val else None
        self._row(trainer, pl_module, train_loss=train_loss, val_loss=val, tps=tps)
        pl_module.log_dict({"tokens": float(tokens), "loss": train_loss}, prog_bar=True, logger=False)
        if tokens in cfg.save_at_tokens or is_end:
            self.save_exact(trainer, pl_module)
        if tokens in cfg.save_state_at_tokens:
            self.save_state(trainer, tokens)
        ck_every = cfg.checkpoint_every_tokens or cfg.val_every_tokens
        if tokens % ck_every == 0 or is_end:
            self.save_last(trainer, pl_module)
        self.t_last, self.tokens_last = time.perf_counter(), tokens  # eval/ckpt time is not training time

    def save_exact(self, trainer, pl_module: GPTModule):
        sd = {k.removeprefix("model."): v for k, v in trainer.strategy.lightning_module_state_dict().items()}
        if trainer.is_global_zero:
            tokens = pl_module.tokens
            c = self.cfg
            data = {"seed": self.stream["seed"], "micro_batch_size": c.micro_batch_size, "seq_len": c.seq_len,
                    "micro_batches": self.stream["offset_micro_batches"] + tokens // (c.micro_batch_size * c.seq_len)}
            meta = {"tokens": tokens, "flops": pl_module.flops, "config_hash": config_hash(c),
                    "run_dir": str(self.run_dir), "model": c.model, "seed": c.seed, "data": data}
            path = self.run_dir / "checkpoints" / f"tokens-{tokens:012d}"
            save_litgpt_checkpoint(path, {k: v.detach().cpu() for k, v in sd.items()}, self.model_config, meta)
            self.runlog.info(f"saved checkpoint {path} (tokens={tokens:,}, flops={pl_module.flops:.4g})")

    def save_last(self, trainer, pl_module):
        self._save_full(trainer, self.run_dir / "last.ckpt")

    def save_state(self, trainer, tokens: int):
        """The full training state at ``tokens``: a branch point for cooldown runs (``branch_from``)."""
        path = self.run_dir / "states" / f"tokens-{tokens:012d}.ckpt"
        if trainer.is_global_zero:
            path.parent.mkdir(exist_ok=True)
        self._save_full(trainer, path)
        self.runlog.info(f"saved training state {path} (tokens={tokens:,})")

    def _save_full(self, trainer, path: Path):
        tmp = path.with_name(path.name + ".tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # full state: optimizer + loops, for exact resume
        if trainer.is_global_zero:
            os.replace(tmp, path)

    def on_train_end(self, trainer, pl_module: GPTModule):
        # A cheap fingerprint of the weights on every rank: under DDP they must be identical (summary.json shows it).
        with torch.no_grad():
            fp = torch.stack([sum(p.double().sum() for p in pl_module.model.parameters()),
                              sum((p.double() ** 2).sum() for p in pl_module.model.parameters())])
        self.rank_fingerprints = trainer.strategy.all_gather(fp.to(pl_module.device)).reshape(-1, 2).tolist()

    def on_save_checkpoint(self, trainer, pl_module: GPTModule, checkpoint):
        checkpoint["stacking"] = {"tokens": pl_module.tokens, "flops": pl_module.flops, "wall_time_s": self.wall(),
                                  "best_val_loss": self.best_val, "last_val_loss": self.last_val,
                                  "config_hash": config_hash(self.cfg)}


class _Bar(TQDMProgressBar):
    """Lightning's bar, with a total: the stream is endless, the run stops at max_steps."""

    @property
    def total_train_batches(self):
        return self.trainer.max_steps * self.trainer.accumulate_grad_batches


# --------------------------------------------------------------------------------------------------------------
# The run


def rank_zero() -> bool:
    """Whether this process is global rank 0 (from the launcher's environment; before the Trainer exists)."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def _logger(run_dir: Path) -> logging.Logger:
    log = logging.getLogger(f"stacking.run.{run_dir}")
    log.setLevel(logging.INFO)
    log.propagate = False
    from lightning.pytorch.utilities import rank_zero_only  # rank from the launcher's env (RANK, SLURM_PROCID, …)

    if not log.handlers and rank_zero_only.rank != 0:
        log.addHandler(logging.NullHandler())  # other ranks of a multi-process run stay quiet
    if not log.handlers:
        fmt = logging.Formatter("[train] %(message)s")
        for h in (logging.StreamHandler(sys.stderr), logging.FileHandler(run_dir / "train.log")):
            h.setFormatter(fmt)
            log.addHandler(h)
    return log


def _strategy(cfg: RunConfig):
    if cfg.strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy
        from litgpt.model import Block

        return FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full", sharding_strategy="FULL_SHARD")
    return cfg.strategy


def run(cfg: RunConfig) -> dict:
    """Train one run to ``max_tokens`` (or resume it) and return its summary. Raises RunError/DataError early."""
    validate(cfg)
    model_config, data_meta = resolve_model(cfg)
    run_dir = Path(cfg.out_dir)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        prev = json.loads(summary_path.read_text())
        if prev.get("status") == "done" and prev.get("config_hash") == config_hash(cfg):
            print(f"[train] {run_dir} is already done (final val loss {prev['final_val_loss']:.4f}); skipping",
                  file=sys.stderr)
            return prev
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        old = yaml.safe_load(cfg_path.read_text())
        old_hash = config_hash(RunConfig(**{k: v for k, v in old.items() if k in RunConfig.__dataclass_fields__}))
        if old_hash != config_hash(cfg):
            raise RunError(f"run dir {str(run_dir)!r} holds a run with a different config (hash {old_hash} vs "
                           f"{config_hash(cfg)}); choose another out_dir or delete it")

    # Resume (own last.ckpt) takes precedence over branch_from and init_from; all are checked before any compute.
    last = run_dir / "last.ckpt"
    resume_from = last if last.exists() else None
    if resume_from is None and cfg.branch_from:
        resume_from = Path(cfg.branch_from)
        if not resume_from.is_file():
            raise CheckpointError(f"branch_from {cfg.branch_from!r} does not exist (the main run writes it at one of "
                                  "its save_state_at_tokens)")
    resume_state = _check_lightning_ckpt(resume_from) if resume_from else None
    init_sd, growth, flops_offset, parent_meta = None, None, 0.0, {}
    if cfg.init_from:
        init_sd, init_cfg, parent_meta, growth = load_litgpt_checkpoint(cfg.init_from)
        mismatch = [f for f in SHAPE_FIELDS if getattr(init_cfg, f) != getattr(model_config, f)]
        if mismatch:
            raise CheckpointError(
                f"init_from {cfg.init_from!r} has a different shape than model {cfg.model!r} in "
                + ", ".join(f"{f} ({getattr(init_cfg, f)} vs {getattr(model_config, f)})" for f in mismatch))
        # The checkpoint's own config (e.g. the norm_eps an exact width growth needs), at this run's seq_len.
        model_config = Config(**{**asdict(init_cfg), "block_size": cfg.seq_len})
        flops_offset = float(parent_meta.get("flops", 0.0)) + float((growth or {}).get("extra_flops", 0.0) or 0.0)
        if cfg.optimizer_init == "carry" and not (Path(cfg.init_from) / CARRY_FILE).is_file():
            raise CheckpointError(f"optimizer_init: carry, but {cfg.init_from!r} has no {CARRY_FILE} (grow with "
                                  "grown.optimizer: carry, or use optimizer_init: fresh)")
    stream = data_stream(cfg, parent_meta)

    desc = models.describe(model_config, cfg.seq_len)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(run_dir)
    cfg_path.write_text(yaml.safe_dump(config_dict(cfg), sort_keys=False))
    write_json(run_dir / "model.json", desc)
    log.info(models.format_description(desc))
    total_flops = flops_offset + cfg.max_tokens * desc["flops_per_token"]
    log.info(f"budget: {cfg.max_tokens:,} tokens ({cfg.max_tokens / desc['params_total']:.1f} tokens/param), "
             f"{total_flops:.4g} FLOPs in total (offset {flops_offset:.4g}); data {cfg.data_dir} "
             f"({data_meta['train_tokens']:,} train tokens)")

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = GPTModule(cfg, model_config, desc["flops_per_token"], flops_offset, growth)
    if init_sd is not None and resume_state is None:
        try:
            module.model.load_state_dict(init_sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"init_from {cfg.init_from!r}: keys/shapes do not match the model "
                                  f"({str(e).splitlines()[0][:160]})") from None
        module.attach_growth()
        if cfg.optimizer_init == "carry":
            module.carry_state = torch.load(Path(cfg.init_from) / CARRY_FILE, map_location="cpu", weights_only=True)
            log.info(f"optimizer: AdamW moments carried from {Path(cfg.init_from) / CARRY_FILE}")
        log.info(f"initialised from {cfg.init_from} (parent tokens={parent_meta.get('tokens', '?')}, "
                 f"flops offset={flops_offset:.4g}" + (f", growth op={growth['op']}" if growth else "") + ")")
    elif init_sd is not None:
        module.attach_growth()  # weights come from last.ckpt; mask hooks and freezing still apply

    dm = TokenDataModule(cfg.data_dir, cfg.seq_len, cfg.micro_batch_size, stream["seed"], cfg.val_tokens)
    offsets = val_window_offsets(cfg.data_dir, cfg.seq_len, cfg.val_tokens)  # read val.bin's layout once
    module.val_set = windows_at(cfg.data_dir, offsets, cfg.seq_len)
    if rank_zero():  # which validation windows every evaluation of this run reads (the same for the whole data dir)
        write_json(run_dir / "val_windows.json", {"data_id": data_id(cfg.data_dir), "seq_len": cfg.seq_len,
                                                  "n_windows": len(offsets), "offsets": offsets.tolist()})
    book = RunBookkeeping(cfg, run_dir, model_config, log, stream,
                          wall_offset=resume_state["wall_time_s"] if resume_state and resume_from == last else 0.0)
    callbacks: list[Callback] = [book]
    if cfg.progress_bar:
        total_micro = cfg.max_tokens // (cfg.micro_batch_size * cfg.seq_len)
        callbacks.append(_Bar(refresh_rate=max(1, total_micro // 200)))
    trainer = L.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=_strategy(cfg),
        precision=cfg.precision, max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks,
        gradient_clip_val=cfg.grad_clip or None, use_distributed_sampler=False, default_root_dir=str(run_dir),
        max_epochs=-1,
    )
    validate(cfg, trainer.world_size)
    accum = cfg.global_batch_tokens // (cfg.micro_batch_size * cfg.seq_len * trainer.world_size)
    trainer.fit_loop.epoch_loop.max_steps = cfg.max_tokens // cfg.global_batch_tokens
    trainer.accumulate_grad_batches = accum
    if cfg.logger != "csv" and trainer.is_global_zero:
        book.extra_logger = _extra_logger(cfg, run_dir)

    start = stream_start(stream, cfg, trainer.world_size)
    if resume_state is not None:
        step = resume_state["tokens"] // cfg.global_batch_tokens
        dm.start_micro_batch = start + step * accum
        book.best_val, book.last_val = resume_state["best_val_loss"], resume_state["last_val_loss"]
        branching = resume_from != last
        if trainer.is_global_zero:  # one writer under DDP
            if branching:  # a cooldown branch: its own metrics.csv, from the branch point on
                with open(run_dir / "metrics.csv", "w", newline="") as f:
                    csv.writer(f).writerow(METRIC_COLUMNS)
            else:
                _truncate_metrics(run_dir / "metrics.csv", step)
        log.info(f"{'branching' if branching else 'resuming'} from {resume_from} at "
                 f"tokens={resume_state['tokens']:,} (step {step})")
    else:
        dm.start_micro_batch = start
        if trainer.is_global_zero:
            with open(run_dir / "metrics.csv", "w", newline="") as f:
                csv.writer(f).writerow(METRIC_COLUMNS)
        if not cfg.init_from:
            log.info("training from scratch")
        elif stream["offset_micro_batches"]:
            log.info(f"data: continuing the parent's stream after {stream['offset_micro_batches']:,} micro-batches "
                     f"({stream['offset_micro_batches'] * cfg.micro_batch_size * cfg.seq_len:,} tokens, "
                     f"seed {stream['seed']})")
    status = "running"
    write_json(summary_path, _summary(cfg, desc, flops_offset, book, module, status))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_state else None,
                    weights_only=True)
        status = "done"
    except NaNLossError as e:
        status = f"failed: {e}"
        log.error(f"run stopped: {status}")
    summary = _summary(cfg, desc, flops_offset, book, module, status)
    if trainer.is_global_zero:
        write_json(summary_path, summary)
        log.info(f"{status}: final val loss {summary['final_val_loss']:.4f}, best {summary['best_val_loss']:.4f}, "
                 f"{summary['tokens']:,} tokens, {summary['flops']:.4g} FLOPs, {summary['wall_time_s']:.1f}s")
    return summary


def _summary(cfg, desc, flops_offset, book: RunBookkeeping, module: GPTModule, status: str) -> dict:
    wall = book.wall()
    tokens = module.tokens
    train_time = getattr(book, "train_time_s", 0.0)
    train_tps = book.train_tokens / train_time if train_time > 0 else None
    return {
        "status": status, "config_hash": config_hash(cfg), "model": cfg.model, "seed": cfg.seed,
        "final_val_loss": book.last_val, "best_val_loss": book.best_val, "tokens": tokens,
        "flops": flops_offset + tokens * desc["flops_per_token"], "flops_offset": flops_offset,
        "params_total": desc["params_total"], "params_non_embedding": desc["params_non_embedding"],
        "flops_per_token": desc["flops_per_token"], "tokens_per_s": tokens / wall if wall > 0 else None,
        "train_tokens_per_s": train_tps,
        "mfu": mfu(desc["flops_per_token"], train_tps, book.peak) if train_tps and book.peak else None,
        "wall_time_s": wall, "init_from": cfg.init_from, "resumed": book.wall_offset > 0,
        "world_size": module.trainer.world_size if module._trainer else 1,
        "rank_weight_fingerprints": getattr(book, "rank_fingerprints", None),
    }


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows written after the checkpoint we resume from (they will be written again, identically)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)
    os.replace(tmp, path)


def _extra_logger(cfg: RunConfig, run_dir: Path):
    if cfg.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(str(run_dir), name="tb")
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(save_dir=str(run_dir), name=Path(cfg.out_dir).name)


__all__ = [
    "METRIC_COLUMNS",
    "CheckpointError",
    "DataError",
    "RunConfig",
    "RunError",
    "config_hash",
    "load_config",
    "load_litgpt_checkpoint",
    "run",
    "save_litgpt_checkpoint",
    "validate",
]
