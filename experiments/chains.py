"""Growth chains, a grid's ``chains:`` (docs/sweeps.md, "Growth chains"): several growths in a row, each stage
grown from the previous stage's checkpoint at its last token (gradual stacking; MIDAS with the ``midas`` operator).

`check_chain` checks one entry before anything is built; `chain_runs` expands it, for one target and seed, into
stages 0..K-1 (kind ``base``: each is the next stage's base; a stage 0 that is exactly a run planned already — a
grid base of that shape, seed and budget, or another chain's stage 0 — is not planned again: stage 1 grows from
that run) and the target (kind ``grown``: op = the chain's label,
g = the product of the stages' g, d = the tokens of every stage). Each stage continues the data stream of the one
before and its FLOP counter starts at that stage's end (its grow step's FLOPs included), so the target's FLOPs
count every stage. The runs are planned by the grid's own `experiments.planner.Planner`, so chains resolve, name,
grow and validate like other runs.
"""

from __future__ import annotations

import math
import re

from experiments.plan import GrowStep, PlannedRun
from experiments.planner import Planner, base_shape, safe_name, shape_label
from experiments.schema import ChainSpec, Grid, GridError, suggest
from stacking.config import RunConfig, config_hash


def check_chain(grid: Grid, i: int, ch: ChainSpec, labels: list[str], ops_known: dict, where: str) -> None:
    """A chain's label, ops, stage factors and budgets (what needs no model or data)."""
    w = f"{where}: chains[{i}]"
    if not re.fullmatch(r"[A-Za-z0-9._]+", ch.label):
        raise GridError(
            f"{w}.label must be a non-empty name of letters, digits, '.' and '_' (it goes into run "
            f"names), got {ch.label!r}"
        )
    if ch.label in labels or ch.label in [c.label for c in grid.chains[:i]]:
        raise GridError(
            f"{w}.label {ch.label!r} repeats an op label or an earlier chain's (duplicate run ids and "
            "speed-up rows); give it a distinct label"
        )
    if not ch.stages:
        raise GridError(f"{w}.stages is empty; give at least one {{g, tokens}} stage before the target")
    if len(ch.op) not in (1, len(ch.stages)):
        raise GridError(
            f"{w}.op lists {len(ch.op)} operators for {len(ch.stages)} stages; give one operator, or one per stage"
        )
    for j, op in enumerate(ch.op):
        at = f"{w}.op" + (f"[{j}]" if len(ch.op) > 1 else "")
        if op not in ops_known:
            raise GridError(
                f"{at}: unknown operator {op!r}{suggest(op, list(ops_known))}; valid: {', '.join(ops_known)}"
            )
        if ch.direction not in ops_known[op]:
            raise GridError(
                f"{at}: {op} does not support direction {ch.direction!r}; valid: {', '.join(ops_known[op])}"
            )
    for k, st in enumerate(ch.stages):
        if st.g < 2:
            raise GridError(f"{w}.stages[{k}].g = {st.g} must be an integer >= 2")
        if st.tokens <= 0:
            raise GridError(f"{w}.stages[{k}].tokens = {st.tokens} must be a positive multiple of global_batch_tokens")
    if ch.tokens is not None and ch.total_flops is not None:
        raise GridError(f"{w}: give at most one of tokens (after the last growth) and total_flops")
    if ch.tokens is None and ch.total_flops is None and (grid.grown.tokens is None) == (grid.grown.total_flops is None):
        raise GridError(
            f"{w}: give tokens (trained after the last growth) or total_flops (every stage's FLOPs "
            "included), or exactly one of grown.tokens and grown.total_flops for it to use"
        )
    if ch.tokens is not None and ch.tokens <= 0:
        raise GridError(f"{w}.tokens = {ch.tokens} must be a positive multiple of global_batch_tokens")
    seeds = ch.seeds or []
    if len(set(seeds)) != len(seeds):
        raise GridError(f"{w}.seeds lists a seed twice (duplicate run ids)")


