"""`stacking plan-growth`: when to grow a target, before any training — the Stacking paper's Eq. 2 at a budget.

For a target preset and a budget C (FLOPs, or tokens of the target trained from scratch), it works out

* the target's and the base's (the target with n_layer / g layers) non-embedding parameters and FLOPs/token,
  with `stacking.models`' own accounting (6·N + attention, as the trainer counts them);
* the growth timing d of Du et al. 2024, Eq. 2 (``analysis.fit.PAPER_EQ2``):
  ``log10 d = 0.88·log10 N + 163.27 / log10 C − 5.74``, and what it costs: the base's FLOPs up to d as a share of
  C, the base's tokens per parameter at d, the target tokens left after growth;
* with ``fit_dir``, the same from Eq. 2 refitted on a sweep's own IsoFLOP minima (the points `stacking report`
  fits: ``isoflop_points`` → ``fit_isoflop`` → interior argmins → ``fit_eq2``), and the d that minimises Liew &
  Kato's L(D1, D2) fitted on the sweep's grown runs of the planned target and g (``analysis.growth_laws``: the
  budget split between D1 base tokens and D2 tokens after growth, searched over the sweep's sampled d's, with a
  bootstrap CI); the sweep must support at least one of the two;
* warnings where the numbers leave the paper's ground: C outside the range Eq. 2 was fitted on, a base below
  ≈ 2 tokens/param at d, a budget below ≈ 20 target tokens/param (reference/stacking.md, "The paper's regime in
  numbers").

N in Eq. 2 is the target's *total* parameter count, as `stacking report` evaluates it (its fits.json
``eq2_paper``) and as a sweep's fit is made (results.csv ``params_total``); the paper's N are the nominal sizes
410M / 1.1B / 3B. Tokens per parameter are per *non-embedding* parameter (the grids' and the reference's
convention).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

from analysis.fit import PAPER_EQ2, Eq2, fit_eq2, fit_isoflop
from analysis.growth_laws import LiewKatoFit, fit_liew_kato, fit_points, optimal_d1
from analysis.sweep import AnalysisError, format_tokens, isoflop_points, load_sweep

PAPER_G = 4
"""The paper's growth factor (§4.2: the optimum lies between 2 and 4; it fixes g = 4)."""
PAPER_G_RANGE = (2, 4)
# reference/stacking.md, "The paper's regime in numbers": a positive speed-up is expected when the base has seen
# ≳ 2 (better 10–40) tokens/param at d and the whole budget is ≳ 20 target tokens/param.
BASE_TPP_MIN = 2.0
BASE_TPP_GOOD = (10.0, 40.0)
TARGET_TPP_MIN = 20.0
# The paper's batch: 1024 sequences × 2048 tokens (prts base_model.sh / g_stack.sh); its context is 2048 tokens.
PAPER_SEQ_LEN = 2048
PAPER_BATCH_TOKENS = 1024 * 2048
# The tiny presets' defaults are the main job's (experiments/grids/demo.yaml): data/stdlib-bytes (vocab 257),
# 128-token sequences, 2048 tokens per step.
TINY_VOCAB, TINY_SEQ_LEN, TINY_BATCH_TOKENS = 257, 128, 2048


class PlanError(ValueError):
    """A bad input to plan_growth: printed by the CLI as one line, exit status 2."""


@dataclass
class Timing:
    """One prediction of the growth timing d and what it costs at the plan's budget."""

    law: Eq2 | LiewKatoFit
    d: float
    """Growth timing: tokens the base trains before it is grown."""
    base_flops: float
    """The base's training FLOPs up to d."""
    base_share: float
    """base_flops / C (> 1: the base alone overruns the budget)."""
    base_tokens_per_param: float
    """d / the base's non-embedding parameters."""
    tokens_after: float
    """Target tokens left after growth, (C − base_flops) / target FLOPs per token (≤ 0: none)."""
    warnings: list[str] = field(default_factory=list)
    d_ci: tuple[float, float] | None = None
    """Bootstrap percentile interval of d (Liew & Kato's optimum)."""
    loss: float | None = None
    """The law's predicted loss at d (Liew & Kato)."""


