"""The tokenizers of token dataset dirs: raw bytes, a byte-level BPE trained by `stacking data`, or a pretrained one
(an HF ``tokenizer.json``, a SentencePiece ``tokenizer.model``, or a litgpt checkpoint dir holding either).

A document is stored as its ids followed by the end-of-text id (``eot_id``): ``bytes`` and ``bpe`` append it to the
tokenizer's ids (as `stacking data` always has); a pretrained tokenizer encodes as ``litgpt.Tokenizer(dir).encode(
text, eos=True)`` (its BOS rule, its EOS at the end: litgpt's ``prepare_slimpajama`` convention), through the
batched encoders of `tokenizers` / `sentencepiece`, which give the same ids. :func:`load_dataset_tokenizer` opens
the tokenizer of any built dataset dir (its meta.json and its copy of the tokenizer files).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from stacking.errors import DataError
from stacking.fsutil import sha256_file

EOT = "<|endoftext|>"
"""The end-of-text token of the BPE `stacking data` trains (the only special token it has)."""
BYTES_VOCAB, BYTES_EOT = 257, 256
PRETRAINED = ("huggingface", "sentencepiece")
FILES = {"bpe": "tokenizer.json", "huggingface": "tokenizer.json", "sentencepiece": "tokenizer.model"}
"""The tokenizer file of each kind, as named in a dataset dir."""
CONFIG_FILES = ("tokenizer_config.json", "generation_config.json")
"""Copied next to a pretrained tokenizer file when present: litgpt reads BOS/EOS from them."""


@dataclass(frozen=True)
class TokenizerSpec:
    """What the ids of a dataset mean, as meta.json records it (no tokenizer object: workers reopen the file)."""

    kind: str
    """'bytes', 'bpe', 'huggingface' or 'sentencepiece'."""
    vocab_size: int
    eot_id: int
    """Ends every document (the EOS of a pretrained tokenizer)."""
    sha256: str | None = None
    """Of the tokenizer file (None for bytes)."""
    bos_id: int | None = None
    add_bos: bool = False
    """Pretrained only: litgpt's ``use_bos`` (prepend ``bos_id``; when False a leading ``bos_id`` is removed)."""

    @property
    def file(self) -> str | None:
        return FILES.get(self.kind)

    @property
    def dtype(self) -> str:
        return "uint16" if self.vocab_size < 1 << 16 else "uint32"

    def as_dict(self) -> dict:
        return asdict(self)


def bytes_spec() -> TokenizerSpec:
    return TokenizerSpec("bytes", BYTES_VOCAB, BYTES_EOT)


