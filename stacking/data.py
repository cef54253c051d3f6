"""Corpus → tokenizer → token memmaps, and the LightningDataModule that samples them deterministically.

The default corpus is the Python standard library source of the running interpreter: real code written by
people, on every machine, nothing to download. Test suites and ``site-packages`` are left out. Files are split
train/val by a hash of their relative path (documents inside JSONL/Parquet files by path#index), so the split does not depend on the order files are found in or on
which other files exist.

Sampling is a pure function of (seed, micro-batch index): micro-batch ``i`` reads ``micro_batch_size`` windows at
offsets drawn from ``np.random.default_rng([seed, i])``. The data position is therefore one integer (the number of
micro-batches consumed), which makes exact resume and multi-process sharding trivial.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch

from stacking.fsutil import atomic_dir

EOT = "<|endoftext|>"
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".json", ".c", ".h", ".html", ".tex", ".csv", ".yaml", ".yml"}


class DataError(ValueError):
    """A data source or dataset dir a user gave that cannot be used."""


@dataclass
class DataConfig:
    """How to build a token dataset dir."""

    out: str = "data/stdlib-bpe4096"
    """Output dataset directory (train.bin, val.bin, tokenizer.json, meta.json)."""
    sources: list[str] = field(default_factory=list)
    """Text / .jsonl / .parquet files or directories of them; empty = the Python standard library source."""
    tokenizer: str = "bpe"
    """'bpe' (byte-level BPE trained here on the train split) or 'bytes' (raw UTF-8 bytes, vocab 257)."""
    vocab_size: int = 4096
    """BPE vocabulary size (ignored for 'bytes')."""
    val_fraction: float = 0.05
    """Fraction of files (by hash of their path) held out for validation."""
    max_files: int = 0
    """Use only the first N files after sorting (0 = all); for quick tests."""
    text_field: str = "text"
    """Field (JSONL) or column (Parquet) that holds the text."""
    overwrite: bool = False
    """Rebuild even if ``out`` already holds a dataset."""


# --------------------------------------------------------------------------------------------------------------
# Corpus


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, test suites and third-party packages excluded."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        files += [Path(dirpath) / n for n in names if n.endswith(".py") and not n.startswith("test_")]
    return sorted(files)


def _expand(sources: list[str]) -> list[Path]:
    files: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.is_file() and
                            (q.suffix in _TEXT_SUFFIXES | {".jsonl", ".parquet"}))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"data source {s!r} does not exist (give text, .jsonl or .parquet files or directories)")
    if not files:
        raise DataError(f"data sources {sources} contain no text, .jsonl or .parquet files")
    return files


def _documents(path: Path, text_field: str) -> list[str]:
    """The documents in one file: a whole text file, one per JSONL line, one per Parquet row."""
    if path.suffix == ".jsonl":
        docs = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        docs.append(json.loads(line)[text_field])
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise DataError(f"{path}:{lineno}: not a JSON object with a {text_field!r} field ({e})") from e
        return docs
    if path.suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(path)
        if text_field not in df.columns:
            raise DataError(f"{path}: no column {text_field!r} (columns: {list(df.columns)})")
        return [str(t) for t in df[text_field]]
    return [path.read_text(encoding="utf-8", errors="replace")]


def _is_val(rel: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little")
    return (h % 1_000_000) < val_fraction * 1_000_000


# --------------------------------------------------------------------------------------------------------------
# Building a dataset dir


def _log(msg: str) -> None:
    print(f"[data] {msg}", file=sys.stderr, flush=True)


def build_dataset(cfg: DataConfig) -> Path:
    """Build (or reuse) a dataset dir. Written to a temp dir and renamed, so a crash leaves nothing half-done."""
    out = Path(cfg.out)
    if cfg.tokenizer not in ("bpe", "bytes"):
        raise DataError(f"tokenizer must be 'bpe' or 'bytes', got {cfg.tokenizer!r}")
    if cfg.tokenizer == "bpe" and not 256 < cfg.vocab_size <= 1 << 20:
        raise DataError(f"vocab_size must be in (256, 1048576] for bpe, got {cfg.vocab_size}")
    if not 0 < cfg.val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    if (out / "meta.json").exists() and not cfg.overwrite:
        _log(f"{out} already holds a dataset (meta.json); reusing it (pass --overwrite to rebuild)")
        return out

    t0 = time.time()
    if cfg.sources:
        files = _expand(cfg.sources)
        roots = [Path(s) for s in cfg.sources]
        rels = [str(f) for f in files]
        for i, f in enumerate(files):
            for r in roots:
                if r.is_dir() and f.is_relative_to(r):
                    rels[i] = str(f.relative_to(r))
        source_desc = [str(Path(s).resolve()) for s in cfg.sources]
    else:
        files = stdlib_files()
        root = Path(sysconfig.get_paths()["stdlib"])
        rels = [str(f.relative_to(root)) for f in files]
        source_desc = [f"python-stdlib:{root} (Python {sys.version.split()[0]})"]
    if cfg.max_files:
        files, rels = files[: cfg.max_files], rels[: cfg.max_files]
    _log(f"corpus: {len(files)} files from {', '.join(source_desc)}")

    train_docs: list[str] = []
    val_docs: list[str] = []
    hashes: dict[str, str] = {}
    for f, rel in zip(files, rels):
        hashes[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
        docs = _documents(f, cfg.text_field)
        for i, doc in enumerate(docs):  # a JSONL/Parquet file holds many documents: split those by document
            key = rel if len(docs) == 1 else f"{rel}#{i}"
            (val_docs if _is_val(key, cfg.val_fraction) else train_docs).append(doc)
    if not train_docs or not val_docs:
        raise DataError(f"split left {len(train_docs)} train and {len(val_docs)} val documents; "
                        "give more files or change val_fraction")
    _log(f"split by file: {len(train_docs)} train docs, {len(val_docs)} val docs "
         f"({sum(map(len, train_docs)) / 1e6:.1f}M / {sum(map(len, val_docs)) / 1e6:.1f}M chars)")

    with atomic_dir(out) as tmp:
        if cfg.tokenizer == "bpe":
            tok = _train_bpe(train_docs, cfg.vocab_size)
            tok.save(str(tmp / "tokenizer.json"))
            vocab_size, eot_id = tok.get_vocab_size(), tok.token_to_id(EOT)
            encode = lambda docs: [e.ids for e in tok.encode_batch(docs)]
        else:
            vocab_size, eot_id = 257, 256
            encode = lambda docs: [list(d.encode("utf-8")) for d in docs]
        dtype = np.uint16 if vocab_size < 1 << 16 else np.uint32
        counts = {}
        for split, docs in (("train", train_docs), ("val", val_docs)):
            counts[split] = _write_tokens(tmp / f"{split}.bin", docs, encode, eot_id, dtype, split)
        meta = {
            "vocab_size": vocab_size,
            "unigram_val_loss": _unigram_loss(tmp / "train.bin", tmp / "val.bin", dtype, vocab_size),
            "dtype": np.dtype(dtype).name,
            "tokenizer": cfg.tokenizer,
            "eot_id": eot_id,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "val_fraction": cfg.val_fraction,
            "sources": source_desc,
            "n_files": len(files),
            "sha256": {"corpus": hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest(),
                       "files": hashes},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    _log(f"wrote {out}: {counts['train']:,} train / {counts['val']:,} val tokens, vocab {vocab_size} "
         f"in {time.time() - t0:.1f}s")
    return out


def _unigram_loss(train: Path, val: Path, dtype, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of val under the train split's add-one-smoothed unigram distribution: the loss a
    model that ignores context would reach. A trained model's val loss should end clearly below it."""
    counts = np.bincount(np.memmap(train, dtype=dtype, mode="r"), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.memmap(val, dtype=dtype, mode="r")].mean())