@dataclass
class Plan:
    """What `plan_growth` works out (see the module docstring); `format_plan` renders it."""

    target: str
    g: int
    seq_len: int
    vocab_size: int
    batch_tokens: int
    n_layer: int
    base_layers: int
    n_embd: int
    target_params_total: int
    target_params_non_embedding: int
    target_flops_per_token: float
    base_params_non_embedding: int
    base_flops_per_token: float
    flops: float
    """The budget C, base FLOPs included."""
    tokens: float
    """C in tokens of the target trained from scratch."""
    target_tokens_per_param: float
    regime_d: tuple[float, float]
    """d that gives the base BASE_TPP_GOOD tokens/param (the paper's better range)."""
    paper: Timing
    fitted: Timing | None = None
    fit_dir: str | None = None
    fit_summary: str = ""
    """Which sweep points the fitted law came from (ops, g, target sizes, budgets)."""
    lk: Timing | None = None
    """The d minimising Liew & Kato's L(D1, D2) fitted on the sweep (None: the sweep cannot support the fit)."""
    lk_summary: str = ""
    fit_notes: list[str] = field(default_factory=list)
    """Why one of the two laws was not fitted on the sweep."""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _family_defaults(target: str) -> tuple[int | None, int, int]:
    """(vocab, seq_len, batch_tokens) by preset family; vocab None = the preset's own."""
    if re.fullmatch(r"tiny-d\d+|tiny-L\d+-D\d+", target):
        return TINY_VOCAB, TINY_SEQ_LEN, TINY_BATCH_TOKENS
    return None, PAPER_SEQ_LEN, PAPER_BATCH_TOKENS


def _unknown_preset(target: str, err: Exception) -> PlanError:
    from litgpt.config import name_to_config

    from stacking.models import preset_names

    known = [n for n in preset_names() if "{" not in n] + list(name_to_config)
    close = difflib.get_close_matches(target, known, n=1, cutoff=0.75)
    return PlanError(f"--target: {err}" + (f" (did you mean {close[0]!r}?)" if close else ""))


def _positive(name: str, value) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise PlanError(f"{name} must be a positive number, got {value}")


def _timing(
    law: Eq2, label: str, *, n_total: float, flops: float, target_fpt: float, base_fpt: float, base_params: int
) -> Timing:
    """d from `law` for a target of n_total params at C = flops, and its cost; warnings where it leaves the
    paper's ground."""
    d = float(law.predict_d(n_total, flops, warn=False))
    base_flops = d * base_fpt
    t = Timing(
        law=law,
        d=d,
        base_flops=base_flops,
        base_share=base_flops / flops,
        base_tokens_per_param=d / base_params,
        tokens_after=(flops - base_flops) / target_fpt,
    )
    lo, hi = law.flops_range
    if not lo * (1 - 1e-9) <= flops <= hi * (1 + 1e-9):
        t.warnings.append(
            f"C = {flops:.3g} FLOPs lies outside {lo:.3g}–{hi:.3g} FLOPs, the range {label} was "
            "fitted on: its b/log10(C) term makes d unreliable there"
        )
    if t.base_share >= 1:
        t.warnings.append(f"{label}'s d is past the whole budget: the base alone would take {t.base_share:.3g}× C")
    if t.base_tokens_per_param < BASE_TPP_MIN:
        t.warnings.append(
            f"at {label}'s d the base has seen {t.base_tokens_per_param:.3g} tokens/param, below the "
            f"paper's ≳ {BASE_TPP_MIN:g} (better {BASE_TPP_GOOD[0]:g}–{BASE_TPP_GOOD[1]:g})"
        )
    return t