def chain_runs(planner: Planner, index: int, chain: ChainSpec, target: str, seed: int) -> list[PlannedRun]:
    """One chain for one target and seed: stages 0..K-1 (kind base, each the next one's base), then the target
    (kind grown, op = the chain's label, d = the tokens of every earlier stage, FLOPs counted from stage 0)."""
    where = f"{planner.where}: chains[{index}] ({chain.label})"
    shapes = _stage_shapes(planner, where, chain, target)
    out: list[PlannedRun] = []
    prev: PlannedRun | None = None
    for k, shape in enumerate(shapes):
        prev, planned_here = _stage(planner, where, chain, k, shape, target, seed, prev)
        out += [prev] if planned_here else []
    return out + _target(planner, where, chain, target, seed, prev)


def _stage_shapes(planner: Planner, where: str, chain: ChainSpec, target: str) -> list[dict]:
    """model_overrides of each stage before the target, found from the target down."""
    product = math.prod(st.g for st in chain.stages)
    defaults = planner.defaults.get("model_overrides", {})
    shapes: list[dict] = []
    into, into_name = planner.models.of(planner.defaults, model=target)[0], target
    for k in reversed(range(len(chain.stages))):
        try:
            shape = base_shape(into, chain.direction, chain.stages[k].g, into_name)
        except GridError as e:
            raise GridError(
                f"{where}: stages[{k}].g: {e} (the product of the stages' g, {product}, must divide the target's shape)"
            ) from None
        shapes.insert(0, shape)
        into = planner.models.of(planner.defaults, model=target, overrides={**defaults, **shape})[0]
        into_name = f"{shape_label(target, {**defaults, **shape})} (stage {k})"
    return shapes


def _stage(
    planner: Planner, where: str, chain: ChainSpec, k: int, shape: dict, target: str, seed: int, prev: PlannedRun | None
) -> tuple[PlannedRun, bool]:
    """Stage k (kind base) and whether it was planned here: stage 0 trained like a grid base (or that run itself,
    planned already, when one has its exact config), a later stage grown from the previous one; checkpointed at
    its last token."""
    grid = planner.grid
    name = safe_name(f"stage{k}-{target}-{chain.label}-{chain.direction}-s{seed}")
    kind_set = grid.base.set if prev is None else planner.grown_set
    settings = planner.settings(kind_set, name)
    tokens = chain.stages[k].tokens
    batch = settings.get("global_batch_tokens", RunConfig.global_batch_tokens)
    if tokens % batch:
        raise GridError(
            f"{where}: stages[{k}].tokens = {tokens} must be a positive multiple of global_batch_tokens = {batch}"
        )
    managed = {
        "model": target,
        "seed": seed,
        "max_tokens": tokens,
        "save_at_tokens": [tokens],
        "model_overrides": shape,
    }
    if grid.base.schedule == "constant":  # its growth point on an un-annealed LR, like a base's d
        managed["schedule"] = "constant"
    if grid.grown.optimizer == "carry":
        managed["save_state_at_tokens"] = [tokens]
    fields = {"direction": chain.direction, "chain": chain.label, "stage": k}
    if prev is None:
        cfg = planner.resolve(name, kind_set, managed)
        key = config_hash(cfg)
        if key in planner.trained:  # the same run planned already (a base, another chain's stage 0): grow from it
            return planner.trained[key], False
        planner.trained[key] = planner.run(name, "base", target, cfg, data_tokens=tokens, **fields)
        return planner.trained[key], True
    grown_settings = {**settings, "model": target, "model_overrides": {**settings.get("model_overrides", {}), **shape}}
    step, grow_flops = _grow_step(planner, chain, k, prev, target, seed, grown_settings)
    cfg = _resolve_grown(planner, where, name, kind_set, managed, step, prev)
    return planner.run(
        name,
        "base",
        target,
        cfg,
        data_tokens=_data_tokens(cfg, tokens, prev),
        flops_offset=prev.flops + grow_flops,
        op=step.op,
        g=step.g,
        parent=prev.id,
        deps=[prev.id],
        grow=step,
        **fields,
    ), True


