"""Point a dataset dir at corpora others already tokenized, without copying a token (`stacking data --import`).

Two formats, the ones large public corpora ship in:

* Megatron-LM indexed datasets, ``PREFIX.bin`` + ``PREFIX.idx`` (the Pile as Pythia was trained on it). The .idx
  (megatron/core/datasets/indexed_dataset.py, ``_IndexWriter``): magic ``MMIDIDX\\0\\0``, ``<Q`` version 1, ``<B``
  dtype code, ``<Q`` sequence count S, ``<Q`` document-index count D, int32 sizes[S], int64 pointers[S] (byte
  offsets into .bin), int64 document_indices[D] (sequence numbers where documents start, 0 first and S last, so
  D - 1 documents), then int8 modes[S] for multimodal sets.
* Flat token files (OLMo / Dolma): raw memmaps without a header (their names often end in .npy) need ``dtype``;
  real .npy files are read from their header.

The output dir holds meta.json (+ a copy of the tokenizer, if one is given) whose ``shards`` name byte ranges of
the files imported (docs/formats.md). Validation is ``val_import`` or the last ``val_tokens`` tokens of the last
file, cut at a document boundary where one is known; the train shard of that file ends where val starts.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from stacking.data import read_meta
from stacking.errors import DataError
from stacking.fsutil import atomic_dir, sha256_file
from stacking.tokenizer import meta_fields, stage_pretrained


@dataclass
class ImportConfig:
    """How to import tokenized files as a dataset dir."""

    paths: list[str] = field(default_factory=list)
    """Tokenized files, in order (their tokens laid end to end are the train split): Megatron-LM datasets (PREFIX,
    PREFIX.bin or PREFIX.idx), flat token files (.npy with a header, or raw memmaps), or directories of them (their
    .bin/.idx/.npy files, sorted by path). One format per import."""
    out: str = "data/imported"
    """Dataset dir to write: meta.json (and a tokenizer copy); the token files stay where they are."""
    val_import: list[str] = field(default_factory=list)
    """Tokenized files to validate on, in the same format and dtype. Empty: the last ``val_tokens`` tokens of the
    last of ``paths``."""
    val_tokens: int = 1_048_576
    """Without ``val_import``: tokens to hold out from the end of the last file; the cut moves back to the start of
    a document (Megatron: the index's documents; flat files: just after an ``eot_id``) where one is known."""
    dtype: str | None = None
    """Token dtype of raw flat files (uint16 | uint32 | int32 …); required for them, checked against .npy headers
    and Megatron indexes when given."""
    vocab_size: int | None = None
    """Vocabulary size (a model's embedding rows); default: the tokenizer's. One of the two is required."""
    eot_id: int | None = None
    """End-of-document token id; default: the tokenizer's EOS token, if any. Used for val documents and cuts."""
    tokenizer: str | None = None
    """The tokenizer the tokens were made with: an HF tokenizer.json, a SentencePiece .model or a dir holding one
    (a litgpt checkpoint dir), as `stacking data --tokenizer`. Gives vocab_size and eot_id (its EOS) when they are
    not set, and is copied into ``out``."""
    overwrite: bool = False
    """Rewrite ``out`` even if it already holds a dataset."""


MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float64", 7: "float32", 8: "uint16"}
TOKEN_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64")
_HEADER = 34  # magic 9 + version 8 + dtype code 1 + sequence count 8 + document-index count 8
_CHUNK = 1 << 22  # tokens / index entries per streamed chunk (32 MiB as int64)
_MIB = 1 << 20
_SUFFIXES = (".bin", ".idx", ".npy")  # what a directory given contributes


@dataclass
class TokenFile:
    """Tokens ``[0, tokens)`` of one file, from byte ``byte_offset``; ``doc_starts``: where documents begin (token
    positions, sorted, 0 first), when known."""

    path: Path
    dtype: np.dtype
    tokens: int
    byte_offset: int = 0
    fmt: str = "numpy"
    index: Path | None = None
    doc_starts: object = None  # a sorted sequence: Megatron's _DocStarts

    def read(self, a: int, b: int) -> np.ndarray:
        """Tokens ``[a, b)`` in memory."""
        if b <= a:
            return np.zeros(0, self.dtype)
        return np.asarray(np.memmap(self.path, self.dtype, "r", self.byte_offset + a * self.dtype.itemsize, (b - a,)))

    def where(self, pos: int) -> str:
        return f"{self.path} at byte {self.byte_offset + pos * self.dtype.itemsize}"


# ---- reading the inputs ----------------------------------------------------------------------------------------
def expand(paths: list[str], dtype: str | None) -> list[TokenFile]:
    """Every token file the paths name, in order; directories contribute their .bin/.idx/.npy files by path."""
    out, seen = [], set()
    for p in map(Path, paths):
        for f in sorted(q for q in p.rglob("*") if q.suffix in _SUFFIXES and q.is_file()) if p.is_dir() else [p]:
            key = f.with_suffix("") if f.suffix in (".bin", ".idx") and _is_megatron(f) else f
            if key not in seen:
                seen.add(key)
                out.append(_open(f, dtype))
    if not out:
        raise DataError(f"no token files (.bin/.idx/.npy) under {', '.join(paths) or 'the paths given'}")
    return out


def _is_megatron(f: Path) -> bool:
    return f.with_suffix(".idx").is_file() or f.suffix == ".idx"


def _open(f: Path, dtype: str | None) -> TokenFile:
    if f.suffix == ".idx" or (f.suffix == ".bin" and f.with_suffix(".idx").is_file()):
        return megatron(f.with_suffix(""), dtype)
    if f.is_file():
        return flat(f, dtype)
    prefix_bin, prefix_idx = Path(f"{f}.bin"), Path(f"{f}.idx")
    if prefix_idx.is_file() or prefix_bin.is_file():
        return megatron(f, dtype)
    raise DataError(f"{f} does not exist (nor {prefix_bin} / {prefix_idx})")


def _token_dtype(name, where: str) -> np.dtype:
    try:
        dt = np.dtype(name)
    except TypeError:
        raise DataError(f"{where}: unknown dtype {name!r}; use one of {', '.join(TOKEN_DTYPES)}") from None
    if dt.name not in TOKEN_DTYPES or not dt.isnative:
        name = dt.name if dt.isnative else dt.str
        raise DataError(f"{where}: dtype {name} is not a token dtype; use one of {', '.join(TOKEN_DTYPES)}")
    return dt


def flat(path: Path, dtype: str | None) -> TokenFile:
    """A flat token file: .npy (header parsed; ``dtype`` must agree if given) or a raw memmap (``dtype`` required)."""
    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            return _npy(path, dtype)
    if dtype is None:
        raise DataError(f"{path} is a raw token file (no .npy header, no .idx): give --dtype (e.g. uint16)")
    dt, size = _token_dtype(dtype, "--dtype"), path.stat().st_size
    if size % dt.itemsize:
        raise DataError(f"{path} has {size} bytes, not a multiple of {dt.name}'s {dt.itemsize}: not raw {dt.name}")
    return TokenFile(path, dt, size // dt.itemsize)


def _npy(path: Path, dtype: str | None) -> TokenFile:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)  # parses the header; pages are read on use only
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npy token array ({str(e).splitlines()[0]})") from None
    dt = _token_dtype(arr.dtype, str(path))
    if dtype is not None and _token_dtype(dtype, "--dtype") != dt:
        raise DataError(f"{path} holds {dt.name} tokens but --dtype is {dtype}")
    if arr.ndim > 1 and not arr.flags.c_contiguous:
        raise DataError(f"{path}: a Fortran-ordered {arr.shape} array is not a token stream; save it flat")
    return TokenFile(path, dt, arr.size, arr.offset)


class _DocStarts:
    """Token positions where a Megatron dataset's documents start (read lazily from the index memmaps)."""

    def __init__(self, pointers: np.ndarray, doc_idx: np.ndarray, itemsize: int, tokens: int):
        self.pointers, self.doc_idx, self.itemsize, self.tokens = pointers, doc_idx, itemsize, tokens

    def __len__(self) -> int:
        return len(self.doc_idx) - 1

    def __getitem__(self, k: int) -> int:
        seq = int(self.doc_idx[k])
        return self.tokens if seq == len(self.pointers) else int(self.pointers[seq]) // self.itemsize


def megatron(prefix: Path, dtype: str | None) -> TokenFile:
    """A Megatron-LM indexed dataset (PREFIX.bin + PREFIX.idx), its index checked against its .bin."""
    idx, binf = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    for f, other in ((idx, binf), (binf, idx)):
        if not f.is_file():
            raise DataError(f"{f} is missing (the pair of {other}: a Megatron dataset is PREFIX.bin + PREFIX.idx)")
    with open(idx, "rb") as fh:
        head = fh.read(_HEADER)
    if len(head) < _HEADER or head[:9] != MEGATRON_MAGIC:
        raise DataError(f"{idx} at byte 0: not a Megatron index (magic {head[:9]!r}, expected {MEGATRON_MAGIC!r})")
    (version,), (code,) = struct.unpack("<Q", head[9:17]), struct.unpack("<B", head[17:18])
    n_seq, n_doc = struct.unpack("<QQ", head[18:34])
    if version != 1:
        raise DataError(f"{idx} at byte 9: index version {version}, only version 1 is known")
    if code not in MEGATRON_DTYPES:
        raise DataError(f"{idx} at byte 17: unknown dtype code {code} (Megatron codes: {MEGATRON_DTYPES})")
    dt = _token_dtype(MEGATRON_DTYPES[code], f"{idx} at byte 17")
    if dtype is not None and _token_dtype(dtype, "--dtype") != dt:
        raise DataError(f"{idx} at byte 17: the index holds {dt.name} tokens but --dtype is {dtype}")
    end = _HEADER + 12 * n_seq + 8 * n_doc
    if idx.stat().st_size not in (end, end + n_seq):  # + one int8 mode per sequence in multimodal sets
        raise DataError(
            f"{idx} has {idx.stat().st_size} bytes; its header ({n_seq} sequences, {n_doc} document "
            f"indices) needs {end}: truncated or not a Megatron index"
        )
    sizes = np.memmap(idx, np.int32, "r", _HEADER, (n_seq,)) if n_seq else np.zeros(0, np.int32)
    pointers = np.memmap(idx, np.int64, "r", _HEADER + 4 * n_seq, (n_seq,)) if n_seq else np.zeros(0, np.int64)
    doc_idx = np.memmap(idx, np.int64, "r", _HEADER + 12 * n_seq, (n_doc,)) if n_doc else np.zeros(0, np.int64)
    tokens = _check_sequences(idx, binf, sizes, pointers, dt.itemsize)
    _check_documents(idx, doc_idx, n_seq)
    return TokenFile(binf, dt, tokens, 0, "megatron", idx, _DocStarts(pointers, doc_idx, dt.itemsize, tokens))


def _check_sequences(idx: Path, binf: Path, sizes, pointers, itemsize: int) -> int:
    """Sequences must tile the .bin: sequence i at byte sum(sizes[:i]) · itemsize, the last ending at its end."""
    bin_bytes, at = binf.stat().st_size, 0  # at: where the next sequence must start (bytes)
    for a in range(0, len(sizes), _CHUNK):
        sz, pt = sizes[a : a + _CHUNK].astype(np.int64), np.asarray(pointers[a : a + _CHUNK])
        if (sz < 0).any():
            i = int(np.flatnonzero(sz < 0)[0])
            raise DataError(f"{idx} at byte {_HEADER + 4 * (a + i)}: sequence {a + i} has negative size {sz[i]}")
        ends = pt + sz * itemsize
        if (past := np.flatnonzero(ends > bin_bytes)).size:
            i = int(past[0])
            raise DataError(
                f"{idx}: sequence {a + i} (byte {pt[i]} + {sz[i]} tokens) ends past the end of {binf} "
                f"({bin_bytes} bytes); the .bin is truncated or belongs to another index"
            )
        want = at + np.concatenate([[0], np.cumsum(sz[:-1])]) * itemsize
        if (bad := np.flatnonzero(pt != want)).size:
            i = int(bad[0])
            raise DataError(
                f"{idx}: sequence {a + i} starts at byte {pt[i]} of {binf}, not {want[i]} where the "
                f"sequences before it end; the index disagrees with its .bin"
            )
        at = int(want[-1] + sz[-1] * itemsize)
    if at != bin_bytes:
        raise DataError(
            f"{idx}: its sequences hold {at // itemsize} tokens ({at} bytes) but {binf} has "
            f"{bin_bytes} bytes; the index disagrees with its .bin"
        )
    return at // itemsize


def _check_documents(idx: Path, doc_idx, n_seq: int) -> None:
    """document_indices rise from 0 to the sequence count."""
    if len(doc_idx) < 1 or doc_idx[0] != 0 or doc_idx[-1] != n_seq:
        first, last = (int(doc_idx[0]), int(doc_idx[-1])) if len(doc_idx) else (None, None)
        raise DataError(
            f"{idx}: document_indices must run from 0 to the sequence count {n_seq}, got {first} … "
            f"{last} ({len(doc_idx)} entries)"
        )
    for a in range(0, len(doc_idx) - 1, _CHUNK):
        step = np.diff(np.asarray(doc_idx[a : a + _CHUNK + 1]))
        if (bad := np.flatnonzero(step < 0)).size:
            raise DataError(f"{idx}: document_indices fall at document {a + int(bad[0]) + 1}; they must not decrease")


# ---- checking the tokens ---------------------------------------------------------------------------------------
def _check_ids(tf: TokenFile, a: int, chunk: np.ndarray, vocab_size: int) -> None:
    """Every id of ``chunk`` (tokens ``a …`` of ``tf``) in [0, vocab_size), else a DataError at the first."""
    bad = np.flatnonzero((chunk >= vocab_size) | (chunk < 0)) if chunk.size else []
    if len(bad):
        j = int(bad[0])
        raise DataError(
            f"{tf.where(a + j)}: token id {int(chunk[j])} is outside [0, vocab_size={vocab_size}); "
            "give the right --vocab_size / --tokenizer / --dtype"
        )


def sample_ids(files: list[TokenFile], vocab_size: int, n_chunks: int = 16, chunk: int = 1 << 16) -> None:
    """A fast check before the full pass: ``n_chunks`` stretches of each file, first and last included."""
    for tf in files:
        for a in sorted({int(x) for x in np.linspace(0, max(tf.tokens - chunk, 0), n_chunks)}):
            _check_ids(tf, a, tf.read(a, min(a + chunk, tf.tokens)), vocab_size)


def count_ids(parts: list[tuple[TokenFile, int, int]], vocab_size: int) -> np.ndarray:
    """Token counts (int64, length vocab_size) over byte ranges ``(file, first token, end token)``, streamed."""
    counts = np.zeros(vocab_size, np.int64)
    for tf, a, b in parts:
        for s in range(a, b, _CHUNK):
            c = tf.read(s, min(s + _CHUNK, b))
            _check_ids(tf, s, c, vocab_size)
            counts += np.bincount(c, minlength=vocab_size)
    return counts


# ---- the split ---------------------------------------------------------------------------------------------------
def val_start(tf: TokenFile, val_tokens: int, eot_id: int | None) -> int:
    """Where val starts in the last file: ``tokens - val_tokens`` moved back to a document start, if one is known
    (Megatron: the index; flat: just after the last ``eot_id`` before it)."""
    if not 0 < val_tokens < tf.tokens:
        raise DataError(
            f"{tf.path} has {tf.tokens} tokens: too few to hold out val_tokens={val_tokens} and train "
            "on the rest; give more data, a smaller --val_tokens, or --val_import"
        )
    cut = tf.tokens - val_tokens
    if tf.doc_starts is not None:
        return tf.doc_starts[bisect_right(range(len(tf.doc_starts)), cut, key=tf.doc_starts.__getitem__) - 1]
    if eot_id is None:
        return cut
    for b in range(cut, 0, -_CHUNK):
        hits = np.flatnonzero(tf.read(max(b - _CHUNK, 0), b) == eot_id)
        if hits.size:
            return max(b - _CHUNK, 0) + int(hits[-1]) + 1
    return cut  # no document boundary before the cut: cut mid-document


def _docs_before(tf: TokenFile, pos: int) -> int:
    """Documents of a Megatron file that start before token ``pos``."""
    return bisect_right(range(len(tf.doc_starts)), pos - 1, key=tf.doc_starts.__getitem__)


def split(train: list[TokenFile], val: list[TokenFile], cfg: ImportConfig, eot_id: int | None):
    """(train parts, val parts): lists of ``(file, first token, end token)``; val cut from the last train file
    when ``val`` is empty."""
    train_parts = [(tf, 0, tf.tokens) for tf in train if tf.tokens]
    if val:
        val_parts = [(tf, 0, tf.tokens) for tf in val if tf.tokens]
        for name, parts, files in (("paths", train_parts, train), ("val_import", val_parts, val)):
            if not parts:
                raise DataError(f"{files[0].path}: the {name} files hold no tokens; give more data")
        return train_parts, val_parts
    last = train[-1]
    start = val_start(last, cfg.val_tokens, eot_id)
    train_parts = [p for p in train_parts if p[0] is not last] + [(last, 0, start)] * (start > 0)
    if not train_parts:
        raise DataError(
            f"{last.path}: its first document starts at or after the val cut (token {start}): no train "
            "tokens left; give more data, a smaller --val_tokens, or --val_import"
        )
    return train_parts, [(last, start, last.tokens)]


def n_docs(parts, counts: np.ndarray, eot_id: int | None) -> int | None:
    """Documents in a split: from Megatron indexes, else the count of ``eot_id`` tokens, else unknown."""
    if all(tf.doc_starts is not None for tf, *_ in parts):
        return sum(_docs_before(tf, b) - _docs_before(tf, a) for tf, a, b in parts)
    return int(counts[eot_id]) if eot_id is not None else None


# ---- meta.json -----------------------------------------------------------------------------------------------------
def fingerprint(path: Path, role: str) -> dict:
    """Content identity of one imported file: the whole file's sha256 up to 2 MiB (and for every .idx), else of its
    first and last MiB (with its size: a changed file almost surely changes one of the three)."""
    size = path.stat().st_size
    if size <= 2 * _MIB or path.suffix == ".idx":
        return {"path": path.name, "role": role, "bytes": size, "sha256": sha256_file(path), "sha256_of": "file"}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        f.seek(size - _MIB)
        h.update(f.read(_MIB))
    return {"path": path.name, "role": role, "bytes": size, "sha256": h.hexdigest(), "sha256_of": "first+last MiB"}


def _fingerprints(train: list[TokenFile], val: list[TokenFile], cut: bool) -> list[dict]:
    out = []
    for i, tf in enumerate(train + val):
        role = "val" if i >= len(train) else "train+val" if cut and i == len(train) - 1 else "train"
        out += [fingerprint(f, role) for f in (tf.index, tf.path) if f is not None]
    return out


def _shards(parts) -> list[dict]:
    return [
        {"path": str(tf.path.resolve()), "tokens": b - a, "byte_offset": tf.byte_offset + a * tf.dtype.itemsize}
        for tf, a, b in parts
    ]


def _log(msg: str) -> None:
    print(f"[import] {msg}", file=sys.stderr, flush=True)


def _check_config(cfg: ImportConfig) -> None:
    if not cfg.paths:
        raise DataError("--import needs at least one path (Megatron PREFIX, .bin/.idx, .npy, raw token file or dir)")
    for name in ("vocab_size", "eot_id", "val_tokens"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "eot_id" else 1)):
            raise DataError(
                f"{name} must be a{' non-negative' if name == 'eot_id' else ' positive'} integer, got {v!r}"
            )
    if cfg.vocab_size is None and cfg.tokenizer is None:
        raise DataError("give --vocab_size or --tokenizer (the tokens' vocabulary size is not in the files)")


