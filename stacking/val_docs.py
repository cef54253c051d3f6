"""Per-document validation losses of a run, for the bootstrap over held-out documents (analysis/val_bootstrap.py;
docs/analysis.md). `stacking val-docs RUN_DIR_OR_SWEEP_DIR [--data_dir D] [--device cpu]`.

The run's final checkpoint is evaluated on its own validation windows (val_windows.json; its data id checked
against the data dir) and every target token's loss goes to the val document holding that token (a window across a
document's end is split per token). A document runs up to and including its EOT token. The result,
``runs/<id>/eval/val_docs.json`` (temp file + rename), records the windows and, per document with a target token,
its index in the val split, start offset, target tokens and float64 loss sum. Precision: float32 weights and logits
(as training's `GPTModule.evaluate` under ``32-true``), CPU by default; the documents' token-weighted mean must
equal summary.json's final_val_loss to 1e-4 relative (`RTOL`; ~1e-8 on the demo runs), else nothing is written: a
run evaluated under bf16 autocast, or a G_random run whose mask had not finished its ramp, fails there. For a sweep
dir: the runs a grid's ``eval:`` evaluates (`experiments.evaluation.evaluated`, from results.csv), skipping those
whose file is current.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from stacking.cli import parse, parser, run_command
from stacking.errors import CheckpointError, DataError, EvalError, ModelConfigError

FILE = "eval/val_docs.json"
FORMAT = 1
RTOL = 1e-4
"""Largest relative gap between the documents' token-weighted mean loss and summary.json's final_val_loss."""
USER_ERRORS = (EvalError, DataError, CheckpointError, ModelConfigError)


def offsets_sha256(offsets) -> str:
    return hashlib.sha256(json.dumps([int(o) for o in offsets]).encode()).hexdigest()


def document_starts(tokens: np.ndarray, eot_id: int | None) -> np.ndarray:
    """Each val document's first position (int64, ascending, from 0)."""
    from stacking.data import _document_lengths

    return np.concatenate([[0], np.cumsum(_document_lengths(tokens, eot_id))[:-1]]).astype(np.int64)


def attribute(losses: np.ndarray, offsets: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(target tokens, loss sum) per document. ``losses[i, j]`` is the loss of window i's target j, the token at
    ``offsets[i] + 1 + j``; it goes to the document whose stretch holds that position."""
    pos = np.asarray(offsets, np.int64)[:, None] + 1 + np.arange(losses.shape[1])
    doc = (np.searchsorted(starts, pos, side="right") - 1).ravel()
    counts = np.bincount(doc, minlength=len(starts))
    sums = np.bincount(doc, weights=np.asarray(losses, np.float64).ravel(), minlength=len(starts))
    return counts, sums


def token_losses(model, windows, batch_size: int = 64) -> np.ndarray:
    """(n, seq_len) float64 losses of every target of the (n, seq_len + 1) windows: float32 logits over the model's
    padded vocabulary, as the training's evaluation."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            w = windows[i : i + batch_size].to(device)
            logits = model(w[:, :-1]).float()
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1), reduction="none")
            out.append(loss.view(len(w), -1).double().cpu())
    return torch.cat(out).numpy()


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EvalError(f"run dir {str(path.parent)!r} has no {path.name} ({what})") from None
    except ValueError:
        raise EvalError(f"{path} is not valid JSON") from None


