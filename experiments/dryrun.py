"""``stacking sweep --dry-run``: the plan as a table, with an estimated wall time from throughput measured here.

The time estimate comes from the ``tokens_per_s`` of finished runs in the sweep dir when there are some, otherwise
from a few timed optimizer steps of the plan's smallest model on this machine; the wall time is a list-scheduling
simulation of the DAG on ``jobs`` slots, in the local executor's start order.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments.grid import epoch_warnings
from experiments.local import KIND_ORDER
from experiments.rundir import is_done, read_json


def kinds_summary(runs) -> str:
    """``2 base, 8 grown, 1 scratch`` (cooldown only when there are some)."""
    return ", ".join(
        f"{n} {k}"
        for k in ("base", "grown", "scratch", "cooldown")
        if (n := sum(r.kind == k for r in runs)) or k != "cooldown"
    )


def measure_throughput(runs, sweep_dir: Path, threads: int) -> tuple[dict[str, float], float, str]:
    """(tokens/s per model label, FLOP/s for other models, where the numbers come from).

    Finished runs in the sweep dir when there are any (their summary.json tokens_per_s: tokens trained in the run
    over its wall time, evaluation and checkpoints included); otherwise a few timed optimizer steps of the plan's
    smallest model here.
    """
    per_model: dict[str, list[float]] = {}
    flop_rates = []
    for r in runs:
        s = read_json(sweep_dir / r.config.out_dir / "summary.json") or {}
        if r.kind == "cooldown" and "start_tokens" not in s:
            continue  # written before start_tokens: its tokens_per_s counted the main run's tokens before the branch
        if s.get("status") == "done" and s.get("tokens_per_s"):
            per_model.setdefault(r.model, []).append(s["tokens_per_s"])
            flop_rates.append(s["tokens_per_s"] * r.flops_per_token)
    if flop_rates:
        med = sorted(flop_rates)[len(flop_rates) // 2]
        return (
            {m: sorted(v)[len(v) // 2] for m, v in per_model.items()},
            med,
            (
                f"tokens_per_s of {len(flop_rates)} finished run(s) in {sweep_dir} (wall time incl. evaluation); "
                f"other models at their median {med / 1e9:.3g} GFLOP/s"
            ),
        )
    small = min(runs, key=lambda r: r.flops_per_token)
    tps, device = benchmark(small, threads)
    return (
        {small.model: tps},
        tps * small.flops_per_token,
        (
            f"measured here: 3 timed optimizer steps of {small.model} (the smallest model) on {device} with "
            f"{threads} thread(s): {tps:,.0f} tokens/s = {tps * small.flops_per_token / 1e9:.3g} GFLOP/s; other "
            "models at the same FLOP/s (training steps only: evaluation and start-up not included)"
        ),
    )


def benchmark(run, threads: int, steps: int = 3) -> tuple[float, str]:
    """Tokens/s of a few forward+backward+AdamW steps of one run's model and micro-batch (one warm-up step)."""
    import torch
    import torch.nn.functional as F
    from litgpt import GPT

    from stacking import models
    from stacking.data import read_meta

    cfg = run.config
    device = "cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu"
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        vocab = read_meta(cfg.data_dir)["vocab_size"]
        mc = models.model_config(cfg.model, vocab_size=vocab, block_size=cfg.seq_len, **cfg.model_overrides)
        torch.manual_seed(0)
        model = GPT(mc).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randint(0, vocab, (cfg.micro_batch_size, cfg.seq_len + 1), device=device)
        for i in range(steps + 1):
            if i == 1:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            logits = model(x[:, :-1])
            F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return steps * cfg.micro_batch_size * cfg.seq_len / (time.perf_counter() - t0), device
    finally:
        torch.set_num_threads(old)


def simulate(runs, seconds: dict[str, float], jobs: int) -> float:
    """Wall time of the DAG on ``jobs`` slots, starting ready runs in the executor's order (list scheduling)."""
    ids = {r.id for r in runs}
    order = sorted(runs, key=lambda r: KIND_ORDER[r.kind])
    finish: dict[str, float] = {}
    running: list[tuple[float, str]] = []
    now, started = 0.0, set()
    while len(finish) < len(runs):
        for r in order:
            if len(running) >= jobs:
                break
            if r.id not in started and all(d in finish or d not in ids for d in r.deps):
                started.add(r.id)
                running.append((now + seconds[r.id], r.id))
        running.sort()
        now, rid = running.pop(0)
        finish[rid] = now
    return now


