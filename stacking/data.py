"""Token dataset dirs: reading them, and the LightningDataModule that samples them deterministically (building
one: :mod:`stacking.corpus`, `stacking data`; pointing one at tokens made elsewhere: :mod:`stacking.importers`).

A split is one token space: its shards (meta.json ``shards``; legacy dirs: train.bin / val.bin) laid end to end.
Everything below reads that space by position, so the same tokens sample identically however they are sharded.

Sampling is a pure function of (seed, micro-batch index): micro-batch ``i`` reads ``micro_batch_size`` windows at
offsets drawn from ``np.random.default_rng([seed, i])``. The data position is therefore one integer (the number of
micro-batches consumed), which makes exact resume and multi-process sharding trivial.

The validation set is a fixed set of windows spread over the whole val split (see :func:`val_window_offsets`): a
pure function of (the val tokens, seq_len, val_tokens), the same for every run on a data dir.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from stacking.errors import DataError
from stacking.fsutil import sha256_file


def read_meta(data_dir: str | Path) -> dict:
    """A dataset dir's meta.json, after checking that both splits' token files are there and large enough."""
    d = Path(data_dir)
    meta = _meta_json(d)
    for split in ("train", "val"):
        split_shards(d, meta, split)
    return meta


def _meta_json(d: Path) -> dict:
    if not d.is_dir():
        raise DataError(f"data_dir {str(d)!r} does not exist; build one with `stacking data --out {d}`")
    try:
        return json.loads((d / "meta.json").read_text())
    except FileNotFoundError:
        raise DataError(f"data_dir {str(d)!r} has no meta.json; build it with `stacking data --out {d}`") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{d / 'meta.json'} is not valid JSON ({e}); rebuild the dataset") from None


@dataclass(frozen=True)
class Shard:
    """``tokens`` token ids of one file, from byte ``byte_offset`` on (meta.json ``shards``)."""

    path: Path
    tokens: int
    byte_offset: int = 0


def split_shards(data_dir: str | Path, meta: dict, split: str) -> list[Shard]:
    """The shards of one split, checked: each file exists and holds its byte range; the counts add up to
    ``{split}_tokens``. No ``shards`` key: the legacy layout, ``{split}.bin`` as one shard of exactly that size."""
    d = Path(data_dir)
    itemsize = np.dtype(meta["dtype"]).itemsize
    if "shards" not in meta:
        f = d / f"{split}.bin"
        if not f.exists():
            raise DataError(f"{f} is missing; rebuild the dataset")
        n = meta.get(f"{split}_tokens")  # absent in a hand-written meta.json: the file's size says it
        if n is None and f.stat().st_size % itemsize == 0:
            n = f.stat().st_size // itemsize
        if n is None or f.stat().st_size != n * itemsize:
            raise DataError(
                f"{f} has the wrong size ({f.stat().st_size} bytes, expected {split}_tokens x "
                f"{itemsize}); rebuild the dataset"
            )
        if n == 0:
            raise DataError(f"{f} is empty; give more data")
        return [Shard(f, n)]
    entries = meta["shards"].get(split) if isinstance(meta["shards"], dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{d / 'meta.json'}: shards.{split} must be a non-empty list of {{path, tokens, byte_offset}}")
    shards = [_shard(d, split, i, e, itemsize) for i, e in enumerate(entries)]
    total = sum(s.tokens for s in shards)
    if total != meta.get(f"{split}_tokens"):
        raise DataError(
            f"{d / 'meta.json'}: shards.{split} add up to {total} tokens but {split}_tokens is "
            f"{meta.get(f'{split}_tokens')}; rebuild or re-import the dataset"
        )
    if total == 0:
        raise DataError(f"{d / 'meta.json'}: shards.{split} hold no tokens; give more data")
    return shards


def _shard(d: Path, split: str, i: int, entry, itemsize: int) -> Shard:
    """One meta.json shard entry, checked against its file."""
    ok = isinstance(entry, dict) and isinstance(entry.get("path"), str)
    tokens, offset = (entry.get("tokens"), entry.get("byte_offset", 0)) if ok else (None, None)
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (tokens, offset)):
        raise DataError(
            f"{d / 'meta.json'}: shards.{split}[{i}] must be {{path, tokens, byte_offset}} with "
            f"integers >= 0, got {entry!r}"
        )
    path = d / entry["path"]  # an absolute path stays as it is
    if not path.is_file():
        raise DataError(f"{path} (shards.{split}[{i}] of {d}) is missing")
    need = offset + tokens * itemsize
    if path.stat().st_size < need:
        raise DataError(
            f"{path} has {path.stat().st_size} bytes, fewer than shards.{split}[{i}] of {d} needs "
            f"(byte_offset {offset} + {tokens} tokens x {itemsize} bytes = {need})"
        )
    return Shard(path, tokens, offset)


class ShardedTokens:
    """One split stored in several shards, read as one token array: ``len``, slices ``t[a:b]`` and integer-array
    indexing ``t[idx]`` (both return np.ndarray, reading across shard boundaries), ``np.asarray(t)`` (the whole
    split in memory) and ``dtype``.

    Shards are memory-mapped on first use; at most :attr:`max_open` stay mapped (each holds a file descriptor).
    """

    max_open = 64

    def __init__(self, shards: list[Shard], dtype):
        self.shards, self.dtype = shards, np.dtype(dtype)
        self.starts = np.concatenate([[0], np.cumsum([s.tokens for s in shards])]).astype(np.int64)
        self._open: OrderedDict[int, np.memmap] = OrderedDict()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _part(self, i: int) -> np.memmap:
        if i not in self._open:
            if len(self._open) >= self.max_open:
                self._open.popitem(last=False)
            self._open[i] = _memmap(self.shards[i], self.dtype)
        self._open.move_to_end(i)
        return self._open[i]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            return self._range(a, b) if step == 1 else self[np.arange(a, b, step)]
        idx = np.asarray(key)
        if idx.dtype.kind not in "iu":
            raise IndexError(f"ShardedTokens takes slices and integer arrays, got {key!r}")
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} tokens")
        flat = idx.ravel()
        out = np.empty(flat.shape, self.dtype)
        shard = np.searchsorted(self.starts, flat, side="right") - 1  # empty shards are never chosen
        for i in np.unique(shard):
            sel = shard == i
            out[sel] = self._part(int(i))[flat[sel] - self.starts[i]]
        return out.reshape(idx.shape) if idx.ndim else out[0]

    def _range(self, a: int, b: int) -> np.ndarray:
        if b <= a:
            return np.empty(0, self.dtype)
        first = int(np.searchsorted(self.starts, a, side="right")) - 1
        last = int(np.searchsorted(self.starts, b, side="left")) - 1  # the shard holding token b - 1
        parts = [
            self._part(i)[max(a - self.starts[i], 0) : min(b, self.starts[i + 1]) - self.starts[i]]
            for i in range(first, last + 1)
            if self.shards[i].tokens
        ]  # an empty file cannot be mapped
        return np.concatenate(parts)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._range(0, len(self))
        return out if dtype is None else out.astype(dtype)


def _memmap(shard: Shard, dtype) -> np.memmap:
    return np.memmap(shard.path, dtype=dtype, mode="r", offset=shard.byte_offset, shape=(shard.tokens,))


def tokenizer_id(data_dir: str | Path) -> str:
    """What a dataset dir's tokens mean: ``bytes`` for the raw-bytes tokenizer, else the sha256 of its
    tokenizer.json (meta.json's ``tokenizer_sha256``; hashed from the file for dirs built before that key).
    Two dirs with the same id can be read by the same model."""
    meta = read_meta(data_dir)
    if meta.get("tokenizer") == "bytes":
        return "bytes"
    if meta.get("tokenizer_sha256"):
        return meta["tokenizer_sha256"]
    path = Path(data_dir) / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"{path} is missing; rebuild the dataset")
    return sha256_file(path)


def load_tokens(data_dir: str | Path, split: str) -> np.memmap | ShardedTokens:
    """One split of a dataset dir: a read-only memmap when it is one file (the legacy layout, or one shard),
    else a :class:`ShardedTokens` over its shards. Checks only this split's files (:func:`split_shards`)."""
    meta = _meta_json(Path(data_dir))
    shards = split_shards(data_dir, meta, split)
    return _memmap(shards[0], meta["dtype"]) if len(shards) == 1 else ShardedTokens(shards, meta["dtype"])


class _TrainStream(torch.utils.data.IterableDataset):
    """Endless micro-batches ``start, start+world, …`` for one rank; the trainer stops at max_steps."""

    def __init__(
        self, data_dir: str, seq_len: int, micro_batch_size: int, seed: int, start: int, rank: int, world: int
    ):
        self.data_dir, self.seq_len, self.mbs, self.seed = data_dir, seq_len, micro_batch_size, seed
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        tokens = load_tokens(self.data_dir, "train")
        n = len(tokens) - self.seq_len - 1
        if n <= 0:
            raise DataError(f"train split has {len(tokens)} tokens, fewer than seq_len+1 = {self.seq_len + 1}")
        window = np.arange(self.seq_len + 1)  # a window may cross shard boundaries: one gather per shard
        i = self.start
        while True:
            offsets = np.random.default_rng([self.seed, i * self.world + self.rank]).integers(0, n, size=self.mbs)
            xy = torch.from_numpy(np.asarray(tokens[offsets[:, None] + window]).astype(np.int64))
            yield xy[:, :-1], xy[:, 1:]
            i += 1


def _document_lengths(tokens: np.ndarray, eot_id: int | None) -> np.ndarray:
    """Lengths of the documents of a token array, each ending with (and counting) its EOT token; trailing tokens
    without an EOT form a last document. No ``eot_id``: the whole array is one document."""
    ends = np.flatnonzero(tokens == eot_id) + 1 if eot_id is not None else np.zeros(0, np.int64)
    if not len(ends) or ends[-1] != len(tokens):
        ends = np.append(ends, len(tokens))
    return np.diff(ends, prepend=0).astype(np.int64)


def _window_points(lengths: np.ndarray, n: int) -> np.ndarray:
    """``n`` sorted token positions spread over documents of these lengths (laid end to end).

    Each document gets a stretch of a warped axis and the points sit evenly on that axis, at the middle of ``n``
    equal parts. With ``n >= len(lengths)`` a document's stretch is ``max(length, g)`` tokens, where the water level
    ``g`` is chosen so that the stretches add up to ``n * g``: every stretch holds at least one point, a document
    shorter than ``g`` exactly one, a longer one ``≈ length / g`` placed evenly inside it. With fewer points than
    documents the stretches are the lengths themselves: the points are evenly spaced over the whole array.
    Integer arithmetic throughout (exact, the same on every machine).
    """
    d = len(lengths)
    if n >= d:
        # the smallest t such that, with the t shortest documents raised, the others all reach the level
        # g = S / (n - t), S = their total length; weights are scaled by (n - t) to stay integers
        srt = np.sort(lengths)
        longer = np.cumsum(srt[::-1])[::-1]  # longer[t] = total length of srt[t:]
        t = int(np.argmax(srt * (n - np.arange(d)) >= longer))
        level = int(longer[t])
        weights = np.maximum(lengths * (n - t), level)  # sums to n * level
        spacing = level
    else:
        weights, spacing = lengths, None
    total = int(weights.sum())
    j = np.arange(n, dtype=np.int64)
    # doubled units: point j at (2j + 1) * total / (2n), i.e. (2j + 1) * total / n in half-steps
    x = (2 * j + 1) * spacing if spacing is not None else ((2 * j + 1) * total) // n
    edges = 2 * np.cumsum(weights)  # document i spans [edges[i-1], edges[i]) in half-steps
    doc = np.searchsorted(edges, x, side="right")
    start_w = np.concatenate([[0], edges[:-1]])[doc]
    start_t = np.concatenate([[0], np.cumsum(lengths)[:-1]])[doc]
    # offset * length can pass 2**63 for long val splits: Python ints for this product (n is small)
    inside = [int(o) * int(ln) // (2 * int(w)) for o, ln, w in zip(x - start_w, lengths[doc], weights[doc])]
    return start_t + np.asarray(inside, dtype=np.int64)


def val_window_offsets(data_dir: str | Path, seq_len: int, val_tokens: int) -> np.ndarray:
    """Start offsets (sorted int64) of the fixed validation windows; each window is ``seq_len + 1`` tokens of
    val.bin, its first ``seq_len`` the input and its last ``seq_len`` the targets.

    A pure function of (val.bin, seq_len, val_tokens), so every run on a data dir sees the same tokens.

    * Count: ``min(val_tokens // seq_len, (len(val.bin) - 1) // seq_len)``, the second term when val.bin is too
      short for ``val_tokens``.
    * No token is a target twice: consecutive windows start ≥ ``seq_len`` apart (they share at most one token, the
      last target of one being the first input of the next); all windows lie inside val.bin.
    * Spread: documents end with the EOT token. When there are at least as many windows as documents, each
      document gets windows in proportion to its length and at least one (see :func:`_window_points`), else the
      windows are evenly spaced over the file. Each window is centred on its point; where centred windows would
      overlap or leave the file they are pushed apart (forward pass) and back inside (backward pass), which keeps
      every point among some window's targets. Hence with ``n >= documents`` every document has at least one of its
      tokens among the targets (except a one-token document at offset 0, which cannot be a target).
    """
    if seq_len < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}")
    if val_tokens < seq_len:
        raise DataError(f"val_tokens ({val_tokens}) must be >= seq_len ({seq_len}): no full validation window")
    meta = read_meta(data_dir)
    tokens = np.asarray(load_tokens(data_dir, "val"))
    usable = len(tokens) - 1  # the last token can only be a target
    n = min(val_tokens // seq_len, usable // seq_len)
    if n < 1:
        raise DataError(f"val split has {len(tokens)} tokens, fewer than seq_len+1 = {seq_len + 1}")
    points = _window_points(_document_lengths(tokens, meta.get("eot_id")), n)
    half = (seq_len + 1) // 2
    q = np.clip(points - half, 0, usable - seq_len)  # targets q+1 … q+seq_len contain the point (if it is > 0)
    step = np.arange(n, dtype=np.int64) * seq_len
    r = np.maximum.accumulate(q - step)  # forward: q[j] >= q[j-1] + seq_len
    r = np.minimum.accumulate(np.minimum(r, usable - seq_len - step[-1])[::-1])[::-1]  # backward: q[-1] fits
    return (r + step).astype(np.int64)


def val_windows(data_dir: str | Path, seq_len: int, val_tokens: int) -> torch.Tensor:
    """The fixed validation set: (n, seq_len + 1) int64 windows of val.bin at :func:`val_window_offsets`.

    Every run on the same data, seq_len and val_tokens sees exactly the same tokens, so val losses are comparable
    across a grid.
    """
    return windows_at(data_dir, val_window_offsets(data_dir, seq_len, val_tokens), seq_len)


def windows_at(data_dir: str | Path, offsets: np.ndarray, seq_len: int) -> torch.Tensor:
    """(n, seq_len + 1) int64 windows of the val split starting at ``offsets``."""
    tokens = load_tokens(data_dir, "val")
    idx = offsets[:, None] + np.arange(seq_len + 1)[None, :]
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
        ds = _TrainStream(
            self.data_dir, self.seq_len, self.micro_batch_size, self.seed, self.start_micro_batch, rank, world
        )
        return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
