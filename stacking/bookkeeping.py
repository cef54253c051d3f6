"""The callback that keeps a run's books at optimizer-step boundaries: metrics.csv rows (and the same rows to an
extra TensorBoard / W&B logger), validation, exact-token litgpt checkpoints, last.ckpt and full-state files, the NaN
stop; plus Lightning's progress bar with a total.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from litgpt import Config

from stacking.checkpoint import save_litgpt_checkpoint
from stacking.config import RunConfig, config_hash
from stacking.module import GPTModule, NaNLossError, mfu, peak_flops

METRIC_COLUMNS = ["step", "tokens", "flops", "train_loss", "val_loss", "lr", "tokens_per_s", "mfu"]
"""metrics.csv columns; tokens_per_s and mfu are wall-clock measurements, everything else is deterministic."""


def metric_columns(cfg: RunConfig) -> list[str]:
    """This run's metrics.csv columns: METRIC_COLUMNS, then ``val_loss_<name>`` per eval_data_dirs entry (sorted)."""
    return METRIC_COLUMNS + [f"val_loss_{name}" for name in sorted(cfg.eval_data_dirs)]


class RunBookkeeping(Callback):
    """metrics.csv rows, validation, exact-token checkpoints, last.ckpt, NaN stop — all on step boundaries."""

    def __init__(
        self, cfg: RunConfig, run_dir: Path, model_config: Config, log: logging.Logger, stream: dict, wall_offset: float
    ):
        self.cfg, self.run_dir, self.model_config, self.runlog = cfg, run_dir, model_config, log
        self.stream = stream
        self.wall_offset = wall_offset
        self.t_start = time.perf_counter()
        self.peak: float | None = None
        self.best_val = math.inf
        self.last_val = math.nan
        self.extra_logger = None
        self.eval_sets: dict[str, torch.Tensor] = {}  # name → windows of eval_data_dirs[name] (set by train.run)
        self.last_eval: dict[str, float] = {}  # val_loss_<name> → its last value

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
        main = pl_module.val_set
        try:  # the same evaluation (sharding, masks) on each extra set's windows
            for name in sorted(self.eval_sets):
                pl_module.val_set = self.eval_sets[name]
                self.last_eval[f"val_loss_{name}"] = pl_module.evaluate()
        finally:
            pl_module.val_set = main
        return v

    def _row(self, trainer, pl_module, *, train_loss, val_loss, tps):
        row = {
            "step": trainer.global_step,
            "tokens": pl_module.tokens,
            "flops": pl_module.flops,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": pl_module.lr_at_step(trainer.global_step - 1) if trainer.global_step else None,
            "tokens_per_s": tps,
            "mfu": mfu(pl_module.flops_per_token, tps, self.peak) if tps and self.peak else None,
        }
        if val_loss is not None:
            row.update(self.last_eval)
        if trainer.is_global_zero:
            with open(self.run_dir / "metrics.csv", "a", newline="") as f:
                csv.DictWriter(f, metric_columns(self.cfg)).writerow(
                    {k: ("" if v is None else v) for k, v in row.items()}
                )
            if self.extra_logger is not None:
                self.extra_logger.log_metrics(
                    {k: v for k, v in row.items() if v is not None and k != "step"}, step=row["step"]
                )

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
            data = {
                "seed": self.stream["seed"],
                "micro_batch_size": c.micro_batch_size,
                "seq_len": c.seq_len,
                "micro_batches": self.stream["offset_micro_batches"] + tokens // (c.micro_batch_size * c.seq_len),
            }
            meta = {
                "tokens": tokens,
                "flops": pl_module.flops,
                "config_hash": config_hash(c),
                "run_dir": str(self.run_dir),
                "model": c.model,
                "seed": c.seed,
                "data": data,
            }
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
            fp = torch.stack(
                [
                    sum(p.double().sum() for p in pl_module.model.parameters()),
                    sum((p.double() ** 2).sum() for p in pl_module.model.parameters()),
                ]
            )
        self.rank_fingerprints = trainer.strategy.all_gather(fp.to(pl_module.device)).reshape(-1, 2).tolist()

    def on_save_checkpoint(self, trainer, pl_module: GPTModule, checkpoint):
        checkpoint["stacking"] = {
            "tokens": pl_module.tokens,
            "flops": pl_module.flops,
            "wall_time_s": self.wall(),
            "best_val_loss": self.best_val,
            "last_val_loss": self.last_val,
            "config_hash": config_hash(self.cfg),
        }


class ProgressBar(TQDMProgressBar):
    """Lightning's bar, with a total: the stream is endless, the run stops at max_steps."""

    @property
    def total_train_batches(self):
        return self.trainer.max_steps * self.trainer.accumulate_grad_batches


def extra_logger(cfg: RunConfig, run_dir: Path):
    if cfg.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(str(run_dir), name="tb")
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(save_dir=str(run_dir), name=Path(cfg.out_dir).name)


def close_logger(logger, status: str) -> None:
    """Flush and close an extra logger. It is not the Trainer's logger (metrics.csv is written by `RunBookkeeping`), so
    Lightning never finalizes it: TensorBoard's writer would keep its last events queued, and a W&B run would stay
    open until the process exits (and a sweep's next run in the same process would log into it)."""
    logger.finalize("success" if status == "done" else "failed")
    finish = getattr(logger.experiment, "finish", None)  # wandb.Run; TensorBoard's SummaryWriter has none
    if finish is not None:
        finish(exit_code=0 if status == "done" else 1)
