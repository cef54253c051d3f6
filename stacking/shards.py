"""Work units → ordered shard files: the parallel, resumable half of `stacking data` (:mod:`stacking.corpus`).

A build works in a sibling dir ``.OUT.partial/``. The corpus's files, in order, are cut into work units of about
``shard_bytes`` input bytes (a larger file is a unit by itself; a large Parquet file is split by row groups). Unit
``k`` streams its documents, splits each train/val by its key's hash, encodes them in batches of ``chunk_bytes``
and writes ``train-k.bin`` / ``val-k.bin`` (temp names, renamed when complete), then the main process writes its
sidecar ``unit-k.json`` (counts, and a fingerprint of the build's settings and tokenizer): a unit is finished when
its sidecar is there. A rerun reuses finished units whose fingerprint and files match, so a killed build resumes.
A split's token space is its shards laid end to end in unit order: the documents in corpus order, each followed by
EOT, exactly what the single-process builder wrote. When all units are done, meta.json gets the shard list and the
partial dir is renamed to OUT.

Workers are spawned processes that reopen the tokenizer from its file in the partial dir (nothing is pickled but
paths, ids and counts), so memory is bounded by workers × ``chunk_bytes`` whatever the corpus size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stacking.documents import CorpusFile, file_documents, file_format, is_val, parquet_row_groups
from stacking.errors import DataError
from stacking.fsutil import write_json
from stacking.tokenizer import Encoder, TokenizerSpec

SPLITS = ("train", "val")
STOP_ENV = "STACKING_DATA_STOP_AFTER_UNITS"
"""Tests: stop a build (RuntimeError) after this many units were newly finished, as if it had been killed."""


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.bin"


def docs_name(k: int) -> str:
    """Unit k's val documents, int64 (tokens, chars) pairs: where a val cap may cut its val shard."""
    return f"val-{k:05d}.docs"