def format_plan(runs, sweep_dir: Path, *, grid_path: str, jobs: int, threads: int, executor: str) -> str:
    rates, flop_rate, source = measure_throughput(runs, sweep_dir, threads)
    secs = {
        r.id: r.trained_tokens / rates[r.model]
        if r.model in rates
        else r.trained_tokens * r.flops_per_token / flop_rate
        for r in runs
    }
    by_id = {r.id: r for r in runs}
    w = max(len(r.id) for r in runs)
    lines = [
        f"plan: {grid_path} → {sweep_dir}: {len(runs)} runs ({kinds_summary(runs)}); executor {executor}"
        + (f", {jobs} job(s) × {threads} thread(s)" if executor == "local" else ""),
        (
            f"  {'run id':<{w}}  {'kind':<8} {'model':<14} {'tokens':>11} {'FLOPs':>9} {'tok/param':>9} "
            f"{'epochs':>6} {'evals':>5}  {'est. time':>9}  after"
        ),
    ]
    for r in runs:
        # tokens per non-embedding parameter: a base at each d it is grown at, every other run at its end
        if r.kind == "base":
            tpp = "/".join(f"{d / r.params_non_embedding:.3g}" for d in r.config.save_at_tokens)
        else:
            tpp = f"{r.tokens / r.params_non_embedding:.3g}" if r.params_non_embedding else "?"
        chain = getattr(r, "chain", None)
        if chain is not None and r.kind in ("base", "grown"):  # a stage of a growth chain
            prev = by_id.get(r.parent)
            if prev is None:
                after = f"- (chain {chain} stage 0 of {_chain_len(runs, r)})"
            else:
                after = (
                    f"{r.parent} @ {prev.tokens:,} (chain {chain} stage {r.stage}: {r.grow.op} "
                    f"{r.direction} g={r.grow.g}; FLOPs incl. {r.flops_offset:.3g} of "
                    f"{'stage 0' if r.stage == 1 else f'stages 0–{r.stage - 1}'}"
                    f"; stage {r.stage - 1} at {prev.tokens / prev.params_non_embedding:.3g} tok/param)"
                )
        elif r.kind == "grown":
            base = by_id.get(r.parent)
            at_d = f", base {r.grow_at_tokens / base.params_non_embedding:.3g} tok/param at d" if base else ""
            after = (
                f"{r.parent} @ d={r.grow_at_tokens:,} ({r.op} {r.direction} g={r.g}; FLOPs incl. "
                f"{r.flops_offset:.3g} of the base{at_d})"
            )
        elif r.kind == "cooldown" and r.at_flops_of is not None:
            scratch = by_id.get(r.at_flops_of)
            at = f"scratch's f = {scratch.anneal_fraction:g}" if scratch else r.at_flops_of
            stable = r.tokens - r.decay_tokens - r.first_tokens
            start = f"its state @ {r.first_tokens:,}" if r.first_tokens else "its start (no saved state before)"
            after = (
                f"{r.branch_of} from {start}: {stable:,} tokens on its constant LR, then decay {r.decay_tokens:,} "
                f"to the FLOPs of {at}"
            )
        elif r.kind == "cooldown":
            after = (
                f"{r.branch_of} @ {r.tokens - r.decay_tokens:,} (decay {r.decay_tokens:,} tokens to "
                f"{r.anneal_fraction:g} of its budget)"
            )
        else:
            after = "-"
        done = "  [done]" if is_done(sweep_dir, r) else ""
        lines.append(
            f"  {r.id:<{w}}  {r.kind:<8} {r.model:<14} {r.tokens:>11,} {r.flops:>9.3g} {tpp:>9} "
            f"{r.epochs:>6.2f} {r.n_evals:>5}  {_fmt_time(secs[r.id]):>9}  {after}{done}"
        )
    todo = [r for r in runs if not is_done(sweep_dir, r)]
    total = sum(secs[r.id] for r in todo)
    wall = simulate(todo, secs, jobs) if todo else 0.0
    trained = sum(r.trained_tokens * r.flops_per_token for r in runs)
    lines.append(
        f"total: {sum(r.trained_tokens for r in runs):,} tokens, {trained:.3g} FLOPs trained; "
        f"{len(todo)} run(s) to do: est. {_fmt_time(total)} of compute, {_fmt_time(wall)} wall with "
        f"{jobs} job(s)"
    )
    lines.append(f"throughput: {source}")
    lines += epoch_warnings(runs)
    return "\n".join(lines)


def _chain_len(runs, r) -> int:
    """Runs (stages, the target included) of the chain ``r`` belongs to, for its target and seed."""
    return sum(
        getattr(x, "chain", None) == r.chain
        and x.kind in ("base", "grown")
        and x.target == r.target
        and x.config.seed == r.config.seed
        for x in runs
    )


def _fmt_time(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


__all__ = ["benchmark", "format_plan", "kinds_summary", "measure_throughput", "simulate"]
