"""Corpus → tokenizer → token dataset dir: `stacking data` (reading and sampling: :mod:`stacking.data`).

A corpus is a list of sources: named ones (``stdlib``: the Python standard library source of the running
interpreter, the default; ``site-packages``: the Python source of every package installed in it; ``c-headers``:
the system C headers) and paths to text / JSONL / Parquet files (JSONL and text also ``.gz`` / ``.zst``) or
directories of them. Nothing is downloaded. Test suites are left out of the named sources. Documents are split
train/val by a hash of their key (the path relative to its source root; documents inside JSONL/Parquet files by
key#index), so the split does not depend on the order files are found in or on which other files exist.

Building streams: files are read document by document (:mod:`stacking.documents`), tokenized in parallel work
units (consecutive files of about ``shard_bytes``) into ordered shard files, and a killed build resumes from its
finished units (:mod:`stacking.shards`); tokenizers: :mod:`stacking.tokenizer`. Memory is bounded by workers ×
``chunk_bytes`` (and the largest single document), not by the corpus.
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

from stacking.documents import CorpusFile, file_documents, is_corpus_file, is_val
from stacking.errors import DataError
from stacking.fsutil import sha256_file, write_json

_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_C_HEADER_ROOTS = ("/usr/include", "/usr/local/include")
NAMED_SOURCES = ("stdlib", "site-packages", "c-headers")
"""Corpus sources ``--sources`` accepts by name (a path that is spelled the same needs a ``./`` in front)."""
_DEDUP_SOURCES = {"site-packages", "c-headers"}
"""Named sources whose files are skipped when their content equals an earlier file's (vendored packages, per-arch
header copies). stdlib is kept whole, so stdlib datasets are the ones built before sources had names."""
_KINDS = "text, .jsonl, .jsonl.gz, .jsonl.zst or .parquet"


@dataclass
class DataConfig:
    """How to build a token dataset dir."""

    out: str = "data/stdlib-bpe4096"
    """Output dataset directory (shard files, tokenizer files, meta.json); built in a sibling .OUT.partial dir that
    a killed build resumes from, and renamed into place when complete."""
    sources: list[str] = field(default_factory=list)
    """Corpus sources, combined in the order given (`--sources A B C`). Named: 'stdlib' (the .py files of this
    interpreter's standard library; the default), 'site-packages' (the .py files of every package installed in its
    purelib/platlib), 'c-headers' (the .h files under /usr/include and /usr/local/include); test suites (test/tests
    dirs, test_* files) left out of all three. Anything else is a path: a text, .jsonl, .jsonl.gz, .jsonl.zst or
    .parquet file (text also .gz/.zst), or a directory of them (a path spelled like a name needs ./). A file
    reached twice is used once; a site-packages or c-headers file whose content equals an earlier file's is skipped.
    meta.json records the sources, the named ones' roots and file counts. Empty = stdlib."""
    tokenizer: str = "bpe"
    """'bpe' (byte-level BPE trained here on the first tokenizer_sample_bytes of the train split), 'bytes' (raw
    UTF-8 bytes, vocab 257), or a PATH to a pretrained tokenizer: an HF tokenizer.json, a SentencePiece
    tokenizer.model, or a dir holding one (a litgpt checkpoint dir). A pretrained tokenizer encodes each document
    as litgpt.Tokenizer(dir).encode(text, eos=True) (its BOS rule, its EOS at the end) and is copied into the
    dataset with its tokenizer_config.json / generation_config.json; meta.json records it as tokenizer_from."""
    vocab_size: int = 4096
    """BPE vocabulary size (only for 'bpe')."""
    tokenizer_from: str | None = None
    """An existing dataset dir whose tokenizer to use (its tokenizer file copied, or raw bytes) instead of training
    one: a second corpus that can be evaluated by, or continue, models trained on the first (`eval_data_dirs`).
    Overrides ``tokenizer`` and ``vocab_size``; meta.json records the dir as ``tokenizer_from``."""
    val_fraction: float = 0.05
    """Fraction of documents (by hash of their key: the file's path, key#index inside JSONL/Parquet files) held out
    for validation."""
    val_tokens: int = 0
    """Cap on the validation split in tokens (0 = no cap): validation documents are kept in order while they fit,
    the rest go to the end of the train split (none is dropped) — except with val_sources, whose documents past
    the cap are not used (validation text never becomes training data); meta.json records it as val_tokens_max."""
    val_sources: list[str] = field(default_factory=list)
    """Sources (named or paths, as ``sources``) that are the validation split, e.g. a corpus's own validation
    files: then every document of ``sources`` is train and val_fraction is not used (the val_tokens cap applies to
    these: what it leaves out is not used). meta.json records them as val_sources."""
    max_files: int = 0
    """Use only the first N files (sources in the order given, each sorted by path; 0 = all); for quick tests."""
    text_field: str = "text"
    """Field (JSONL) or column (Parquet) that holds the text."""
    workers: int = 0
    """Processes that tokenize in parallel (0 = the CPUs this process may use)."""
    shard_bytes: int = 32 << 20
    """Input bytes (on disk) per work unit and shard: consecutive files are grouped up to about this size (a larger
    file is a unit by itself, a Parquet file is split by row groups); a killed build resumes from finished units."""
    chunk_bytes: int = 1 << 20
    """Characters of text each worker encodes at a time: with an HF tokenizer a worker holds ~80 MB + ~40 x this
    (measured: 120 MB at 1 MiB, 210 MB at 4 MiB), whatever the corpus size; larger batches were no faster."""
    tokenizer_sample_bytes: int = 1 << 30
    """'bpe' trains on the first this many UTF-8 bytes of train documents, in corpus order (the whole train split
    when it is smaller)."""
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
        raise DataError(
            f"named source {name!r} has no directory on this machine (looked in "
            f"{' and '.join(_C_HEADER_ROOTS) if name == 'c-headers' else 'purelib/platlib'})"
        )
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
    """(file, split key) for a path source: a file (key: the path as given) or a directory of text, JSONL
    (also .gz / .zst) and Parquet files (keys relative to it)."""
    p = Path(source)
    if p.is_dir():
        return [(q, str(q.relative_to(p))) for q in sorted(p.rglob("*")) if q.is_file() and is_corpus_file(q)]
    return [(p, str(p))]