def fingerprint(settings: dict, spec: TokenizerSpec) -> str:
    """What every shard of a build depends on: its settings and its tokenizer (file hash, ids)."""
    blob = json.dumps({"settings": settings, "tokenizer": spec.as_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------
# Work units


@dataclass(frozen=True)
class Piece:
    """A file, or a range of a Parquet file's row groups, in a unit."""

    path: str
    key: str
    sha256: str
    split: str
    size: int
    row_groups: tuple[int, int] | None = None

    def record(self) -> list:
        return [self.key, self.sha256, self.split, list(self.row_groups) if self.row_groups else None]


@dataclass(frozen=True)
class Unit:
    index: int
    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.pieces)

    def record(self) -> list:
        return [p.record() for p in self.pieces]


def plan_units(files: list[CorpusFile], shard_bytes: int, text_field: str) -> list[Unit]:
    """Consecutive files grouped into units of about ``shard_bytes`` bytes on disk, in corpus order."""
    pieces: list[Piece] = []
    for f in files:
        if f.size > shard_bytes and file_format(f.path) == "parquet":
            pieces += _parquet_pieces(f, shard_bytes, text_field)
        else:
            pieces.append(Piece(str(f.path), f.key, f.sha256, f.split, f.size))
    units, group, size = [], [], 0
    for p in pieces:
        if group and size + p.size > shard_bytes:
            units.append(Unit(len(units), tuple(group)))
            group, size = [], 0
        group.append(p)
        size += p.size
    if group:
        units.append(Unit(len(units), tuple(group)))
    return units


def _parquet_pieces(f: CorpusFile, shard_bytes: int, text_field: str) -> list[Piece]:
    """A large Parquet file as runs of row groups of about ``shard_bytes`` (sized by their share of the rows)."""
    rows = parquet_row_groups(f.path, text_field)
    per_row = f.size / max(sum(rows), 1)
    pieces, start, size = [], 0, 0.0
    for i, n in enumerate(rows):
        if i > start and size + n * per_row > shard_bytes:
            pieces.append(Piece(str(f.path), f.key, f.sha256, f.split, round(size), (start, i)))
            start, size = i, 0.0
        size += n * per_row
    pieces.append(Piece(str(f.path), f.key, f.sha256, f.split, round(size), (start, len(rows))))
    return pieces


# --------------------------------------------------------------------------------------------------------------
# One unit (runs in a worker)


@dataclass(frozen=True)
class UnitContext:
    """What a worker needs besides the unit: small and picklable (the tokenizer is reopened from its file)."""

    directory: str
    spec: dict
    text_field: str
    val_fraction: float
    chunk_bytes: int
    fingerprint: str
    threads: int = -1
    """Tokenizer threads per worker (-1: the tokenizer's default, all CPUs)."""


_ENCODERS: dict[tuple[str, str], Encoder] = {}


def _encoder(ctx: UnitContext) -> Encoder:
    key = (ctx.directory, ctx.fingerprint)
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder(ctx.directory, TokenizerSpec(**ctx.spec), ctx.threads)
    return _ENCODERS[key]


class _ShardFile:
    """A shard written under a temp name and renamed when complete (never created when it stays empty)."""

    def __init__(self, path: Path):
        self.path, self.tmp, self.f, self.tokens = path, path.with_name(path.name + ".tmp"), None, 0

    def write(self, tokens: np.ndarray) -> None:
        if self.f is None:
            self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed by close() / discard()
        tokens.tofile(self.f)
        self.tokens += len(tokens)

    def close(self) -> None:
        if self.f is None:
            self.path.unlink(missing_ok=True)
            return
        self.f.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if self.f is not None:
            self.f.close()
        self.tmp.unlink(missing_ok=True)


def build_unit(unit: Unit, ctx: UnitContext) -> dict:
    """Tokenize one unit into its shard files (and :func:`docs_name`); its tokens, documents and characters."""
    enc = _encoder(ctx)
    d = Path(ctx.directory)
    files = {s: _ShardFile(d / shard_name(s, unit.index)) for s in SPLITS} | {
        "docs": _ShardFile(d / docs_name(unit.index))
    }
    stats = {"tokens": dict.fromkeys(SPLITS, 0), "n_docs": dict.fromkeys(SPLITS, 0), "chars": dict.fromkeys(SPLITS, 0)}
    try:
        batch: list[tuple[bool, str]] = []
        size = 0
        for p in unit.pieces:
            for key, text in file_documents(Path(p.path), p.key, ctx.text_field, p.row_groups):
                val = p.split == "val" or p.split == "hash" and is_val(key, ctx.val_fraction)
                batch.append((val, text))
                size += len(text)
                if size >= ctx.chunk_bytes:
                    _encode_batch(batch, enc, files, stats)
                    batch, size = [], 0
        _encode_batch(batch, enc, files, stats)
    except BaseException:
        for f in files.values():
            f.discard()
        raise
    for f in files.values():
        f.close()
    return stats


def _encode_batch(batch: list[tuple[bool, str]], enc: Encoder, files: dict, stats: dict) -> None:
    if not batch:
        return
    texts = [t for _, t in batch]
    is_val = np.fromiter((v for v, _ in batch), bool, len(batch))
    flat, lengths = enc.encode_docs(texts)
    chars = np.fromiter(map(len, texts), np.int64, len(texts))
    for split, mask in (("train", ~is_val), ("val", is_val)):
        if mask.any():
            files[split].write(flat if mask.all() else flat[np.repeat(mask, lengths)])
            stats["tokens"][split] += int(lengths[mask].sum())
            stats["n_docs"][split] += int(mask.sum())
            stats["chars"][split] += int(chars[mask].sum())
    if is_val.any():
        files["docs"].write(np.stack([lengths[is_val], chars[is_val]], 1).ravel())


# --------------------------------------------------------------------------------------------------------------
# The partial dir: resume


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def open_partial(out: Path, settings: dict) -> tuple[Path, bool]:
    """The build's work dir and whether it resumes one: kept when its build.json has these settings, started afresh
    when it has no finished unit, else a DataError naming a shard built otherwise."""
    partial = partial_dir(out)
    try:
        old = json.loads((partial / "build.json").read_text())
    except (OSError, ValueError):
        old = None
    if old is not None and old.get("settings") == settings:
        return partial, True
    done = sorted(partial.glob("unit-*.json"))
    if done:
        raise _built_otherwise(partial, done[0])
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write_json(partial / "build.json", {"settings": settings})
    return partial, False


def check_bpe_sample(partial: Path, train_files: list[list[str]]) -> None:
    """A resumed build reuses the BPE of the interrupted one only if the files it was trained on are still the first
    of ``train_files`` ([key, sha256] of the files that are not val_sources), unchanged (else one line: start over;
    a file changed after the sample is fine: its units are rebuilt); without a record, the BPE is retrained."""
    try:
        sample = json.loads((partial / "bpe_sample.json").read_text())
    except (OSError, ValueError):
        (partial / "tokenizer.json").unlink(missing_ok=True)
        return
    now = train_files[: len(sample)]
    if now != sample:
        changed = next((k for (k, h), n in zip(sample, now + [[None, None]] * len(sample)) if [k, h] != n), "?")
        raise DataError(
            f"{partial / 'tokenizer.json'} (an interrupted build's BPE) was trained on {changed}, which "
            f"has changed or moved since; delete {partial} to start over"
        )


def _built_otherwise(partial: Path, sidecar: Path) -> DataError:
    k = int(sidecar.stem.split("-")[1])
    shard = next((partial / shard_name(s, k) for s in SPLITS if (partial / shard_name(s, k)).exists()), sidecar)
    return DataError(
        f"{shard} was built with a different tokenizer or settings than this build (an interrupted "
        f"build); rerun with the settings it was built with, or delete {partial} to start over"
    )


def _finished(unit: Unit, ctx: UnitContext, itemsize: int) -> dict | None:
    """The counts of a unit an earlier run finished, or None when it has to be (re)built."""
    d = Path(ctx.directory)
    sidecar = d / f"unit-{unit.index:05d}.json"
    try:
        rec = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("fingerprint") != ctx.fingerprint:
        raise _built_otherwise(d, sidecar)
    if rec.get("files") != unit.record():  # the corpus changed here, or shard_bytes did
        return None
    sizes = {shard_name(s, unit.index): rec["tokens"][s] * itemsize for s in SPLITS}
    sizes[docs_name(unit.index)] = rec["n_docs"]["val"] * 16
    for name, size in sizes.items():
        if size and (not (d / name).is_file() or (d / name).stat().st_size != size):
            return None
    return rec


def _finish(unit: Unit, ctx: UnitContext, stats: dict) -> None:
    write_json(
        Path(ctx.directory) / f"unit-{unit.index:05d}.json",
        {"fingerprint": ctx.fingerprint, "files": unit.record(), **stats},
    )


# --------------------------------------------------------------------------------------------------------------
# Running the units


def run_units(units: list[Unit], ctx: UnitContext, workers: int, log: Callable[[str], None]) -> list[dict]:
    """Build every unit not finished yet (in ``workers`` processes); the counts of all, in unit order."""
    itemsize = np.dtype(TokenizerSpec(**ctx.spec).dtype).itemsize
    stats: list[dict | None] = [_finished(u, ctx, itemsize) for u in units]
    todo = [u for u, s in zip(units, stats) if s is None]
    progress = _Progress(units, todo, log)
    stop = int(os.environ.get(STOP_ENV, "0"))
    with contextlib.closing(_execute(todo, ctx, workers)) as done:  # an error here stops the workers at once
        for n, (unit, s) in enumerate(done, 1):
            _finish(unit, ctx, s)
            stats[unit.index] = s
            progress.update(unit, s)
            if stop and n >= stop:
                raise RuntimeError(f"stopped after {n} units ({STOP_ENV})")
    return stats


def _execute(todo: list[Unit], ctx: UnitContext, workers: int) -> Iterator[tuple[Unit, dict]]:
    """(unit, counts) as units finish: in this process for one worker (or one unit), else in spawned processes
    (a script that calls this needs the ``if __name__ == "__main__":`` guard, as for any spawned pool)."""
    workers = min(workers, len(todo))
    if workers <= 1:
        yield from ((u, build_unit(u, ctx)) for u in todo)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # the CPUs shared out: one worker per CPU runs its tokenizer single-threaded (measured 15% faster on 2 CPUs
    # than each worker's tokenizer using every CPU); fewer workers get several threads each
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    ctx = replace(ctx, threads=threads)
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(threads,)
    )
    done = False
    try:
        futures = {pool.submit(build_unit, u, ctx): u for u in todo}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
        done = True
    except BrokenProcessPool:
        raise DataError(
            "a tokenizing worker process died (out of memory, or killed); rerun the same command to "
            "resume from the finished units"
        ) from None
    finally:
        if not done:  # an error: stop the other units now rather than after their current one
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # private, no public way yet
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(threads: int) -> None:
    """Before the tokenizer is loaded: its thread pool's size (HF tokenizers: rayon), unless the user set it."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    if threads == 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _Progress:
    """``[data] units 3/40 (2 reused), 12.3M tokens, 1.20M tokens/s, ETA 1m05s`` at most every 2 s."""

    def __init__(self, units: list[Unit], todo: list[Unit], log: Callable[[str], None]):
        self.n, self.reused, self.log = len(units), len(units) - len(todo), log
        self.todo_bytes, self.done_bytes, self.done, self.tokens = sum(u.size for u in todo), 0, 0, 0
        self.t0 = self.last = time.time()
        log(f"{len(units)} units of work, {self.reused} finished by an earlier run; {len(todo)} to tokenize")

    def update(self, unit: Unit, stats: dict) -> None:
        self.done += 1
        self.done_bytes += unit.size
        self.tokens += sum(stats["tokens"].values())
        now = time.time()
        if now - self.last < 2 and self.reused + self.done < self.n:
            return
        self.last, dt = now, max(now - self.t0, 1e-9)
        eta = dt * (self.todo_bytes - self.done_bytes) / max(self.done_bytes, 1)
        self.log(
            f"units {self.reused + self.done}/{self.n} ({self.reused} reused), {self.tokens / 1e6:.1f}M tokens, "
            f"{self.tokens / dt / 1e6:.2f}M tokens/s, ETA {int(eta) // 60}m{int(eta) % 60:02d}s"
        )


# --------------------------------------------------------------------------------------------------------------
# The splits: shard lists, the val cap, the unigram baseline


@dataclass
class Layout:
    shards: dict[str, list[dict]]
    """meta.json's ``shards``: per split, ``{"path", "tokens"[, "byte_offset"]}`` in order."""
    tokens: dict[str, int]
    n_docs: dict[str, int]
    chars: dict[str, int]


