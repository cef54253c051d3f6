"""Growth chains, a grid's ``chains:`` (docs/sweeps.md, "Growth chains"): several growths in a row, each stage
grown from the previous stage's checkpoint at its last token (gradual stacking; MIDAS with the ``midas`` operator).

`check_chain` checks one entry before anything is built; `chain_runs` expands it, for one target and seed, into
stages 0..K-1 (kind ``base``: each is the next stage's base; a stage 0 that is exactly a run planned already — a
grid base of that shape, seed and budget, or another chain's stage 0 — is not planned again: stage 1 grows from
that run) and the target (kind ``grown``: op = the chain's label,
g = the product of the stages' g, d = the tokens of every stage). Each stage continues the data stream of the one
before and its FLOP counter starts at that stage's end, so the target's FLOPs count every stage. The runs are built
with `experiments.grid.expand`'s own builders (`Builders`), so chains resolve, name and validate like other runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.schema import ChainSpec, Grid, GridError, OpSpec, suggest
from stacking.config import config_hash
from stacking.train import RunConfig


@dataclass
class Builders:
    """What `experiments.grid.expand` builds runs with: the grid, its resolved defaults and model cache, and its
    functions (resolve a RunConfig, make a PlannedRun, plan cooldowns, shapes, names, the extra FLOPs of a grow)."""

    grid: Grid
    where: str
    defaults: dict
    mdl: Any
    train_tokens: int
    resolve: Callable
    planned: Callable
    anneal_starts: Callable
    with_cooldowns: Callable
    base_shape: Callable
    shape_label: Callable
    safe: Callable
    short_hash: Callable
    extra_flops: Callable
    trained: dict
    """config hash → a base or stage-0 run planned so far: a chain whose stage 0 would train exactly that run grows
    from it instead of training it again (every other chain of the same seed, and a grid base of the same shape)."""


def check_chain(grid: Grid, i: int, ch: ChainSpec, labels: list[str], ops_known: dict, where: str) -> None:
    """A chain's label, ops, stage factors and budgets (what needs no model or data)."""
    w = f"{where}: chains[{i}]"
    if not re.fullmatch(r"[A-Za-z0-9._]+", ch.label):
        raise GridError(f"{w}.label must be a non-empty name of letters, digits, '.' and '_' (it goes into run "
                        f"names), got {ch.label!r}")
    if ch.label in labels or ch.label in [c.label for c in grid.chains[:i]]:
        raise GridError(f"{w}.label {ch.label!r} repeats an op label or an earlier chain's (duplicate run ids and "
                        "speed-up rows); give it a distinct label")
    if not ch.stages:
        raise GridError(f"{w}.stages is empty; give at least one {{g, tokens}} stage before the target")
    if len(ch.op) not in (1, len(ch.stages)):
        raise GridError(f"{w}.op lists {len(ch.op)} operators for {len(ch.stages)} stages; give one operator, or "
                        "one per stage")
    for j, op in enumerate(ch.op):
        at = f"{w}.op" + (f"[{j}]" if len(ch.op) > 1 else "")
        if op not in ops_known:
            raise GridError(f"{at}: unknown operator {op!r}{suggest(op, list(ops_known))}; "
                            f"valid: {', '.join(ops_known)}")
        if ch.direction not in ops_known[op]:
            raise GridError(f"{at}: {op} does not support direction {ch.direction!r}; "
                            f"valid: {', '.join(ops_known[op])}")
    for k, st in enumerate(ch.stages):
        if st.g < 2:
            raise GridError(f"{w}.stages[{k}].g = {st.g} must be an integer >= 2")
        if st.tokens <= 0:
            raise GridError(f"{w}.stages[{k}].tokens = {st.tokens} must be a positive multiple of "
                            "global_batch_tokens")
    if ch.tokens is not None and ch.total_flops is not None:
        raise GridError(f"{w}: give at most one of tokens (after the last growth) and total_flops")
    if ch.tokens is None and ch.total_flops is None and (grid.grown.tokens is None) == (grid.grown.total_flops is None):
        raise GridError(f"{w}: give tokens (trained after the last growth) or total_flops (every stage's FLOPs "
                        "included), or exactly one of grown.tokens and grown.total_flops for it to use")
    if ch.tokens is not None and ch.tokens <= 0:
        raise GridError(f"{w}.tokens = {ch.tokens} must be a positive multiple of global_batch_tokens")
    seeds = ch.seeds or []
    if len(set(seeds)) != len(seeds):
        raise GridError(f"{w}.seeds lists a seed twice (duplicate run ids)")