def read_val_docs(run_dir: str | Path) -> dict | None:
    """A run dir's val_docs.json, or None without one (or a half-written one)."""
    try:
        return json.loads((Path(run_dir) / FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _stamp(run: Path) -> dict:
    """What a current val_docs.json of the run records: the format, its final checkpoint, its windows, its loss."""
    from stacking.evaluate import final_checkpoint

    windows = _read(run / "val_windows.json", "the trainer records its validation windows there")
    final = _read(run / "summary.json", "has the run finished?").get("final_val_loss")
    if not isinstance(final, (int, float)) or not math.isfinite(final):
        raise EvalError(f"{run / 'summary.json'} has no final_val_loss (has the run finished?)")
    return {
        "format": FORMAT,
        "checkpoint": final_checkpoint(run).name,
        **{k: windows.get(k) for k in ("data_id", "seq_len", "n_windows")},
        "offsets_sha256": offsets_sha256(windows.get("offsets") or []),
        "final_val_loss": final,
        "offsets": np.asarray(windows.get("offsets") or [], np.int64),
    }


def is_current(run_dir: str | Path) -> bool:
    """Whether the run's val_docs.json is of its final checkpoint, windows and final_val_loss."""
    rec, stamp = read_val_docs(run_dir), _stamp(Path(run_dir))
    return rec is not None and all(rec.get(k) == v for k, v in stamp.items() if k != "offsets")


def val_docs(run_dir: str | Path, data_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 64):
    """The per-document record of a run dir's final checkpoint on its own validation windows, checked against its
    summary.json's final_val_loss (`RTOL`)."""
    from stacking.checkpoint import load_checkpoint
    from stacking.config import data_id
    from stacking.data import load_tokens, read_meta, windows_at
    from stacking.evaluate import build_model, resolve_data_dir
    from stacking.tokenizer import load_dataset_tokenizer

    run = Path(run_dir)
    stamp = _stamp(run)
    offsets, seq_len, final = stamp.pop("offsets"), stamp["seq_len"], stamp["final_val_loss"]
    ckpt = load_checkpoint(run / "checkpoints" / stamp["checkpoint"])
    data = resolve_data_dir(data_dir, ckpt.meta or {}, run)
    if data_id(data) != stamp["data_id"]:
        raise EvalError(
            f"run {run.name} was validated on {stamp['data_id']} (val_windows.json) but the data dir {str(data)!r} "
            f"is {data_id(data)}; pass --data_dir with the run's dataset"
        )
    if not isinstance(seq_len, int) or seq_len > ckpt.config.block_size or len(offsets) != stamp["n_windows"]:
        raise EvalError(f"{run / 'val_windows.json'}: seq_len {seq_len} or n_windows does not fit the checkpoint")
    model = build_model(ckpt, load_dataset_tokenizer(data), device, "float32")
    t0 = time.perf_counter()
    losses = token_losses(model, windows_at(data, offsets, seq_len), batch_size)
    starts = document_starts(np.asarray(load_tokens(data, "val")), read_meta(data).get("eot_id"))
    counts, sums = attribute(losses, offsets, starts)
    mean = float(sums.sum() / counts.sum())
    if abs(mean - final) > RTOL * abs(final):
        raise EvalError(
            f"run {run.name}: the per-document losses average to {mean:.6f} but summary.json's final_val_loss is "
            f"{final:.6f} (relative gap {abs(mean - final) / abs(final):.1e} > {RTOL:g}); val_docs.json not written"
        )
    return {
        **stamp,
        "val_documents": len(starts),
        "device": device,
        "dtype": "float32",
        "loss": mean,
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "documents": [
            {"index": int(i), "start": int(starts[i]), "tokens": int(counts[i]), "loss_sum": float(sums[i])}
            for i in np.flatnonzero(counts)
        ],
    }


def write_val_docs(run_dir: str | Path, **kw) -> tuple[Path, dict]:
    """`val_docs` written to ``run_dir/eval/val_docs.json`` atomically; (path, record)."""
    from stacking.fsutil import write_json

    record = val_docs(run_dir, **kw)
    path = Path(run_dir) / FILE
    write_json(path, record)
    return path, record


def runs_of(target: str | Path) -> list[Path]:
    """The run dirs of RUN_DIR_OR_SWEEP_DIR: the run itself, or a sweep's finished scratch, grown and f = 1 cooldown
    runs (results.csv)."""
    p = Path(target)
    if (p / "results.csv").is_file():
        with open(p / "results.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        fraction = [float(r.get("anneal_fraction") or "nan") for r in rows]
        return [
            p / r["run_dir"]
            for r, f in zip(rows, fraction)
            if r.get("status") == "done" and (r.get("kind") in ("scratch", "grown") or math.isclose(f, 1.0))
        ]
    if (p / "config.yaml").is_file() or (p / "checkpoints").is_dir():
        return [p]
    if not p.exists():
        raise EvalError(f"{str(p)!r} does not exist (expected a run dir or a sweep dir)")
    raise EvalError(f"{str(p)!r} is neither a run dir (config.yaml, checkpoints/) nor a sweep dir (results.csv)")


def _main(argv: list[str]) -> int:
    p = parser(
        "stacking val-docs",
        "Evaluate a run's final checkpoint (or a sweep's scratch, grown and f = 1 cooldown runs') on its validation "
        "windows; write each val document's target tokens and loss sum to RUN/eval/val_docs.json, for `stacking "
        "report`'s bootstrap over held-out documents (stacking/val_docs.py). Skips runs whose file is current. A "
        "relative data_dir in a run's config.yaml is read from the working dir.",
    )
    p.add_argument("target", metavar="RUN_DIR_OR_SWEEP_DIR", help="a run dir, or a sweep dir (results.csv)")
    p.add_argument("--data_dir", default=None, help="the runs' dataset dir (default: each run's config.yaml data_dir)")
    p.add_argument("--device", default="cpu", help="torch device (float32 weights), e.g. cpu, cuda")
    p.add_argument("--batch_size", type=int, default=64, help="windows per forward pass")
    args = parse(p, argv)
    runs, sweep = runs_of(args.target), (Path(args.target) / "results.csv").is_file()
    if not runs:
        print(f"{args.target}: no finished scratch, grown or f = 1 cooldown run in results.csv")
    failed = 0
    for i, run in enumerate(runs, 1):
        where, t0 = f"[{i}/{len(runs)}] {run.name}", time.perf_counter()
        try:
            if is_current(run):
                print(f"{where}: current, skipped", flush=True)
                continue
            path, rec = write_val_docs(run, data_dir=args.data_dir, device=args.device, batch_size=args.batch_size)
        except USER_ERRORS as e:
            if not sweep:
                raise
            print(f"{where}: failed: {e}", flush=True)
            failed += 1
            continue
        print(
            f"{where}: {len(rec['documents'])} documents, {sum(d['tokens'] for d in rec['documents'])} target tokens, "
            f"loss {rec['loss']:.5f} (final_val_loss {rec['final_val_loss']:.5f}), "
            f"{time.perf_counter() - t0:.1f} s -> {path}",
            flush=True,
        )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``stacking val-docs RUN_DIR_OR_SWEEP_DIR``: one line and exit status 2 on a user error."""
    return run_command("stacking val-docs", _main, sys.argv[1:] if argv is None else argv, USER_ERRORS)