def split_layout(
    stats: list[dict], val_tokens_max: int, spec: TokenizerSpec, directory: Path, drop_overflow: bool = False
) -> Layout:
    """Each split's shards in unit order. With ``val_tokens_max``, val documents are kept in order while they fit;
    the rest (the tail of one val shard, from a byte offset, and the val shards after it) go to the end of train —
    or, with ``drop_overflow`` (a corpus's own validation split, ``val_sources``), are not used at all: validation
    text never becomes training data."""
    itemsize = np.dtype(spec.dtype).itemsize
    lay = Layout({s: [] for s in SPLITS}, dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0))
    overflow: list[dict] = []
    for k, st in enumerate(stats):
        for s in SPLITS:
            lay.n_docs[s] += st["n_docs"][s]
            lay.chars[s] += st["chars"][s]
        if st["tokens"]["train"]:
            lay.shards["train"].append({"path": shard_name("train", k), "tokens": st["tokens"]["train"]})
        n = st["tokens"]["val"]
        if not n:
            continue
        keep = n
        if val_tokens_max and (overflow or lay.tokens["val"] + n > val_tokens_max):
            if overflow:  # past the cap: the whole shard moves
                keep, moved = 0, (st["n_docs"]["val"], st["chars"]["val"])
            else:
                keep, moved = _fitting(directory / docs_name(k), val_tokens_max - lay.tokens["val"])
            rest = {"path": shard_name("val", k), "tokens": n - keep}
            overflow.append(rest | ({"byte_offset": keep * itemsize} if keep else {}))
            for s, sign in (("train", 1), ("val", -1)):
                if s == "val" or not drop_overflow:
                    lay.n_docs[s] += sign * moved[0]
                    lay.chars[s] += sign * moved[1]
        if keep:
            lay.shards["val"].append({"path": shard_name("val", k), "tokens": keep})
            lay.tokens["val"] += keep
    if not drop_overflow:
        lay.shards["train"] += overflow
    lay.tokens["train"] = sum(e["tokens"] for e in lay.shards["train"])
    if not lay.n_docs["train"] or not lay.n_docs["val"]:
        raise DataError(
            f"split left {lay.n_docs['train']} train and {lay.n_docs['val']} val documents; give more "
            "files or change val_fraction" + (" or val_tokens" if val_tokens_max else "")
        )
    return lay


