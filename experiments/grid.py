"""Grid files → a plan: every run of a sweep, resolved to a `RunConfig`, with its dependencies, tokens and FLOPs.

A grid (``experiments/grids/*.yaml``, format in docs/sweeps.md) holds shared `RunConfig` settings (``defaults``)
and axes: ``targets`` × ``ops`` × ``g`` × ``d`` × ``seeds``. For each point the plan has

* a **base** run: the target's shape divided by ``g`` (depth: n_layer/g; width: n_embd, n_head, n_query_groups,
  intermediate_size /g, head_size kept), trained to ``base.tokens`` (default: the largest ``d``) with a checkpoint
  at every ``d``. One base serves every op and every ``d`` of its (target, direction, g, seed);
* a **grown** run: ``grow_checkpoint(base checkpoint at d → grown/<id>)`` and then the target shape trained from
  that dir (``init_from``), its FLOP counter starting at the base's FLOPs at ``d``;
* per ``chains`` entry × target × seed, a **growth chain**: stage 0 (the target divided by the product of the
  stages' g) trained like a base, each later stage grown from the previous stage's checkpoint at its last token
  (kind ``base``: it is the next stage's base), its FLOP counter and data stream continuing; the last growth gives
  the target, a ``grown`` run whose op is the chain's label and whose d is the tokens of all earlier stages;
* a **scratch** baseline per target × seed: the target trained from scratch on at least the FLOPs of the largest
  grown run of that target (base FLOPs included), tokens rounded up to a multiple of global_batch_tokens;
* with ``anneal.fractions``, a **cooldown** run per scratch/grown (main) run and fraction f: a WSD branch from the
  main run's full training state at ``f·T − decay`` that decays the LR over ``decay`` tokens and ends at ``f·T``.

The controls are the paper's and the same for both arms (docs/sweeps.md, "Fair controls"): bases on a constant LR
after warmup (every d at the same LR), grown runs at the target's own LR with fresh AdamW, continuing the base's
data stream (no replay of the base's d tokens), every FLOP counted (the base's, G_learn's map training).

Run ids are ``<readable name>-<first 8 hex of config_hash(resolved RunConfig)>``. Paths inside a config are
relative to the sweep dir (``out_dir: runs/<id>``, ``init_from: grown/<id>``) and runs execute with the sweep dir
as working directory, so ids do not depend on where the sweep dir lives. Every check that can fail does so here,
before any compute, with one line naming the field.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import math
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from experiments.chains import Builders, chain_runs, check_chain
from experiments.plan import PlannedRun
from experiments.schema import (
    AnnealSpec,
    BaseSpec,
    ChainSpec,
    Grid,
    GridError,
    GrownSpec,
    OpSpec,
    OverrideSpec,
    ScratchSpec,
    SlurmSpec,
    StageSpec,
    apply_scale,
    load_grid,
    parse_grid,
    suggest,
)
from stacking import models
from stacking.data import read_meta
from stacking.train import RunConfig, RunError, config_hash, validate

# The grid API is this module: the schema's names are re-exported from here.
__all__ = ["CONTINUED", "MAX_EPOCHS", "AnnealSpec", "BaseSpec", "ChainSpec", "Grid", "GridError", "GrownSpec",
           "OpSpec", "OverrideSpec", "PlannedRun", "ScratchSpec", "SlurmSpec", "StageSpec", "apply_scale", "base_shape",
           "epoch_warnings", "expand",
           "load_grid", "operators", "parse_grid", "select", "shape_label"]

# --------------------------------------------------------------------------------------------------------------
# Operators: which exist, in which direction


def operators() -> dict[str, tuple[str, ...]]:
    """Operator name → the directions it supports, from stacking.growth's registry."""
    from stacking.growth import OPERATORS

    out: dict[str, set[str]] = {}
    for op, direction in OPERATORS:
        out.setdefault(op, set()).add(direction)
    return {k: tuple(sorted(v)) for k, v in out.items()}


# --------------------------------------------------------------------------------------------------------------
# The plan


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _ceil_to(x: float, m: int) -> int:
    return int(math.ceil(x / m - 1e-9)) * m


