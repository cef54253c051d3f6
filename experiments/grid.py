"""Grid files → a plan: every run of a sweep, resolved to a `RunConfig`, with its dependencies, tokens and FLOPs.

A grid (``experiments/grids/*.yaml``, format in docs/sweeps.md) holds shared `RunConfig` settings (``defaults``)
and axes: ``targets`` × ``ops`` × ``g`` × ``d`` × ``seeds``. For each point the plan has

* a **base** run: the target's shape divided by ``g`` (depth: n_layer/g; width: n_embd, n_head, n_query_groups,
  intermediate_size /g, head_size kept), trained to ``base.tokens`` (default: the largest ``d``) with a checkpoint
  at every ``d``. One base serves every op and every ``d`` of its (target, direction, g, seed);
* a **grown** run: ``grow_checkpoint(base checkpoint at d → grown/<id>)`` and then the target shape trained from
  that dir (``init_from``), its FLOP counter starting at the base's FLOPs at ``d`` plus the grow step's (G_learn's
  map training); with ``grown.total_flops`` it trains on what the budget leaves after both;
* per ``chains`` entry × target × seed, a **growth chain**: stage 0 (the target divided by the product of the
  stages' g) trained like a base, each later stage grown from the previous stage's checkpoint at its last token
  (kind ``base``: it is the next stage's base), its FLOP counter and data stream continuing; the last growth gives
  the target, a ``grown`` run whose op is the chain's label and whose d is the tokens of all earlier stages;
* a **scratch** baseline per target × seed: the target trained from scratch on at least the FLOPs of the largest
  grown run of that target (base FLOPs included), tokens rounded up to a multiple of global_batch_tokens;
* with ``anneal.fractions``, a **cooldown** run per scratch/grown (main) run and fraction f: a WSD branch from the
  main run's full training state at ``f·T − decay`` that decays the LR over ``decay`` tokens and ends at ``f·T``;
  with ``anneal.at_scratch_flops`` also one per grown run and scratch cooldown, ending where the grown run has spent
  that scratch cooldown's FLOPs (the annealed reading at equal FLOPs; placed last, so every other run stays put).

The controls are the paper's and the same for both arms (docs/sweeps.md, "Fair controls"): bases on a constant LR
after warmup (every d at the same LR), grown runs at the target's own LR with fresh AdamW, continuing the base's
data stream (no replay of the base's d tokens), every FLOP counted (the base's, G_learn's map training).

Run ids are ``<readable name>-<first 8 hex of config_hash(resolved RunConfig)>``. Paths inside a config are
relative to the sweep dir (``out_dir: runs/<id>``, ``init_from: grown/<id>``) and runs execute with the sweep dir
as working directory, so ids do not depend on where the sweep dir lives. Every check that can fail does so here,
before any compute, with one line naming the field.

`expand` checks the axes (`_check_axes`), then drives an `experiments.planner.Planner` over them: one base per
(target, direction, g, seed), the grown runs of every op × d, the chains (`experiments.chains`), the scratch runs;
then checks the whole plan.
"""

from __future__ import annotations

import fnmatch