def chain_runs(b: Builders, ci: int, ch: ChainSpec, target: str, seed: int) -> list:
    """One chain for one target and seed: stages 0..K-1 (kind base, each the next one's base), then the target
    (kind grown, op = the chain's label, d = the tokens of every earlier stage, FLOPs counted from stage 0)."""
    w, K, P = f"{b.where}: chains[{ci}] ({ch.label})", len(ch.stages), math.prod(st.g for st in ch.stages)
    ops = ch.op * K if len(ch.op) == 1 else ch.op
    mo, seq = b.defaults.get("model_overrides", {}), b.defaults.get("seq_len", RunConfig.seq_len)
    shapes: list[dict] = []  # model_overrides of each stage, found from the target down
    into, into_name = b.mdl.config(target, mo, seq)[0], target
    for k in reversed(range(K)):
        try:
            shape = b.base_shape(into, ch.direction, ch.stages[k].g, into_name)
        except GridError as e:
            raise GridError(f"{w}: stages[{k}].g: {e} (the product of the stages' g, {P}, must divide the "
                            "target's shape)") from None
        shapes.insert(0, shape)
        into = b.mdl.config(target, {**mo, **shape}, seq)[0]
        into_name = f"{b.shape_label(target, {**mo, **shape})} (stage {k})"
    carry = b.grid.grown.optimizer == "carry"
    lr_source = b.grid.scratch.set if b.grid.grown.lr == "target" else b.grid.base.set
    lr_fields = {k: lr_source[k] for k in ("lr", "min_lr") if k in lr_source}
    budget_tokens, budget_flops = ((ch.tokens, ch.total_flops) if ch.tokens or ch.total_flops
                                   else (b.grid.grown.tokens, b.grid.grown.total_flops))
    out: list = []
    prev = None
    for k in range(K + 1):
        last = k == K
        kind_set = b.grid.base.set if k == 0 else {**lr_fields, **b.grid.grown.set}
        fields_ = {**b.defaults, **kind_set}
        gb = fields_.get("global_batch_tokens", RunConfig.global_batch_tokens)
        done = sum(st.tokens for st in ch.stages[:k])  # tokens of the earlier stages
        if last:
            name = b.safe(f"grown-{target}-{ch.label}-{ch.direction}-g{P}-d{done}-s{seed}")
            tokens = budget_tokens
            if tokens is None:
                _, tfpt = b.mdl.config(target, fields_.get("model_overrides", {}), fields_.get("seq_len", seq))
                tokens = int((budget_flops - prev.flops) / tfpt // gb) * gb
            if budget_tokens is None and tokens <= 0:
                raise GridError(f"{w}: its stages use {prev.flops:.4g} FLOPs, leaving no budget in total_flops = "
                                f"{budget_flops:.4g} for run {name}")
            if tokens % gb:
                raise GridError(f"{w}: tokens = {tokens} must be a positive multiple of global_batch_tokens = {gb}")
            managed = dict(model=target, seed=seed, max_tokens=tokens, save_at_tokens=[])
        else:
            name = b.safe(f"stage{k}-{target}-{ch.label}-{ch.direction}-s{seed}")
            tokens = ch.stages[k].tokens
            if tokens % gb:
                raise GridError(f"{w}: stages[{k}].tokens = {tokens} must be a positive multiple of "
                                f"global_batch_tokens = {gb}")
            managed = dict(model=target, seed=seed, max_tokens=tokens, save_at_tokens=[tokens],
                           model_overrides=shapes[k])
            if b.grid.base.schedule == "constant":  # its growth point on an un-annealed LR, like a base's d
                managed["schedule"] = "constant"
            if carry:
                managed["save_state_at_tokens"] = [tokens]
        grow, offset, op, st = None, 0.0, None, None
        if prev is not None:
            op, st = ops[k - 1], ch.stages[k - 1]
            options = {**ch.options, **st.options}
            if op == "G_learn":
                options["data"] = str(Path(options.get("data", prev.config.data_dir)).resolve())
            grow_id = b.safe(f"{target}-{ch.label}-{ch.direction}-stage{k}-s{seed}") + "-" + b.short_hash(
                [prev.id, op, ch.direction, st.g, seed, options] + (["carry"] if carry else []))
            grow = {"src": f"{prev.config.out_dir}/checkpoints/tokens-{prev.tokens:012d}",
                    "dst": f"grown/{grow_id}", "op": op, "direction": ch.direction, "g": st.g, "seed": seed,
                    "options": options}
            if carry:
                grow["carry_state"] = f"{prev.config.out_dir}/states/tokens-{prev.tokens:012d}.ckpt"
            managed.update(init_from=grow["dst"], optimizer_init="carry" if carry else "fresh")
        cfg = b.resolve(name, kind_set, managed)
        key = config_hash(cfg) if k == 0 else None
        if key is not None:  # the same run planned already (a base, another chain's stage 0): grow from it
            same = b.trained.get(key)
            if same is not None:
                prev = same
                continue
        if prev is not None:
            if cfg.data_stream == "continue":
                for f in ("micro_batch_size", "seq_len"):
                    if getattr(cfg, f) != getattr(prev.config, f):
                        raise GridError(f"{w}: run {name} continues the data stream of {prev.name}, so its {f} "
                                        f"must be {getattr(prev.config, f)} (got {getattr(cfg, f)}); match them "
                                        "or set data_stream: replay")
            offset = prev.flops + b.extra_flops(OpSpec(op=op, direction=ch.direction, options=grow["options"]),
                                               st.g, prev, cfg, b.mdl)
        points = b.anneal_starts(name, cfg) if last else []
        if last:
            cfg.save_state_at_tokens = sorted({s for _, s, _ in points})
        data_tokens = tokens + (prev.data_tokens if prev is not None and cfg.data_stream == "continue" else 0)
        run = b.planned(name, "grown" if last else "base", target, cfg, flops_offset=offset,
                        op=ch.label if last else op, direction=ch.direction, g=P if last else (st and st.g),
                        grow_at_tokens=done if last else None, parent=prev and prev.id,
                        deps=[prev.id] if prev is not None else [], grow=grow, data_tokens=data_tokens,
                        epochs=data_tokens / b.train_tokens, chain=ch.label, stage=k)
        out.extend(b.with_cooldowns(run, points) if last else [run])
        if key is not None:
            b.trained[key] = run
        prev = run
    return out
