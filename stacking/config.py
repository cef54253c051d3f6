"""What a run is: `RunConfig` (every field with its docstring), its checks (`validate`) and its identity
(`config_hash`, which sweep run ids are made of: it must not change for an unchanged config).

Budgets are in tokens. ``global_batch_tokens = micro_batch_size × seq_len × grad_accum × world_size``; every token
budget (``max_tokens``, ``save_at_tokens``, ``val_every_tokens``, …) must be a multiple of it, so checkpoints land at
exactly the requested token counts.

This module imports neither torch nor litgpt (litgpt's package import pulls Lightning, ≈ 5 s): what only reads a
sweep — `stacking sweep status`, the results table — stays fast. `resolve_model` and the eval-data checks import
what they need when called.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacking.errors import RunError

if TYPE_CHECKING:
    from litgpt import Config


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
    """Size of the fixed validation set (windows spread over val.bin: `stacking.data.val_window_offsets`)."""
    eval_data_dirs: dict[str, str] = field(default_factory=dict)
    """More validation sets, {name: DATA_DIR}: every evaluation also measures each dir's own fixed validation
    windows (same val_tokens and window rule), written as metrics.csv column ``val_loss_<name>``. Each dir must
    share data_dir's tokenizer; names are column-safe ([A-Za-z][A-Za-z0-9_]*). E.g. {general: data/stdlib-bytes}
    for forgetting while training on a domain corpus (docs/domain.md)."""
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
    meta.pop("val_sources", None)  # paths, like sources
    meta.pop("shards", None)  # where the tokens lie (file names, byte offsets), not what they are
    # tokenizer_from is a path; tokenizer_sha256 is a function of the rest unless the tokenizer was borrowed
    # (datasets built before these keys existed, and rebuilt ones, keep one id)
    if meta.pop("tokenizer_from", None) is None or meta.get("tokenizer_sha256") is None:
        meta.pop("tokenizer_sha256", None)
    return "data:" + hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(cfg: RunConfig) -> str:
    """Hash of everything that determines the run's numbers (out_dir and display options excluded). The data
    dir enters by content (`data_id`), so the same run in two checkouts or on two mounts has one identity."""
    d = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "progress_bar", "logger")}
    d["data_dir"] = data_id(cfg.data_dir)
    # Fields added after run ids were in use enter only when set, so every existing id stays the same.
    if cfg.eval_data_dirs:
        d["eval_data_dirs"] = {k: data_id(v) for k, v in cfg.eval_data_dirs.items()}
    else:
        del d["eval_data_dirs"]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def resolve_model(cfg: RunConfig) -> tuple[Config, dict]:
    from stacking import models
    from stacking.data import read_meta

    meta = read_meta(cfg.data_dir)
    mc = models.model_config(cfg.model, vocab_size=meta["vocab_size"], block_size=cfg.seq_len, **cfg.model_overrides)
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
        raise RunError(
            f"global_batch_tokens {cfg.global_batch_tokens} is not divisible by micro_batch_size × seq_len "
            f"× world_size = {cfg.micro_batch_size} × {cfg.seq_len} × {world_size} = {per_pass}"
        )
    gb = cfg.global_batch_tokens
    for name in (
        "max_tokens",
        "val_every_tokens",
        "log_every_tokens",
        "checkpoint_every_tokens",
        "warmup_tokens",
        "decay_tokens",
    ):
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
            raise RunError(
                f"save_state_at_tokens entry {t} must be a positive multiple of global_batch_tokens = "
                f"{gb} up to max_tokens = {cfg.max_tokens}"
            )
    if cfg.schedule == "wsd" and not 0 < cfg.decay_tokens <= cfg.max_tokens:
        raise RunError(f"wsd schedule needs 0 < decay_tokens <= max_tokens, got {cfg.decay_tokens}")
    if not 0 <= cfg.min_lr <= cfg.lr:
        raise RunError(f"need 0 <= min_lr <= lr, got min_lr={cfg.min_lr} lr={cfg.lr}")
    if cfg.eval_data_dirs:
        check_eval_data_dirs(cfg)


EVAL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
"""What an eval_data_dirs name may be: it becomes the metrics.csv column val_loss_<name>."""


def check_eval_data_dirs(cfg: RunConfig) -> None:
    """eval_data_dirs: column-safe names, existing dataset dirs, and data_dir's tokenizer (one line each)."""
    from stacking.data import tokenizer_id
    from stacking.errors import DataError

    if not isinstance(cfg.eval_data_dirs, dict):
        raise RunError(f"eval_data_dirs must be a mapping {{name: DATA_DIR}}, got {cfg.eval_data_dirs!r}")
    try:
        own = tokenizer_id(cfg.data_dir)
    except DataError as e:
        raise RunError(f"data_dir: {e}") from None
    for name, path in cfg.eval_data_dirs.items():
        if not isinstance(name, str) or not EVAL_NAME.fullmatch(name):
            raise RunError(
                f"eval_data_dirs name {name!r} is not a safe column name (val_loss_<name>): use letters, "
                "digits and _, starting with a letter"
            )
        try:
            theirs = tokenizer_id(path)
        except DataError as e:
            raise RunError(f"eval_data_dirs.{name}: {e}") from None
        if theirs != own:
            raise RunError(
                f"eval_data_dirs.{name}: {str(path)!r} has another tokenizer than data_dir "
                f"{cfg.data_dir!r} ({theirs[:16]} vs {own[:16]}); build it with `stacking data --out "
                f"{path} --tokenizer_from {cfg.data_dir}`"
            )


__all__ = [
    "EVAL_NAME",
    "RunConfig",
    "check_eval_data_dirs",
    "config_dict",
    "config_hash",
    "data_id",
    "resolve_model",
    "validate",
]