from experiments.anneal import scratch_flop_cooldowns
from experiments.chains import chain_runs, check_chain
from experiments.plan import GrowStep, PlannedRun
from experiments.planner import CONTINUED, Planner, base_shape, shape_label
from experiments.schema import (
    AnnealSpec,
    BaseSpec,
    ChainSpec,
    EvalSpec,
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

# The grid API is this module: the schema's names are re-exported from here.
__all__ = [
    "CONTINUED",
    "MAX_EPOCHS",
    "AnnealSpec",
    "BaseSpec",
    "ChainSpec",
    "EvalSpec",
    "Grid",
    "GridError",
    "GrowStep",
    "GrownSpec",
    "OpSpec",
    "OverrideSpec",
    "PlannedRun",
    "ScratchSpec",
    "SlurmSpec",
    "StageSpec",
    "apply_scale",
    "base_shape",
    "epoch_warnings",
    "expand",
    "load_grid",
    "operators",
    "parse_grid",
    "select",
    "shape_label",
]

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
            raise GridError(
                f"{where}: ops[{i}].op: unknown operator {o.op!r}{suggest(o.op, list(ops_known))}; "
                f"valid: {', '.join(ops_known)}, {CONTINUED}"
            )
        dirs = ops_known.get(o.op, ("depth", "width"))  # continued: the direction names the base
        if o.direction not in dirs:
            raise GridError(
                f"{where}: ops[{i}]: {o.op} does not support direction {o.direction!r}; valid: {', '.join(dirs)}"
            )
        if (labels[i], o.direction) in [(labels[j], grid.ops[j].direction) for j in range(i)]:
            raise GridError(
                f"{where}: ops[{i}] ({labels[i]}, {o.direction}) repeats an earlier entry "
                "(duplicate run ids); give it a distinct label"
            )
    if grid.ops:
        if not grid.d and not all(o.d for o in grid.ops):
            raise GridError(f"{where}: d is empty; give the base tokens at which to grow")
        if (grid.grown.tokens is None) == (grid.grown.total_flops is None):
            raise GridError(f"{where}: grown needs exactly one of tokens (tokens after growth) and total_flops")
    if grid.scratch.lrs:
        if grid.ops:
            raise GridError(
                f"{where}: scratch.lrs is an LR sweep on scratch alone: put it in a grid without ops "
                "(tune the target's LR first, then set it in the growth grid's defaults)"
            )
        bad = [lr for lr in grid.scratch.lrs if not lr > 0]
        if bad or len(set(grid.scratch.lrs)) != len(grid.scratch.lrs):
            raise GridError(f"{where}: scratch.lrs must be distinct positive learning rates, got {grid.scratch.lrs}")
    policies = [
        ("base.schedule", grid.base.schedule, ("constant", "defaults")),
        ("grown.optimizer", grid.grown.optimizer, ("fresh", "carry")),
        ("grown.lr", grid.grown.lr, ("target", "base")),
    ]
    for name, value, valid in policies:
        if value not in valid:
            raise GridError(f"{where}: {name} must be one of {', '.join(valid)}, got {value!r}")
    a = grid.anneal
    if any(not 0 < f <= 1 for f in a.fractions) or len(set(a.fractions)) != len(a.fractions):
        raise GridError(f"{where}: anneal.fractions must be distinct numbers in (0, 1], got {a.fractions}")
    if not 0 < a.decay_fraction < 1:
        raise GridError(f"{where}: anneal.decay_fraction must be in (0, 1), got {a.decay_fraction}")
    if a.at_scratch_flops:
        missing = [
            why
            for why, bad in (
                ("anneal.fractions (scratch's cooldowns)", not a.fractions),
                ("scratch.flop_matched: true", not grid.scratch.flop_matched),
                ("grown runs (ops or chains)", not grid.ops and not grid.chains),
            )
            if bad
        ]
        if missing:
            raise GridError(f"{where}: anneal.at_scratch_flops needs {missing[0]}")
    if a.save_branch_states and not a.at_scratch_flops:
        raise GridError(
            f"{where}: anneal.save_branch_states needs anneal.at_scratch_flops: true (it saves their states)"
        )
    for g in grid.g + [g for o in grid.ops for g in (o.g or [])]:
        if g < 2:
            raise GridError(f"{where}: g = {g} must be an integer >= 2")
    for i, ch in enumerate(grid.chains):
        check_chain(grid, i, ch, labels, ops_known, where)
    if grid.eval is not None:
        _check_eval(grid.eval, where)
    return labels


def _check_eval(spec: EvalSpec, where: str) -> None:
    """The ``eval`` field's values (its task names and include paths are checked by the sweep, which has lm-eval:
    `experiments.evaluation.check_tasks`)."""
    if not spec.tasks or any(not t.strip() for t in spec.tasks):
        raise GridError(
            f"{where}: eval.tasks must list at least one lm-eval task name, e.g. [nextline_mc, "
            f"heldout_ppl], got {spec.tasks}"
        )
    for name, value, least in (
        ("limit", spec.limit, 1),
        ("num_fewshot", spec.num_fewshot, 0),
        ("batch_size", spec.batch_size, 1),
    ):
        if value is not None and value < least:
            raise GridError(f"{where}: eval.{name} must be an integer >= {least}, got {value}")


def expand(grid: Grid, where: str = "grid", notes: list[str] | None = None) -> list[PlannedRun]:
    """All runs of a grid in dependency order (bases, grown, chains, scratch, then the cooldowns of
    ``anneal.at_scratch_flops``), fully validated; raises GridError. ``notes`` (when given) receives one line per
    cooldown the plan leaves out."""
    labels = _check_axes(grid, where)
    if grid.anneal.at_scratch_flops and grid.anneal.save_branch_states:  # the branch points, then the plan again
        first = _expand(grid, labels, Planner(grid, where), [])
        names = {r.id: r.name for r in first}
        branch_points: dict[str, set[int]] = {}
        for r in first:
            if r.at_flops_of is not None and r.branch_of is not None:
                branch = r.config.max_tokens - r.config.decay_tokens
                branch_points.setdefault(names[r.branch_of], set()).add(branch)
        planner = Planner(grid, where)
        planner.extra_states = branch_points
    else:
        planner = Planner(grid, where)
    return _expand(grid, labels, planner, notes)


def _expand(grid: Grid, labels: list[str], planner: Planner, notes: list[str] | None) -> list[PlannedRun]:
    """`expand` with one planner."""
    bases, grown = _one_step_runs(planner, labels)
    chained = [
        r
        for i, chain in enumerate(grid.chains)
        for target in grid.targets
        for seed in chain.seeds or grid.seeds
        for r in chain_runs(planner, i, chain, target, seed)
    ]
    seeds = sorted(set(grid.seeds).union(*[o.seeds or [] for o in grid.ops], *[c.seeds or [] for c in grid.chains]))
    scratch = [r for target in grid.targets for seed in seeds for r in planner.scratch(target, seed, grown + chained)]
    runs = bases + grown + chained + scratch
    if grid.anneal.at_scratch_flops:  # last: every run before them keeps its place
        runs += scratch_flop_cooldowns(planner, runs, notes if notes is not None else [])
    _check_plan(planner, runs)
    return runs


def _one_step_runs(planner: Planner, labels: list[str]) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """The bases (one per target, direction, g and seed, checkpointed at the d's of every op grown from it) and
    the grown runs (with their cooldowns) of the ``ops`` × ``g`` × ``d`` × ``seeds`` axes."""
    grid = planner.grid
    every_g = sorted(set(grid.g).union(*[o.g or [] for o in grid.ops]))
    points = [
        (g, op, label, seed)
        for g in every_g
        for op, label in zip(grid.ops, labels, strict=True)
        for seed in op.seeds or grid.seeds
        if g in (op.g or grid.g)
    ]
    grow_at: dict[tuple, set[int]] = {}
    for g, op, _, seed in points:
        grow_at.setdefault((op.direction, g, seed), set()).update(op.d or grid.d)
    bases: dict[tuple, PlannedRun] = {}
    grown: list[PlannedRun] = []
    for target in grid.targets:
        for g, op, label, seed in points:
            key = (target, op.direction, g, seed)
            if key not in bases:
                bases[key] = planner.base(target, op.direction, g, seed, sorted(grow_at[key[1:]]))
            for d in op.d or grid.d:
                grown += planner.grown(bases[key], op, label, g, d, seed)
    return list(bases.values()), grown


def _check_plan(planner: Planner, runs: list[PlannedRun]) -> None:
    """Checks on the whole plan: some runs, distinct ids, every override used, every grow step applicable, epochs."""
    grid, where = planner.grid, planner.where
    if not runs:
        raise GridError(f"{where}: the grid has no runs (give ops and d, chains, or scratch.tokens / scratch.flops)")
    seen: set[str] = set()
    for r in runs:
        if r.id in seen:
            raise GridError(f"{where}: duplicate run id {r.id}: two grid points resolve to the same run")
        seen.add(r.id)
    for i, o in enumerate(grid.overrides):
        if i not in planner.used_overrides:
            raise GridError(
                f"{where}: overrides[{i}].match {o.match!r} matches no run; names look like {runs[-1].name}"
            )
    planner.check_growth(runs)
    over = [r for r in runs if r.epochs > MAX_EPOCHS]
    if over and not grid.allow_epochs:
        worst = max(over, key=lambda r: r.epochs)
        raise GridError(
            f"{where}: run {worst.name} reads {worst.epochs:.1f} epochs of {planner.train_tokens:,} "
            f"training tokens (> {MAX_EPOCHS}); use a bigger corpus, shrink the budget, or set "
            "allow_epochs: true"
        )


MAX_EPOCHS = 4
"""Past this many epochs of its training data a plan is refused unless the grid sets ``allow_epochs``."""


def epoch_warnings(runs: list[PlannedRun]) -> list[str]:
    """One line per run that reads its training data more than once (shown by --dry-run and at sweep start)."""
    return [
        f"warning: run {r.name} reads {r.epochs:.2f} epochs of its training data (repeated data)"
        for r in runs
        if r.epochs > 1.0
    ]


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
