"""Peak memory of growing a checkpoint much larger than what the growing process holds.

Creates a >= 1B-parameter litgpt checkpoint (TinyLlama-1.1B shape: 22 layers, d=2048, 32 heads, 4 KV groups,
FFN 5632, vocab 32000) without holding it in RAM (written tensor by tensor with stacking.growth.tensorfile's
streaming writer), grows it in a child process with `grow_checkpoint` (G_stack × 2 by default), and reports the
child's peak RSS (VmHWM, which counts touched pages of memory-mapped files too) against the output size.

    python benchmarks/grow_memory.py [--workdir DIR] [--dtype float32|bfloat16] [--op G_stack] [--g 2] [--keep]
                                     [--n-layer 22]

``--n-layer`` shrinks the source (fewer layers of the same width: quicker, but the fixed python + torch RSS weighs
more in the ratio). The writer is `stacking.growth.tensorfile.TensorFileWriter` (litgpt's `incremental_save`; the
measurement that chose it over a hand-written one is in that module's docstring).

Last lines: peak_rss_gb=…, baseline_rss_gb=… (python + torch + stacking.growth imported, nothing grown),
output_gb=…, ratio=… (peak_rss / output; goal <= 0.5), seconds=… . Needs ~ (1 + g) × 4.4 GB of disk for fp32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from litgpt import Config

from stacking.checkpoint import expected_shapes, save_model_config
from stacking.growth.layout import init_std
from stacking.growth.tensorfile import TensorFileWriter

TINYLLAMA_1B = dict(
    name="bench-1.1b",
    block_size=2048,
    n_layer=22,
    n_embd=2048,
    n_head=32,
    n_query_groups=4,
    head_size=64,
    intermediate_size=5632,
    vocab_size=32000,
    padded_vocab_size=32000,
    bias=False,
    norm_class_name="RMSNorm",
    mlp_class_name="LLaMAMLP",
    parallel_residual=False,
    rotary_percentage=1.0,
    norm_eps=1e-5,
)

# Runs in the child: grow, then report this process's own peak RSS. VmHWM (Linux) is the high-water mark of this
# process image only; ru_maxrss is not used because after fork+exec it starts at the parent's RSS at fork time.
CHILD = """
import json, resource, sys, time
t0 = time.time()
from stacking.growth import grow_checkpoint
if sys.argv[1] == "grow":
    grow_checkpoint(sys.argv[2], sys.argv[3], sys.argv[4], g=int(sys.argv[5]))
seconds = time.time() - t0
try:
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak_kib = int(status.split()[0])
except (OSError, IndexError):
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss_kib": peak_kib, "seconds": seconds}))
"""


def write_source(path: Path, config: Config, dtype: torch.dtype) -> int:
    """A random checkpoint dir written one tensor at a time; returns the weights file size in bytes."""
    path.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    with TensorFileWriter(path / "lit_model.pth") as writer:
        for key, shape in expected_shapes(config).items():
            if len(shape) == 1:
                t = torch.ones(shape, dtype=dtype)
            else:
                t = torch.empty(shape, dtype=torch.float32).normal_(0, init_std(key, config), generator=gen).to(dtype)
            writer.add(key, t)
            del t
    save_model_config(config, path / "model_config.yaml")
    (path / "stacking_meta.json").write_text(
        json.dumps(
            {
                "tokens": 10**9,
                "flops": 6.6e18,
                "config_hash": "bench",
                "run_dir": "bench",
                "model": config.name,
                "seed": 0,
            }
        )
    )
    return (path / "lit_model.pth").stat().st_size


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp dir in /tmp)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--op", default="G_stack", help="a streaming depth op (G_stack, interpolate, G_zero, llama_pro…)")
    p.add_argument("--g", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the checkpoints instead of deleting them")
    p.add_argument("--n-layer", type=int, default=TINYLLAMA_1B["n_layer"], help="source layers (default 22)")
    args = p.parse_args(argv)

    dtype = getattr(torch, args.dtype)
    model_fields = {**TINYLLAMA_1B, "n_layer": args.n_layer}
    config = Config(**model_fields)
    n_params = sum(s.numel() for s in expected_shapes(config).values())
    need = n_params * dtype.itemsize * (1 + args.g)
    work = Path(tempfile.mkdtemp(prefix="grow_memory-", dir=args.workdir))
    free = shutil.disk_usage(work).free
    if free < need * 1.1:
        print(f"error: need ~{need / 1e9:.1f} GB free in {work}, have {free / 1e9:.1f} GB", file=sys.stderr)
        shutil.rmtree(work)
        return 2
    try:
        t0 = time.time()
        src_bytes = write_source(work / "base", config, dtype)
        print(
            f"source: {n_params / 1e9:.3f}B params, {src_bytes / 1e9:.2f} GB ({args.dtype}), "
            f"written in {time.time() - t0:.1f}s"
        )
        baseline = run_child("baseline")
        t0 = time.time()
        grown = run_child("grow", str(work / "base"), str(work / "grown"), args.op, str(args.g))
        seconds = time.time() - t0
        out_bytes = (work / "grown" / "lit_model.pth").stat().st_size

        # spot-check the result without loading it: layer i of G_stack is layer i mod L of the source
        src = torch.load(work / "base" / "lit_model.pth", weights_only=True, mmap=True)
        out = torch.load(work / "grown" / "lit_model.pth", weights_only=True, mmap=True)
        L = config.n_layer
        assert len(out) == len(expected_shapes(Config(**{**model_fields, "n_layer": L * args.g})))
        if args.op == "G_stack":
            for i in (0, L, 2 * L - 1):
                k = f"transformer.h.{i}.mlp.fc_1.weight"
                assert torch.equal(out[k], src[f"transformer.h.{i % L}.mlp.fc_1.weight"]), k
        print(f"op={args.op} g={args.g}: {len(src)} -> {len(out)} tensors, output verified")
        peak = grown["peak_rss_kib"] * 1024
        print(f"peak_rss_gb={peak / 1e9:.3f}")
        print(f"baseline_rss_gb={baseline['peak_rss_kib'] * 1024 / 1e9:.3f}")
        print(f"output_gb={out_bytes / 1e9:.3f}")
        print(f"ratio={peak / out_bytes:.4f}")
        print(f"seconds={seconds:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