def fit_from_sweep(fit_dir: str) -> tuple[Eq2, str, tuple[float, float], set[float]]:
    """Eq. 2 refitted on a sweep's IsoFLOP minima, as `stacking report` fits it: (law, which points, N range of
    the points, the g's of the points). A sweep that cannot support the fit is a one-line PlanError saying why."""
    try:
        sweep = load_sweep(fit_dir)
        points = isoflop_points(sweep)
    except AnalysisError as err:
        raise PlanError(f"--fit {fit_dir}: {err}") from None
    iso = fit_isoflop(points) if len(points) else None
    if iso is None or iso.empty:
        raise PlanError(
            f"--fit {fit_dir}: the sweep cannot support an Eq. 2 fit: no (target, op, g) has ≥ 3 "
            "finished growth timings d > 0 with overlapping FLOPs"
        )
    good = iso[iso["interior"]]
    if good.empty:
        raise PlanError(
            f"--fit {fit_dir}: the sweep cannot support an Eq. 2 fit: none of its {len(iso)} IsoFLOP "
            "parabolas has its minimum inside the sampled d range (no valley to fit)"
        )
    try:
        law = fit_eq2(good["N"], good["budget"], good["d_opt"])
    except AnalysisError as err:
        raise PlanError(
            f"--fit {fit_dir}: the sweep cannot support an Eq. 2 fit on its {len(good)} IsoFLOP minima: {err}"
        ) from None
    law.source = f"fit on {fit_dir}"
    ops = ", ".join(sorted({str(o) for o in good["op"]}))
    gs = {float(g) for g in good["g"]}
    summary = (
        f"{len(good)} IsoFLOP minima of {ops} g = {'/'.join(f'{g:g}' for g in sorted(gs))}, "
        f"targets N = {good['N'].min():.3g}–{good['N'].max():.3g}, C = {law.flops_range[0]:.3g}–"
        f"{law.flops_range[1]:.3g} FLOPs, RMS {law.rms_log10:.3f} in log10 d"
    )
    return law, summary, (float(good["N"].min()), float(good["N"].max())), gs


def plan_growth(
    target: str,
    flops: float | None = None,
    tokens: float | None = None,
    g: int = PAPER_G,
    fit_dir: str | None = None,
    *,
    fit_op: str = "G_stack",
    seq_len: int | None = None,
    vocab_size: int | None = None,
    batch_tokens: int | None = None,
) -> Plan:
    """The growth plan of `target` at budget `flops` (C) or `tokens` (of the target from scratch, C = tokens ×
    its FLOPs/token) for depth growth by `g`; with `fit_dir`, Eq. 2 refitted on that sweep and Liew & Kato's law
    fitted on its `fit_op` runs of this target and g too.

    seq_len / vocab_size / batch_tokens (for FLOPs/token and one optimizer step) default to the main job's for the
    tiny presets (128 / 257 / 2048) and to the paper's otherwise (2048 / the preset's own / 1024 × 2048).
    Every bad input is a PlanError (or ModelConfigError) raised before the sweep is read."""
    from stacking.models import flops_per_token, param_breakdown

    _check_inputs(flops, tokens, g, seq_len, vocab_size, batch_tokens)
    vocab0, seq0, batch0 = _family_defaults(target)
    seq_len, batch_tokens = seq_len or seq0, batch_tokens or batch0
    tc, bc = _shapes(target, g, seq_len, vocab_size or vocab0)
    tp, bp = param_breakdown(tc), param_breakdown(bc)
    t_fpt = flops_per_token(tc, seq_len, tp["non_embedding"])
    b_fpt = flops_per_token(bc, seq_len, bp["non_embedding"])
    c = float(flops) if flops is not None else float(tokens) * t_fpt
    step = batch_tokens * b_fpt
    if c < step:
        raise PlanError(
            f"the budget C = {c:.3g} FLOPs is smaller than one optimizer step of the {bc.n_layer}-layer "
            f"base ({batch_tokens:,} tokens × {b_fpt:.3g} FLOPs/token = {step:.3g} FLOPs)"
        )

    timing = {
        "n_total": tp["total"],
        "flops": c,
        "target_fpt": t_fpt,
        "base_fpt": b_fpt,
        "base_params": bp["non_embedding"],
    }
    plan = Plan(
        target=target,
        g=g,
        seq_len=seq_len,
        vocab_size=tc.vocab_size,
        batch_tokens=batch_tokens,
        n_layer=tc.n_layer,
        base_layers=bc.n_layer,
        n_embd=tc.n_embd,
        target_params_total=tp["total"],
        target_params_non_embedding=tp["non_embedding"],
        target_flops_per_token=t_fpt,
        base_params_non_embedding=bp["non_embedding"],
        base_flops_per_token=b_fpt,
        flops=c,
        tokens=c / t_fpt,
        target_tokens_per_param=c / t_fpt / tp["non_embedding"],
        regime_d=tuple(r * bp["non_embedding"] for r in BASE_TPP_GOOD),
        paper=_timing(PAPER_EQ2, "Eq. 2", **timing),
    )
    _regime_notes(plan, g, bc.n_layer)
    if fit_dir is not None:
        _add_fits(plan, fit_dir, timing, g, fit_op)
    return plan