def _fitting(docs_file: Path, room: int) -> tuple[int, tuple[int, int]]:
    """Tokens of the longest prefix of a unit's val documents within ``room``; (documents, characters) after it."""
    docs = np.fromfile(docs_file, np.int64).reshape(-1, 2)
    ends = np.cumsum(docs[:, 0])
    fit = int(np.searchsorted(ends, room, side="right"))
    return (int(ends[fit - 1]) if fit else 0), (len(docs) - fit, int(docs[fit:, 1].sum()))


def _tokens(directory: Path, entry: dict, dtype, start: int, n: int) -> np.ndarray:
    """``n`` tokens of a shard entry from token ``start``: read, not memory-mapped (mapped pages would count in the
    build's RSS until unmapped)."""
    with open(directory / entry["path"], "rb") as f:
        f.seek(entry.get("byte_offset", 0) + start * np.dtype(dtype).itemsize)
        return np.fromfile(f, dtype, n)


def _read(directory: Path, entries: list[dict], dtype) -> Iterator[np.ndarray]:
    """A split's tokens in chunks of at most 2**22 (memory stays bounded)."""
    for e in entries:
        for a in range(0, e["tokens"], 1 << 22):
            yield _tokens(directory, e, dtype, a, min(1 << 22, e["tokens"] - a))


