"""`stacking grow`, `stacking import-hf`, `stacking export-hf` (wired into the top-level CLI by stacking/cli.py).

Each entry point takes argv without the subcommand name and returns an exit code: 0 on success, 2 with one line on
stderr (``stacking CMD: error: …``) for a user error (a bad argument, a GrowthError), never a traceback for those.
The parsers are jsonargparse's (`stacking.cli.parser`): every option can also come from ``--config FILE.yaml``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import torch
from litgpt import Config

from stacking.cli import UsageError, parse, parser, run_command
from stacking.growth import OPERATORS, grow_checkpoint, operator_options
from stacking.growth.io import CONFIG, GrowthError, load_config

GROW_EPILOG = """\
operators (--direction depth unless noted; FP = function preserving at growth):
  G_stack      depth  whole model g times: layers 0..L-1, 0..L-1, ... (alias: G_direct --direction depth)
                      --layers 0,1,2,3,2,3  explicit source layer per new layer (partial stacking; replaces --g)
  interpolate  depth  each layer repeated in place: 0,0,1,1,...
  G_zero       depth  copies with attn.proj/mlp.proj zeroed = identity blocks (FP)
                      --order interleave|stack  0,0',1,1',... (default, as the paper's code) or 0..L-1,0'..(L-1)'
  G_random     depth  random new blocks on top, branch outputs gated by c ramping 0->1 (FP at c=0)
                      --ramp-tokens N  tokens of the grown run over which c goes 0->1 (default 1000000)
  G_learn      depth  LiGO: layer-mixing maps from the G_stack order, trained on data, then materialised
                      --data DIR (token dataset dir, required) --learn-steps N (100) --lr LR (2e-4)
                      --seq-len N (min(block_size, 256)) --batch-size N (8)
  llama_pro    depth  N groups; after each, P copies of its top blocks with zeroed output proj (FP)
                      --groups N (default n_layer; must divide it) --copies P (default n_layer*(g-1)/N;
                      g may be fractional, e.g. 32 layers --groups 8 --g 1.25 -> 40)
                      --train-new-only  growth.json lists only the new blocks as trainable
  solar_dus    depth  two copies, last m dropped from one, first m from the other: 2*(L-m) layers (--g 2)
                      --m M (default n_layer//4)
  gradual      depth  grow one block of --block layers at a time, copying the top block: L=4 --block 2 --g 2
                      -> 0,1,2,3,2,3,2,3 (gradual stacking)
  midas        depth  grow one block at a time, inserting a copy of the middle block after it: L=4 --block 2
                      --g 2 -> 0,1,0,1,0,1,2,3 (MIDAS)
                      --block B (gradual, midas; default n_layer, i.e. G_stack's map; must divide n_layer)
  G_direct     width  tile heads, KV groups, features; split each input's weight over its copies (FP). Integer g.
                      default: uneven seeded shares u/sum(u), u~U(0.5,1.5), so copies get different gradients
                      --symmetric  even 1/g shares (HyperCloning); copies then never diverge
  G_zero       width  new fan-out zero, rest random, RMSNorm*sqrt(d/D), norm_eps*d/D (FP)
  G_random     width  random new units gated by c ramping 0->1 (FP at c=0). --ramp-tokens N
  G_learn      width  LiGO width maps [I; N(0,1/D)], trained on data. Same options as G_learn depth.

--g multiplies n_layer (depth) or n_embd, n_head, n_query_groups, intermediate_size (width; head_size kept).
--to PRESET_OR_YAML gives the target shape instead (a stacking.models preset name or a model_config.yaml);
its vocabulary and block_size are taken from the source checkpoint when it is a preset.
Depth ops other than G_learn stream tensor by tensor (memory ~ one tensor); width ops and G_learn load the model.
"""


def _int_list(value: str | list[int]) -> list[int]:
    """``--layers 0,1,2,3`` (or a YAML list) → [0, 1, 2, 3]."""
    if isinstance(value, list):
        return value
    try:
        return [int(x) for x in value.replace(" ", "").split(",") if x]
    except ValueError:
        raise UsageError(
            f"argument --layers: expected comma-separated layer indices like 0,1,2,3 (got {value!r}) (see --help)"
        ) from None


def build_parser():
    ops = sorted({op for op, _ in OPERATORS})
    p = parser("stacking grow", "Grow a checkpoint dir into a new one.", epilog=GROW_EPILOG)
    p.add_argument("src_dir", type=Path, help="source checkpoint dir (lit_model.pth + model_config.yaml)")
    p.add_argument("dst_dir", type=Path, help="output dir (must not exist or be empty; written atomically)")
    p.add_argument("--op", required=True, choices=ops, help="growth operator (see below)")
    p.add_argument("--direction", default="depth", choices=["depth", "width"], help="growth direction")
    p.add_argument("--g", type=float, default=None, help="growth factor (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed for new random parameters / G_learn")
    p.add_argument("--to", type=str, default=None, metavar="PRESET_OR_YAML", help="target shape instead of --g")
    o = p.add_argument_group("operator options (each op accepts only its own; see below)")
    o.add_argument("--layers", type=list[int] | str, help="G_stack: source layer of every new layer, e.g. 0,1,2,3,2,3")
    o.add_argument("--order", choices=["interleave", "stack"], help="G_zero depth: placement of zeroed copies")
    o.add_argument("--ramp-tokens", type=int, help="G_random: tokens over which the mask ramps 0->1")
    o.add_argument("--learn-steps", type=int, help="G_learn: optimisation steps of the maps (default 100)")
    o.add_argument("--data", type=Path, help="G_learn: token dataset dir (train.bin + meta.json)")
    o.add_argument("--seq-len", type=int, help="G_learn: tokens per sequence")
    o.add_argument("--batch-size", type=int, help="G_learn: sequences per step")
    o.add_argument("--lr", type=float, help="G_learn: Adam learning rate of the maps")
    o.add_argument("--groups", type=int, help="llama_pro: number of groups N")
    o.add_argument("--copies", type=int, help="llama_pro: zeroed copies per group P")
    o.add_argument("--train-new-only", action="store_true", default=None, help="llama_pro: train only new blocks")
    o.add_argument("--m", type=int, help="solar_dus: layers dropped from each copy")
    o.add_argument("--block", type=int, help="gradual, midas: layers per copied block (must divide n_layer)")
    o.add_argument(
        "--symmetric",
        action="store_true",
        default=None,
        help="G_direct width: split fan-in evenly (HyperCloning) instead of unevenly",
    )
    return p


_OPTION_NAMES = (
    "layers",
    "order",
    "ramp_tokens",
    "learn_steps",
    "data",
    "seq_len",
    "batch_size",
    "lr",
    "groups",
    "copies",
    "train_new_only",
    "m",
    "symmetric",
    "block",
)


def resolve_target(value: str, source: Config) -> Config:
    """``--to``: a model_config.yaml path, or a stacking.models preset built with the source's vocabulary."""
    if Path(value).is_file():
        return load_config(value)
    from stacking.errors import ModelConfigError
    from stacking.models import model_config

    try:
        preset = model_config(value)
    except ModelConfigError as e:
        raise GrowthError(f"--to {value!r}: {e}") from None
    fields = asdict(preset)
    fields.update(
        vocab_size=source.vocab_size,
        padded_vocab_size=source.padded_vocab_size,
        padding_multiple=source.padding_multiple,
        block_size=source.block_size,
    )
    return Config(**fields)


def _g(value: float | None) -> int | float:
    if value is None:
        return 2
    return int(value) if float(value).is_integer() else value


def main(argv: list[str] | None = None) -> int:
    """``stacking grow SRC_DIR DST_DIR --op OP [--direction depth|width] [--g G] [--seed S] [--to T] [options]``."""
    return run_command("stacking grow", _grow_main, sys.argv[1:] if argv is None else argv, (GrowthError,))


def _grow_main(argv: list[str]) -> int:
    args = parse(build_parser(), argv)
    options = {k: getattr(args, k) for k in _OPTION_NAMES if getattr(args, k) is not None}
    if "layers" in options:
        options["layers"] = _int_list(options["layers"])
    if args.to is not None:
        if args.g is not None:
            raise GrowthError("give either --g or --to, not both")
        if not (args.src_dir / CONFIG).is_file():
            raise GrowthError(f"checkpoint dir {str(args.src_dir)!r} has no {CONFIG}")
        options["to"] = resolve_target(args.to, load_config(args.src_dir / CONFIG))
    if "data" in options:
        options["data"] = str(options["data"])
    fn = OPERATORS.get((args.op, args.direction))
    if fn is not None:  # name the CLI flag, not the Python option, when one does not apply
        unknown = sorted(set(options) - set(operator_options(fn)))
        if unknown:
            flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
            raise GrowthError(
                f"{flags} not used by {args.op} ({args.direction}); it accepts: "
                f"{', '.join('--' + k.replace('_', '-') for k in operator_options(fn)) or 'no options'}"
            )
    dst = grow_checkpoint(
        args.src_dir, args.dst_dir, args.op, direction=args.direction, g=_g(args.g), seed=args.seed, **options
    )
    new = load_config(dst / CONFIG)
    old = load_config(args.src_dir / CONFIG)
    print(
        f"grew {args.src_dir} -> {dst} with {args.op} ({args.direction}): n_layer {old.n_layer}->{new.n_layer}, "
        f"n_embd {old.n_embd}->{new.n_embd}, n_head {old.n_head}->{new.n_head}"
    )
    return 0


def import_hf_main(argv: list[str] | None = None) -> int:
    """``stacking import-hf HF_DIR LIT_DIR [--dtype float32|bfloat16|float16]``."""
    return run_command("stacking import-hf", _import_main, sys.argv[1:] if argv is None else argv, (GrowthError,))


def export_hf_main(argv: list[str] | None = None) -> int:
    """``stacking export-hf LIT_DIR HF_DIR [--max-shard-size 5GB] [--dtype ...]``."""
    return run_command("stacking export-hf", _export_main, sys.argv[1:] if argv is None else argv, (GrowthError,))


def _dtype(name: str | None) -> torch.dtype | None:
    return (
        None if name is None else {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    )


def _import_main(argv: list[str]) -> int:
    from stacking.growth.hf import import_hf

    p = parser(
        "stacking import-hf",
        "Convert a Hugging Face Llama dir (config.json + safetensors, sharded or not) "
        "into a litgpt checkpoint dir that `stacking grow` accepts.",
    )
    p.add_argument("hf_dir", type=Path, help="Hugging Face model dir (config.json + *.safetensors)")
    p.add_argument("lit_dir", type=Path, help="output dir (must not exist or be empty)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="cast weights (default: keep)")
    args = parse(p, argv)
    out = import_hf(args.hf_dir, args.lit_dir, dtype=_dtype(args.dtype))
    print(f"imported {args.hf_dir} -> {out}")
    return 0


def _export_main(argv: list[str]) -> int:
    from stacking.growth.hf import DEFAULT_SHARD_BYTES, export_hf

    p = parser(
        "stacking export-hf",
        "Convert a Llama-style litgpt checkpoint dir into a Hugging Face dir "
        "(config.json + model.safetensors) that transformers loads.",
    )
    p.add_argument("lit_dir", type=Path, help="litgpt checkpoint dir (lit_model.pth + model_config.yaml)")
    p.add_argument("hf_dir", type=Path, help="output dir (must not exist or be empty)")
    p.add_argument(
        "--max-shard-size",
        default=DEFAULT_SHARD_BYTES,
        help="split safetensors above this size, e.g. 5GB, 500MB (default 5GB)",
    )
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="cast weights (default: keep)")
    args = parse(p, argv)
    out = export_hf(args.lit_dir, args.hf_dir, max_shard_size=args.max_shard_size, dtype=_dtype(args.dtype))
    print(f"exported {args.lit_dir} -> {out}")
    return 0
