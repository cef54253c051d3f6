"""``anneal.at_scratch_flops``: cooldowns of every grown run at the FLOPs of its seed's scratch cooldowns.

`anneal.fractions` puts a main run's cooldowns at fractions of its own token budget; a grown run's FLOP counter starts
at its base's FLOPs, so its cooldown at f is not at the FLOPs of scratch's cooldown at f. `scratch_flop_cooldowns`
adds, per grown run and cooldown of its seed's FLOP-matched scratch run (`Planner.flop_matched`), a cooldown ending
where the grown run has spent that cooldown's FLOPs (`flop_point`), placed and rounded like every cooldown
(`Planner.cooldown_at`). The main runs are not changed — their saved states (``save_state_at_tokens``) are part of
their ids — so a new cooldown starts from the grown run's last saved state before its branch point, or from the
grown run's start, and trains on the main run's constant LR up to the branch point before it decays.
"""

from __future__ import annotations

from dataclasses import replace

from experiments.plan import PlannedRun
from experiments.planner import Planner


def flop_point(main: PlannedRun, flops: float) -> tuple[int, str]:
    """The token count, in whole optimizer steps, at which ``main`` (a grown run, its FLOP counter starting at its
    base's FLOPs) has spent ``flops``: (flops − flops_offset) / flops_per_token rounded to a step; 0 and why when
    that is not inside the run. A point up to two steps past its end is its end: a FLOP-matched grown run ends that
    close to scratch's budget (its budget rounded down to whole steps, scratch's up)."""
    batch = main.config.global_batch_tokens
    tokens = round((flops - main.flops_offset) / main.flops_per_token / batch) * batch
    if main.tokens < tokens <= main.tokens + 2 * batch:
        tokens = main.tokens
    if tokens <= 0:
        return 0, "its FLOPs are spent before the growth"
    if tokens > main.tokens:
        return 0, "its FLOPs lie past the grown run's budget"
    return tokens, ""


def scratch_flop_cooldowns(planner: Planner, runs: list[PlannedRun], notes: list[str]) -> list[PlannedRun]:
    """For every grown run of ``runs`` with a FLOP-matched scratch run of its target and seed: a cooldown ending at
    the `flop_point` of each of scratch's cooldowns. A point that is one of its own cooldowns' ends is that cooldown
    (marked ``at_flops_of``, not planned twice); one outside the run, or whose branch point lies in the warmup, gets
    no cooldown and a line in ``notes`` (one per scratch fraction and reason)."""
    new, skipped = [], {}
    for main in (r for r in runs if r.kind == "grown"):
        scratch = planner.flop_matched.get((main.target, main.config.seed))
        if scratch is None:
            continue
        own = {c.tokens: c for c in runs if c.branch_of == main.id}
        for at in scratch[1:]:  # the scratch run's cooldowns, by fraction
            tokens, why = flop_point(main, at.flops)
            cooldown = (
                planner.cooldown_at(tokens, main.config, tokens / main.tokens, at_flops_of=at) if tokens else None
            )
            if tokens and cooldown is None:
                why = "the cooldown there would branch inside the warmup"
            if cooldown is None:
                skipped.setdefault((at.anneal_fraction, why), []).append(main.name)
            elif tokens in own:
                own[tokens].at_flops_of = at.id
            else:  # from the last state the main run saves before the branch point (0: its start)
                states = [t for t in main.config.save_state_at_tokens if t <= cooldown.start_tokens]
                new.append(planner.cooldown_run(main, replace(cooldown, state_tokens=max(states, default=0))))
    for (f, why), names in skipped.items():
        which = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
        notes.append(f"anneal.at_scratch_flops: no cooldown at scratch's f = {f:g} for {which}: {why}")
    return new


__all__ = ["flop_point", "scratch_flop_cooldowns"]
