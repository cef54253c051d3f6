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
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only  # the rank from the launcher's env (RANK, SLURM_PROCID, …)
from litgpt import Config

from stacking import models
from stacking.bookkeeping import ProgressBar, RunBookkeeping, close_logger, extra_logger, metric_columns
from stacking.checkpoint import CARRY_FILE, SHAPE_FIELDS, load_litgpt_checkpoint, read_run_state
from stacking.config import RunConfig, config_dict, config_hash, data_id, resolve_model, validate
from stacking.data import TokenDataModule, val_window_offsets, windows_at
from stacking.errors import CheckpointError, RunError
from stacking.fsutil import write_json
from stacking.module import GPTModule, NaNLossError, mfu


def data_stream(cfg: RunConfig, parent_meta: dict) -> dict:
    """Where this run's training stream starts: {seed, offset_micro_batches} (global micro-batches before it).

    A run initialised from a checkpoint continues the stream of the run that wrote it (``data_stream:
    continue``): grown runs see data their base never saw, and chains continue likewise. The parent's
    micro-batches were drawn with its seed, micro_batch_size and seq_len, so those must match this run's.
    """
    if not cfg.init_from or cfg.data_stream == "replay":
        return {"seed": cfg.seed, "offset_micro_batches": 0}
    parent = parent_meta.get("data") or {  # checkpoints written before the stream was recorded
        "seed": parent_meta.get("seed", cfg.seed),
        "micro_batch_size": cfg.micro_batch_size,
        "seq_len": cfg.seq_len,
        "micro_batches": int(parent_meta.get("tokens", 0)) // (cfg.micro_batch_size * cfg.seq_len),
    }
    for name in ("micro_batch_size", "seq_len"):
        if parent[name] != getattr(cfg, name):
            raise RunError(
                f"data_stream: continue needs the parent's {name} = {parent[name]} (this run has "
                f"{getattr(cfg, name)}); match it or set data_stream: replay"
            )
    return {"seed": int(parent["seed"]), "offset_micro_batches": int(parent["micro_batches"])}


def stream_start(stream: dict, cfg: RunConfig, world_size: int) -> int:
    """The per-rank micro-batch index at which this run's stream starts (rank r reads global index i·world + r)."""
    offset = stream["offset_micro_batches"]
    if offset % world_size:
        raise RunError(
            f"the parent's stream position ({offset} micro-batches) is not divisible by world size "
            f"{world_size}; use a device count that divides it or data_stream: replay"
        )
    return offset // world_size


def rank_zero() -> bool:
    """Whether this process is global rank 0 (from the launcher's environment; before the Trainer exists)."""
    return rank_zero_only.rank == 0


def _logger(run_dir: Path) -> logging.Logger:
    log = logging.getLogger(f"stacking.run.{run_dir}")
    log.setLevel(logging.INFO)
    log.propagate = False
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


@dataclass
class Resume:
    """Training state a run continues from: its own last.ckpt (a resume), or — a cooldown branch's first session —
    the main run's saved state at ``branch_from``. Weights, optimizer, counters and LR step all come from it."""

    path: Path
    state: dict
    """The checkpoint's ``stacking`` entry: tokens, flops, wall time, best/last val loss."""
    own: bool
    """The run's own last.ckpt (else: branching from the main run)."""


@dataclass
class Init:
    """Weights a run starts from (``init_from``: a litgpt checkpoint dir, often a grown one) and what they carry: the
    parent's FLOPs and stream position and, for a grown dir, its growth record. Counters and optimizer start fresh."""

    state_dict: dict
    model_config: Config
    """The checkpoint's own config (e.g. the norm_eps an exact width growth needs), at this run's seq_len."""
    parent_meta: dict
    growth: dict | None
    flops_offset: float
    """FLOPs spent before this run: the parent's, plus growth's own (G_learn's map training)."""


