"""The LightningModule around ``litgpt.GPT``: init, optimiser, LR schedule in tokens, token/FLOP counters,
fixed-set validation, G_random growth masks and frozen parameters (llama_pro ``train_new_only``).

Token and FLOP accounting lives here and nowhere else:
``tokens = global_step × global_batch_tokens`` (global across ranks) and
``flops = flops_offset + tokens × flops_per_token`` where ``flops_offset`` is the parent's cumulative FLOPs when the
run was initialised from a grown checkpoint.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.throughput import _CUDA_FLOPS
from litgpt import GPT, Config

from stacking.growth import masks
from stacking.growth.masks import ramp_value

# Dense peak FLOP/s per device (never the 2:4-sparse figure, which doubles MFU by mistake; reference/ecosystem.md
# §1.6). Lightning's table (`lightning.fabric.utilities.throughput._CUDA_FLOPS`, what its `get_available_flops` reads)
# serves every card it lists right; these entries, matched first as substrings of torch.cuda.get_device_name() (most
# specific first), are the cards it lacks or lists with another figure:
PEAK_FLOPS = {
    # H200: the device calls itself "NVIDIA H200", which Lightning does not parse (its "h200 sxm1" row, 2.0e15, is
    # the sparse figure)
    "16": [
        ("H200", 989.5e12),
        ("H100 PCIe", 756e12),  # Lightning's figure, listed so that the "H100" row below does not catch it
        ("H100 NVL", 835.5e12),  # datasheet: 1671 sparse / 2; Lightning lists 1978.8e12
        ("H100", 989.5e12),  # SXM (HBM3): datasheet 1979 sparse / 2; Lightning rounds to 989.4e12
        ("L40S", 362.05e12),  # missing in Lightning, whose parser takes "L40S" for an L4
        ("A10G", 70e12),  # AWS's A10G figure; Lightning lists the A10's 125e12
        ("RTX 4090", 165.2e12),
    ],  # Ada whitepaper, FP32 accumulate; Lightning lists the non-tensor 82.6e12
    "32": [
        ("H200", 66.9e12),
        ("H100 PCIe", 51.2e12),
        ("H100 NVL", 60e12),  # NVL: datasheet; Lightning lists 2×
        ("H100", 66.9e12),  # "NVIDIA H100 80GB HBM3" names no "sxm", Lightning's key for it
        ("L40S", 91.6e12),
    ],
}
_warned_devices: set[str] = set()


def _lightning_peak(device_name: str, dtype: torch.dtype) -> float | None:
    """Lightning's figure for a device name: its chip keys ("a100", "v100 sxm", "rtx 3090 ti", …) matched as whole
    words of the name, longest first (a digit may follow a key ending in a letter: "V100-SXM2" is a "v100 sxm")."""
    name = re.sub(r"[-_]", " ", device_name.lower())
    for chip in sorted(_CUDA_FLOPS, key=len, reverse=True):
        after = r"(?![a-z0-9])" if chip[-1].isdigit() else r"(?![a-z])"
        if re.search(rf"(?<![a-z0-9]){re.escape(chip)}{after}", name):
            value = _CUDA_FLOPS[chip].get(dtype)
            return float(value) if value is not None else None
    return None


def peak_flops(device_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of a device at a precision (bf16 / 16 / 32 matmuls as the precision string says), or None
    (warned once per device; CPUs have no entry)."""
    half = "16" in precision
    dtype = torch.bfloat16 if "bf16" in precision else torch.float16 if half else torch.float32
    for key, value in PEAK_FLOPS["16" if half else "32"]:
        if key.lower() in device_name.lower():
            return value
    value = _lightning_peak(device_name, dtype)
    if value is None and device_name not in _warned_devices:
        _warned_devices.add(device_name)
        warnings.warn(
            f"no peak FLOP/s known for device {device_name!r} at {precision}; MFU is not computed "
            "(add it to stacking.module.PEAK_FLOPS)",
            stacklevel=2,
        )
    return value


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's dense peak (NaN without a peak)."""
    return flops_per_token * tokens_per_s / peak if peak else float("nan")


def lr_at(
    tokens: int, *, lr: float, min_lr: float, warmup_tokens: int, max_tokens: int, schedule: str, decay_tokens: int
) -> float:
    """LR of the optimizer step that ends at ``tokens`` (tokens of this run): linear warmup, then cosine to min_lr,
    WSD, or constant. The first step (tokens = global batch) has a small non-zero LR; the last one has min_lr."""
    if warmup_tokens and tokens < warmup_tokens:
        return lr * tokens / warmup_tokens
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        progress = min(1.0, (tokens - warmup_tokens) / max(1, max_tokens - warmup_tokens))
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":  # warmup-stable-decay: constant, then linear decay over the last decay_tokens
        decay_start = max_tokens - decay_tokens
        if tokens < decay_start:
            return lr
        return lr + (min_lr - lr) * min(1.0, (tokens - decay_start) / max(1, decay_tokens))
    raise ValueError(f"unknown schedule {schedule!r}")