def _target(
    planner: Planner, where: str, chain: ChainSpec, target: str, seed: int, prev: PlannedRun
) -> list[PlannedRun]:
    """The chain's grown run: the target grown from the last stage, on the chain's budget (tokens, or what its
    total_flops leaves after every stage and the last grow step), and its cooldowns."""
    grid, stages = planner.grid, chain.stages
    done, g = sum(st.tokens for st in stages), math.prod(st.g for st in stages)
    name = safe_name(f"grown-{target}-{chain.label}-{chain.direction}-g{g}-d{done}-s{seed}")
    settings = {**planner.settings(planner.grown_set, name), "model": target}
    step, grow_flops = _grow_step(planner, chain, len(stages), prev, target, seed, settings)
    budget_tokens, budget_flops = (
        (chain.tokens, chain.total_flops)
        if chain.tokens or chain.total_flops
        else (grid.grown.tokens, grid.grown.total_flops)
    )
    tokens = budget_tokens
    if tokens is None:
        tokens = planner.tokens_after_growth(settings, prev.flops + grow_flops, budget_flops)
        if tokens <= 0:
            maps = f" and {grow_flops:.4g} on {step.op}'s maps" if grow_flops else ""
            raise GridError(
                f"{where}: its stages use {prev.flops:.4g} FLOPs{maps}, leaving no budget in "
                f"total_flops = {budget_flops:.4g} for run {name}"
            )
    batch = settings.get("global_batch_tokens", RunConfig.global_batch_tokens)
    if tokens % batch:
        raise GridError(f"{where}: tokens = {tokens} must be a positive multiple of global_batch_tokens = {batch}")
    cfg = _resolve_grown(
        planner,
        where,
        name,
        planner.grown_set,
        {"model": target, "seed": seed, "max_tokens": tokens, "save_at_tokens": []},
        step,
        prev,
    )
    return planner.with_cooldowns(
        name,
        "grown",
        target,
        cfg,
        _data_tokens(cfg, tokens, prev),
        flops_offset=prev.flops + grow_flops,
        op=chain.label,
        direction=chain.direction,
        g=g,
        grow_at_tokens=done,
        parent=prev.id,
        deps=[prev.id],
        grow=step,
        chain=chain.label,
        stage=len(stages),
    )


def _grow_step(
    planner: Planner, chain: ChainSpec, k: int, prev: PlannedRun, target: str, seed: int, grown_settings: dict
) -> tuple[GrowStep, float]:
    """The growth into stage k (k = len(stages): the target) from the previous stage's last checkpoint, and the
    FLOPs it spends besides that stage's (``grown_settings``: the grown run's settings, model and shape included)."""
    op = chain.op[0] if len(chain.op) == 1 else chain.op[k - 1]
    stage = chain.stages[k - 1]
    step = planner.grow_step(
        f"{target}-{chain.label}-{chain.direction}-stage{k}-s{seed}",
        [prev.id],
        prev,
        prev.tokens,
        op,
        chain.direction,
        stage.g,
        seed,
        {**chain.options, **stage.options},
    )
    return step, planner.grow_flops(step, prev, grown_settings)


def _resolve_grown(
    planner: Planner, where: str, name: str, kind_set: dict, managed: dict, step: GrowStep, prev: PlannedRun
) -> RunConfig:
    """The config of a run that starts from ``step``'s dir; one that continues the previous stage's data stream
    must read it in the same windows (micro_batch_size, seq_len)."""
    cfg = planner.resolve(
        name, kind_set, {**managed, "init_from": step.dst, "optimizer_init": "carry" if step.carry_state else "fresh"}
    )
    if cfg.data_stream == "continue":
        for f in ("micro_batch_size", "seq_len"):
            if getattr(cfg, f) != getattr(prev.config, f):
                raise GridError(
                    f"{where}: run {name} continues the data stream of {prev.name}, so its {f} "
                    f"must be {getattr(prev.config, f)} (got {getattr(cfg, f)}); match them "
                    "or set data_stream: replay"
                )
    return cfg


def _data_tokens(cfg: RunConfig, tokens: int, prev: PlannedRun) -> int:
    """Tokens read from the data stream by the end of the run: its own, after the previous stage's if it continues
    that stream."""
    return tokens + (prev.data_tokens if cfg.data_stream == "continue" else 0)
