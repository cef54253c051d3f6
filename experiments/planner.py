"""The planner: a checked `Grid` → its `PlannedRun`s, one decision per method.

`Planner` holds what every run of a grid shares — the resolved defaults (data dirs made absolute), the dataset's
size, the model cache, which ``overrides`` have matched — and plans runs from it: `Planner.resolve` makes a run's
`RunConfig` (defaults, then the kind's ``set``, then matching ``overrides``, then the fields the plan sets itself),
`Planner.with_cooldowns` names it, hashes it and adds its WSD cooldown branches (`experiments.anneal` those of
``anneal.at_scratch_flops``, once scratch is planned), `Planner.grow_step` makes a grow step (its dir, its FLOPs
besides the parent's) and `Planner.tokens_after_growth` splits a FLOP budget. One-step grids use them through
`Planner.base`, `Planner.grown` and `Planner.scratch`; growth chains through `experiments.chains.chain_runs`.
`experiments.grid.expand` drives both over the grid's axes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from experiments.plan import GrowStep, PlannedRun
from experiments.schema import Grid, GridError, OpSpec, OverrideSpec
from stacking import models
from stacking.config import RunConfig, config_hash, validate
from stacking.data import read_meta
from stacking.errors import RunError

CONTINUED = "continued"
"""The ``ops`` entry that grows nothing: the base continued at its own shape from its checkpoint at d (fresh
AdamW, the grown runs' LR and budget), a grown-kind run with op ``continued`` — continued pretraining's baseline."""


def safe_name(s: str) -> str:
    """``s`` with every run of characters outside [A-Za-z0-9._-] replaced by ``_`` (run and dir names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def ceil_to(x: float, multiple: int) -> int:
    return math.ceil(x / multiple - 1e-9) * multiple


def checkpoint_dir(run: PlannedRun, tokens: int) -> str:
    """The run's litgpt checkpoint dir at ``tokens`` (relative to the sweep dir)."""
    return f"{run.config.out_dir}/checkpoints/tokens-{tokens:012d}"


def state_file(run: PlannedRun, tokens: int) -> str:
    """The run's full training state (weights, AdamW moments, data position) at ``tokens``."""
    return f"{run.config.out_dir}/states/tokens-{tokens:012d}.ckpt"


def base_shape(mc, direction: str, g: int, target: str) -> dict[str, int]:
    """model_overrides that make the target's base: the target's shape divided by g (head_size kept)."""
    if direction == "depth":
        if mc.n_layer % g or mc.n_layer // g < 1:
            valid = [k for k in range(2, mc.n_layer + 1) if mc.n_layer % k == 0]
            raise GridError(
                f"g = {g} does not fit target {target}: depth growth needs n_layer = {mc.n_layer} "
                f"divisible by g; valid g: {valid or 'none'}"
            )
        return {"n_layer": mc.n_layer // g}
    dims = {
        "n_embd": mc.n_embd,
        "n_head": mc.n_head,
        "n_query_groups": mc.n_query_groups,
        "intermediate_size": mc.intermediate_size,
    }
    bad = [f"{k} = {v}" for k, v in dims.items() if v % g]
    if bad:
        valid = [k for k in range(2, mc.n_head + 1) if all(v % k == 0 for v in dims.values())]
        raise GridError(
            f"g = {g} does not fit target {target}: width growth divides n_embd, n_head, n_query_groups "
            f"and intermediate_size by g, but {', '.join(bad)}; valid g: {valid or 'none'}"
        )
    return {**{k: v // g for k, v in dims.items()}, "head_size": mc.head_size}


_SHAPE_FIELDS = {"n_layer", "n_embd", "n_head", "n_query_groups", "intermediate_size", "head_size"}


def shape_label(name: str, overrides: dict) -> str:
    """``tiny-L2-D32`` for a tiny-family shape, else ``preset{n_layer=6,…}``."""
    if re.fullmatch(r"tiny-(d\d+|L\d+-D\d+)", name) and set(overrides) <= _SHAPE_FIELDS:
        mc = models.model_config(name, **overrides)
        canon = models.model_config(f"tiny-L{mc.n_layer}-D{mc.n_embd}")
        if all(
            getattr(mc, k) == getattr(canon, k) for k in ("n_head", "n_query_groups", "intermediate_size", "head_size")
        ):
            return f"tiny-L{mc.n_layer}-D{mc.n_embd}"
    if not overrides:
        return name
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) + "}"


class ModelCache:
    """litgpt Configs, FLOPs/token and non-embedding parameters of (preset, overrides, seq_len), computed once."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self._configs: dict[tuple, tuple[Any, float]] = {}
        self._params: dict[str, int] = {}

    def config(self, name: str, overrides: dict, seq_len: int):
        """(litgpt Config, training FLOPs per token)."""
        key = (name, json.dumps(overrides, sort_keys=True), seq_len)
        if key not in self._configs:
            mc = models.model_config(name, vocab_size=self.vocab_size, block_size=seq_len, **overrides)
            self._configs[key] = (mc, models.flops_per_token(mc, seq_len))
        return self._configs[key]

    def of(self, settings: dict, model: str | None = None, overrides: dict | None = None):
        """``config()`` of a run with these RunConfig settings (its model and seq_len; ``overrides`` for its own)."""
        return self.config(
            model or settings["model"],
            settings.get("model_overrides", {}) if overrides is None else overrides,
            settings.get("seq_len", RunConfig.seq_len),
        )

    def non_embedding(self, mc) -> int:
        key = json.dumps(asdict(mc), sort_keys=True, default=str)
        if key not in self._params:
            self._params[key] = models.param_breakdown(mc)["non_embedding"]
        return self._params[key]


@dataclass(frozen=True)
class Cooldown:
    """A WSD cooldown branch of a main run: from its state at ``start_tokens``, decay over ``decay_tokens``."""

    fraction: float
    """f: the branch ends at f × the main run's budget."""
    start_tokens: int
    """The branch point on the main run's token counter."""
    decay_tokens: int
    """The LR decay length (= the tokens the branch trains)."""
    state_tokens: int | None = None
    """``anneal.at_scratch_flops``: the main run's saved state the branch starts from, before its branch point (0:
    the main run's start); it trains on the constant LR up to the branch point. None: the branch point itself."""
    at_flops_of: PlannedRun | None = field(default=None, compare=False)
    """``anneal.at_scratch_flops``: the scratch cooldown run at whose FLOPs the branch ends."""


def _absolute_paths(grid: Grid, where: str) -> dict[str, Any]:
    """The grid's defaults with data dirs absolute, and every kind's and override's data dirs made absolute in place
    (runs execute in the sweep dir); each data dir's meta.json checked (DataError: missing or broken)."""
    defaults = {
        "progress_bar": False,
        **grid.defaults,
        "data_dir": str(Path(grid.defaults.get("data_dir", RunConfig.data_dir)).resolve()),
    }
    sets = [grid.base.set, grid.grown.set, grid.scratch.set] + [o.set for o in grid.overrides]
    for spec in [defaults, *sets]:
        if spec.get("eval_data_dirs"):  # like data_dir (checked by validate)
            spec["eval_data_dirs"] = {k: str(Path(v).resolve()) for k, v in spec["eval_data_dirs"].items()}
    for spec in sets:
        if "data_dir" in spec:
            spec["data_dir"] = str(Path(spec["data_dir"]).resolve())
            read_meta(spec["data_dir"])
        if spec.get("init_from"):
            if not Path(spec["init_from"]).is_dir():
                raise GridError(f"{where}: init_from {spec['init_from']!r} is not a checkpoint dir")
            spec["init_from"] = str(Path(spec["init_from"]).resolve())
    return defaults


class Planner:
    """Plans the runs of one grid (module docstring). ``trained`` maps a config hash to a base or chain stage 0
    planned so far: a chain whose stage 0 would train exactly that run grows from it instead."""

    def __init__(self, grid: Grid, where: str):
        self.grid, self.where = grid, where
        self.defaults = _absolute_paths(grid, where)
        meta = read_meta(self.defaults["data_dir"])  # DataError: missing / broken data dir
        self.train_tokens: int = meta["train_tokens"]
        self.models = ModelCache(meta["vocab_size"])
        self.used_overrides: set[int] = set()
        self.trained: dict[str, PlannedRun] = {}
        self.flop_matched: dict[tuple[str, int], list[PlannedRun]] = {}
        """(target, seed) → the FLOP-matched scratch run and its cooldowns."""
        self.extra_states: dict[str, set[int]] = {}
        """Main run name → more tokens to save its state at (``anneal.save_branch_states``: the branch points of its
        ``at_scratch_flops`` cooldowns, found by a first planning pass)."""
        self._option_sets: dict[tuple[str, str], set[str]] = {}
        for o in grid.ops:
            self._option_sets.setdefault((o.op, o.direction), set()).add(
                json.dumps(o.options, sort_keys=True, default=str)
            )

    # ---- settings and configs ----------------------------------------------------------------------------------

    @property
    def grown_set(self) -> dict[str, Any]:
        """RunConfig fields of every run that starts from a growth: the LR of ``grown.lr``'s source (the target's,
        as set for scratch runs, or the bases'), then ``grown.set``."""
        source = self.grid.scratch.set if self.grid.grown.lr == "target" else self.grid.base.set
        return {**{k: source[k] for k in ("lr", "min_lr") if k in source}, **self.grid.grown.set}

    def _overrides_of(self, name: str) -> list[tuple[int, OverrideSpec]]:
        return [(i, o) for i, o in enumerate(self.grid.overrides) if fnmatch.fnmatchcase(name, o.match)]

    def settings(self, kind_set: dict, name: str | None = None) -> dict[str, Any]:
        """``defaults``, then the kind's ``set``, then (given the run's name) the ``overrides`` that match it: what
        a run's config is resolved from, and its budget computed from before that."""
        out = {**self.defaults, **kind_set}
        for _, o in self._overrides_of(name) if name is not None else []:
            out.update(o.set)
        return out

    def resolve(self, name: str, kind_set: dict, managed: dict) -> RunConfig:
        """The run's RunConfig: its settings, then the fields the plan manages (model, seed, budget, checkpoints,
        init_from, …); ``model_overrides`` merge. Validated, and its model built once (GridError names the run)."""
        matching = self._overrides_of(name)
        for i, o in matching:
            if "init_from" in o.set and name.startswith("grown-"):
                raise GridError(
                    f"{self.where}: overrides[{i}] sets init_from on grown run {name}; "
                    "a grown run starts from its grow step"
                )
        self.used_overrides.update(i for i, _ in matching)
        settings = self.settings(kind_set, name)
        managed = dict(managed)
        shape = {**settings.get("model_overrides", {}), **managed.pop("model_overrides", {})}
        cfg = RunConfig(**{**settings, **managed, "model_overrides": shape})
        try:
            validate(cfg)
            self.models.config(cfg.model, cfg.model_overrides, cfg.seq_len)
        except (RunError, models.ModelConfigError) as e:
            raise GridError(f"{self.where}: run {name}: {e}") from None
        return cfg

    def variant(self, op: OpSpec, label: str) -> str | None:
        """The op's label when the grid runs it (and its direction) with more than one set of options."""
        return label if len(self._option_sets[(op.op, op.direction)]) > 1 else None

    # ---- runs and their cooldowns ------------------------------------------------------------------------------

    def run(self, name: str, kind: str, target: str, cfg: RunConfig, data_tokens: int, **fields) -> PlannedRun:
        """The planned run: id = name + the config's hash, out_dir runs/<id>, its shape, FLOPs/token and epochs."""
        run_id = f"{name}-{config_hash(cfg)[:8]}"
        cfg.out_dir = f"runs/{run_id}"
        mc, flops_per_token = self.models.config(cfg.model, cfg.model_overrides, cfg.seq_len)
        return PlannedRun(
            id=run_id,
            name=name,
            kind=kind,
            target=target,
            config=cfg,
            flops_per_token=flops_per_token,
            model=shape_label(cfg.model, cfg.model_overrides),
            params_non_embedding=self.models.non_embedding(mc),
            data_tokens=data_tokens,
            epochs=data_tokens / self.train_tokens,
            **fields,
        )

    def with_cooldowns(
        self, name: str, kind: str, target: str, cfg: RunConfig, data_tokens: int, **fields
    ) -> list[PlannedRun]:
        """A main run (scratch, grown) that saves its full state at each cooldown's branch point, and its cooldowns."""
        cooldowns = self.cooldowns(name, cfg)
        cfg.save_state_at_tokens = sorted({c.start_tokens for c in cooldowns} | self.extra_states.get(name, set()))
        main = self.run(name, kind, target, cfg, data_tokens, **fields)
        return [main] + [self.cooldown_run(main, c) for c in cooldowns]

    def cooldowns(self, name: str, cfg: RunConfig) -> list[Cooldown]:
        """The cooldown branches (``anneal``) of a main run with budget cfg.max_tokens, on whole optimizer steps."""
        anneal = self.grid.anneal
        if not anneal.fractions:
            return []
        if cfg.schedule != "constant":
            raise GridError(
                f"{self.where}: run {name}: anneal branches need a constant LR on the main run (set "
                f"defaults.schedule: constant), got schedule {cfg.schedule!r}"
            )
        batch = cfg.global_batch_tokens
        out = []
        for f in sorted(anneal.fractions):
            end = max(batch, round(f * cfg.max_tokens / batch) * batch)
            cooldown = self.cooldown_at(end, cfg, f)
            if cooldown is None:
                raise GridError(
                    f"{self.where}: run {name}: the cooldown at {f:g} of the budget would branch at "
                    f"{end - self.decay(end, cfg):,} tokens, inside the warmup ({cfg.warmup_tokens:,}); drop that "
                    "fraction or lengthen the run"
                )
            out.append(cooldown)
        return out

    def decay(self, end: int, cfg: RunConfig) -> int:
        """The decay length of a cooldown ending at ``end`` tokens: decay_fraction of it, in whole steps (>= one)."""
        batch = cfg.global_batch_tokens
        return max(batch, round(self.grid.anneal.decay_fraction * end / batch) * batch)

    def cooldown_at(self, end: int, cfg: RunConfig, fraction: float, **fields) -> Cooldown | None:
        """The cooldown ending at ``end`` tokens of a main run with config ``cfg``; None when it would branch
        inside the warmup (or at 0)."""
        decay = self.decay(end, cfg)
        if end - decay < max(cfg.warmup_tokens, cfg.global_batch_tokens):
            return None
        return Cooldown(fraction, end - decay, decay, **fields)

    def cooldown_run(self, main: PlannedRun, cooldown: Cooldown) -> PlannedRun:
        """A WSD branch of ``main`` from its state at the branch point (or at ``cooldown.state_tokens``, then on
        the main run's constant LR up to the branch point), decaying the LR to its end."""
        start, decay = cooldown.start_tokens, cooldown.decay_tokens
        state = start if cooldown.state_tokens is None else cooldown.state_tokens
        cfg = replace(
            main.config,
            schedule="wsd",
            max_tokens=start + decay,
            decay_tokens=decay,
            save_state_at_tokens=[],
            save_at_tokens=[],
            branch_from=state_file(main, state) if state else None,  # 0: from the main run's own start
        )
        rest = main.name.split("-", 1)[1]
        scratch = cooldown.at_flops_of
        name = (
            f"cooldown-{rest}-f{round(cooldown.fraction * 100)}"
            if scratch is None
            else f"cooldown-{rest}-at-scratch-f{round(scratch.anneal_fraction * 100)}"
        )
        extra = {} if scratch is None else {"start_tokens": state, "at_flops_of": scratch.id}
        return self.run(
            name,
            "cooldown",
            main.target,
            cfg,
            main.data_tokens - main.tokens + cfg.max_tokens,
            flops_offset=main.flops_offset,
            op=main.op,
            direction=main.direction,
            g=main.g,
            grow_at_tokens=main.grow_at_tokens,
            parent=main.parent,
            deps=[main.id],
            branch_of=main.id,
            anneal_fraction=cooldown.fraction,
            variant=main.variant,
            decay_tokens=decay,
            **extra,
        )

    # ---- growth ------------------------------------------------------------------------------------------------

    def grow_step(
        self,
        name: str,
        identity: list,
        parent: PlannedRun,
        at_tokens: int,
        op: str,
        direction: str,
        g: int,
        seed: int,
        options: dict,
    ) -> GrowStep:
        """Grow ``parent``'s checkpoint at ``at_tokens`` into grown/<name>-<hash of identity, the op, its options
        as the grid gives them, carry>. G_learn learns its maps on the parent's data unless told otherwise."""
        carry = self.grid.grown.optimizer == "carry"
        digest = short_hash([*identity, op, direction, g, seed, options] + (["carry"] if carry else []))
        filled = dict(options)
        if op == "G_learn":
            filled["data"] = str(Path(filled.get("data", parent.config.data_dir)).resolve())
        return GrowStep(
            src=checkpoint_dir(parent, at_tokens),
            dst=f"grown/{safe_name(name)}-{digest}",
            op=op,
            direction=direction,
            g=g,
            seed=seed,
            options=filled,
            carry_state=state_file(parent, at_tokens) if carry else None,
        )

    def grow_flops(self, step: GrowStep, parent: PlannedRun, grown_settings: dict) -> float:
        """FLOPs the grow step spends besides its parent's: G_learn's map training, counted as the grow step counts
        it (`stacking.growth.learn.learn_flops`, its growth.json ``extra_flops``); 0 for every other operator."""
        if step.op != "G_learn":
            return 0.0
        from stacking.growth import learn

        parent_mc, _ = self.models.config(parent.config.model, parent.config.model_overrides, parent.config.seq_len)
        grown_mc, _ = self.models.of(grown_settings)
        opts = step.options
        try:
            return learn.learn_flops(
                grown_mc,
                parent_mc,
                learn_steps=opts.get("learn_steps", learn.DEFAULT_STEPS),
                batch_size=opts.get("batch_size", learn.DEFAULT_BATCH_SIZE),
                seq_len=opts.get("seq_len") or learn.default_seq_len(parent_mc),
                direction=step.direction,
            )
        except ValueError as e:  # GrowthError: learn_steps, batch_size or seq_len out of range
            raise GridError(f"{self.where}: {step.op} growing {parent.name}: {e}") from None

    def tokens_after_growth(
        self, settings: dict, spent_flops: float, budget_flops: float, shape: dict | None = None
    ) -> int:
        """Tokens a run with these settings (``shape``: its model_overrides) trains on what ``budget_flops`` leaves
        after ``spent_flops``, rounded down to whole optimizer steps (<= 0: nothing left)."""
        _, flops_per_token = self.models.of(settings, overrides=shape)
        batch = settings.get("global_batch_tokens", RunConfig.global_batch_tokens)
        return int((budget_flops - spent_flops) / flops_per_token // batch) * batch

    # ---- a one-step grid: bases, grown runs, scratch ----------------------------------------------------------

    def base(self, target: str, direction: str, g: int, seed: int, grow_at: list[int]) -> PlannedRun:
        """The base of (target, direction, g, seed): the target divided by g, checkpointed at every d it is grown
        at, trained to base.tokens (default: the largest d) on a constant LR (``base.schedule``)."""
        grid, where = self.grid, self.where
        target_mc, _ = self.models.of(self.defaults, model=target)
        shape = base_shape(target_mc, direction, g, target)
        name = safe_name(f"base-{target}-{direction}-g{g}-s{seed}")
        budget = grid.base.tokens if grid.base.tokens is not None else max(grow_at)
        batch = self.settings(grid.base.set).get("global_batch_tokens", RunConfig.global_batch_tokens)
        for d in grow_at:
            if d <= 0 or d % batch:
                raise GridError(
                    f"{where}: d = {d} must be a positive multiple of the base's global_batch_tokens = {batch}"
                )
            if d > budget:
                raise GridError(
                    f"{where}: d = {d} is beyond the base's budget base.tokens = {budget}; "
                    "grow at most at the end of base training"
                )
        managed = {
            "model": target,
            "seed": seed,
            "max_tokens": budget,
            "save_at_tokens": grow_at,
            "model_overrides": shape,
        }
        if grid.base.schedule == "constant":
            managed["schedule"] = "constant"
        if grid.grown.optimizer == "carry":  # the full state at every d: AdamW moments to carry over
            managed["save_state_at_tokens"] = grow_at
        run = self.run(name, "base", target, self.resolve(name, grid.base.set, managed), data_tokens=budget)
        self.trained[config_hash(run.config)] = run
        return run

    def grown(self, base: PlannedRun, op: OpSpec, label: str, g: int, d: int, seed: int) -> list[PlannedRun]:
        """The grown run of ``op`` from ``base`` at d (``continued``: the base's checkpoint, no grow step) on
        grown.tokens or on what grown.total_flops leaves after the base's FLOPs at d and the grow step's, and its
        cooldowns."""
        target, total_flops = base.target, self.grid.grown.total_flops
        name = safe_name(f"grown-{target}-{label}-{op.direction}-g{g}-d{d}-s{seed}")
        settings = {**self.settings(self.grown_set, name), "model": target}  # e.g. solar_dus's own n_layer
        base_flops = d * base.flops_per_token
        if op.op == CONTINUED:  # the base's own shape from its checkpoint at d
            step, grow_flops, shape = None, 0.0, base.config.model_overrides
            managed = {"model_overrides": shape, "optimizer_init": "fresh", "init_from": checkpoint_dir(base, d)}
        else:
            step = self.grow_step(
                f"{target}-{label}-{op.direction}-g{g}-d{d}-s{seed}",
                [base.id, d],
                base,
                d,
                op.op,
                op.direction,
                g,
                seed,
                op.options,
            )
            grow_flops, shape = self.grow_flops(step, base, settings), None
            managed = {"init_from": step.dst, "optimizer_init": "carry" if step.carry_state else "fresh"}
        tokens = self.grid.grown.tokens
        if tokens is None:
            tokens = self.tokens_after_growth(settings, base_flops + grow_flops, total_flops, shape)
            if tokens <= 0:
                maps = f" and {grow_flops:.4g} on {op.op}'s maps" if grow_flops else ""
                raise GridError(
                    f"{self.where}: d = {d} uses {base_flops:.4g} base FLOPs{maps}, leaving no budget in "
                    f"grown.total_flops = {total_flops:.4g} for run {name}"
                )
        cfg = self.resolve(
            name, self.grown_set, dict(model=target, seed=seed, max_tokens=tokens, save_at_tokens=[], **managed)
        )
        data_tokens = (d if cfg.data_stream == "continue" else 0) + tokens
        return self.with_cooldowns(
            name,
            "grown",
            target,
            cfg,
            data_tokens,
            flops_offset=base_flops + grow_flops,
            op=op.op,
            direction=op.direction,
            g=g,
            grow_at_tokens=d,
            parent=base.id,
            deps=[base.id],
            grow=step,
            variant=self.variant(op, label),
        )

    def scratch(self, target: str, seed: int, grown: list[PlannedRun]) -> list[PlannedRun]:
        """The scratch runs of (target, seed): every scratch budget (tokens, FLOPs, and with flop_matched the FLOPs of
        the target's largest grown run, rounded up to whole steps) × every LR of scratch.lrs, and their cooldowns."""
        spec = self.grid.scratch
        settings = self.settings(spec.set)
        batch = settings.get("global_batch_tokens", RunConfig.global_batch_tokens)
        _, flops_per_token = self.models.of(settings, model=target)
        budgets = set(spec.tokens) | {ceil_to(f / flops_per_token, batch) for f in spec.flops}
        matched = [r.flops for r in grown if r.target == target and r.kind == "grown"]
        matched_tokens = ceil_to(max(matched) / flops_per_token, batch) if spec.flop_matched and matched else None
        if matched_tokens is not None:
            budgets.add(matched_tokens)
        peak, low = settings.get("lr", RunConfig.lr), settings.get("min_lr", RunConfig.min_lr)
        lrs = [(f"-lr{lr:g}", {"lr": lr, "min_lr": lr * low / peak}) for lr in spec.lrs] or [("", {})]
        out = []
        for tokens, (lr_tag, lr_set) in itertools.product(sorted(budgets), lrs):
            name = safe_name(f"scratch-{target}-t{tokens}{lr_tag}-s{seed}")
            cfg = self.resolve(
                name,
                {**spec.set, **lr_set},
                {"model": target, "seed": seed, "max_tokens": tokens, "save_at_tokens": []},
            )
            runs = self.with_cooldowns(name, "scratch", target, cfg, data_tokens=tokens)
            if tokens == matched_tokens and not lr_tag:
                self.flop_matched[(target, seed)] = runs
            out += runs
        return out

    # ---- checks on the whole plan -----------------------------------------------------------------------------

    def check_growth(self, runs: list[PlannedRun]) -> None:
        """Ask the growth package whether each op takes its options and applies to its parent's shape (no weights:
        depth operators are plans on the Config; width shapes were checked by `base_shape`)."""
        from stacking import growth

        by_id = {r.id: r for r in runs}
        for r in runs:
            step = r.grow
            if step is None:
                continue
            try:
                fn = growth.resolve(step.op, step.direction, step.options)
                parent = by_id[r.parent].config
                mc, _ = self.models.config(parent.model, parent.model_overrides, parent.seq_len)
                if getattr(fn, "planner", None) is not None:
                    fn.planner(mc, g=step.g, seed=step.seed, **step.options)
                if step.carry_state:
                    growth.carry_plan(mc, step.op, direction=step.direction, g=step.g, seed=step.seed, **step.options)
            except (ValueError, TypeError) as e:
                raise GridError(f"{self.where}: run {r.name}: {e}") from None


__all__ = [
    "CONTINUED",
    "Cooldown",
    "ModelCache",
    "Planner",
    "base_shape",
    "ceil_to",
    "checkpoint_dir",
    "safe_name",
    "shape_label",
    "short_hash",
    "state_file",
]