def unigram_val_loss(directory: Path, shards: dict[str, list[dict]], spec: TokenizerSpec) -> float:
    """Cross-entropy (nats/token) of val under the train split's add-one-smoothed unigram distribution: the loss a
    model that ignores context would reach. A trained model's val loss should end clearly below it.

    Bit for bit the single-array formula ``-logp[val].mean()``: train counts are exact integer sums, and the val
    sum follows numpy's pairwise summation tree over the whole split, reading only leaves of 2**20 tokens."""
    counts = np.zeros(spec.vocab_size, np.int64)
    for chunk in _read(directory, shards["train"], spec.dtype):
        counts += np.bincount(chunk, minlength=spec.vocab_size)
    counts = counts.astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    val = _Concat(directory, shards["val"], spec.dtype)
    return float(-(_pairwise_sum(lambda a, n: logp[val.read(a, n)], 0, len(val)) / len(val)))


def _pairwise_sum(get: Callable[[int, int], np.ndarray], start: int, n: int, leaf: int = 1 << 20) -> float:
    """``np.add.reduce`` of a long float64 array given by ``get(start, n)``, computed the way numpy does (it halves
    the range, rounded down to a multiple of 8, down to blocks of 128), reading at most ``leaf`` values at a time."""
    if n <= leaf:
        return float(np.add.reduce(get(start, n)))
    half = n // 2 - (n // 2) % 8
    return _pairwise_sum(get, start, half, leaf) + _pairwise_sum(get, start + half, n - half, leaf)


class _Concat:
    """Shard entries read as one array: ``read(start, n)``."""

    def __init__(self, directory: Path, entries: list[dict], dtype):
        self.directory, self.entries, self.dtype = directory, entries, dtype
        self.starts = np.cumsum([0] + [e["tokens"] for e in entries])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, n: int) -> np.ndarray:
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        out = []
        while n > 0:
            k = min(n, int(self.starts[i + 1]) - start)
            out.append(_tokens(self.directory, self.entries[i], self.dtype, start - int(self.starts[i]), k))
            start, n, i = start + k, n - k, i + 1
        return np.concatenate(out) if len(out) > 1 else out[0]


# --------------------------------------------------------------------------------------------------------------
# Publishing


def publish(partial: Path, out: Path, meta: dict) -> None:
    """Write meta.json, remove the bookkeeping (sidecars, build.json, stale shards), rename the dir to ``out``."""
    keep = {e["path"] for entries in meta["shards"].values() for e in entries}
    for f in partial.iterdir():
        if (
            f.name in ("build.json", "bpe_sample.json")
            or f.name.startswith("unit-")
            or f.suffix in (".bin", ".docs", ".tmp")
            and f.name not in keep
        ):
            f.unlink()
    write_json(partial / "meta.json", meta)
    if out.exists():  # --overwrite: the old dir goes only once the new one is complete
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old)
    else:
        os.replace(partial, out)
