"""A planned run — one row of a sweep's plan.json: its resolved `RunConfig`, kind, shape, dependencies, tokens and
FLOPs. `experiments.grid` makes them from a grid file; everything that only reads a sweep dir (`stacking sweep
status`, the results table, the executors) reads them from here, without importing torch or litgpt."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from stacking.config import RunConfig


@dataclass
class GrowStep:
    """A grown run's grow step, ``grow_checkpoint(src, dst, op, direction=…, g=…, seed=…, **options)``, run before
    the run trains from ``dst`` (paths relative to the sweep dir)."""

    src: str
    """The checkpoint grown: its parent's ``runs/<id>/checkpoints/tokens-<d>``."""
    dst: str
    """The grown checkpoint dir, ``grown/<readable name>-<hash>``: the run's ``init_from``."""
    op: str
    """Growth operator."""
    direction: str
    """depth | width."""
    g: int
    """Growth factor of this step."""
    seed: int
    """Seed of the operator's random parts."""
    options: dict[str, Any] = field(default_factory=dict)
    """Operator options (G_learn's ``data`` filled in with its parent's data dir)."""
    carry_state: str | None = None
    """grown.optimizer: carry — the parent's full training state at the growth point, whose AdamW moments are
    mapped onto the grown model; None for fresh AdamW."""

    def to_json(self) -> dict[str, Any]:
        """plan.json's ``grow``: every field, ``carry_state`` only when set."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["carry_state"] is None:
            del d["carry_state"]
        return d


@dataclass
class PlannedRun:
    """One run of a sweep, resolved."""

    id: str
    """Run id: readable name + first 8 hex of the config hash; the run dir is runs/<id>."""
    name: str
    """The readable part of the id (what ``overrides[].match`` and ``--only`` globs see)."""
    kind: str
    """base | grown | scratch | cooldown."""
    target: str
    """Model preset of the final shape."""
    model: str
    """This run's shape as a preset name (tiny family) or ``preset{field=value,…}``."""
    config: RunConfig
    """The resolved RunConfig (paths relative to the sweep dir)."""
    flops_per_token: float
    """Training FLOPs per token of this run's model."""
    flops_offset: float = 0.0
    """FLOPs its FLOP counter starts at (the base's FLOPs at d for a grown run)."""
    op: str | None = None
    """Growth operator (grown runs)."""
    direction: str | None = None
    """depth | width (grown runs)."""
    g: int | None = None
    """Growth factor (grown runs)."""
    grow_at_tokens: int | None = None
    """d: base tokens at growth (grown runs)."""
    parent: str | None = None
    """Base run id (grown runs)."""
    deps: list[str] = field(default_factory=list)
    """Run ids that must be done before this one starts."""
    grow: GrowStep | None = None
    """The grow step of a grown run (None for the others, and for a ``continued`` run: it grows nothing)."""
    params_non_embedding: int = 0
    """Non-embedding parameters of this run's model (LM head included)."""
    data_tokens: int = 0
    """Training tokens read from the data stream by the end of this run, its parents' included (a grown run
    continues its base's stream)."""
    epochs: float = 0.0
    """data_tokens over the dataset's train tokens."""
    branch_of: str | None = None
    """The main run a cooldown run branches from."""
    anneal_fraction: float | None = None
    """f: a cooldown run ends at f × its main run's budget."""
    decay_tokens: int | None = None
    """A cooldown run's LR decay length (= the tokens it trains, unless ``start_tokens`` says otherwise)."""
    start_tokens: int | None = None
    """Where a cooldown run of ``anneal.at_scratch_flops`` begins on its main run's token counter: the main run's
    last saved state before its branch point, or 0 (the main run's start) when it saves none before it; the
    cooldown trains on the main run's constant LR up to its decay. None: at its decay (tokens − decay_tokens)."""
    at_flops_of: str | None = None
    """``anneal.at_scratch_flops``: the scratch cooldown run at whose FLOPs this (grown) cooldown run ends."""
    chain: str | None = None
    """Label of the growth chain this run is a stage of (None outside chains)."""
    stage: int | None = None
    """Its stage in the chain: 0 = the first (smallest) model, len(stages) = the target (the chain's grown run)."""
    variant: str | None = None
    """The op's grid label when the grid runs this op (and direction) with more than one set of options — e.g.
    llama_pro with train_new_only true and false — so that analyses keep the variants apart; None otherwise (labels
    that only split a d sweep off the main d, with the same options, stay one method)."""

    @property
    def tokens(self) -> int:
        """The run's final token count (a cooldown run's on its main run's counter)."""
        return self.config.max_tokens

    @property
    def first_tokens(self) -> int:
        """Where this run's own training begins on its token counter (a cooldown run's: on its main run's)."""
        if self.kind != "cooldown":
            return 0
        return self.start_tokens if self.start_tokens is not None else self.config.max_tokens - self.decay_tokens

    @property
    def trained_tokens(self) -> int:
        """Tokens this run trains itself (a cooldown run only its decay, or from ``start_tokens``)."""
        return self.config.max_tokens - self.first_tokens

    @property
    def n_evals(self) -> int:
        """Validation evaluations over the run (the start and the end included)."""
        c = self.config
        end, every = c.max_tokens, c.val_every_tokens
        if self.kind == "cooldown":  # its own evaluations: from the branch point to the end
            start = self.first_tokens
            return end // every - start // every + (end % every > 0) + (start == 0)
        return end // every + (end % every > 0) + 1

    @property
    def flops(self) -> float:
        """Cumulative FLOPs at the end of the run (base FLOPs at d included for a grown run)."""
        return self.flops_offset + self.config.max_tokens * self.flops_per_token

    def to_json(self) -> dict[str, Any]:
        """plan.json's row: every field but ``config``, then tokens, FLOPs and the config; the fields added after
        plans were recorded only when set (a plan that does not use them reads as it always did)."""
        d = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "config" and not (f.name in _ADDED and getattr(self, f.name) is None)
        }
        d["grow"] = self.grow.to_json() if self.grow is not None else None
        return {**d, "tokens": self.tokens, "flops": self.flops, "config": asdict(self.config)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlannedRun:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d and f.name != "config"}
        if kw.get("grow") is not None:
            kw["grow"] = GrowStep(**kw["grow"])
        return cls(config=RunConfig(**d["config"]), **kw)


_ADDED = ("start_tokens", "at_flops_of")
"""PlannedRun fields added after plans were recorded: in plan.json only when set."""

__all__ = ["GrowStep", "PlannedRun"]