def run(cfg: RunConfig) -> dict:
    """Train one run to ``max_tokens`` (or resume it) and return its summary. Raises RunError/DataError early."""
    validate(cfg)
    model_config, data_meta = resolve_model(cfg)
    run_dir = Path(cfg.out_dir)
    if (done := _done_summary(cfg, run_dir)) is not None:
        return done
    _check_same_config(cfg, run_dir)
    # Resume (own last.ckpt) takes precedence over branch_from and init_from; all are checked before any compute.
    resume = _resume_point(cfg, run_dir)
    start_tokens = _start_tokens(cfg, resume)
    init = _init_from(cfg, model_config)
    model_config = init.model_config if init else model_config
    flops_offset = init.flops_offset if init else 0.0
    stream = data_stream(cfg, init.parent_meta if init else {})

    desc = models.describe(model_config, cfg.seq_len)
    log = _open_run_dir(cfg, run_dir, desc, data_meta, flops_offset)
    module = _build_module(cfg, model_config, desc, init, resume, log)
    dm = TokenDataModule(cfg.data_dir, cfg.seq_len, cfg.micro_batch_size, stream["seed"], cfg.val_tokens)
    _load_val_windows(cfg, run_dir, module)
    book = RunBookkeeping(
        cfg,
        run_dir,
        model_config,
        log,
        stream,
        wall_offset=resume.state["wall_time_s"] if resume and resume.own else 0.0,
    )
    for name, path in cfg.eval_data_dirs.items():  # more validation sets: val_loss_<name> (tokenizer checked)
        book.eval_sets[name] = windows_at(path, val_window_offsets(path, cfg.seq_len, cfg.val_tokens), cfg.seq_len)
    trainer, accum = _trainer(cfg, run_dir, book)
    _place_stream(cfg, run_dir, trainer, dm, book, stream, accum, resume, log)
    return _fit(cfg, trainer, module, dm, book, desc, flops_offset, start_tokens, resume, log)


def _done_summary(cfg: RunConfig, run_dir: Path) -> dict | None:
    """The summary of this exact run when it has already finished (the rerun is skipped), else None."""
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        prev = json.loads(summary_path.read_text())
        if prev.get("status") == "done" and prev.get("config_hash") == config_hash(cfg):
            print(
                f"[train] {run_dir} is already done (final val loss {prev['final_val_loss']:.4f}); skipping",
                file=sys.stderr,
            )
            return prev
    return None


def _check_same_config(cfg: RunConfig, run_dir: Path) -> None:
    """RunError when ``run_dir`` holds a run with another config (a resume must continue the same run)."""
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        old = yaml.safe_load(cfg_path.read_text())
        old_hash = config_hash(RunConfig(**{k: v for k, v in old.items() if k in RunConfig.__dataclass_fields__}))
        if old_hash != config_hash(cfg):
            raise RunError(
                f"run dir {str(run_dir)!r} holds a run with a different config (hash {old_hash} vs "
                f"{config_hash(cfg)}); choose another out_dir or delete it"
            )


def _resume_point(cfg: RunConfig, run_dir: Path) -> Resume | None:
    """The run's own last.ckpt, else its ``branch_from`` state (which must exist), else None: a fresh start."""
    last = run_dir / "last.ckpt"
    if last.exists():
        return Resume(last, read_run_state(last), own=True)
    if not cfg.branch_from:
        return None
    branch = Path(cfg.branch_from)
    if not branch.is_file():
        raise CheckpointError(
            f"branch_from {cfg.branch_from!r} does not exist (the main run writes it at one of "
            "its save_state_at_tokens)"
        )
    return Resume(branch, read_run_state(branch), own=False)


def _start_tokens(cfg: RunConfig, resume: Resume | None) -> int:
    """Where this run's own training began on its token counter: a cooldown branch starts at its branch point (its
    tokens count on from the main run's), every other run at 0. Throughput counts only the tokens trained here."""
    if not cfg.branch_from:
        return 0
    branch = Path(cfg.branch_from)
    if resume is not None and resume.path == branch:
        return resume.state["tokens"]
    if branch.is_file():  # resuming the branch's own last.ckpt
        return read_run_state(branch)["tokens"]
    return 0


def _init_from(cfg: RunConfig, model_config: Config) -> Init | None:
    """Read ``init_from`` (None without one) and check it fits this run: the model's shape, and the carried AdamW
    moments when ``optimizer_init: carry``."""
    if not cfg.init_from:
        return None
    init_sd, init_cfg, parent_meta, growth = load_litgpt_checkpoint(cfg.init_from)
    mismatch = [f for f in SHAPE_FIELDS if getattr(init_cfg, f) != getattr(model_config, f)]
    if mismatch:
        raise CheckpointError(
            f"init_from {cfg.init_from!r} has a different shape than model {cfg.model!r} in "
            + ", ".join(f"{f} ({getattr(init_cfg, f)} vs {getattr(model_config, f)})" for f in mismatch)
        )
    flops_offset = float(parent_meta.get("flops", 0.0)) + float((growth or {}).get("extra_flops", 0.0) or 0.0)
    if cfg.optimizer_init == "carry" and not (Path(cfg.init_from) / CARRY_FILE).is_file():
        raise CheckpointError(
            f"optimizer_init: carry, but {cfg.init_from!r} has no {CARRY_FILE} (grow with "
            "grown.optimizer: carry, or use optimizer_init: fresh)"
        )
    return Init(init_sd, Config(**{**asdict(init_cfg), "block_size": cfg.seq_len}), parent_meta, growth, flops_offset)


