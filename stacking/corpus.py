"""Corpus → tokenizer → token dataset dir: `stacking data` (reading and sampling: :mod:`stacking.data`).

A corpus is a list of sources: named ones (``stdlib``: the Python standard library source of the running
interpreter, the default; ``site-packages``: the Python source of every package installed in it; ``c-headers``:
the system C headers) and paths to text / JSONL / Parquet files or directories of them. Nothing is downloaded.
Test suites are left out of the named sources. Files are split train/val by a hash of their key (the path relative
to its source root; documents inside JSONL/Parquet files by key#index), so the split does not depend on the order
files are found in or on which other files exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stacking.data import read_meta
from stacking.errors import DataError
from stacking.fsutil import atomic_dir, sha256_file

EOT = "<|endoftext|>"
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_C_HEADER_ROOTS = ("/usr/include", "/usr/local/include")
NAMED_SOURCES = ("stdlib", "site-packages", "c-headers")
"""Corpus sources ``--sources`` accepts by name (a path that is spelled the same needs a ``./`` in front)."""
_DEDUP_SOURCES = {"site-packages", "c-headers"}
"""Named sources whose files are skipped when their content equals an earlier file's (vendored packages, per-arch
header copies). stdlib is kept whole, so stdlib datasets are the ones built before sources had names."""
_TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".json", ".c", ".h", ".html", ".tex", ".csv", ".yaml", ".yml"}


@dataclass
class DataConfig:
    """How to build a token dataset dir."""

    out: str = "data/stdlib-bpe4096"
    """Output dataset directory (train.bin, val.bin, tokenizer.json, meta.json)."""
    sources: list[str] = field(default_factory=list)
    """Corpus sources, combined in the order given (`--sources A B C`). Named: 'stdlib' (the .py files of this
    interpreter's standard library; the default), 'site-packages' (the .py files of every package installed in its
    purelib/platlib), 'c-headers' (the .h files under /usr/include and /usr/local/include); test suites (test/tests
    dirs, test_* files) left out of all three. Anything else is a path: a text, .jsonl or .parquet file, or a
    directory of them (a path spelled like a name needs ./). A file reached twice is used once; a site-packages or
    c-headers file whose content equals an earlier file's is skipped. meta.json records the sources, the named
    ones' roots and file counts. Empty = stdlib."""
    tokenizer: str = "bpe"
    """'bpe' (byte-level BPE trained here on the train split) or 'bytes' (raw UTF-8 bytes, vocab 257)."""
    vocab_size: int = 4096
    """BPE vocabulary size (ignored for 'bytes')."""
    tokenizer_from: str | None = None
    """An existing dataset dir whose tokenizer to use (its tokenizer.json, or raw bytes) instead of training one:
    a second corpus that can be evaluated by, or continue, models trained on the first (`eval_data_dirs`).
    Overrides ``tokenizer`` and ``vocab_size``; meta.json records the dir as ``tokenizer_from``."""
    val_fraction: float = 0.05
    """Fraction of files (by hash of their path) held out for validation."""
    max_files: int = 0
    """Use only the first N files (sources in the order given, each sorted by path; 0 = all); for quick tests."""
    text_field: str = "text"
    """Field (JSONL) or column (Parquet) that holds the text."""
    overwrite: bool = False
    """Rebuild even if ``out`` already holds a dataset."""


# --------------------------------------------------------------------------------------------------------------
# Corpus


def _walk(root: Path, suffix: str) -> list[Path]:
    """The ``suffix`` files under ``root``, sorted: test suites (``test``/``tests`` dirs, ``test_*`` files),
    nested ``site-packages``, caches and hidden dirs left out. Symlinked dirs are not followed."""
    files = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        files += [Path(dirpath) / n for n in names if n.endswith(suffix) and not n.startswith("test_")]
    return sorted(files)