def _train_bpe(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    _log(f"training byte-level BPE (vocab {vocab_size}) on the train split")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def _write_tokens(path: Path, docs: list[str], encode, eot_id: int, dtype, split: str) -> int:
    """Encode in chunks (progress on stderr) and write one flat array: doc, EOT, doc, EOT, …"""
    chunks, total, step = [], 0, 256
    for i in range(0, len(docs), step):
        for ids in encode(docs[i: i + step]):
            chunks.append(np.asarray(ids + [eot_id], dtype=dtype))
            total += len(ids) + 1
        _log(f"tokenizing {split}: {min(i + step, len(docs))}/{len(docs)} docs, {total:,} tokens")
    arr = np.memmap(path, dtype=dtype, mode="w+", shape=(total,))
    pos = 0
    for c in chunks:
        arr[pos: pos + len(c)] = c
        pos += len(c)
    arr.flush()
    del arr
    return total


# --------------------------------------------------------------------------------------------------------------
# Reading


def read_meta(data_dir: str | Path) -> dict:
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"data_dir {str(d)!r} does not exist; build one with `stacking data --out {d}`")
    try:
        meta = json.loads((d / "meta.json").read_text())
    except FileNotFoundError:
        raise DataError(f"data_dir {str(d)!r} has no meta.json; build it with `stacking data --out {d}`") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{d / 'meta.json'} is not valid JSON ({e}); rebuild the dataset") from None
    for split in ("train", "val"):
        f = d / f"{split}.bin"
        expected = meta[f"{split}_tokens"] * np.dtype(meta["dtype"]).itemsize
        if not f.exists() or f.stat().st_size != expected:
            raise DataError(f"{f} is missing or has the wrong size (expected {expected} bytes); rebuild the dataset")
        if meta[f"{split}_tokens"] == 0:
            raise DataError(f"{f} is empty; give more data")
    return meta