def init_weights(model: GPT, config: Config) -> None:
    """TinyLlama / GPT-NeoX init: N(0, √(2/(5d))) everywhere, output projections N(0, 1/(√d · L)), norms 1.

    (The paper's released code skipped this for scratch runs — reference/stacking.md §2 — we do not.)
    """
    std = math.sqrt(2.0 / (5 * config.n_embd))
    for name, p in model.named_parameters():
        if p.dim() == 1:
            torch.nn.init.ones_(p) if name.endswith(".weight") else torch.nn.init.zeros_(p)
        elif name.endswith(("attn.proj.weight", "mlp.proj.weight")):
            torch.nn.init.normal_(p, 0.0, 1.0 / math.sqrt(config.n_embd) / config.n_layer)
        else:
            torch.nn.init.normal_(p, 0.0, std)


LOSS_CHUNK = 128
"""Sequence positions per LM-head + cross-entropy chunk when ``chunked_loss`` is on (litgpt's default chunk size).
At B=8, vocab 4096 a chunk's fp32 logits are 8 × 128 × 4096 × 4 B = 16 MiB instead of 32 MiB for all T=256; at the
TinyLlama shape (B=4, T=2048, vocab 32000) 62.5 MiB instead of 1000 MiB."""


def lm_loss(model: GPT, x: torch.Tensor, y: torch.Tensor, chunk: int = 0) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model`` on inputs ``x`` and targets ``y`` (both ``(B, T)``).

    With ``chunk > 0`` the LM head and the loss run ``chunk`` sequence positions at a time (litgpt's
    ``lm_head_chunk_size``), so the full ``(B, T, vocab)`` logits are never materialised in fp32; the result is the
    same mean (sum of per-chunk sums over the token count), equal to the plain loss up to float summation order.
    A plain function of the model, so ``torch.compile(lm_loss)`` fuses forward and loss without wrapping the
    module (whose state-dict keys would gain an ``_orig_mod.`` prefix).
    """
    if chunk <= 0:
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
    total = torch.zeros((), device=y.device)
    for logits, target in zip(model(x, lm_head_chunk_size=chunk), y.split(chunk, dim=1)):
        total = total + F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), reduction="sum"
        )
    return total / y.numel()


def optimizer_groups(model: torch.nn.Module) -> list[tuple[list[str], list[torch.nn.Parameter]]]:
    """The trainable parameters as AdamW's two groups, (names, params) each: matrices (weight-decayed), then vectors.
    Their order is the optimizer's state index order, which `named_optimizer_state` relies on."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        ([n for n, p in named if p.dim() >= 2], [p for _, p in named if p.dim() >= 2]),
        ([n for n, p in named if p.dim() < 2], [p for _, p in named if p.dim() < 2]),
    ]


def named_optimizer_state(optimizer_state: dict, model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """AdamW state of a saved optimizer (``optimizer.state_dict()``, e.g. a Lightning checkpoint's
    ``optimizer_states[0]``) keyed by the parameter names of ``model`` (any device, the meta device too)."""
    names = [n for group_names, _ in optimizer_groups(model) for n in group_names]
    order = [i for g in optimizer_state["param_groups"] for i in g["params"]]
    if len(order) != len(names):
        raise ValueError(f"the optimizer state has {len(order)} parameters, the model {len(names)} trainable ones")
    return {names[k]: dict(optimizer_state["state"][i]) for k, i in enumerate(order) if i in optimizer_state["state"]}


def load_named_optimizer_state(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, named: dict[str, dict[str, torch.Tensor]]
) -> None:
    """Put per-parameter AdamW state keyed by name into ``optimizer`` (every trainable parameter must have one)."""
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in named]
    if missing:
        raise ValueError(f"carried optimizer state has no entry for {missing[0]} (and {len(missing) - 1} more)")
    for n, p in model.named_parameters():
        if p.requires_grad:
            st = named[n]
            if st["exp_avg"].shape != p.shape:
                raise ValueError(
                    f"carried optimizer state for {n} has shape {tuple(st['exp_avg'].shape)}, "
                    f"the parameter {tuple(p.shape)}"
                )
            optimizer.state[p] = {k: (v.to(p.device) if k != "step" else v.clone()) for k, v in st.items()}


class NaNLossError(RuntimeError):
    """Training produced a non-finite loss; the run stops with status ``failed: nan at tokens=…``."""