def _open_run_dir(cfg: RunConfig, run_dir: Path, desc: dict, data_meta: dict, flops_offset: float) -> logging.Logger:
    """Create the run dir, write config.yaml and model.json, and log the model and the budget: the run's log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_dict(cfg), sort_keys=False))
    write_json(run_dir / "model.json", desc)
    log.info(models.format_description(desc))
    total_flops = flops_offset + cfg.max_tokens * desc["flops_per_token"]
    log.info(
        f"budget: {cfg.max_tokens:,} tokens ({cfg.max_tokens / desc['params_total']:.1f} tokens/param), "
        f"{total_flops:.4g} FLOPs in total (offset {flops_offset:.4g}); data {cfg.data_dir} "
        f"({data_meta['train_tokens']:,} train tokens)"
    )
    return log


def _build_module(
    cfg: RunConfig, model_config: Config, desc: dict, init: Init | None, resume: Resume | None, log: logging.Logger
) -> GPTModule:
    """The seeded model; on a fresh start from ``init_from`` its weights (and carried AdamW moments) loaded. A
    resume takes the weights from its checkpoint later (trainer.fit); the growth hooks apply either way."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = GPTModule(
        cfg, model_config, desc["flops_per_token"], init.flops_offset if init else 0.0, init.growth if init else None
    )
    if init is None:
        return module
    if resume is not None:
        module.attach_growth()  # weights come from last.ckpt; mask hooks and freezing still apply
        return module
    try:
        module.model.load_state_dict(init.state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"init_from {cfg.init_from!r}: keys/shapes do not match the model ({str(e).splitlines()[0][:160]})"
        ) from None
    module.attach_growth()
    if cfg.optimizer_init == "carry":
        module.carry_state = torch.load(Path(cfg.init_from) / CARRY_FILE, map_location="cpu", weights_only=True)
        log.info(f"optimizer: AdamW moments carried from {Path(cfg.init_from) / CARRY_FILE}")
    log.info(
        f"initialised from {cfg.init_from} (parent tokens={init.parent_meta.get('tokens', '?')}, "
        f"flops offset={init.flops_offset:.4g}" + (f", growth op={init.growth['op']}" if init.growth else "") + ")"
    )
    return module


def _load_val_windows(cfg: RunConfig, run_dir: Path, module: GPTModule) -> None:
    """The validation windows every evaluation of this run reads (the same for the whole data dir), recorded in
    val_windows.json."""
    offsets = val_window_offsets(cfg.data_dir, cfg.seq_len, cfg.val_tokens)  # read val.bin's layout once
    module.val_set = windows_at(cfg.data_dir, offsets, cfg.seq_len)
    if rank_zero():
        write_json(
            run_dir / "val_windows.json",
            {
                "data_id": data_id(cfg.data_dir),
                "seq_len": cfg.seq_len,
                "n_windows": len(offsets),
                "offsets": offsets.tolist(),
            },
        )