def _check_sources(sources: list[str]) -> None:
    """One-line errors for a source list, before any file is read."""
    for i, s in enumerate(sources):
        if s in sources[:i]:
            raise DataError(f"data source {s!r} is given twice")
        if s in NAMED_SOURCES:
            _existing_roots(s)
        elif not Path(s).exists():
            raise DataError(
                f"data source {s!r} does not exist (give {', '.join(NAMED_SOURCES)}, or {_KINDS} files or directories)"
            )


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
            kind = "matching" if s in NAMED_SOURCES else _KINDS
            raise DataError(f"data source {s!r} contains no {kind} files")
        found += [(f, key, s) for f, key in pairs]
    seen: set[Path] = set()
    unique = []
    for f, key, s in found:
        if (r := f.resolve()) not in seen:
            seen.add(r)
            unique.append((f, key, s))
    return unique, desc


# --------------------------------------------------------------------------------------------------------------
# The corpus: every file, hashed


@dataclass
class Corpus:
    files: list[CorpusFile]
    sources: list[str]
    """A description of each source for meta.json (roots, resolved paths)."""
    val_sources: list[str]
    named: dict
    """meta.json's ``named_sources``: roots and file counts of the named sources used."""

    @property
    def hashes(self) -> dict[str, str]:
        return {f.key: f.sha256 for f in self.files}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.hashes, sort_keys=True).encode()).hexdigest()