def load_tokens(data_dir: str | Path, split: str) -> np.memmap:
    """One split of a dataset dir as a read-only memmap."""
    meta = read_meta(data_dir)
    return np.memmap(Path(data_dir) / f"{split}.bin", dtype=meta["dtype"], mode="r")


class _TrainStream(torch.utils.data.IterableDataset):
    """Endless micro-batches ``start, start+world, …`` for one rank; the trainer stops at max_steps."""

    def __init__(self, data_dir: str, seq_len: int, micro_batch_size: int, seed: int, start: int, rank: int,
                 world: int):
        self.data_dir, self.seq_len, self.mbs, self.seed = data_dir, seq_len, micro_batch_size, seed
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        tokens = load_tokens(self.data_dir, "train")
        n = len(tokens) - self.seq_len - 1
        if n <= 0:
            raise DataError(f"train split has {len(tokens)} tokens, fewer than seq_len+1 = {self.seq_len + 1}")
        i = self.start
        while True:
            offsets = np.random.default_rng([self.seed, i * self.world + self.rank]).integers(0, n, size=self.mbs)
            xy = torch.from_numpy(np.stack([tokens[o: o + self.seq_len + 1] for o in offsets]).astype(np.int64))
            yield xy[:, :-1], xy[:, 1:]
            i += 1


def val_windows(data_dir: str | Path, seq_len: int, val_tokens: int) -> torch.Tensor:
    """The fixed validation set: the first ``val_tokens`` of val.bin as non-overlapping (seq_len+1) windows.

    Every run on the same data and seq_len sees exactly the same tokens, so val losses are comparable across a grid.
    """
    tokens = load_tokens(data_dir, "val")
    n_windows = min(val_tokens, len(tokens) - 1) // seq_len
    if n_windows < 1:
        raise DataError(f"val split has {len(tokens)} tokens, fewer than seq_len+1 = {seq_len + 1}")
    idx = np.arange(n_windows)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(np.asarray(tokens[idx]).astype(np.int64))


class TokenDataModule(L.LightningDataModule):
    """Deterministic training stream; ``start_micro_batch`` is the resume position (set by the trainer)."""

    def __init__(self, data_dir: str, seq_len: int, micro_batch_size: int, seed: int, val_tokens: int):
        super().__init__()
        self.meta = read_meta(data_dir)
        self.data_dir, self.seq_len, self.micro_batch_size = data_dir, seq_len, micro_batch_size
        self.seed, self.val_tokens = seed, val_tokens
        self.start_micro_batch = 0

    def train_dataloader(self):
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        ds = _TrainStream(self.data_dir, self.seq_len, self.micro_batch_size, self.seed, self.start_micro_batch,
                          rank, world)
        return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)

    def val_set(self) -> torch.Tensor:
        return val_windows(self.data_dir, self.seq_len, self.val_tokens)