def named_source_roots(name: str) -> list[Path]:
    """The directories a named source reads, in order: one for ``stdlib``, this interpreter's purelib and platlib
    (once if they are the same) for ``site-packages``, the existing ones of /usr/include and /usr/local/include for
    ``c-headers``."""
    if name == "stdlib":
        return [Path(sysconfig.get_paths()["stdlib"])]
    if name == "site-packages":
        paths = sysconfig.get_paths()
        roots = dict.fromkeys(Path(paths[k]) for k in ("purelib", "platlib"))
    elif name == "c-headers":
        roots = dict.fromkeys(Path(r) for r in _C_HEADER_ROOTS)
    else:
        raise DataError(f"unknown named source {name!r}; valid: {', '.join(NAMED_SOURCES)}")
    return [r for r in roots if r.is_dir()]


def _existing_roots(name: str) -> list[Path]:
    """:func:`named_source_roots`, or a DataError when the named source has none on this machine."""
    roots = named_source_roots(name)
    if not roots:
        raise DataError(f"named source {name!r} has no directory on this machine (looked in "
                        f"{' and '.join(_C_HEADER_ROOTS) if name == 'c-headers' else 'purelib/platlib'})")
    return roots


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, test suites and third-party packages excluded."""
    return _walk(named_source_roots("stdlib")[0], ".py")


def named_source_files(name: str) -> list[tuple[Path, str]]:
    """(file, split key) for every file of a named source, in root order, each root sorted by path.

    The keys do not depend on where the interpreter is installed: ``stdlib`` keys are the path relative to the
    stdlib (as before named sources existed, so stdlib-only datasets keep their split), ``site-packages`` keys the
    path relative to site-packages prefixed ``site-packages/`` (``site-packages/numpy/__init__.py``), ``c-headers``
    keys the absolute path prefixed ``c-headers`` (``c-headers/usr/include/stdio.h``).
    """
    roots = _existing_roots(name)
    if name == "stdlib":
        return [(f, str(f.relative_to(roots[0]))) for f in stdlib_files()]
    if name == "site-packages":
        return [(f, f"site-packages/{f.relative_to(r)}") for r in roots for f in _walk(r, ".py")]
    return [(f, f"c-headers{f}") for r in roots for f in _walk(r, ".h")]


def _path_files(source: str) -> list[tuple[Path, str]]:
    """(file, split key) for a path source: a file (key: the path as given) or a directory of text, .jsonl and
    .parquet files (keys relative to it)."""
    p = Path(source)
    if p.is_dir():
        return [(q, str(q.relative_to(p))) for q in sorted(p.rglob("*"))
                if q.is_file() and q.suffix in _TEXT_SUFFIXES | {".jsonl", ".parquet"}]
    return [(p, str(p))]


def _check_sources(sources: list[str]) -> None:
    """One-line errors for a source list, before any file is read."""
    for i, s in enumerate(sources):
        if s in sources[:i]:
            raise DataError(f"data source {s!r} is given twice")
        if s in NAMED_SOURCES:
            _existing_roots(s)
        elif not Path(s).exists():
            raise DataError(f"data source {s!r} does not exist (give {', '.join(NAMED_SOURCES)}, or text, "
                            ".jsonl or .parquet files or directories)")


def collect_files(sources: list[str]) -> tuple[list[tuple[Path, str, str]], list[str]]:
    """Every file of ``sources`` (empty = ``["stdlib"]``) in order, a file reached twice kept once.

    Returns (file, split key, source it came from) triples and a description of each source for meta.json.
    """
    sources = sources or ["stdlib"]
    _check_sources(sources)
    found: list[tuple[Path, str, str]] = []
    desc: list[str] = []
    for s in sources:
        if s in NAMED_SOURCES:
            pairs = named_source_files(s)
            roots = [str(r) for r in named_source_roots(s)]
            if s == "stdlib":
                desc.append(f"python-stdlib:{roots[0]} (Python {sys.version.split()[0]})")
            else:
                desc += [f"{'python-' if s == 'site-packages' else ''}{s}:{r}" for r in roots]
        else:
            pairs = _path_files(s)
            desc.append(str(Path(s).resolve()))
        if not pairs:
            kind = "matching" if s in NAMED_SOURCES else "text, .jsonl or .parquet"
            raise DataError(f"data source {s!r} contains no {kind} files")
        found += [(f, key, s) for f, key in pairs]
    seen: set[Path] = set()
    unique = []
    for f, key, s in found:
        if (r := f.resolve()) not in seen:
            seen.add(r)
            unique.append((f, key, s))
    return unique, desc


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
    if cfg.tokenizer_from:
        src_meta = read_meta(cfg.tokenizer_from)  # DataError: missing / broken dir
    elif cfg.tokenizer not in ("bpe", "bytes"):
        raise DataError(f"tokenizer must be 'bpe' or 'bytes', got {cfg.tokenizer!r}")
    if cfg.tokenizer == "bpe" and not cfg.tokenizer_from and not 256 < cfg.vocab_size <= 1 << 20:
        raise DataError(f"vocab_size must be in (256, 1048576] for bpe, got {cfg.vocab_size}")
    if not 0 < cfg.val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    if cfg.max_files < 0:
        raise DataError(f"max_files must be >= 0 (0 = all), got {cfg.max_files}")
    _check_sources(cfg.sources)
    if (out / "meta.json").exists() and not cfg.overwrite:
        _log(f"{out} already holds a dataset (meta.json); reusing it (pass --overwrite to rebuild)")
        return out

    t0 = time.time()
    found, source_desc = collect_files(cfg.sources)
    if cfg.max_files:
        found = found[: cfg.max_files]
    named = {s: {"roots": [str(r) for r in named_source_roots(s)], "n_files": 0, "n_duplicates_skipped": 0}
             for s in dict.fromkeys(t for *_, t in found) if s in NAMED_SOURCES}
    _log(f"corpus: {len(found)} files from {', '.join(source_desc)}")

    train_docs: list[str] = []
    val_docs: list[str] = []
    hashes: dict[str, str] = {}
    seen: set[str] = set()
    for f, rel, src in found:
        h = hashlib.sha256(f.read_bytes()).hexdigest()
        if src in _DEDUP_SOURCES and h in seen:  # a vendored copy would otherwise land in both splits
            named[src]["n_duplicates_skipped"] += 1
            continue
        seen.add(h)
        hashes[rel] = h
        if src in named:
            named[src]["n_files"] += 1
        docs = _documents(f, cfg.text_field)
        for i, doc in enumerate(docs):  # a JSONL/Parquet file holds many documents: split those by document
            key = rel if len(docs) == 1 else f"{rel}#{i}"
            (val_docs if _is_val(key, cfg.val_fraction) else train_docs).append(doc)
    n_files = len(found) - sum(v["n_duplicates_skipped"] for v in named.values())
    if not train_docs or not val_docs:
        raise DataError(f"split left {len(train_docs)} train and {len(val_docs)} val documents; "
                        "give more files or change val_fraction")
    chars = {"train": sum(map(len, train_docs)), "val": sum(map(len, val_docs))}
    _log(f"split by file: {len(train_docs)} train docs, {len(val_docs)} val docs "
         f"({chars['train'] / 1e6:.1f}M / {chars['val'] / 1e6:.1f}M chars)")

    kind = src_meta["tokenizer"] if cfg.tokenizer_from else cfg.tokenizer
    with atomic_dir(out) as tmp:
        if kind == "bpe":
            if cfg.tokenizer_from:
                from tokenizers import Tokenizer

                _log(f"tokenizer from {cfg.tokenizer_from} (no BPE training)")
                src = Path(cfg.tokenizer_from) / "tokenizer.json"
                tok = Tokenizer.from_file(str(src))
                shutil.copyfile(src, tmp / "tokenizer.json")  # byte for byte: the same tokenizer_sha256
            else:
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
            "tokenizer": kind,
            "tokenizer_sha256": sha256_file(tmp / "tokenizer.json") if kind == "bpe" else None,
            "eot_id": eot_id,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "val_fraction": cfg.val_fraction,
            "sources": source_desc,
            "named_sources": named,
            "n_files": n_files,
            "n_docs": {"train": len(train_docs), "val": len(val_docs)},
            "chars": chars,
            "sha256": {"corpus": hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest(),
                       "files": hashes},
        }
        if cfg.tokenizer_from:
            meta["tokenizer_from"] = str(Path(cfg.tokenizer_from).resolve())
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