def list_corpus(cfg: DataConfig) -> Corpus:
    """The files of ``sources`` (the first ``max_files``) then of ``val_sources``, hashed; a site-packages or
    c-headers file whose content equals an earlier file's left out."""
    found, desc = collect_files(cfg.sources)
    found = found[: cfg.max_files] if cfg.max_files else found
    val_found, val_desc = collect_files(cfg.val_sources) if cfg.val_sources else ([], [])
    train_paths = {f.resolve() for f, _, _ in found}
    for f, _, _ in val_found:
        if f.resolve() in train_paths:
            raise DataError(f"{f} is in both sources and val_sources; a file can be in one split only")
    splits = ["train" if cfg.val_sources else "hash"] * len(found) + ["val"] * len(val_found)
    named = {
        s: {"roots": [str(r) for r in named_source_roots(s)], "n_files": 0, "n_duplicates_skipped": 0}
        for s in dict.fromkeys(t for *_, t in found + val_found)
        if s in NAMED_SOURCES
    }
    files, seen = [], set()
    for (f, key, src), split in zip(found + val_found, splits):
        h = sha256_file(f)
        if src in _DEDUP_SOURCES and h in seen:  # a vendored copy would otherwise land in both splits
            named[src]["n_duplicates_skipped"] += 1
            continue
        seen.add(h)
        if src in named:
            named[src]["n_files"] += 1
        files.append(CorpusFile(f, key, src, h, f.stat().st_size, split))
    return Corpus(files, desc, val_desc, named)


def train_texts(corpus: Corpus, cfg: DataConfig, opened: list[CorpusFile]) -> Iterator[str]:
    """The train documents in corpus order, up to ``tokenizer_sample_bytes`` UTF-8 bytes (the last one cut): what
    the BPE is trained on, streamed. The files read are appended to ``opened``."""
    budget = cfg.tokenizer_sample_bytes
    for f in corpus.files:
        if f.split == "val":
            continue
        opened.append(f)
        for key, text in file_documents(f.path, f.key, cfg.text_field):
            if f.split == "hash" and is_val(key, cfg.val_fraction):
                continue
            n = len(text.encode("utf-8"))
            if n >= budget:
                yield text.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
                return
            budget -= n
            yield text


# --------------------------------------------------------------------------------------------------------------
# Building a dataset dir


def _log(msg: str) -> None:
    print(f"[data] {msg}", file=sys.stderr, flush=True)


def _check_config(cfg: DataConfig) -> dict | None:
    """Every one-line error a config can cause before any file is read; the ``tokenizer_from`` dir's meta."""
    from stacking.tokenizer import pretrained_file

    src_meta = None
    if cfg.tokenizer_from:
        src_meta = _source_meta(cfg.tokenizer_from)
    elif cfg.tokenizer not in ("bpe", "bytes"):
        pretrained_file(cfg.tokenizer)  # DataError: none of the three kinds
    if cfg.tokenizer == "bpe" and not cfg.tokenizer_from and not 256 < cfg.vocab_size <= 1 << 20:
        raise DataError(f"vocab_size must be in (256, 1048576] for bpe, got {cfg.vocab_size}")
    if not 0 < cfg.val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    for name in ("max_files", "val_tokens", "workers"):
        if getattr(cfg, name) < 0:
            raise DataError(
                f"{name} must be >= 0 (0 = {'no cap' if name == 'val_tokens' else 'all'}), got {getattr(cfg, name)}"
            )
    for name in ("shard_bytes", "chunk_bytes", "tokenizer_sample_bytes"):
        if getattr(cfg, name) < 1:
            raise DataError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    _check_sources([*(cfg.sources or ["stdlib"]), *cfg.val_sources])
    return src_meta


def _source_meta(data_dir: str) -> dict:
    """The meta.json of a ``tokenizer_from`` dir, checked like any dataset dir, with its tokenizer file."""
    from stacking.data import read_meta
    from stacking.tokenizer import FILES

    meta = read_meta(data_dir)  # DataError: missing / broken dir
    kind = meta.get("tokenizer", "bpe")
    if kind != "bytes" and not (Path(data_dir) / FILES.get(kind, "?")).is_file():
        raise DataError(f"tokenizer_from {data_dir!r} has no {FILES.get(kind, kind)} (tokenizer {kind!r})")
    return meta