def train_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE (HF `tokenizers`) with one special token, :data:`EOT`, trained on ``texts`` (streamed: the
    trainer keeps word counts, not the texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def bpe_spec(path: Path) -> TokenizerSpec:
    """The spec of a BPE tokenizer.json trained by :func:`train_bpe`."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    return TokenizerSpec("bpe", tok.get_vocab_size(), tok.token_to_id(EOT), sha256_file(path))


# --------------------------------------------------------------------------------------------------------------
# Pretrained tokenizers


def _not_a_tokenizer(path: str) -> DataError:
    return DataError(
        f"tokenizer must be 'bpe', 'bytes' or a path to an HF tokenizer.json, a SentencePiece "
        f"tokenizer.model or a dir holding one (a litgpt checkpoint dir); {path!r} is none of these"
    )


def pretrained_file(path: str) -> tuple[Path, str]:
    """(tokenizer file, kind) of a ``--tokenizer PATH``: a ``.json`` file (HF), a ``.model`` file (SentencePiece),
    or a dir holding tokenizer.json or tokenizer.model (tokenizer.json first, as litgpt). DataError otherwise."""
    p = Path(path)
    if p.is_dir():
        for kind in PRETRAINED:
            if (p / FILES[kind]).is_file():
                return p / FILES[kind], kind
    elif p.is_file() and p.suffix in (".json", ".model"):
        return p, "huggingface" if p.suffix == ".json" else "sentencepiece"
    raise _not_a_tokenizer(path)


def _copy_tokenizer(src: Path, kind: str, dest: Path) -> None:
    """Copy a tokenizer file into ``dest`` under its dataset name, with the config files next to it (pretrained)."""
    for name in (*FILES.values(), *CONFIG_FILES):  # nothing left from another tokenizer
        (dest / name).unlink(missing_ok=True)
    shutil.copyfile(src, dest / FILES[kind])  # byte for byte: the same tokenizer_sha256
    for name in CONFIG_FILES if kind in PRETRAINED else ():
        if (src.parent / name).is_file():
            shutil.copyfile(src.parent / name, dest / name)


def _file_hashes(src: Path, kind: str) -> dict[str, str]:
    names = [FILES[kind], *(CONFIG_FILES if kind in PRETRAINED else ())]
    files = [src, *(src.parent / n for n in names[1:])]
    return {n: sha256_file(f) for n, f in zip(names, files) if f.is_file()}


def stage_pretrained(path: str, dest: Path) -> TokenizerSpec:
    """Copy a pretrained tokenizer (its file, renamed tokenizer.json / tokenizer.model, and the config files next to
    it) into ``dest`` and read its BOS/EOS the way litgpt does. A dir is read by ``litgpt.Tokenizer`` itself (its
    name-based rules, e.g. Llama 3's BOS, apply), a file through the copy."""
    src, kind = pretrained_file(path)
    _copy_tokenizer(src, kind, dest)
    lit = _litgpt_tokenizer(Path(path) if Path(path).is_dir() else dest, path)
    if lit.eos_id is None or lit.eos_id < 0:
        raise DataError(
            f"tokenizer {path!r} has no EOS token (litgpt reads it from tokenizer_config.json or "
            "generation_config.json; SentencePiece: the model's eos piece); documents need one to end "
            "(a dataset dir's tokenizer: --tokenizer_from)"
        )
    if lit.use_bos and (lit.bos_id is None or lit.bos_id < 0):
        raise DataError(f"tokenizer {path!r} asks for a BOS token (add_bos_token) but defines none")
    bos = lit.bos_id if lit.bos_id is not None and lit.bos_id >= 0 else None
    return TokenizerSpec(
        kind, _vocab_size(lit.processor, kind), int(lit.eos_id), sha256_file(dest / FILES[kind]), bos, bool(lit.use_bos)
    )


def _litgpt_tokenizer(directory: Path, given: str):
    from litgpt.tokenizer import Tokenizer

    try:
        return Tokenizer(directory)
    except Exception as e:  # noqa: BLE001 (a broken file: tokenizers', sentencepiece's, json's own errors)
        msg = " ".join(str(e).split())[:300]
        raise DataError(f"tokenizer {given!r}: litgpt.Tokenizer cannot load it ({type(e).__name__}: {msg})") from None


def _vocab_size(processor, kind: str) -> int:
    """One past the largest id the tokenizer can produce (added tokens included)."""
    if kind == "sentencepiece":
        return processor.vocab_size()
    return max(processor.get_vocab_size(with_added_tokens=True), max(processor.get_vocab().values()) + 1)


def spec_from_meta(meta: dict) -> TokenizerSpec:
    """The spec a dataset dir's meta.json records."""
    kind = meta.get("tokenizer", "bpe")
    return TokenizerSpec(
        kind,
        meta["vocab_size"],
        meta["eot_id"],
        meta.get("tokenizer_sha256"),
        meta.get("bos_id"),
        meta.get("add_bos", False),
    )


def meta_fields(spec: TokenizerSpec) -> dict:
    """The tokenizer's meta.json keys: those datasets have always had, plus BOS for pretrained tokenizers."""
    out = {"tokenizer": spec.kind, "tokenizer_sha256": spec.sha256, "eot_id": spec.eot_id}
    if spec.kind in PRETRAINED:
        out |= {"bos_id": spec.bos_id, "add_bos": spec.add_bos}
    return out


# --------------------------------------------------------------------------------------------------------------
# The tokenizer of a build


def tokenizer_settings(cfg, src_meta: dict | None) -> dict:
    """What a build's tokenizer depends on (``cfg``: a DataConfig): a resumed build must have the same (and for
    bpe, the same sample files: checked by the caller)."""
    if cfg.tokenizer_from:
        kind = src_meta.get("tokenizer", "bpe")
        src = Path(cfg.tokenizer_from) / FILES.get(kind, "")
        return {"from": kind, "files": _file_hashes(src, kind) if kind != "bytes" else {}}
    if cfg.tokenizer == "bytes":
        return {"kind": "bytes"}
    if cfg.tokenizer == "bpe":
        return {"kind": "bpe", "vocab_size": cfg.vocab_size, "sample_bytes": cfg.tokenizer_sample_bytes}
    src, kind = pretrained_file(cfg.tokenizer)
    dir_name = Path(cfg.tokenizer).name if Path(cfg.tokenizer).is_dir() else None  # litgpt's rules read it
    return {"kind": kind, "files": _file_hashes(src, kind), "dir_name": dir_name}


def make_tokenizer(
    cfg,
    src_meta: dict | None,
    dest: Path,
    resuming: bool,
    sample: Callable[[], Iterable[str]],
    log: Callable[[str], None],
) -> TokenizerSpec:
    """Put the build's tokenizer file in ``dest`` (a build's partial dir) and return its spec: copied from
    ``tokenizer_from``, trained on ``sample()`` (bpe; reused when resuming), or staged from a pretrained PATH."""
    if cfg.tokenizer_from:
        kind = src_meta.get("tokenizer", "bpe")
        if kind == "bytes":
            return bytes_spec()
        log(f"tokenizer from {cfg.tokenizer_from} (no BPE training)")
        _copy_tokenizer(Path(cfg.tokenizer_from) / FILES[kind], kind, dest)
        if kind == "bpe":
            return bpe_spec(dest / FILES[kind])
        return replace(spec_from_meta(src_meta), sha256=sha256_file(dest / FILES[kind]))
    if cfg.tokenizer == "bytes":
        return bytes_spec()
    if cfg.tokenizer != "bpe":
        log(f"tokenizer {cfg.tokenizer} (pretrained, encoded as litgpt.Tokenizer.encode(text, eos=True))")
        return stage_pretrained(cfg.tokenizer, dest)
    path = dest / FILES["bpe"]
    if resuming and path.is_file():
        log("reusing the BPE trained by the interrupted build")
    else:
        log(
            f"training byte-level BPE (vocab {cfg.vocab_size}) on the train split (up to "
            f"{cfg.tokenizer_sample_bytes / 2**20:.0f} MiB)"
        )
        tmp = path.with_name(path.name + ".tmp")
        train_bpe(sample(), cfg.vocab_size).save(str(tmp))
        os.replace(tmp, path)
    return bpe_spec(path)


# --------------------------------------------------------------------------------------------------------------
# Encoding


class Encoder:
    """Encodes batches of documents with the tokenizer file in ``directory`` (a dataset dir or a build's partial
    dir): flat ids, each document followed by ``eot_id``, and the documents' lengths (EOT included). ``threads``:
    SentencePiece's batch threads (-1: all CPUs; HF tokenizers read ``RAYON_NUM_THREADS`` instead)."""

    def __init__(self, directory: str | Path, spec: TokenizerSpec, threads: int = -1):
        self.spec = spec
        self.processor = None
        if spec.kind == "sentencepiece":
            from sentencepiece import SentencePieceProcessor

            self.processor = SentencePieceProcessor(model_file=str(Path(directory) / spec.file), num_threads=threads)
        elif spec.kind != "bytes":
            from tokenizers import Tokenizer

            self.processor = Tokenizer.from_file(str(Path(directory) / spec.file))

    def ids(self, texts: list[str]) -> list[list[int]]:
        """The tokenizer's own ids per text (HF: with its post-processor's special tokens, as litgpt)."""
        if self.spec.kind == "bytes":
            return [list(t.encode("utf-8")) for t in texts]
        if self.spec.kind == "sentencepiece":
            return self.processor.encode(texts)
        batch = getattr(self.processor, "encode_batch_fast", self.processor.encode_batch)  # fast: no offsets
        return [e.ids for e in batch(texts)]

    def litgpt_rule(self, ids: list[int], eos: bool) -> list[int]:
        """litgpt.Tokenizer.encode's BOS/EOS handling, in place; with ``eos`` the ids always end with one EOS
        (litgpt drops a trailing EOS the tokenizer itself produced and adds none: the document would have no end)."""
        bos, eot = self.spec.bos_id, self.spec.eot_id
        if self.spec.add_bos:
            if not ids or ids[0] != bos:
                ids.insert(0, bos)
        elif ids and ids[0] == bos:
            del ids[0]
        if eos and (not ids or ids[-1] != eot):
            ids.append(eot)
        elif not eos and ids and ids[-1] == eot:
            ids.pop()
        return ids

    def encode_docs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat ids in the spec's dtype, per-document lengths) for a batch of documents."""
        if self.spec.kind == "bytes":
            raw = [t.encode("utf-8") for t in texts]
            lengths = np.fromiter((len(b) + 1 for b in raw), np.int64, len(raw))
            flat = np.full(int(lengths.sum()), BYTES_EOT, np.uint16)
            body = np.ones(len(flat), bool)
            body[np.cumsum(lengths) - 1] = False
            flat[body] = np.frombuffer(b"".join(raw), np.uint8)
            return flat, lengths
        ids = self.ids(texts)
        if self.spec.kind in PRETRAINED:
            docs = [self.litgpt_rule(x, eos=True) for x in ids]
            lengths = np.fromiter(map(len, docs), np.int64, len(docs))
        else:  # bytes-level BPE: ids + [eot], as `stacking data` always wrote
            eot = (self.spec.eot_id,)
            docs = [itertools.chain(x, eot) for x in ids]
            lengths = np.fromiter((len(x) + 1 for x in ids), np.int64, len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(docs), self.spec.dtype, int(lengths.sum()))
        return flat, lengths


# --------------------------------------------------------------------------------------------------------------
# A dataset dir's tokenizer


class DatasetTokenizer:
    """The tokenizer of a built dataset dir: ``encode(text) -> list[int]`` (the ids a document's text has in the
    dataset, without its trailing EOT unless ``eot=True``), ``decode(ids) -> str``, ``eot_id``, ``vocab_size``."""

    def __init__(self, data_dir: str | Path, meta: dict):
        self.spec = spec_from_meta(meta)
        self.eot_id, self.vocab_size = self.spec.eot_id, self.spec.vocab_size
        self._enc = Encoder(data_dir, self.spec)

    def encode(self, text: str, eot: bool = False) -> list[int]:
        ids = self._enc.ids([text])[0]
        if self.spec.kind in PRETRAINED:
            return self._enc.litgpt_rule(ids, eos=eot)
        return [*ids, self.eot_id] if eot else ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if self.spec.kind == "bytes":
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        return self._enc.processor.decode(ids)


def load_dataset_tokenizer(data_dir: str | Path) -> DatasetTokenizer:
    """The tokenizer of a dataset dir, whatever its kind (bytes, bpe, huggingface, sentencepiece)."""
    d = Path(data_dir)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{d / 'meta.json'} cannot be read ({e}); build the dataset with `stacking data`") from None
    spec = spec_from_meta(meta)
    if spec.kind not in ("bytes", *FILES):
        raise DataError(f"{d} has no tokenizer to load (meta.json tokenizer {spec.kind!r}); import it with one")
    if spec.file and not (d / spec.file).is_file():
        raise DataError(f"{d / spec.file} is missing; rebuild the dataset")
    return DatasetTokenizer(d, meta)
