"""Grid files → typed dataclasses: the schema of ``experiments/grids/*.yaml`` (docs/sweeps.md), type-checked field by
field (RunConfig fields included), with ``scales`` variants merged in. Every error names the field, in one line."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from stacking.config import RunConfig


class GridError(ValueError):
    """A grid file that cannot be expanded into runs; raised before any compute."""


# --------------------------------------------------------------------------------------------------------------
# Schema


@dataclass
class OpSpec:
    """One entry of the ``ops`` axis (a bare string ``G_stack`` means ``{op: G_stack}``)."""

    op: str
    """Growth operator (stacking.growth registry): G_stack, G_zero, G_direct, G_random, G_learn, llama_pro, …"""
    direction: str = "depth"
    """depth | width."""
    options: dict[str, Any] = field(default_factory=dict)
    """Operator options passed on to grow_checkpoint (e.g. {ramp_tokens: 4096} for G_random)."""
    label: str | None = None
    """Name used in run ids instead of ``op`` (needed when one op appears twice with different options)."""
    g: list[int] | None = None
    """Growth factors for this op only (default: the grid's ``g`` axis), e.g. 4 in depth but 2 in width, where g
    multiplies the width and so roughly g² the parameters."""
    d: list[int] | None = None
    """Growth points for this op only (default: the grid's ``d`` axis), e.g. width ops at the main d only."""
    seeds: list[int] | None = None
    """Seeds for this op only (default: the grid's ``seeds``), e.g. 3 seeds at the main d, 1 elsewhere."""


@dataclass
class StageSpec:
    """One stage of a growth chain: a model trained for ``tokens``, then grown by ``g``."""

    g: int
    """Growth factor at the end of this stage (depth: n_layer × g); the product over the stages is the chain's."""
    tokens: int
    """Tokens this stage trains before it grows (a positive multiple of global_batch_tokens)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Operator options for this stage's growth only, on top of the chain's ``options`` (e.g. {block: 1})."""


@dataclass
class ChainSpec:
    """A growth chain (gradual stacking): the target divided by the product of the stages' g, trained and grown
    stage by stage, each stage initialised from the previous stage's checkpoint at its last token and continuing
    its data stream; the last growth gives the target, trained like a grown run and compared with scratch."""

    label: str
    """Name of the chain in run names and in the speed-up table's op column (e.g. ``gradual``)."""
    op: list[str]
    """Growth operator of every stage (one name), or a list with one per stage."""
    stages: list[StageSpec]
    """The stages before the target, first (smallest model) first: [{g: 2, tokens: 2048}, …]."""
    direction: str = "depth"
    """depth | width."""
    options: dict[str, Any] = field(default_factory=dict)
    """Operator options for every stage's growth (e.g. {block: 2} for gradual / midas)."""
    tokens: int | None = None
    """Tokens the target trains after the last growth …"""
    total_flops: float | None = None
    """… or the chain's total FLOP budget, every stage's FLOPs included (like grown.total_flops). Neither: the
    grid's ``grown.tokens`` / ``grown.total_flops``."""
    seeds: list[int] | None = None
    """Seeds of this chain (default: the grid's ``seeds``)."""


@dataclass
class BaseSpec:
    """How base (small) models are trained."""

    tokens: int | None = None
    """Base budget in tokens (its max_tokens); default: the largest ``d``. Every ``d`` must be <= it."""
    schedule: str = "constant"
    """LR schedule of base runs: ``constant`` (warmup, then the peak LR to the end: every d is taken at the same,
    un-annealed LR, like the paper's base checkpoints) | ``defaults`` (the ``defaults``' schedule over the base
    budget: the LR phase at growth then depends on d — the old behaviour, kept for ablations)."""
    set: dict[str, Any] = field(default_factory=dict)
    """RunConfig fields for base runs only, on top of ``defaults``."""


@dataclass
class GrownSpec:
    """How grown runs continue after growth. Give exactly one of ``tokens`` and ``total_flops``."""

    tokens: int | None = None
    """Tokens trained after growth (the grown run's max_tokens)."""
    total_flops: float | None = None
    """Total FLOPs of a grown run including its base's FLOPs up to ``d`` and its grow step's (G_learn's map
    training); the continued tokens are (total_flops − base FLOPs at d − grow step FLOPs) / target FLOPs per token,
    rounded down to a multiple of global_batch_tokens."""
    optimizer: str = "fresh"
    """Optimiser state at growth: ``fresh`` (new AdamW moments, LR re-warmed as a new run does — the paper's
    policy) | ``carry`` (depth operators whose plan maps every new tensor to a source tensor, e.g. G_stack: the
    base's AdamW moments at d mapped through the same plan)."""
    lr: str = "target"
    """Peak/min LR of grown runs: ``target`` (the target's own LR, as set for scratch runs: ``defaults`` +
    ``scratch.set`` — the paper's policy) | ``base`` (the base runs' LR: ``defaults`` + ``base.set``).
    ``set: {lr: …}`` still wins over both."""
    set: dict[str, Any] = field(default_factory=dict)
    """RunConfig fields for grown runs only, e.g. {warmup_tokens: 0} for no re-warmup (the warmup length after
    growth is ``defaults.warmup_tokens`` unless set here)."""


@dataclass
class AnnealSpec:
    """WSD cooldown branches (Hägele et al. 2024) for annealed comparisons at several budgets. Each scratch and
    grown run (the *main* run, on a constant LR after warmup) writes its full training state at
    ``f·T − decay`` for every fraction f of its token budget T; a ``cooldown`` run branches from there and decays
    the LR linearly to ``min_lr`` over ``decay = decay_fraction · f·T`` tokens, ending at ``f·T``. Its final loss
    is the annealed loss at budget f·T, on the same FLOP counter as its main run."""

    fractions: list[float] = field(default_factory=list)
    """Budget fractions to anneal at, e.g. [0.25, 0.5, 0.75, 1.0]; empty = no cooldown runs."""
    decay_fraction: float = 0.2
    """Cooldown length as a fraction of the budget it ends at (rounded to whole optimizer steps, at least one)."""
    at_scratch_flops: bool = False
    """Also cool every grown run down where it has spent the FLOPs of each cooldown of its seed's FLOP-matched
    scratch run (its own fractions put a grown run's cooldowns at other FLOPs than scratch's): the annealed loss
    difference at equal FLOPs. Adds cooldown runs only; every other run, and its id, stays the same (so it can be
    added to a sweep that has run): a new cooldown starts from the grown run's last saved state before its branch
    point, or replays the grown run from its start (see ``save_branch_states``)."""
    save_branch_states: bool = False
    """With ``at_scratch_flops``: the grown runs also save their state at those cooldowns' branch points, so each
    branches right there instead of replaying the grown run up to it (at 0.45M that replay is ≈ 10 core-minutes a
    cooldown). It changes the grown runs' ids (their saved states are part of them), so turn it on for a new sweep
    only; a sweep that ran without it would retrain its grown runs."""


@dataclass
class ScratchSpec:
    """The baselines the grown runs are compared against."""

    flop_matched: bool = True
    """One scratch run per target × seed on at least the FLOPs of the largest grown run of that target
    (base FLOPs included), tokens rounded up to a multiple of global_batch_tokens."""
    tokens: list[int] = field(default_factory=list)
    """Extra scratch budgets in tokens (e.g. a ladder for scaling-law fits)."""
    flops: list[float] = field(default_factory=list)
    """Extra scratch budgets in FLOPs (tokens rounded up to a multiple of global_batch_tokens)."""
    lrs: list[float] = field(default_factory=list)
    """An LR sweep on scratch alone: every scratch budget is trained once per peak LR listed here (run names carry
    ``lr<value>``; ``min_lr`` keeps the ``defaults``' min_lr / lr ratio). Only in a grid without ``ops``: tune the
    target's LR first, then write it into the growth grid's ``defaults`` (grown runs take the target's LR)."""
    set: dict[str, Any] = field(default_factory=dict)
    """RunConfig fields for scratch runs only, on top of ``defaults``."""


@dataclass
class OverrideSpec:
    """RunConfig fields for the runs whose name matches a glob (applied after ``defaults`` and the kind's ``set``)."""

    match: str
    """Glob on run names (the id without its hash), e.g. ``grown-*-G_zero-*-d2048-*``; must match a run."""
    set: dict[str, Any] = field(default_factory=dict)
    """RunConfig fields to set on the matching runs."""


@dataclass
class SlurmSpec:
    """SLURM resources for ``--executor slurm`` (submitit). One job per run."""

    partition: str | None = None
    """SLURM partition (None = the cluster's default)."""
    timeout_min: int = 240
    """Wall-time limit per job; a timed-out run is requeued (submitit Checkpointable) and resumes from last.ckpt."""
    gpus_per_node: int = 1
    """GPUs per node for each run."""
    cpus_per_task: int = 8
    """CPU cores per task."""
    mem_gb: int | None = None
    """Memory per node in GB (None = the cluster's default)."""
    array_parallelism: int = 64
    """Most jobs of the first level (bases, scratch; one job array) running at once."""
    max_num_timeout: int = 3
    """Most requeues after a timeout."""
    additional: dict[str, Any] = field(default_factory=dict)
    """Extra sbatch options, e.g. {account: myproj, qos: high}."""


@dataclass
class EvalSpec:
    """Downstream evaluation with lm-evaluation-harness (docs/evaluation.md, "In sweeps") of the checkpoints the
    loss table reads: the final checkpoint of every scratch and grown run, and of every cooldown run at fraction
    1.0. Bases and other cooldowns are not evaluated. Not part of any run's config (run ids do not change): adding
    it to a finished sweep and running the sweep again evaluates its runs without retraining them."""

    tasks: list[str]
    """lm-eval task names, e.g. [nextline_mc, heldout_ppl] (the offline tasks `stacking eval-tasks` builds) or
    standard ones (hellaswag, arc_easy, …: their datasets must be in the local HF cache)."""
    include_path: list[str] = field(default_factory=list)
    """Dir(s) of task YAMLs, e.g. the --out of `stacking eval-tasks`; a relative path is read from the working
    dir, like data_dir."""
    limit: int | None = None
    """Documents per task (None: all of them)."""
    num_fewshot: int | None = None
    """Few-shot examples (None: the task's default)."""
    batch_size: int = 16
    """Sequences per forward pass."""


@dataclass
class Grid:
    """A sweep: shared RunConfig settings plus the axes that make the runs."""

    name: str | None = None
    """Sweep name; the default sweep dir is sweeps/<name> (default: the grid file's stem)."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """RunConfig fields shared by every run: data_dir, seq_len, batch, optimiser, schedule, eval cadence, …"""
    targets: list[str] = field(default_factory=list)
    """Model presets of the final shape, e.g. [tiny-L4-D64, stack-410m]."""
    ops: list[OpSpec] = field(default_factory=list)
    """Growth operators (+ direction and options); empty = scratch runs only."""
    chains: list[ChainSpec] = field(default_factory=list)
    """Growth chains: several growths in a row, each stage grown from the previous one (gradual stacking)."""
    g: list[int] = field(default_factory=lambda: [2])
    """Growth factors; the base is the target's shape divided by g."""
    d: list[int] = field(default_factory=list)
    """Tokens of base training at which to grow (multiples of global_batch_tokens)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds (init and data order) of every run."""
    base: BaseSpec = field(default_factory=BaseSpec)
    """Base runs: budget and settings."""
    grown: GrownSpec = field(default_factory=GrownSpec)
    """Grown runs: budget after growth and settings (LR policy at growth)."""
    scratch: ScratchSpec = field(default_factory=ScratchSpec)
    """Scratch baselines."""
    anneal: AnnealSpec = field(default_factory=AnnealSpec)
    """Cooldown branches for annealed readings (main runs then need ``schedule: constant``)."""
    allow_epochs: bool = False
    """Allow a run to read more than 4 epochs of its training data (past 1 epoch the plan warns; past 4 it
    refuses unless this is true)."""
    overrides: list[OverrideSpec] = field(default_factory=list)
    """Per-run RunConfig overrides, by glob on run names."""
    seed_spread: str | None = None
    """A ``speedups.csv`` written by ``stacking report`` for a seeded sweep of this same configuration (path
    relative to the grid file, e.g. the demo's ``reference/replicate_demo_speedups.csv``): the report of a
    one-seed sweep quotes its mean and 95 % CI beside its own numbers, so a reader sees how far they move with the
    seed."""
    slurm: SlurmSpec = field(default_factory=SlurmSpec)
    """SLURM resources (used by --executor slurm only)."""
    eval: EvalSpec | None = None
    """Downstream evaluation of the finished runs (lm-eval tasks); None: none."""


# RunConfig fields the plan sets itself: a grid that sets them is wrong, and the message says what to use instead.
_MANAGED = {
    "out_dir": "the sweep dir decides it (runs/<id>)",
    "model": "use targets",
    "seed": "use seeds",
    "max_tokens": "use base.tokens, grown.tokens / grown.total_flops, scratch.tokens / scratch.flops",
    "save_at_tokens": "use d",
    "save_state_at_tokens": "use anneal.fractions",
    "branch_from": "use anneal.fractions",
    "optimizer_init": "use grown.optimizer",
}


# --------------------------------------------------------------------------------------------------------------
# YAML → typed dataclasses


def suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# Why not jsonargparse (already a dependency; `parser.add_argument("--grid", type=Grid)` + parse_object): tried
# with 4.41 on the BAD_GRIDS of tests/experiments/test_sweep_grid.py. Its errors lose what makes ours useful — an unknown key
# is "Group 'grid' does not accept nested key 'seed'" (no "did you mean 'seeds'?", no valid list), a bad list item
# is 'Parser key "grid.d": Expected a <class 'int'>. Got value: many' (no index d[0]), a missing `op` is 'Key "op"
# is required …' (no ops[i]) — and it changes grid semantics: it rejects a scalar where the grid allows one axis
# value (`d: 1024`) and YAML 1.1's `1e3` for an int, and accepts "yes" for a bool. So the conversion stays here.
def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (the subset of typing used by the schema and RunConfig), or a GridError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _convert(value, a, where)
            except GridError as e:
                errors.append(str(e))
        raise GridError(errors[0])
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise GridError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in fields(tp)]
        for k in value:
            if k not in names:
                raise GridError(f"{where}: unknown field {k!r}{suggest(str(k), names)}; valid: {', '.join(names)}")
        missing = [
            f.name for f in fields(tp) if f.name not in value and f.default is MISSING and f.default_factory is MISSING
        ]
        if missing:
            raise GridError(f"{where}: missing field {missing[0]!r}")
        return tp(**{k: _convert(v, hints[k], f"{where}.{k}") for k, v in value.items()})
    if origin is list:
        if not isinstance(value, list):
            value = [value]  # a scalar where a list is expected: one axis value
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise GridError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise GridError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e6 as a string
            try:
                f = float(value)
                value = int(f) if f.is_integer() else value
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            raise GridError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GridError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise GridError(f"{where}: expected a string, got {value!r}")
        return value
    raise GridError(f"{where}: unsupported type {tp}")  # pragma: no cover - schema bug


_RUN_HINTS = typing.get_type_hints(RunConfig)
_RUN_FIELDS = [f.name for f in fields(RunConfig)]


def run_fields(raw: dict[str, Any], where: str, *, allow_init: bool = False) -> dict[str, Any]:
    """Check and convert a mapping of RunConfig fields (``defaults``, ``*.set``, ``overrides[i].set``)."""
    out = {}
    for k, v in raw.items():
        if k not in _RUN_FIELDS:
            raise GridError(f"{where}: unknown RunConfig field {k!r}{suggest(str(k), _RUN_FIELDS)}")
        if k in _MANAGED:
            raise GridError(f"{where}.{k} is set by the sweep: {_MANAGED[k]}")
        if k == "init_from" and not allow_init:
            raise GridError(f"{where}.init_from is set by the sweep for grown runs; set it per run in overrides")
        out[k] = _convert(v, _RUN_HINTS[k], f"{where}.{k}")
    return out


def parse_grid(raw: Any, where: str = "grid") -> Grid:
    """A parsed YAML document → `Grid`, every field type-checked (RunConfig fields included)."""
    if not isinstance(raw, dict):
        raise GridError(f"{where}: a grid file is a YAML mapping, got {type(raw).__name__}")
    raw = dict(raw)
    if isinstance(raw.get("ops"), list):
        raw["ops"] = [{"op": o} if isinstance(o, str) else o for o in raw["ops"]]
    grid = _convert(raw, Grid, where)
    grid.defaults = run_fields(grid.defaults, f"{where}: defaults")
    grid.base.set = run_fields(grid.base.set, f"{where}: base.set")
    grid.grown.set = run_fields(grid.grown.set, f"{where}: grown.set")
    grid.scratch.set = run_fields(grid.scratch.set, f"{where}: scratch.set", allow_init=True)
    for i, o in enumerate(grid.overrides):
        o.set = run_fields(o.set, f"{where}: overrides[{i}].set", allow_init=True)
    return grid


def _deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, everything else (lists included) is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_scale(raw: Any, scale: str | None, where: str) -> tuple[Any, str | None]:
    """Pick one entry of the grid's ``scales`` (``scale`` argument, else the grid's own ``scale`` key) and merge it
    over the rest of the grid. One grid file then describes the same experiment from a CPU toy to the paper's size."""
    if not isinstance(raw, dict) or ("scales" not in raw and scale is None):
        return raw, None
    raw = dict(raw)
    scales = raw.pop("scales", None) or {}
    chosen = scale or raw.pop("scale", None)
    raw.pop("scale", None)
    if chosen is None:
        return raw, None
    if not isinstance(scales, dict) or chosen not in scales:
        valid = ", ".join(scales) if isinstance(scales, dict) and scales else "none defined"
        raise GridError(f"{where}: unknown scale {chosen!r}; valid: {valid}")
    return _deep_merge(raw, scales[chosen] or {}), chosen


def load_grid(path: str | Path, scale: str | None = None) -> Grid:
    """Read a grid file; ``scale`` picks one of its ``scales`` (default: the file's ``scale`` key)."""
    p = Path(path)
    if not p.is_file():
        raise GridError(f"grid file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise GridError(f"{p}: not valid YAML ({' '.join(str(e).split())[:160]})") from None
    raw, chosen = apply_scale(raw, scale, p.name)
    grid = parse_grid(raw, p.name)
    if grid.name is None:
        grid.name = p.stem
    if chosen:
        grid.name = f"{grid.name}-{chosen}"
    return grid
