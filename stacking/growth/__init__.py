"""Growth operators: pure functions ``(state_dict, litgpt.Config) -> (state_dict, Config)``, and checkpoint growth.

    from stacking.growth import grow, grow_checkpoint
    sd2, cfg2 = grow(sd, cfg, "G_stack", g=2)                                 # 0..L-1, 0..L-1
    sd2, cfg2 = grow(sd, cfg, "G_direct", direction="width", g=2)             # FP, uneven split (LEMON)
    res = grow(sd, cfg, "G_random", g=2, ramp_tokens=10**6, return_info=True)  # res.mask for the training module
    grow_checkpoint(src_dir, dst_dir, "llama_pro", g=2, train_new_only=True)  # writes growth.json too
    state2 = carry_moments(adamw_state_by_name, cfg, "G_stack", g=2)          # moments through the depth plan

| op          | depth                                   | width                                          |
|-------------|-----------------------------------------|------------------------------------------------|
| G_stack     | whole model g times (= G_direct depth)  | -                                              |
| G_direct    | alias of G_stack                        | tile heads/groups/features, split fan-in (FP)  |
| G_zero      | copies with zeroed output proj (FP)     | new fan-out zero, RMSNorm × √(d/D) (FP)        |
| G_random    | random new blocks + 0→1 mask (FP at 0)  | random new units + 0→1 mask (FP at 0)          |
| G_learn     | LiGO depth maps (start = G_stack)       | LiGO width maps                                |
| llama_pro   | groups + zeroed top-block copies (FP)   | -                                              |
| solar_dus   | 0..L-m-1 then m..L-1                    | -                                              |
| interpolate | 0,0,1,1,...                             | -                                              |
| gradual     | blocks of `block` layers; copy the top  | -                                              |
| midas       | blocks; copy the middle one (MIDAS)     | -                                              |

Depth operators other than G_learn are streaming in `grow_checkpoint` (one tensor in memory at a time); width
operators and G_learn load the source into memory. Details: depth.py, width.py, learn.py, masks.py; docs/growth.md.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from litgpt import Config

from stacking.checkpoint import CONFIG, GROWTH, META, WEIGHTS, check_state_dict, load_checkpoint
from stacking.checkpoint import save_model_config as save_config
from stacking.errors import GrowthError
from stacking.fsutil import atomic_dir, sha256_file
from stacking.growth import depth, learn, width
from stacking.growth.io import check_new_dir, json_safe
from stacking.growth.learn import learn_flops
from stacking.growth.operator import GrowthResult
from stacking.growth.tensorfile import TensorFileWriter, save_state_dict

__all__ = [
    "OPERATORS",
    "GrowthError",
    "GrowthResult",
    "carry_moments",
    "carry_plan",
    "grow",
    "grow_checkpoint",
    "learn_flops",
    "operator_options",
]

_stack = depth.as_operator(depth.plan_stack)
OPERATORS = {
    ("G_stack", "depth"): _stack,
    ("G_direct", "depth"): _stack,
    ("interpolate", "depth"): depth.as_operator(depth.plan_interpolate),
    ("G_zero", "depth"): depth.as_operator(depth.plan_zero),
    ("G_random", "depth"): depth.as_operator(depth.plan_random),
    ("G_learn", "depth"): learn.grow_depth_learn,
    ("llama_pro", "depth"): depth.as_operator(depth.plan_llama_pro),
    ("solar_dus", "depth"): depth.as_operator(depth.plan_solar),
    ("gradual", "depth"): depth.as_operator(depth.plan_gradual),
    ("midas", "depth"): depth.as_operator(depth.plan_midas),
    ("G_direct", "width"): width.grow_width_direct,
    ("G_zero", "width"): width.grow_width_zero,
    ("G_random", "width"): width.grow_width_random,
    ("G_learn", "width"): learn.grow_width_learn,
}
"""(op, direction) -> operator ``fn(state_dict, config, *, g, seed, **options) -> GrowthResult``."""

DIRECTIONS = ("depth", "width")


def operator_options(fn) -> list[str]:
    """The options an operator accepts: its keyword-only parameters besides g and seed."""
    target = getattr(fn, "planner", fn)
    return [
        p.name
        for p in inspect.signature(target).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("g", "seed")
    ]


def resolve(op: str, direction: str, options: dict) -> Any:
    """The operator for (op, direction), after checking the options it is given; GrowthError otherwise."""
    if direction not in DIRECTIONS:
        raise GrowthError(f"direction must be one of {list(DIRECTIONS)} (got {direction!r})")
    fn = OPERATORS.get((op, direction))
    if fn is None:
        valid = sorted(o for o, d in OPERATORS if d == direction)
        other = sorted(d for o, d in OPERATORS if o == op)
        if other:
            raise GrowthError(
                f"op {op!r} has no {direction} variant (it is {'/'.join(other)} only); "
                f"valid {direction} ops: {', '.join(valid)}"
            )
        raise GrowthError(f"unknown op {op!r}; valid {direction} ops: {', '.join(valid)}")
    unknown = sorted(set(options) - set(operator_options(fn)))
    if unknown:
        raise GrowthError(
            f"option(s) {unknown} are not used by {op} ({direction}); valid options: "
            f"{', '.join(operator_options(fn)) or 'none'}"
        )
    return fn


def grow(
    state_dict,
    config: Config,
    op: str,
    *,
    direction: str = "depth",
    g=2,
    seed: int = 0,
    return_info: bool = False,
    **options,
):
    """Grow a litgpt state dict. Pure: the inputs are never modified and the output never aliases them;
    deterministic given ``seed``.

    Returns ``(state_dict, config)``, or with ``return_info=True`` a `GrowthResult` that also holds the effective
    g, the resolved options, the G_random ``mask`` spec and the llama_pro ``trainable`` names.
    Options per op: see `operator_options(OPERATORS[(op, direction)])` and docs/growth.md.
    """
    fn = resolve(op, direction, options)
    if not isinstance(config, Config):
        raise GrowthError(f"config must be a litgpt.Config (got {type(config).__name__})")
    check_state_dict(state_dict, config)
    result = fn(state_dict, config, g=g, seed=seed, **options)
    return result if return_info else (result.state_dict, result.config)


def carry_plan(config: Config, op: str, *, direction: str = "depth", g=2, seed: int = 0, **options):
    """The DepthPlan through which `carry_moments` maps optimizer state, or a GrowthError saying why ``op`` has
    none. Needs no weights, so a sweep checks ``grown.optimizer: carry`` against every op before compute."""
    fn = resolve(op, direction, options)
    if not isinstance(config, Config):
        raise GrowthError(f"config must be a litgpt.Config (got {type(config).__name__})")
    if direction != "depth":
        raise GrowthError(
            f"carry is not defined for {op} (width): grown tensors change shape, so their moments have "
            f"no source tensor to copy; use the fresh optimizer"
        )
    planner = getattr(fn, "planner", None)
    if planner is None:
        raise GrowthError(
            f"carry is not defined for {op} (depth): its layers are learned mixtures of source layers, "
            f"not copies; use the fresh optimizer"
        )
    plan = planner(config, g=g, seed=seed, **options)
    depth.check_carry(plan, op)
    return plan


def carry_moments(
    named_state: dict[str, dict[str, torch.Tensor]],
    config: Config,
    op: str,
    *,
    direction: str = "depth",
    g=2,
    seed: int = 0,
    **options,
) -> dict[str, dict[str, torch.Tensor]]:
    """Optimizer state (e.g. AdamW's ``exp_avg``, ``exp_avg_sq``, ``step``) keyed by the base's litgpt parameter
    names, mapped to the grown model's parameter names through the same DepthPlan `grow` uses for the weights.

    Pure: the result's tensors are clones. Defined only for depth plans that copy every tensor (G_stack / G_direct,
    interpolate, solar_dus, gradual, midas); every other operator raises GrowthError saying why (`carry_plan`).
    """
    plan = carry_plan(config, op, direction=direction, g=g, seed=seed, **options)
    return depth.carry_state(plan, named_state, config, op)


def grow_checkpoint(src_dir, dst_dir, op: str, *, direction: str = "depth", g=2, seed: int = 0, **options) -> Path:
    """Grow a checkpoint dir into a new one (written atomically; see docs/formats.md).

    Writes lit_model.pth, model_config.yaml, a copy of stacking_meta.json (tokens/flops unchanged: the grown run
    starts its FLOP counter there) and growth.json (op, direction, g, seed, options, source_dir, source_sha256,
    mask, trainable, extra_flops: the operator's own training FLOPs, G_learn's map training, else 0.0). Depth ops
    other than G_learn stream tensor by tensor from the memory-mapped source.
    """
    fn = resolve(op, direction, options)
    src, dst = Path(src_dir), check_new_dir(dst_dir)  # fail before any compute
    ckpt = load_checkpoint(src)
    planner = getattr(fn, "planner", None)
    if planner is not None:
        plan = planner(ckpt.config, g=g, seed=seed, **options)  # every option is checked before writing starts
        with atomic_dir(dst) as tmp:
            with TensorFileWriter(tmp / WEIGHTS) as writer:
                result = depth.stream_plan(plan, ckpt.state_dict, ckpt.config, writer)
            _write_side_files(tmp, ckpt, result, op, direction, seed, options)
    else:
        result = fn(ckpt.state_dict, ckpt.config, g=g, seed=seed, **options)
        with atomic_dir(dst) as tmp:
            save_state_dict(result.state_dict, tmp / WEIGHTS)
            _write_side_files(tmp, ckpt, result, op, direction, seed, options)
    return dst


def _write_side_files(tmp: Path, ckpt, result: GrowthResult, op: str, direction: str, seed: int, options: dict) -> None:
    save_config(result.config, tmp / CONFIG)
    if (ckpt.path / META).is_file():
        shutil.copyfile(ckpt.path / META, tmp / META)  # byte for byte: tokens and flops carried over unchanged
    g = result.g
    record = {
        "op": op,
        "direction": direction,
        "g": int(g) if float(g).is_integer() else g,
        "seed": seed,
        "options": json_safe({**options, **result.options}),
        "source_dir": str(ckpt.path.resolve()),
        "source_sha256": sha256_file(ckpt.path / WEIGHTS),
        "mask": result.mask,
        "trainable": result.trainable,
        "extra_flops": float(result.extra_flops),
    }
    (tmp / GROWTH).write_text(json.dumps(record, indent=1))