def _trainer(cfg: RunConfig, run_dir: Path, book: RunBookkeeping) -> tuple[L.Trainer, int]:
    """The Lightning Trainer (steps and gradient accumulation from the token budgets at its world size) and the
    number of micro-batches accumulated per optimizer step."""
    callbacks: list[Callback] = [book]
    if cfg.progress_bar:
        total_micro = cfg.max_tokens // (cfg.micro_batch_size * cfg.seq_len)
        callbacks.append(ProgressBar(refresh_rate=max(1, total_micro // 200)))
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=_strategy(cfg),
        precision=cfg.precision,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
        gradient_clip_val=cfg.grad_clip or None,
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
        max_epochs=-1,
    )
    validate(cfg, trainer.world_size)
    accum = cfg.global_batch_tokens // (cfg.micro_batch_size * cfg.seq_len * trainer.world_size)
    trainer.fit_loop.epoch_loop.max_steps = cfg.max_tokens // cfg.global_batch_tokens
    trainer.accumulate_grad_batches = accum
    if cfg.logger != "csv" and trainer.is_global_zero:
        book.extra_logger = extra_logger(cfg, run_dir)
    return trainer, accum


def _place_stream(
    cfg: RunConfig,
    run_dir: Path,
    trainer: L.Trainer,
    dm: TokenDataModule,
    book: RunBookkeeping,
    stream: dict,
    accum: int,
    resume: Resume | None,
    log: logging.Logger,
) -> None:
    """Set the data stream's start (after the resumed step, or the parent's position) and metrics.csv to match: a
    resume drops rows after its checkpoint, a branch or a fresh start begins a new file."""
    start = stream_start(stream, cfg, trainer.world_size)
    if resume is not None:
        step = resume.state["tokens"] // cfg.global_batch_tokens
        dm.start_micro_batch = start + step * accum
        book.best_val, book.last_val = resume.state["best_val_loss"], resume.state["last_val_loss"]
        if trainer.is_global_zero:  # one writer under DDP
            if resume.own:
                _truncate_metrics(run_dir / "metrics.csv", step)
            else:  # a cooldown branch: its own metrics.csv, from the branch point on
                _new_metrics(cfg, run_dir)
        log.info(
            f"{'resuming' if resume.own else 'branching'} from {resume.path} at "
            f"tokens={resume.state['tokens']:,} (step {step})"
        )
        return
    dm.start_micro_batch = start
    if trainer.is_global_zero:
        _new_metrics(cfg, run_dir)
    if not cfg.init_from:
        log.info("training from scratch")
    elif stream["offset_micro_batches"]:
        log.info(
            f"data: continuing the parent's stream after {stream['offset_micro_batches']:,} micro-batches "
            f"({stream['offset_micro_batches'] * cfg.micro_batch_size * cfg.seq_len:,} tokens, "
            f"seed {stream['seed']})"
        )


def _fit(
    cfg: RunConfig,
    trainer: L.Trainer,
    module: GPTModule,
    dm: TokenDataModule,
    book: RunBookkeeping,
    desc: dict,
    flops_offset: float,
    start_tokens: int,
    resume: Resume | None,
    log: logging.Logger,
) -> dict:
    """Train (summary.json says "running" meanwhile) and write the final summary: "done", or "failed: …" on a NaN
    loss."""
    summary_path = Path(cfg.out_dir) / "summary.json"
    status = "running"
    write_json(summary_path, _summary(cfg, desc, flops_offset, book, module, status, start_tokens))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume.path) if resume else None, weights_only=True)
        status = "done"
    except NaNLossError as e:
        status = f"failed: {e}"
        log.error(f"run stopped: {status}")
    finally:
        if book.extra_logger is not None:
            close_logger(book.extra_logger, status)
    summary = _summary(cfg, desc, flops_offset, book, module, status, start_tokens)
    if trainer.is_global_zero:
        write_json(summary_path, summary)
        log.info(
            f"{status}: final val loss {summary['final_val_loss']:.4f}, best {summary['best_val_loss']:.4f}, "
            f"{summary['tokens']:,} tokens, {summary['flops']:.4g} FLOPs, {summary['wall_time_s']:.1f}s"
        )
    return summary


def _summary(cfg, desc, flops_offset, book: RunBookkeeping, module: GPTModule, status: str, start_tokens: int) -> dict:
    wall = book.wall()
    tokens = module.tokens
    trained = tokens - start_tokens  # this run's own tokens (a cooldown branch's counter starts at its branch point)
    train_time = getattr(book, "train_time_s", 0.0)
    train_tps = book.train_tokens / train_time if train_time > 0 else None
    return {
        "status": status,
        "config_hash": config_hash(cfg),
        "model": cfg.model,
        "seed": cfg.seed,
        "final_val_loss": book.last_val,
        "best_val_loss": book.best_val,
        "tokens": tokens,
        "flops": flops_offset + tokens * desc["flops_per_token"],
        "flops_offset": flops_offset,
        "params_total": desc["params_total"],
        "params_non_embedding": desc["params_non_embedding"],
        "flops_per_token": desc["flops_per_token"],
        "start_tokens": start_tokens,
        "tokens_per_s": trained / wall if wall > 0 else None,
        "train_tokens_per_s": train_tps,
        "mfu": mfu(desc["flops_per_token"], train_tps, book.peak) if train_tps and book.peak else None,
        "wall_time_s": wall,
        "init_from": cfg.init_from,
        "resumed": book.wall_offset > 0,
        "world_size": module.trainer.world_size if module._trainer else 1,
        "rank_weight_fingerprints": getattr(book, "rank_fingerprints", None),
        **{f"final_{col}": v for col, v in book.last_eval.items()},  # final_val_loss_<name>: eval_data_dirs
    }


def _new_metrics(cfg: RunConfig, run_dir: Path) -> None:
    """Start metrics.csv with its header row (the columns of this config)."""
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerow(metric_columns(cfg))


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


__all__ = ["data_stream", "rank_zero", "run", "stream_start"]