def build_dataset(cfg: DataConfig) -> Path:
    """Build (or reuse) a dataset dir: stream the corpus, tokenize it in parallel into ordered shards, write
    meta.json, rename the finished dir into place (a crash leaves no half-written ``out``; rerun to resume)."""
    from stacking import shards
    from stacking.tokenizer import make_tokenizer, tokenizer_settings

    out = Path(cfg.out)
    src_meta = _check_config(cfg)
    if (out / "meta.json").exists() and not cfg.overwrite:
        _log(f"{out} already holds a dataset (meta.json); reusing it (pass --overwrite to rebuild)")
        return out
    t0 = time.time()
    corpus = list_corpus(cfg)
    _log(
        f"corpus: {len(corpus.files)} files, {sum(f.size for f in corpus.files) / 1e6:.1f} MB from "
        f"{', '.join(corpus.sources + corpus.val_sources)}"
    )
    settings = {
        "format": 1,
        "text_field": cfg.text_field,
        "val_fraction": cfg.val_fraction,
        "val_sources": bool(cfg.val_sources),
        "tokenizer": tokenizer_settings(cfg, src_meta),
    }
    partial, resuming = shards.open_partial(out, settings)
    if resuming and cfg.tokenizer == "bpe" and not cfg.tokenizer_from:
        shards.check_bpe_sample(partial, [[f.key, f.sha256] for f in corpus.files if f.split != "val"])
    sample: list[CorpusFile] = []
    spec = make_tokenizer(cfg, src_meta, partial, resuming, lambda: train_texts(corpus, cfg, sample), _log)
    if sample:  # a BPE was trained just now: the files it read, for a resumed build to check
        write_json(partial / "bpe_sample.json", [[f.key, f.sha256] for f in sample])
    units = shards.plan_units(corpus.files, cfg.shard_bytes, cfg.text_field)
    ctx = shards.UnitContext(
        str(partial),
        spec.as_dict(),
        cfg.text_field,
        cfg.val_fraction,
        cfg.chunk_bytes,
        shards.fingerprint(settings, spec),
    )
    stats = shards.run_units(units, ctx, cfg.workers or len(os.sched_getaffinity(0)), _log)
    layout = shards.split_layout(stats, cfg.val_tokens, spec, partial, drop_overflow=bool(cfg.val_sources))
    meta = _meta(cfg, corpus, spec, layout, shards.unigram_val_loss(partial, layout.shards, spec))
    shards.publish(partial, out, meta)
    _log(
        f"wrote {out}: {layout.tokens['train']:,} train / {layout.tokens['val']:,} val tokens, vocab "
        f"{spec.vocab_size} in {time.time() - t0:.1f}s"
    )
    return out


def _meta(cfg: DataConfig, corpus: Corpus, spec, layout, unigram: float) -> dict:
    """meta.json: the keys datasets have always had, then those of options used here (a default build of the same
    corpus has the same ``stacking.config.data_id`` as before)."""
    from stacking.tokenizer import meta_fields

    tok = meta_fields(spec)
    meta = {
        "vocab_size": spec.vocab_size,
        "unigram_val_loss": unigram,
        "dtype": spec.dtype,
        "tokenizer": tok.pop("tokenizer"),
        "tokenizer_sha256": tok.pop("tokenizer_sha256"),
        "eot_id": tok.pop("eot_id"),
        "train_tokens": layout.tokens["train"],
        "val_tokens": layout.tokens["val"],
        "val_fraction": cfg.val_fraction,
        "sources": corpus.sources,
        "named_sources": corpus.named,
        "n_files": len(corpus.files),
        "n_docs": layout.n_docs,
        "chars": layout.chars,
        "sha256": {"corpus": corpus.sha256, "files": corpus.hashes},
    }
    if cfg.tokenizer_from or cfg.tokenizer not in ("bpe", "bytes"):
        meta["tokenizer_from"] = str(Path(cfg.tokenizer_from or cfg.tokenizer).resolve())
    meta |= tok  # pretrained: bos_id, add_bos
    if cfg.val_tokens:
        meta["val_tokens_max"] = cfg.val_tokens
    if cfg.val_sources:
        meta["val_sources"] = corpus.val_sources
    meta["shards"] = layout.shards
    return meta
