"""Reading the documents of corpus files, streamed (`stacking data`): a text file is one document, a JSONL file
(also .jsonl.gz / .jsonl.zst) one per non-blank line, a Parquet file one per row; and the train/val split rule.

Errors are one-line `DataError`s naming the file and the line (JSONL) or byte offset (compressed data) or row.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stacking.errors import DataError

TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".json", ".c", ".h", ".html", ".tex", ".csv", ".yaml", ".yml"}
"""Text files a directory source uses (one document each)."""
_COMPRESSION = {".gz": "gzip", ".zst": "zstd"}


@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus."""

    path: Path
    key: str
    """Split key (documents inside it: ``key#index``)."""
    source: str
    sha256: str
    size: int
    """Bytes on disk."""
    split: str = "hash"
    """'hash': each document by the hash of its key; 'train' / 'val': all of them (with ``val_sources``)."""


# --------------------------------------------------------------------------------------------------------------
# Reading documents (streamed: one JSONL line / Parquet batch at a time)


def compression(path: Path) -> str | None:
    """'gzip' (.gz), 'zstd' (.zst) or None."""
    return _COMPRESSION.get(path.suffix)


def file_format(path: Path) -> str:
    """'jsonl' (also .jsonl.gz / .jsonl.zst), 'parquet', or 'text' (anything else: one document per file)."""
    inner = Path(path.stem).suffix if compression(path) else path.suffix
    if inner == ".jsonl":
        return "jsonl"
    return "parquet" if path.suffix == ".parquet" else "text"


def is_corpus_file(path: Path) -> bool:
    """Whether a directory source uses this file."""
    if path.suffix == ".parquet":
        return True
    inner = Path(path.stem).suffix if compression(path) else path.suffix
    return inner in TEXT_SUFFIXES | {".jsonl"}


class _ZstdRaw(io.RawIOBase):
    """The decompressed bytes of a .zst file (any number of frames). A truncated last frame is an EOFError: the
    `zstandard` stream reader would end quietly there."""

    def __init__(self, fh):
        import zstandard

        self._fh, self._new = fh, zstandard.ZstdDecompressor().decompressobj
        self._d, self._in_frame, self._out, self._pos = self._new(), False, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._out):
            data = self._fh.read(1 << 16)  # 64 KiB in: the output stays a few MB even at high ratios
            if not data:
                if self._in_frame:
                    raise EOFError("the zstd stream ends inside a frame (truncated file)")
                return 0
            self._out, self._pos = self._feed(data), 0
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            self._in_frame = True
            out.append(self._d.decompress(data))
            data = b""
            if self._d.eof:  # the frame ended: what follows is the next frame
                data, self._d, self._in_frame = self._d.unused_data, self._new(), False
        return b"".join(out)


def _read_errors() -> tuple[type[BaseException], ...]:
    import zstandard

    return EOFError, OSError, zlib.error, zstandard.ZstdError


@contextlib.contextmanager
def _binary(path: Path) -> Iterator[tuple[io.IOBase, io.IOBase]]:
    """(decompressed binary stream, the raw file) of a possibly compressed file."""
    kind = compression(path)
    with open(path, "rb") as raw:
        if kind == "gzip":
            yield gzip.GzipFile(fileobj=raw), raw
        elif kind == "zstd":
            yield io.BufferedReader(_ZstdRaw(raw), 1 << 16), raw
        else:
            yield raw, raw


def _unreadable(path: Path, raw, e: BaseException) -> DataError:
    what = f"corrupt or truncated {compression(path)} data" if compression(path) else "a read error"
    msg = " ".join(str(e).split()) or type(e).__name__
    return DataError(f"{path}: {what} near byte {raw.tell()} ({msg})")


def _text(path: Path) -> str:
    """A whole text file as one document (undecodable bytes replaced, newlines normalized: as always)."""
    if not compression(path):
        return path.read_text(encoding="utf-8", errors="replace")
    with _binary(path) as (binary, raw):
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace")  # held: its end would close raw
        try:
            return text.read()
        except _read_errors() as e:
            raise _unreadable(path, raw, e) from None


def _jsonl_texts(path: Path, text_field: str) -> Iterator[str]:
    """The ``text_field`` of every non-blank line."""
    lineno = 0
    with _binary(path) as (binary, raw):
        text = io.TextIOWrapper(binary, encoding="utf-8")  # held: its end would close raw
        try:
            for lineno, line in enumerate(text, 1):
                if line.strip():
                    yield _json_text(line, path, lineno, text_field)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{lineno + 1}: not UTF-8 text ({e.reason} near byte {raw.tell()})") from None
        except _read_errors() as e:
            raise _unreadable(path, raw, e) from None


def _json_text(line: str, path: Path, lineno: int, text_field: str) -> str:
    try:
        text = json.loads(line)[text_field]
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
        msg = " ".join(str(e).split())
        raise DataError(f"{path}:{lineno}: not a JSON object with a {text_field!r} field ({msg})") from None
    if not isinstance(text, str):
        raise DataError(f"{path}:{lineno}: field {text_field!r} is a {type(text).__name__}, not a string")
    return text


def _parquet(path: Path, text_field: str):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 (pyarrow's ArrowInvalid, OSError, ... for a file that is not Parquet)
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())})") from None
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {pf.schema_arrow.names})")
    return pf


def parquet_row_groups(path: Path, text_field: str) -> list[int]:
    """Rows per row group of a Parquet file (read from its footer)."""
    md = _parquet(path, text_field).metadata
    return [md.row_group(i).num_rows for i in range(md.num_row_groups)]


def _parquet_docs(path: Path, key: str, text_field: str, row_groups: tuple[int, int] | None):
    import pyarrow as pa

    pf = _parquet(path, text_field)
    rows = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    first, last = row_groups or (0, len(rows))
    i = sum(rows[:first])
    try:
        for batch in pf.iter_batches(batch_size=256, row_groups=range(first, last), columns=[text_field]):
            for text in batch.column(0).to_pylist():
                if text is None:
                    raise DataError(f"{path}: row {i} has no {text_field!r} (null)")
                yield (key if sum(rows) == 1 else f"{key}#{i}"), str(text)
                i += 1
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: corrupt Parquet data near row {i} ({' '.join(str(e).split())})") from None


def file_documents(
    path: Path, key: str, text_field: str, row_groups: tuple[int, int] | None = None
) -> Iterator[tuple[str, str]]:
    """(split key, text) of each document of one file, streamed: a text file is one document (key: the file's
    key), a JSONL file one per non-blank line and a Parquet file one per row (``key#index``, or the file's key when
    it holds exactly one). ``row_groups=(a, b)``: only those Parquet row groups (indices stay the file's)."""
    fmt = file_format(path)
    if fmt == "parquet":
        yield from _parquet_docs(path, key, text_field, row_groups)
    elif fmt == "jsonl":
        texts = _jsonl_texts(path, text_field)
        first = next(texts, None)
        second = next(texts, None) if first is not None else None
        if second is None:
            if first is not None:
                yield key, first
            return
        yield f"{key}#0", first
        yield f"{key}#1", second
        yield from ((f"{key}#{i}", t) for i, t in enumerate(texts, 2))
    else:
        yield key, _text(path)


def is_val(rel: str, val_fraction: float) -> bool:
    """Whether the document with this split key is held out: the first 8 bytes of its sha256, mod 10^6, fall
    below ``val_fraction`` x 10^6 (stable across machines and corpus orders)."""
    h = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little")
    return (h % 1_000_000) < val_fraction * 1_000_000