class _Models:
    """litgpt Configs and FLOPs/token of (preset, overrides, seq_len), computed once each."""

    def __init__(self, vocab_size: int):
        self.vocab_size, self._cache, self._params = vocab_size, {}, {}

    def non_embedding(self, mc) -> int:
        key = json.dumps(asdict(mc), sort_keys=True, default=str)
        if key not in self._params:
            self._params[key] = models.param_breakdown(mc)["non_embedding"]
        return self._params[key]

    def config(self, name: str, overrides: dict, seq_len: int):
        key = (name, json.dumps(overrides, sort_keys=True), seq_len)
        if key not in self._cache:
            mc = models.model_config(name, vocab_size=self.vocab_size, block_size=seq_len, **overrides)
            self._cache[key] = (mc, models.flops_per_token(mc, seq_len))
        return self._cache[key]


def base_shape(mc, direction: str, g: int, target: str) -> dict[str, int]:
    """model_overrides that make the target's base: the target's shape divided by g (head_size kept)."""
    if direction == "depth":
        if mc.n_layer % g or mc.n_layer // g < 1:
            valid = [k for k in range(2, mc.n_layer + 1) if mc.n_layer % k == 0]
            raise GridError(f"g = {g} does not fit target {target}: depth growth needs n_layer = {mc.n_layer} "
                            f"divisible by g; valid g: {valid or 'none'}")
        return {"n_layer": mc.n_layer // g}
    dims = {"n_embd": mc.n_embd, "n_head": mc.n_head, "n_query_groups": mc.n_query_groups,
            "intermediate_size": mc.intermediate_size}
    bad = [f"{k} = {v}" for k, v in dims.items() if v % g]
    if bad:
        valid = [k for k in range(2, mc.n_head + 1) if all(v % k == 0 for v in dims.values())]
        raise GridError(f"g = {g} does not fit target {target}: width growth divides n_embd, n_head, n_query_groups "
                        f"and intermediate_size by g, but {', '.join(bad)}; valid g: {valid or 'none'}")
    return {**{k: v // g for k, v in dims.items()}, "head_size": mc.head_size}


def shape_label(name: str, overrides: dict) -> str:
    """``tiny-L2-D32`` for a tiny-family shape, else ``preset{n_layer=6,…}``."""
    if re.fullmatch(r"tiny-(d\d+|L\d+-D\d+)", name) and set(overrides) <= {"n_layer", "n_embd", "n_head",
                                                                          "n_query_groups", "intermediate_size",
                                                                          "head_size"}:
        mc = models.model_config(name, **overrides)
        canon = models.model_config(f"tiny-L{mc.n_layer}-D{mc.n_embd}")
        if all(getattr(mc, k) == getattr(canon, k) for k in ("n_head", "n_query_groups", "intermediate_size",
                                                              "head_size")):
            return f"tiny-L{mc.n_layer}-D{mc.n_embd}"
    if not overrides:
        return name
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) + "}"


def _check_axes(grid: Grid, where: str) -> list[str]:
    """Axis values, operators and budgets that need no model or data; returns the ops' labels."""
    ops_known = operators()
    if not grid.targets:
        raise GridError(f"{where}: targets is empty; give at least one model preset")
    for axis in ("targets", "g", "d", "seeds"):
        values = getattr(grid, axis)
        dup = sorted({v for v in values if values.count(v) > 1}, key=str)
        if dup:
            raise GridError(f"{where}: {axis} lists {dup[0]!r} twice (duplicate run ids)")
    labels = [o.label or o.op for o in grid.ops]
    for i, o in enumerate(grid.ops):
        if o.op not in ops_known and o.op != CONTINUED:
            raise GridError(f"{where}: ops[{i}].op: unknown operator {o.op!r}{suggest(o.op, list(ops_known))}; "
                            f"valid: {', '.join(ops_known)}, {CONTINUED}")
        dirs = ops_known.get(o.op, ("depth", "width"))  # continued: the direction names the base
        if o.direction not in dirs:
            raise GridError(f"{where}: ops[{i}]: {o.op} does not support direction {o.direction!r}; "
                            f"valid: {', '.join(dirs)}")
        if (labels[i], o.direction) in [(labels[j], grid.ops[j].direction) for j in range(i)]:
            raise GridError(f"{where}: ops[{i}] ({labels[i]}, {o.direction}) repeats an earlier entry "
                            "(duplicate run ids); give it a distinct label")
    if grid.ops:
        if not grid.d and not all(o.d for o in grid.ops):
            raise GridError(f"{where}: d is empty; give the base tokens at which to grow")
        if (grid.grown.tokens is None) == (grid.grown.total_flops is None):
            raise GridError(f"{where}: grown needs exactly one of tokens (tokens after growth) and total_flops")
    if grid.scratch.lrs:
        if grid.ops:
            raise GridError(f"{where}: scratch.lrs is an LR sweep on scratch alone: put it in a grid without ops "
                            "(tune the target's LR first, then set it in the growth grid's defaults)")
        bad = [lr for lr in grid.scratch.lrs if not lr > 0]
        if bad or len(set(grid.scratch.lrs)) != len(grid.scratch.lrs):
            raise GridError(f"{where}: scratch.lrs must be distinct positive learning rates, got {grid.scratch.lrs}")
    policies = [("base.schedule", grid.base.schedule, ("constant", "defaults")),
                ("grown.optimizer", grid.grown.optimizer, ("fresh", "carry")),
                ("grown.lr", grid.grown.lr, ("target", "base"))]
    for name, value, valid in policies:
        if value not in valid:
            raise GridError(f"{where}: {name} must be one of {', '.join(valid)}, got {value!r}")
    a = grid.anneal
    if any(not 0 < f <= 1 for f in a.fractions) or len(set(a.fractions)) != len(a.fractions):
        raise GridError(f"{where}: anneal.fractions must be distinct numbers in (0, 1], got {a.fractions}")
    if not 0 < a.decay_fraction < 1:
        raise GridError(f"{where}: anneal.decay_fraction must be in (0, 1), got {a.decay_fraction}")
    for g in grid.g + [g for o in grid.ops for g in (o.g or [])]:
        if g < 2:
            raise GridError(f"{where}: g = {g} must be an integer >= 2")
    for i, ch in enumerate(grid.chains):
        check_chain(grid, i, ch, labels, ops_known, where)
    return labels


def expand(grid: Grid, where: str = "grid") -> list[PlannedRun]:
    """All runs of a grid in dependency order (bases, grown, scratch), fully validated; raises GridError."""
    labels = _check_axes(grid, where)
    data_dir = grid.defaults.get("data_dir", RunConfig.data_dir)
    defaults = {"progress_bar": False, **grid.defaults, "data_dir": str(Path(data_dir).resolve())}
    data_meta = read_meta(defaults["data_dir"])  # DataError: missing / broken data dir
    vocab = data_meta["vocab_size"]
    for spec in [defaults, grid.base.set, grid.grown.set, grid.scratch.set] + [o.set for o in grid.overrides]:
        if spec.get("eval_data_dirs"):  # like data_dir: runs execute in the sweep dir (checked by validate)
            spec["eval_data_dirs"] = {k: str(Path(v).resolve()) for k, v in spec["eval_data_dirs"].items()}
    for spec in [grid.base.set, grid.grown.set, grid.scratch.set] + [o.set for o in grid.overrides]:
        if "data_dir" in spec:
            spec["data_dir"] = str(Path(spec["data_dir"]).resolve())
            read_meta(spec["data_dir"])
        if spec.get("init_from"):
            if not Path(spec["init_from"]).is_dir():
                raise GridError(f"{where}: init_from {spec['init_from']!r} is not a checkpoint dir")
            spec["init_from"] = str(Path(spec["init_from"]).resolve())
    mdl = _Models(vocab)
    used_overrides: set[int] = set()

    def resolve(name: str, kind_set: dict, managed: dict) -> RunConfig:
        fields_ = {**defaults, **kind_set}
        for i, o in enumerate(grid.overrides):
            if fnmatch.fnmatchcase(name, o.match):
                if "init_from" in o.set and name.startswith("grown-"):
                    raise GridError(f"{where}: overrides[{i}] sets init_from on grown run {name}; "
                                    "a grown run starts from its grow step")
                fields_.update(o.set)
                used_overrides.add(i)
        mo = {**fields_.get("model_overrides", {}), **managed.pop("model_overrides", {})}
        cfg = RunConfig(**{**fields_, **managed, "model_overrides": mo})
        try:
            validate(cfg)
            mdl.config(cfg.model, cfg.model_overrides, cfg.seq_len)
        except (RunError, models.ModelConfigError) as e:
            raise GridError(f"{where}: run {name}: {e}") from None
        return cfg

    def planned(name: str, kind: str, target: str, cfg: RunConfig, **kw) -> PlannedRun:
        h = config_hash(cfg)[:8]
        rid = f"{name}-{h}"
        cfg.out_dir = f"runs/{rid}"
        mc, fpt = mdl.config(cfg.model, cfg.model_overrides, cfg.seq_len)
        return PlannedRun(id=rid, name=name, kind=kind, target=target, config=cfg, flops_per_token=fpt,
                          model=shape_label(cfg.model, cfg.model_overrides),
                          params_non_embedding=mdl.non_embedding(mc), **kw)

    def anneal_starts(name: str, cfg: RunConfig) -> list[tuple[float, int, int]]:
        """(f, branch point, decay) of each cooldown of a main run with budget cfg.max_tokens."""
        out = []
        if not grid.anneal.fractions:
            return out
        if cfg.schedule != "constant":
            raise GridError(f"{where}: run {name}: anneal branches need a constant LR on the main run (set "
                            f"defaults.schedule: constant), got schedule {cfg.schedule!r}")
        gb = cfg.global_batch_tokens
        for f in sorted(grid.anneal.fractions):
            end = max(gb, int(round(f * cfg.max_tokens / gb)) * gb)
            decay = max(gb, int(round(grid.anneal.decay_fraction * end / gb)) * gb)
            if end - decay < max(cfg.warmup_tokens, gb):
                raise GridError(f"{where}: run {name}: the cooldown at {f:g} of the budget would branch at "
                                f"{end - decay:,} tokens, inside the warmup ({cfg.warmup_tokens:,}); drop that "
                                "fraction or lengthen the run")
            out.append((f, end - decay, decay))
        return out

    def with_cooldowns(main: PlannedRun, points: list[tuple[float, int, int]]) -> list[PlannedRun]:
        out = [main]
        for f, start, decay in points:
            cfg = replace(main.config, schedule="wsd", max_tokens=start + decay, decay_tokens=decay,
                          save_state_at_tokens=[], save_at_tokens=[],
                          branch_from=f"{main.config.out_dir}/states/tokens-{start:012d}.ckpt")
            name = f"cooldown-{main.name.split('-', 1)[1]}-f{round(f * 100)}"
            data_tokens = main.data_tokens - main.tokens + cfg.max_tokens
            out.append(planned(name, "cooldown", main.target, cfg, flops_offset=main.flops_offset, op=main.op,
                               direction=main.direction, g=main.g, grow_at_tokens=main.grow_at_tokens,
                               parent=main.parent, deps=[main.id], branch_of=main.id, anneal_fraction=f,
                               variant=main.variant, decay_tokens=decay, data_tokens=data_tokens,
                               epochs=data_tokens / data_meta["train_tokens"]))
        return out

    option_sets: dict[tuple[str, str], set[str]] = {}
    for o in grid.ops:
        option_sets.setdefault((o.op, o.direction), set()).add(json.dumps(o.options, sort_keys=True, default=str))

    def variant(o, label: str) -> str | None:
        return label if len(option_sets[(o.op, o.direction)]) > 1 else None

    bases: dict[tuple, PlannedRun] = {}
    grown: list[PlannedRun] = []
    for target in grid.targets:
        tmc, _ = mdl.config(target, defaults.get("model_overrides", {}), defaults.get("seq_len", RunConfig.seq_len))
        all_g = sorted(set(grid.g).union(*[o.g or [] for o in grid.ops]))
        points = [(g, ol, s) for g in all_g for ol in zip(grid.ops, labels, strict=True)
                  for s in (ol[0].seeds or grid.seeds)
                  if g in (ol[0].g or grid.g)]
        # each base checkpoints at (and trains to) the d's of the ops grown from it
        base_d: dict[tuple, set[int]] = {}
        for g, (o, _), seed in points:
            base_d.setdefault((target, o.direction, g, seed), set()).update(o.d or grid.d)
        for g, (o, label), seed in points:
            key = (target, o.direction, g, seed)
            if key not in bases:
                shape = base_shape(tmc, o.direction, g, target)
                name = _safe(f"base-{target}-{o.direction}-g{g}-s{seed}")
                my_d = sorted(base_d[key])
                budget = grid.base.tokens if grid.base.tokens is not None else max(my_d)
                bfields = {**defaults, **grid.base.set}
                bgb = bfields.get("global_batch_tokens", RunConfig.global_batch_tokens)
                for dd in my_d:
                    if dd <= 0 or dd % bgb:
                        raise GridError(f"{where}: d = {dd} must be a positive multiple of the base's "
                                        f"global_batch_tokens = {bgb}")
                    if dd > budget:
                        raise GridError(f"{where}: d = {dd} is beyond the base's budget base.tokens = {budget}; "
                                        "grow at most at the end of base training")
                managed = dict(model=target, seed=seed, max_tokens=budget, save_at_tokens=my_d,
                               model_overrides=shape)
                if grid.base.schedule == "constant":
                    managed["schedule"] = "constant"
                if grid.grown.optimizer == "carry":  # the full state at every d: AdamW moments to carry over
                    managed["save_state_at_tokens"] = my_d
                cfg = resolve(name, grid.base.set, managed)
                bases[key] = planned(name, "base", target, cfg, data_tokens=budget,
                                     epochs=budget / data_meta["train_tokens"])
            base = bases[key]
            for dd in (o.d or grid.d):
                name = _safe(f"grown-{target}-{label}-{o.direction}-g{g}-d{dd}-s{seed}")
                base_flops = dd * base.flops_per_token
                lr_source = grid.scratch.set if grid.grown.lr == "target" else grid.base.set
                lr_fields = {k: lr_source[k] for k in ("lr", "min_lr") if k in lr_source}
                gcfg = {**defaults, **lr_fields, **grid.grown.set}
                gcfg.update({k: v for ov in grid.overrides if fnmatch.fnmatchcase(name, ov.match)
                             for k, v in ov.set.items()})  # e.g. solar_dus's own n_layer: its budget at its shape
                gb = gcfg.get("global_batch_tokens", RunConfig.global_batch_tokens)
                cont = o.op == CONTINUED  # the base's own shape, its checkpoint at d, no grow step
                cshape = base.config.model_overrides if cont else gcfg.get("model_overrides", {})
                if grid.grown.tokens is not None:
                    tokens = grid.grown.tokens
                else:
                    _, tfpt = mdl.config(target, cshape, gcfg.get("seq_len", RunConfig.seq_len))
                    tokens = int((grid.grown.total_flops - base_flops) / tfpt // gb) * gb
                    if tokens <= 0:
                        raise GridError(f"{where}: d = {dd} uses {base_flops:.4g} base FLOPs, leaving no budget in "
                                        f"grown.total_flops = {grid.grown.total_flops:.4g} for run {name}")
                if cont:
                    cfg = resolve(name, {**lr_fields, **grid.grown.set},
                                  dict(model=target, seed=seed, max_tokens=tokens, save_at_tokens=[],
                                       model_overrides=cshape, optimizer_init="fresh",
                                       init_from=f"{base.config.out_dir}/checkpoints/tokens-{dd:012d}"))
                    points = anneal_starts(name, cfg)
                    cfg.save_state_at_tokens = sorted({s for _, s, _ in points})
                    data_tokens = (dd if cfg.data_stream == "continue" else 0) + tokens
                    main = planned(name, "grown", target, cfg, flops_offset=base_flops, op=o.op,
                                   direction=o.direction, g=g, grow_at_tokens=dd, parent=base.id, deps=[base.id],
                                   data_tokens=data_tokens, epochs=data_tokens / data_meta["train_tokens"],
                                   variant=variant(o, label))
                    grown.extend(with_cooldowns(main, points))
                    continue
                carry = grid.grown.optimizer == "carry"
                grow_id = _safe(f"{target}-{label}-{o.direction}-g{g}-d{dd}-s{seed}") + "-" + _short_hash(
                    [base.id, dd, o.op, o.direction, g, seed, o.options] + (["carry"] if carry else []))
                cfg = resolve(name, {**lr_fields, **grid.grown.set},
                              dict(model=target, seed=seed, max_tokens=tokens, save_at_tokens=[],
                                   init_from=f"grown/{grow_id}", optimizer_init="carry" if carry else "fresh"))
                options = dict(o.options)
                if o.op == "G_learn":  # LiGO learns its maps on the base's training data unless told otherwise
                    options["data"] = str(Path(options.get("data", base.config.data_dir)).resolve())
                grow = {"src": f"{base.config.out_dir}/checkpoints/tokens-{dd:012d}", "dst": f"grown/{grow_id}",
                        "op": o.op, "direction": o.direction, "g": g, "seed": seed, "options": options}
                if carry:
                    grow["carry_state"] = f"{base.config.out_dir}/states/tokens-{dd:012d}.ckpt"
                points = anneal_starts(name, cfg)
                cfg.save_state_at_tokens = sorted({s for _, s, _ in points})
                data_tokens = (dd if cfg.data_stream == "continue" else 0) + tokens
                main = planned(name, "grown", target, cfg, flops_offset=base_flops + _extra_flops(o, g, base, cfg, mdl),
                               op=o.op, direction=o.direction, g=g, grow_at_tokens=dd, parent=base.id,
                               deps=[base.id], grow=grow, data_tokens=data_tokens,
                               epochs=data_tokens / data_meta["train_tokens"], variant=variant(o, label))
                grown.extend(with_cooldowns(main, points))

    build = Builders(grid, where, defaults, mdl, data_meta["train_tokens"], resolve, planned, anneal_starts,
                     with_cooldowns, base_shape, shape_label, _safe, _short_hash, _extra_flops,
                     trained={config_hash(r.config): r for r in bases.values()})
    chained = [r for ci, ch in enumerate(grid.chains) for target in grid.targets for seed in ch.seeds or grid.seeds
               for r in chain_runs(build, ci, ch, target, seed)]

    scratch: list[PlannedRun] = []
    for target in grid.targets:
        for seed in sorted(set(grid.seeds).union(*[o.seeds or [] for o in grid.ops],
                                                 *[c.seeds or [] for c in grid.chains])):
            scfg = {**defaults, **grid.scratch.set}
            gb = scfg.get("global_batch_tokens", RunConfig.global_batch_tokens)
            _, tfpt = mdl.config(target, scfg.get("model_overrides", {}), scfg.get("seq_len", RunConfig.seq_len))
            budgets = set(grid.scratch.tokens) | {_ceil_to(f / tfpt, gb) for f in grid.scratch.flops}
            mine = [r.flops for r in grown + chained if r.target == target and r.kind == "grown"]
            if grid.scratch.flop_matched and mine:
                budgets.add(_ceil_to(max(mine) / tfpt, gb))
            peak = scfg.get("lr", RunConfig.lr)
            lr_points = [(f"-lr{lr:g}", dict(lr=lr, min_lr=lr * scfg.get("min_lr", RunConfig.min_lr) / peak))
                         for lr in grid.scratch.lrs] or [("", {})]
            for tokens, (lr_tag, lr_set) in itertools.product(sorted(budgets), lr_points):
                name = _safe(f"scratch-{target}-t{tokens}{lr_tag}-s{seed}")
                cfg = resolve(name, {**grid.scratch.set, **lr_set},
                              dict(model=target, seed=seed, max_tokens=tokens, save_at_tokens=[]))
                points = anneal_starts(name, cfg)
                cfg.save_state_at_tokens = sorted({s for _, s, _ in points})
                main = planned(name, "scratch", target, cfg, data_tokens=tokens,
                               epochs=tokens / data_meta["train_tokens"])
                scratch.extend(with_cooldowns(main, points))

    runs = list(bases.values()) + grown + chained + scratch
    if not runs:
        raise GridError(f"{where}: the grid has no runs (give ops and d, chains, or scratch.tokens / scratch.flops)")
    seen: dict[str, str] = {}
    for r in runs:
        if r.id in seen:
            raise GridError(f"{where}: duplicate run id {r.id}: two grid points resolve to the same run")
        seen[r.id] = r.name
    for i, o in enumerate(grid.overrides):
        if i not in used_overrides:
            raise GridError(f"{where}: overrides[{i}].match {o.match!r} matches no run; names look like "
                            f"{runs[-1].name}")
    _check_growth(runs, mdl, where)
    over = [r for r in runs if r.epochs > MAX_EPOCHS]
    if over and not grid.allow_epochs:
        worst = max(over, key=lambda r: r.epochs)
        raise GridError(f"{where}: run {worst.name} reads {worst.epochs:.1f} epochs of {data_meta['train_tokens']:,} "
                        f"training tokens (> {MAX_EPOCHS}); use a bigger corpus, shrink the budget, or set "
                        "allow_epochs: true")
    return runs


CONTINUED = "continued"
"""The ``ops`` entry that grows nothing: the base continued at its own shape from its checkpoint at d (fresh
AdamW, the grown runs' LR and budget), a grown-kind run with op ``continued`` — continued pretraining's baseline."""

MAX_EPOCHS = 4
"""Past this many epochs of its training data a plan is refused unless the grid sets ``allow_epochs``."""


def epoch_warnings(runs: list[PlannedRun]) -> list[str]:
    """One line per run that reads its training data more than once (shown by --dry-run and at sweep start)."""
    return [f"warning: run {r.name} reads {r.epochs:.2f} epochs of its training data (repeated data)"
            for r in runs if r.epochs > 1.0]


def _extra_flops(o: OpSpec, g: int, base: PlannedRun, cfg: RunConfig, mdl: _Models) -> float:
    """FLOPs a grow step spends besides the base's (G_learn trains its maps on the grown model)."""
    if o.op != "G_learn":
        return 0.0
    from stacking.growth import learn

    bmc, _ = mdl.config(base.config.model, base.config.model_overrides, base.config.seq_len)
    tmc, _ = mdl.config(cfg.model, cfg.model_overrides, cfg.seq_len)
    opts = o.options
    return learn.learn_flops(tmc, bmc, learn_steps=opts.get("learn_steps", learn.DEFAULT_STEPS),
                             batch_size=opts.get("batch_size", learn.DEFAULT_BATCH_SIZE),
                             seq_len=opts.get("seq_len") or learn.default_seq_len(bmc), direction=o.direction)


def _check_growth(runs: list[PlannedRun], mdl: _Models, where: str) -> None:
    """Ask the growth package whether each op takes its options and applies to its base shape (no weights:
    depth operators are plans on the Config; width shapes were checked by `base_shape`)."""
    from stacking import growth

    by_id = {r.id: r for r in runs}
    for r in runs:
        if r.grow is None:
            continue
        spec = r.grow
        try:
            fn = growth.resolve(spec["op"], spec["direction"], spec["options"])
            planner = getattr(fn, "planner", None)
            base = by_id[r.parent].config
            mc, _ = mdl.config(base.model, base.model_overrides, base.seq_len)
            if planner is not None:
                planner(mc, g=spec["g"], seed=spec["seed"], **spec["options"])
            if spec.get("carry_state"):
                growth.carry_plan(mc, spec["op"], direction=spec["direction"], g=spec["g"], seed=spec["seed"],
                                  **spec["options"])
        except (ValueError, TypeError) as e:
            raise GridError(f"{where}: run {r.name}: {e}") from None


def select(runs: list[PlannedRun], pattern: str) -> list[PlannedRun]:
    """Runs whose id or name matches ``pattern`` (glob, or substring without glob characters), plus their deps."""
    def hit(r: PlannedRun) -> bool:
        if any(c in pattern for c in "*?["):
            return fnmatch.fnmatchcase(r.id, pattern) or fnmatch.fnmatchcase(r.name, pattern)
        return pattern in r.id

    keep = {r.id for r in runs if hit(r)}
    if not keep:
        raise GridError(f"--only {pattern!r} matches no run; ids look like {runs[-1].id}")
    by_id = {r.id: r for r in runs}
    stack = list(keep)
    while stack:
        for dep in by_id[stack.pop()].deps:
            if dep not in keep:
                keep.add(dep)
                stack.append(dep)
    return [r for r in runs if r.id in keep]