def _check_inputs(flops, tokens, g, seq_len, vocab_size, batch_tokens) -> None:
    """The budget (exactly one of flops / tokens, > 0), the sizes (> 0 when given) and g (an integer ≥ 2)."""
    if (flops is None) == (tokens is None):
        raise PlanError(
            "give exactly one of --flops C and --tokens T (the budget), got "
            + ("both" if flops is not None else "neither")
        )
    _positive("--flops" if flops is not None else "--tokens", flops if flops is not None else tokens)
    for name, v in (("--seq-len", seq_len), ("--vocab-size", vocab_size), ("--batch-tokens", batch_tokens)):
        _positive(name, v)
    if isinstance(g, bool) or not isinstance(g, int) or g < 2:
        raise PlanError(f"--g must be an integer ≥ 2 (the paper's is {PAPER_G}; g = 1 is no growth), got {g}")


def _shapes(target: str, g: int, seq_len: int, vocab_size: int | None):
    """(target config, base config with n_layer / g): the preset's own vocabulary (paper and litgpt names), padded
    as a run's data would pad it, unless one is given."""
    from stacking.errors import ModelConfigError
    from stacking.models import model_config

    try:
        vocab_size = vocab_size or model_config(target).vocab_size
        tc = model_config(target, vocab_size=vocab_size, block_size=seq_len)
    except ModelConfigError as err:
        if "unknown model preset" in str(err):
            raise _unknown_preset(target, err) from None
        raise
    if tc.n_layer % g:
        divisors = [k for k in range(2, tc.n_layer + 1) if tc.n_layer % k == 0]
        raise PlanError(
            f"--g {g} does not divide {target}'s n_layer = {tc.n_layer}; valid: "
            f"{', '.join(map(str, divisors)) or 'none (a 1-layer target cannot be grown in depth)'}"
        )
    return tc, model_config(target, vocab_size=tc.vocab_size, block_size=seq_len, n_layer=tc.n_layer // g)


def _regime_notes(plan: Plan, g: int, base_layers: int) -> None:
    """Notes and warnings where the plan leaves the paper's regime (g, a 1-layer base, tokens per parameter)."""
    if not PAPER_G_RANGE[0] <= g <= PAPER_G_RANGE[1]:
        plan.notes.append(
            f"g = {g} is outside the paper's recommended g = {PAPER_G_RANGE[0]}–{PAPER_G_RANGE[1]} "
            f"(Eq. 2 was fitted at g = {PAPER_G})"
        )
    if base_layers == 1:
        plan.warnings.append("a 1-layer base: in the paper a 1-layer base grown to 24 layers did worse than scratch")
    if plan.target_tokens_per_param < TARGET_TPP_MIN:
        plan.warnings.append(
            f"the budget is {plan.target_tokens_per_param:.3g} tokens per target param, below the "
            f"paper's regime (≳ {TARGET_TPP_MIN:g}): speed-ups there are not expected"
        )


def _add_fits(plan: Plan, fit_dir: str, timing: dict, g: int, op: str) -> None:
    """Both laws on a sweep; a sweep that supports neither is one PlanError giving both reasons."""
    plan.fit_dir = fit_dir
    reasons = {}
    try:
        _add_eq2_fit(plan, fit_dir, timing, g)
    except PlanError as err:
        reasons["Eq. 2"] = str(err).removeprefix(f"--fit {fit_dir}: ")
    try:
        _add_lk_fit(plan, fit_dir, timing, g, op)
    except AnalysisError as err:
        reasons["Liew & Kato"] = str(err)
    if len(reasons) == 2:
        raise PlanError(f"--fit {fit_dir}: {reasons['Eq. 2']}; and no Liew & Kato fit: {reasons['Liew & Kato']}")
    plan.fit_notes += [f"{law} not fitted on {fit_dir}: {why}" for law, why in reasons.items()]


def _add_lk_fit(plan: Plan, fit_dir: str, timing: dict, g: int, op: str) -> None:
    """Liew & Kato's L(D1, D2) on the sweep's `op` runs of the planned target and g (depth), and the d that
    minimises it at the plan's budget; warned where D2 leaves the sweep's range or d sits at an end of it."""
    sweep = load_sweep(fit_dir)
    pts = fit_points(sweep, op, target=plan.target, g=float(g), direction="depth")
    fit = fit_liew_kato(pts["D1"], pts["D2"], pts["loss"], bootstrap=200, seed=0, groups=pts["run_id"])
    d1_range = (float(pts["D1"].min()), float(pts["D1"].max()))
    best = optimal_d1(fit, timing["flops"], timing["base_fpt"], timing["target_fpt"], d1_range)
    d = best["d1"]
    t = Timing(
        law=fit,
        d=d,
        base_flops=d * timing["base_fpt"],
        base_share=d * timing["base_fpt"] / timing["flops"],
        base_tokens_per_param=d / timing["base_params"],
        tokens_after=best["d2"],
        d_ci=(best["d1_lo"], best["d1_hi"]),
        loss=best["loss"],
    )
    rng = (f"{format_tokens(d1_range[0])}–{format_tokens(d1_range[1])}", pts["D2"].min(), pts["D2"].max())
    if best["edge"]:
        t.warnings.append(
            f"Liew & Kato's best d is at an end of the sweep's d's ({rng[0]}): the best d may lie beyond them"
        )
    if not rng[1] * (1 - 1e-9) <= best["d2"] <= rng[2] * (1 + 1e-9):
        t.warnings.append(
            f"Liew & Kato: {format_tokens(best['d2'])} tokens after growth lies outside the sweep's D2 = "
            f"{format_tokens(rng[1])}–{format_tokens(rng[2])}: the law is extrapolated"
        )
    plan.lk = t
    plan.lk_summary = (
        f"{op} g = {g:g} on {plan.target}, {pts['reading'].iloc[0]}: {len(pts)} points at {pts['D1'].nunique()} d's "
        f"({rng[0]}), RMSE {fit.rmse:.4f}; " + ", ".join(f"{k} = {v:.4g}" for k, v in fit.params.items() if k != "A")
    )


def _add_eq2_fit(plan: Plan, fit_dir: str, timing: dict, g: int) -> None:
    """Eq. 2 refitted on a sweep: the timing it gives, warned where N or g lie outside what the sweep covers."""
    law, plan.fit_summary, (n_lo, n_hi), gs = fit_from_sweep(fit_dir)
    plan.fitted = _timing(law, "the sweep's Eq. 2", **timing)
    n = timing["n_total"]
    if not n_lo * (1 - 1e-9) <= n <= n_hi * (1 + 1e-9):
        plan.fitted.warnings.append(
            f"N = {n:.3g} lies outside the sweep's target sizes "
            f"{n_lo:.3g}–{n_hi:.3g}: the fitted a·log10 N term is extrapolated"
        )
    if gs != {float(g)}:
        plan.fitted.warnings.append(
            f"the sweep's minima are at g = {'/'.join(f'{x:g}' for x in sorted(gs))}, not the planned g = {g}"
        )


def _tok(t: float) -> str:
    return format_tokens(t) if t < 1e15 else f"{t:.3g}"


def _law(law: Eq2) -> str:
    return f"a = {law.a:.5g}, b = {law.b:.5g}, c = {law.c:.5g}"


def _timing_line(t: Timing) -> str:
    after = (
        f"{_tok(t.tokens_after)} target tokens after growth"
        if t.tokens_after > 0
        else "no target tokens left after growth"
    )
    return (
        f"  d = {_tok(t.d)} tokens: base at {t.base_tokens_per_param:.3g} tokens/param, {t.base_flops:.3g} "
        f"FLOPs = {_share(t.base_share)}; {after}"
    )


def _share(x: float, y: float | None = None) -> str:
    """'4.09 % of the budget', '273× the budget'; with y, the range x–y."""
    if y is None:
        return f"{100 * x:.3g} % of the budget" if x < 1 else f"{x:.3g}× the budget"
    return f"{100 * x:.3g}–{100 * y:.3g} % of the budget" if y < 1 else f"{x:.3g}×–{y:.3g}× the budget"


def format_plan(plan: Plan) -> str:
    """The plain report `stacking plan-growth` prints."""
    w = max(len(f"{plan.target_params_non_embedding:,}"), len(f"{plan.base_params_non_embedding:,}"))
    lo, hi = plan.regime_d
    lines = [
        (
            f"plan-growth {plan.target}: depth growth by g = {plan.g} from a base of {plan.base_layers} layers "
            f"(the paper's g = {PAPER_G}; recommended g = {PAPER_G_RANGE[0]}–{PAPER_G_RANGE[1]})"
        ),
        f"  accounting at seq_len {plan.seq_len}, vocab {plan.vocab_size}, {plan.batch_tokens:,} tokens per step",
        (
            f"target {plan.n_layer:>3} layers × {plan.n_embd}: {plan.target_params_non_embedding:>{w},} non-embedding "
            f"params ({plan.target_params_total:,} total), {plan.target_flops_per_token:.4g} FLOPs/token"
        ),
        (
            f"base   {plan.base_layers:>3} layers × {plan.n_embd}: {plan.base_params_non_embedding:>{w},} non-embedding "
            f"params, {plan.base_flops_per_token:.4g} FLOPs/token"
        ),
        (
            f"budget C = {plan.flops:.4g} FLOPs = {_tok(plan.tokens)} target tokens from scratch = "
            f"{plan.target_tokens_per_param:.3g} tokens per target param"
        ),
        (
            f"Eq. 2 (Du et al. 2024: {_law(plan.paper.law)}, fitted at g = {PAPER_G}; N = "
            f"{plan.target_params_total:.3g} total params):"
        ),
        _timing_line(plan.paper),
    ]
    if plan.fitted is not None:
        lines += [
            f"Eq. 2 fitted on {plan.fit_dir} ({_law(plan.fitted.law)}):",
            f"  from {plan.fit_summary}",
            _timing_line(plan.fitted),
        ]
    if plan.lk is not None:
        ci_lo, ci_hi = plan.lk.d_ci
        ci = f" [{_tok(ci_lo)}, {_tok(ci_hi)}]" if math.isfinite(ci_lo) else ""
        lines += [
            f"Liew & Kato L(D1, D2) = A·D1^-α1·D2^(-α2 + α3·ln D1) + E fitted on {plan.fit_dir}:",
            f"  from {plan.lk_summary}",
            _timing_line(plan.lk),
            f"  d 95 % bootstrap interval{ci or ': n/a'}; predicted loss at d: {plan.lk.loss:.4f}",
        ]
    fpt, c = plan.base_flops_per_token, plan.flops
    lines += [
        (
            f"paper's regime: base ≳ {BASE_TPP_MIN:g}, better {BASE_TPP_GOOD[0]:g}–{BASE_TPP_GOOD[1]:g} tokens/param "
            f"at d: d = {_tok(lo)}–{_tok(hi)} here ({_share(lo * fpt / c, hi * fpt / c)});"
        ),
        f"  total ≳ {TARGET_TPP_MIN:g} tokens per target param: {plan.target_tokens_per_param:.3g} here",
    ]
    lines += [f"note: {n}" for n in plan.notes + plan.fit_notes]
    fitted = [t for t in (plan.fitted, plan.lk) if t is not None]
    warnings = plan.paper.warnings + [w for t in fitted for w in t.warnings] + plan.warnings
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)