def _tokenizer(cfg: ImportConfig, dest: Path) -> tuple[int, dict]:
    """(vocab_size, the tokenizer's meta.json keys): the options, else the tokenizer's (staged into ``dest`` as
    `stacking data --tokenizer PATH` does: the same file names, kinds and EOS/BOS reading)."""
    if cfg.tokenizer is None:
        return cfg.vocab_size, {"tokenizer": "imported", "tokenizer_sha256": None, "eot_id": cfg.eot_id}
    spec = stage_pretrained(cfg.tokenizer, dest)
    if cfg.eot_id is not None:
        spec = replace(spec, eot_id=cfg.eot_id)
    return cfg.vocab_size or spec.vocab_size, meta_fields(spec)


def _one_format(files: list[TokenFile]) -> None:
    for tf in files:
        if (tf.fmt, tf.dtype) != (files[0].fmt, files[0].dtype):
            raise DataError(
                f"{tf.path} is {tf.fmt} {tf.dtype.name} but {files[0].path} is {files[0].fmt} "
                f"{files[0].dtype.name}: import one format and dtype at a time"
            )


def import_dataset(cfg: ImportConfig) -> Path:
    """Write ``cfg.out``: a dataset dir whose shards are byte ranges of the files imported (nothing copied)."""
    _check_config(cfg)
    out = Path(cfg.out)
    if (out / "meta.json").exists() and not cfg.overwrite:
        _log(f"{out} already holds a dataset (meta.json); reusing it (pass --overwrite to rewrite)")
        return out
    train, val = expand(cfg.paths, cfg.dtype), expand(cfg.val_import, cfg.dtype) if cfg.val_import else []
    _one_format(train + val)
    with atomic_dir(out) as tmp:
        vocab_size, tok = _tokenizer(cfg, tmp)
        eot_id = tok["eot_id"]
        if eot_id is not None and eot_id >= vocab_size:
            raise DataError(f"eot_id {eot_id} is not below vocab_size {vocab_size}")
        sample_ids(train + val, vocab_size)
        train_parts, val_parts = split(train, val, cfg, eot_id)
        _log(
            f"{len(train + val)} {train[0].fmt} files; counting {sum(b - a for _, a, b in train_parts):,} train / "
            f"{sum(b - a for _, a, b in val_parts):,} val tokens"
        )
        train_counts, val_counts = count_ids(train_parts, vocab_size), count_ids(val_parts, vocab_size)
        logp = np.log((train_counts + 1.0) / (train_counts + 1.0).sum())  # add-one smoothing, as stacking data
        meta = {
            "vocab_size": vocab_size,
            "dtype": train[0].dtype.name,
            **tok,
            "train_tokens": int(train_counts.sum()),
            "val_tokens": int(val_counts.sum()),
            "unigram_val_loss": float(-(val_counts @ logp) / val_counts.sum()),
            "n_docs": {
                "train": n_docs(train_parts, train_counts, eot_id),
                "val": n_docs(val_parts, val_counts, eot_id),
            },
            "sources": [str(Path(p).resolve()) for p in cfg.paths + cfg.val_import],
            "import": {
                "format": train[0].fmt,
                "val": "val_import" if val else f"last {cfg.val_tokens} tokens",
                "files": _fingerprints(train, val, cut=not val),
            },
            "shards": {"train": _shards(train_parts), "val": _shards(val_parts)},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    read_meta(out)  # the shards as a reader sees them
    _log(
        f"wrote {out}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, vocab {vocab_size}, "
        f"unigram val loss {meta['unigram_val_loss']:.3f}"
    )
    return out


__all__ = ["ImportConfig", "TokenFile", "expand", "flat", "import_dataset", "megatron"]