class GPTModule(L.LightningModule):
    """One run's model and optimisation. ``cfg`` is the resolved ``stacking.config.RunConfig``."""

    def __init__(
        self,
        cfg: Any,
        model_config: Config,
        flops_per_token: float,
        flops_offset: float = 0.0,
        growth: dict | None = None,
    ):
        super().__init__()
        self.cfg, self.model_config = cfg, model_config
        self.flops_per_token, self.flops_offset = flops_per_token, flops_offset
        self.growth = growth or {}
        torch.manual_seed(cfg.seed)
        self.model = GPT(model_config)  # PyTorch's module defaults (init: torch_default), seeded
        if getattr(cfg, "init", "tinyllama") == "tinyllama":
            init_weights(self.model, model_config)
        self.mask = None
        # compile the loss function, not the module: checkpoint keys stay litgpt's (no `_orig_mod.`), and inductor
        # fuses the LM head with the cross-entropy (see docs/throughput.md)
        self._loss_fn = torch.compile(lm_loss) if cfg.compile else lm_loss
        self.val_set: torch.Tensor | None = None
        self.carry_state: dict[str, dict[str, torch.Tensor]] | None = None
        self._loss_sum = torch.zeros(())
        self._loss_count = 0

    # ---- growth support --------------------------------------------------------------------------------------
    def attach_growth(self) -> None:
        """After the grown weights are loaded: attach the G_random mask and freeze non-new params if asked."""
        if not (self.growth.get("mask") or self.growth.get("trainable")):
            return
        if self.growth.get("mask"):
            self.mask = masks.GrowthMask.from_spec(self.growth["mask"])
            self.mask.attach(self.model)
            self._set_mask(0)
        if self.growth.get("trainable") and self.cfg.train_new_only:
            masks.apply_trainable(self.model, self.growth["trainable"])

    def _set_mask(self, tokens: int) -> None:
        if self.mask is not None:
            self.mask.set_scale(ramp_value(tokens, self.growth["mask"].get("ramp_tokens", 0)))

    # ---- counters --------------------------------------------------------------------------------------------
    @property
    def tokens(self) -> int:
        return self.global_step * self.cfg.global_batch_tokens

    @property
    def flops(self) -> float:
        return self.flops_offset + self.tokens * self.flops_per_token

    # ---- training --------------------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # While a G_random mask ramps, its scale changes every step; a compiled graph would guard on it and
        # recompile each time, so the ramp runs eager and the compiled loss takes over once the mask is fully on.
        fn = lm_loss if self.mask is not None and self.mask.scale < 1.0 else self._loss_fn
        return fn(self.model, x, y, LOSS_CHUNK if self.cfg.chunked_loss else 0)

    def training_step(self, batch, batch_idx):
        self._set_mask(self.tokens)
        x, y = batch
        loss = self._loss(x, y)
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach()
        self._loss_count += 1
        return loss

    def pop_train_loss(self) -> float:
        """Mean training loss over the micro-batches since the last call, averaged over ranks."""
        mean = self._loss_sum / max(1, self._loss_count)
        if self.trainer.world_size > 1:
            mean = self.trainer.strategy.reduce(mean, reduce_op="mean")
        self._loss_sum, self._loss_count = torch.zeros((), device=mean.device), 0
        return float(mean)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean token loss on the fixed validation windows (sharded over ranks, summed exactly)."""
        assert self.val_set is not None
        was_training = self.training
        self.eval()
        self._set_mask(self.tokens)
        rank, world = self.trainer.global_rank, self.trainer.world_size
        windows = self.val_set[rank::world]
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        for i in range(0, len(windows), self.cfg.micro_batch_size):
            w = windows[i : i + self.cfg.micro_batch_size].to(self.device)
            logits = self.model(w[:, :-1])
            total += F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), w[:, 1:].reshape(-1), reduction="sum"
            ).double()
            count += w[:, 1:].numel()
        if world > 1:
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
        self.train(was_training)
        return float(total / count)

    def on_train_start(self) -> None:
        if self.carry_state is not None:  # grown.optimizer: carry, on a fresh start (a resume restores its own)
            load_named_optimizer_state(self.optimizers().optimizer, self.model, self.carry_state)
            self.carry_state = None

    def configure_optimizers(self):
        cfg = self.cfg
        # Weight decay on matrices only (not on norm gains), as in litgpt / nanoGPT.
        (_, matrices), (_, vectors) = optimizer_groups(self.model)
        groups = [{"params": matrices, "weight_decay": cfg.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
        fused = self.device.type == "cuda"
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self.lr_at_step(step) / cfg.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_at_step(self, step: int) -> float:
        """LR of optimizer step ``step`` (0-indexed), i.e. the one that ends at (step + 1) × global batch tokens."""
        c = self.cfg
        return lr_at(
            (step + 1) * c.global_batch_tokens,
            lr=c.lr,
            min_lr=c.min_lr,
            warmup_tokens=c.warmup_tokens,
            max_tokens=c.max_tokens,
            schedule=c.schedule,
            decay_tokens=c.decay_tokens,
        )
