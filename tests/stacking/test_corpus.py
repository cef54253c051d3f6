"""Building token dataset dirs (`stacking data`): the streaming, sharded, resumable pipeline gives the tokens the
single-process builder gave; inputs (.jsonl.gz/.zst, Parquet row groups), tokenizers (bytes, BPE, an HF
tokenizer.json, a SentencePiece model: each checked document for document against an independent encode),
workers, resume, the val cap, val_sources and the one-line errors."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import pathlib
import random
import textwrap
import typing
from pathlib import Path

import numpy as np
import pytest

from stacking import shards
from stacking.cli import main as cli_main
from stacking.config import data_id
from stacking.corpus import DataConfig, build_dataset
from stacking.data import load_tokens, read_meta
from stacking.documents import file_documents, is_val
from stacking.errors import DataError
from stacking.tokenizer import load_dataset_tokenizer

# ---- helpers -----------------------------------------------------------------------------------------------------


def split_tokens(d: Path, split: str) -> np.ndarray:
    """A split read from meta.json's shard list by hand (independent of stacking.data's reader)."""
    meta = json.loads((d / "meta.json").read_text())
    parts = [
        np.fromfile(d / e["path"], dtype=meta["dtype"], count=e["tokens"], offset=e.get("byte_offset", 0))
        for e in meta["shards"][split]
    ]
    return np.concatenate(parts) if parts else np.zeros(0, meta["dtype"])


def documents(tokens: np.ndarray, eot: int) -> list[list[int]]:
    ends = np.flatnonzero(tokens == eot) + 1
    return [tokens[a:b].tolist() for a, b in zip(np.r_[0, ends[:-1]], ends)]


LOCAL_TEXT = [Path(m.__file__).read_text() for m in (argparse, textwrap, pathlib, typing)]
"""~300 KB of this interpreter's standard library: text to train the test tokenizers on."""
WORDS = sorted(set(LOCAL_TEXT[1].split())) + ["naïve", "café", "数据", "🙂", "\n", "\r\n", "    ", "über"]


def make_docs(n: int = 60, seed: int = 0) -> list[str]:
    """Text with ASCII, accents, CJK, emoji, CRLF and blank runs; lengths 0 … ~2000 characters."""
    rng = random.Random(seed)
    words = WORDS
    return [" ".join(rng.choice(words) for _ in range(rng.randrange(0, 300))) for _ in range(n)]


def write_jsonl(path: Path, docs: list[str], blank_every: int = 7) -> Path:
    lines = []
    for i, d in enumerate(docs):
        lines.append(json.dumps({"text": d, "id": i}))
        if i % blank_every == 3:
            lines.append("   ")  # blank lines are not documents
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def zstd(data: bytes, frames: int = 2) -> bytes:
    """``data`` as several concatenated zstd frames (as pzstd and shard concatenation write)."""
    import zstandard

    step = len(data) // frames + 1
    return b"".join(zstandard.ZstdCompressor().compress(data[i : i + step]) for i in range(0, len(data), step))


def write_parquet(path: Path, docs: list[str], row_group_size: int = 7) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), path, row_group_size=row_group_size)
    return path


def cli_error(capsys, *argv: str) -> str:
    """The one error line of a failing `stacking data` (progress lines are ``[data] …``)."""
    capsys.readouterr()
    assert cli_main(["data", *argv]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("[data]")]
    assert len(lines) == 1 and lines[0].startswith("stacking data: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """Two JSONL files and three text files."""
    d = tmp_path_factory.mktemp("corpus") / "src"
    docs = make_docs()
    write_jsonl(d / "a.jsonl", docs[:35])
    write_jsonl(d / "b.jsonl", docs[35:])
    for i in range(3):
        (d / f"t{i}.txt").write_text(make_docs(5, seed=10 + i)[i] + "\n")
    return d


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A litgpt-style checkpoint dir with a small byte-level BPE tokenizer.json that adds BOS (trained here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    d = tmp_path_factory.mktemp("hf")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(make_docs(200, seed=1), trainer=trainer)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "add_bos_token": True,
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    return d


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory) -> Path:
    """A SentencePiece tokenizer.model (vocab 400, bos/eos pieces) trained here on ~300 KB of local text."""
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("sp")
    (d / "train.txt").write_text("\n".join(LOCAL_TEXT))
    spm.SentencePieceTrainer.train(
        input=str(d / "train.txt"),
        model_prefix=str(d / "sp"),
        vocab_size=400,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (d / "sp.model").rename(d / "tokenizer.model")
    return d / "tokenizer.model"


def expected_docs(src: Path, val_fraction: float) -> dict[str, list[str]]:
    """The documents of a dir source per split, in order, by the split rule (independent of the build)."""
    out = {"train": [], "val": []}
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        for key, text in file_documents(f, str(f.relative_to(src)), "text"):
            out["val" if is_val(key, val_fraction) else "train"].append(text)
    return out


# ---- the old builder's outputs -----------------------------------------------------------------------------------


def test_default_builds_equal_the_single_process_builder(tiny_data, tmp_path):
    """Pinned from the builder before this pipeline: same tokens, same data_id (so existing runs keep their ids)."""
    assert data_id(tiny_data) == "data:9c6ed1b601da995d"
    train, val = split_tokens(tiny_data, "train"), split_tokens(tiny_data, "val")
    assert (
        hashlib.sha256(train.tobytes()).hexdigest()
        == "d93f022bb8b74c4e404ced3db3fcbe4cab112cb4f4e7e90b5af656323b9aab93"
    )
    assert (
        hashlib.sha256(val.tobytes()).hexdigest() == "d76169535a6df5f4ca4e58a11de4923f7aefb0ba2945aeaba40a5e39e88e44f0"
    )
    meta = read_meta(tiny_data)
    assert set(meta) == {
        "vocab_size",
        "unigram_val_loss",
        "dtype",
        "tokenizer",
        "tokenizer_sha256",
        "eot_id",
        "train_tokens",
        "val_tokens",
        "val_fraction",
        "sources",
        "named_sources",
        "n_files",
        "n_docs",
        "chars",
        "sha256",
        "shards",
    }  # nothing new unless an option asks for it
    counts = np.bincount(train, minlength=meta["vocab_size"]).astype(np.float64) + 1.0
    assert meta["unigram_val_loss"] == float(-np.log(counts / counts.sum())[val].mean())  # bit for bit
    out = build_dataset(DataConfig(out=str(tmp_path / "b"), tokenizer="bytes", shard_bytes=1 << 20, workers=1))
    assert data_id(out) == "data:5a58345c296f6feb"  # the full stdlib, raw bytes, in 13 shards
    assert len(read_meta(out)["shards"]["train"]) > 10
    assert (
        hashlib.sha256(split_tokens(out, "train").tobytes()).hexdigest()
        == "40622571b8870d04faf777e3ca0f91b9700bbb66ca15eac9fcbb44c9b8c7aede"
    )
    assert np.array_equal(np.asarray(load_tokens(out, "train")), split_tokens(out, "train"))  # the reader agrees


def test_unigram_loss_follows_numpys_pairwise_sum():
    rng = np.random.default_rng(0)
    for n in (1, 129, 5000, 100_003):
        x = rng.standard_normal(n)
        assert shards._pairwise_sum(lambda a, k, x=x: x[a : a + k], 0, n, leaf=256) == np.add.reduce(x)


# ---- tokenizers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "bpe", "hf", "sp"])
def test_tokens_are_each_documents_independent_encoding(kind, corpus_dir, hf_dir, sp_model, tmp_path):
    """Every document, in order, is what an independent encoder gives: UTF-8 bytes + EOT, the dataset's own BPE +
    EOT, or litgpt.Tokenizer(dir).encode(text, eos=True) (BOS where litgpt puts one)."""
    from litgpt.tokenizer import Tokenizer

    tokenizer = {"hf": str(hf_dir), "sp": str(sp_model)}.get(kind, kind)
    out = build_dataset(
        DataConfig(
            out=str(tmp_path / "ds"),
            sources=[str(corpus_dir)],
            tokenizer=tokenizer,
            vocab_size=300,
            val_fraction=0.3,
            shard_bytes=4000,
            workers=1,
        )
    )
    meta = read_meta(out)
    if kind == "bytes":
        encode = lambda t: [*t.encode(), 256]
    elif kind == "bpe":
        from tokenizers import Tokenizer as HF

        hf = HF.from_file(str(out / "tokenizer.json"))
        encode = lambda t: [*hf.encode(t).ids, meta["eot_id"]]
    else:
        lit = Tokenizer(hf_dir if kind == "hf" else sp_model.parent)
        encode = lambda t: lit.encode(t, eos=True).tolist()
        assert meta["tokenizer"] == {"hf": "huggingface", "sp": "sentencepiece"}[kind]
        assert meta["tokenizer_from"] == str(Path(tokenizer).resolve()) and meta["eot_id"] == lit.eos_id
        assert (meta["bos_id"], meta["add_bos"]) == ((lit.bos_id, True) if kind == "hf" else (1, False))
    want = expected_docs(corpus_dir, 0.3)
    loaded = load_dataset_tokenizer(out)
    for split in ("train", "val"):
        got = documents(split_tokens(out, split), meta["eot_id"])
        assert got == [encode(t) for t in want[split]]
        assert got == [loaded.encode(t, eot=True) for t in want[split]]
        assert meta["n_docs"][split] == len(want[split])
    if kind in ("bytes", "bpe", "hf"):  # sentencepiece normalizes whitespace: no round trip
        assert loaded.decode(loaded.encode(want["val"][1])) == want["val"][1]
    assert loaded.vocab_size == meta["vocab_size"] and split_tokens(out, "train").max() < meta["vocab_size"]


def test_pretrained_tokenizer_files_travel_with_the_dataset(hf_dir, corpus_dir, tmp_path):
    a = build_dataset(
        DataConfig(
            out=str(tmp_path / "a"),
            sources=[str(corpus_dir)],
            tokenizer=str(hf_dir / "tokenizer.json"),
            val_fraction=0.3,
            workers=1,
        )
    )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (a / name).read_bytes() == (hf_dir / name).read_bytes()
    assert read_meta(a)["tokenizer_sha256"] == hashlib.sha256((hf_dir / "tokenizer.json").read_bytes()).hexdigest()
    b = build_dataset(
        DataConfig(
            out=str(tmp_path / "b"), sources=[str(corpus_dir)], tokenizer_from=str(a), val_fraction=0.3, workers=1
        )
    )  # a dataset dir lends its pretrained tokenizer
    assert np.array_equal(split_tokens(a, "train"), split_tokens(b, "train"))
    assert read_meta(b)["tokenizer_from"] == str(a.resolve()) and read_meta(b)["add_bos"] is True


def test_a_document_ending_in_eos_text_still_ends_with_one_eos(hf_dir, tmp_path):
    """litgpt's encode(eos=True) drops a trailing EOS the text itself produced; a stored document always ends in one."""
    write_jsonl(tmp_path / "src" / "d.jsonl", ["hello </s>", "plain"] * 20)
    out = build_dataset(
        DataConfig(
            out=str(tmp_path / "ds"),
            sources=[str(tmp_path / "src")],
            tokenizer=str(hf_dir),
            val_fraction=0.5,
            workers=1,
        )
    )
    eos = read_meta(out)["eot_id"]
    docs = documents(np.concatenate([split_tokens(out, "train"), split_tokens(out, "val")]), eos)
    assert len(docs) == 40 and all(d[-1] == eos and eos not in d[:-1] for d in docs)


# ---- inputs ------------------------------------------------------------------------------------------------------


def test_compressed_jsonl_and_parquet_read_like_plain_jsonl(tmp_path):
    docs = make_docs(50, seed=3)
    plain = write_jsonl(tmp_path / "f.jsonl", docs)
    files = {
        "plain": plain,
        "gz": tmp_path / "f.jsonl.gz",
        "zst": tmp_path / "f.jsonl.zst",
        "parquet": write_parquet(tmp_path / "f.parquet", docs),
    }
    files["gz"].write_bytes(gzip.compress(plain.read_bytes()))
    files["zst"].write_bytes(zstd(plain.read_bytes(), frames=3))
    want = list(file_documents(plain, "k", "text"))
    assert [t for _, t in want] == docs and want[0][0] == "k#0"
    val = write_jsonl(tmp_path / "v" / "v.jsonl", ["val"])
    built = {}
    for name, f in files.items():
        assert list(file_documents(f, "k", "text")) == want
        # val_sources: every document of the source is train, in order, so different file names compare
        built[name] = build_dataset(
            DataConfig(
                out=str(tmp_path / name),
                sources=[str(f)],
                val_sources=[str(val)],
                tokenizer="bytes",
                shard_bytes=2000,
                workers=1,
            )
        )
        assert np.array_equal(split_tokens(built[name], "train"), split_tokens(built["plain"], "train"))
    assert len(read_meta(built["parquet"])["shards"]["train"]) > 3  # split by row groups into several units
    assert read_meta(built["zst"])["n_docs"] == {"train": 50, "val": 1}


def test_one_document_files_keep_the_file_key(tmp_path):
    """A JSONL / Parquet file with one document splits by the file's key, as before (not key#0)."""
    one = write_jsonl(tmp_path / "one.jsonl", ["only"])
    assert list(file_documents(one, "k", "text")) == [("k", "only")]
    assert list(file_documents(write_parquet(tmp_path / "one.parquet", ["x"]), "k", "text")) == [("k", "x")]
    assert list(file_documents(write_jsonl(tmp_path / "none.jsonl", []), "k", "text")) == []


# ---- workers, resume ---------------------------------------------------------------------------------------------


def test_one_and_two_workers_write_identical_datasets(corpus_dir, tmp_path):
    outs = [
        build_dataset(
            DataConfig(
                out=str(tmp_path / f"w{w}"),
                sources=[str(corpus_dir)],
                vocab_size=300,
                val_fraction=0.3,
                shard_bytes=3000,
                workers=w,
            )
        )
        for w in (1, 2)
    ]
    names = sorted(p.name for p in outs[0].iterdir())
    assert len(read_meta(outs[0])["shards"]["train"]) >= 4 and names == sorted(p.name for p in outs[1].iterdir())
    assert all((outs[0] / n).read_bytes() == (outs[1] / n).read_bytes() for n in names)
    assert not list(tmp_path.glob(".*partial"))


def test_a_killed_build_resumes_from_its_finished_units(corpus_dir, tmp_path, monkeypatch):
    cfg = {"sources": [str(corpus_dir)], "vocab_size": 300, "val_fraction": 0.3, "shard_bytes": 3000, "workers": 1}
    whole = build_dataset(DataConfig(out=str(tmp_path / "whole"), **cfg))
    monkeypatch.setenv(shards.STOP_ENV, "2")
    with pytest.raises(RuntimeError, match="stopped after 2 units"):
        build_dataset(DataConfig(out=str(tmp_path / "ds"), **cfg))
    partial = tmp_path / ".ds.partial"
    assert not (tmp_path / "ds").exists() and sorted(p.name for p in partial.glob("unit-*")) == [
        "unit-00000.json",
        "unit-00001.json",
    ]
    first = (partial / "train-00000.bin").stat()
    (partial / "train-00002.bin.tmp").write_bytes(b"half")  # a unit killed mid-write, twice over
    (partial / "train-00002.bin").write_bytes(b"no sidecar: not finished")
    monkeypatch.delenv(shards.STOP_ENV)
    out = build_dataset(DataConfig(out=str(tmp_path / "ds"), **cfg))
    again = (out / "train-00000.bin").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # reused, not rewritten
    names = sorted(p.name for p in whole.iterdir())
    assert names == sorted(p.name for p in out.iterdir()) and not partial.exists()
    assert all((whole / n).read_bytes() == (out / n).read_bytes() for n in names)


def test_a_resumed_bpe_build_checks_the_files_its_tokenizer_was_trained_on(corpus_dir, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for f in corpus_dir.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    cfg = {
        "sources": [str(src)],
        "vocab_size": 300,
        "val_fraction": 0.3,
        "shard_bytes": 3000,
        "workers": 1,
        "tokenizer_sample_bytes": 5000,
    }  # the BPE reads a.jsonl only
    monkeypatch.setenv(shards.STOP_ENV, "1")
    with pytest.raises(RuntimeError):
        build_dataset(DataConfig(out=str(tmp_path / "ds"), **cfg))
    monkeypatch.delenv(shards.STOP_ENV)
    (src / "t2.txt").write_text("fixed after the BPE was trained")  # not in the sample: its unit is rebuilt
    out = build_dataset(DataConfig(out=str(tmp_path / "ds"), **cfg))
    assert read_meta(out)["n_files"] == 5
    monkeypatch.setenv(shards.STOP_ENV, "1")
    with pytest.raises(RuntimeError):
        build_dataset(DataConfig(out=str(tmp_path / "ds2"), **cfg))
    monkeypatch.delenv(shards.STOP_ENV)
    (src / "a.jsonl").write_text(json.dumps({"text": "changed"}) + "\n")  # in the sample: the BPE is stale
    with pytest.raises(
        DataError,
        match=r"\.ds2\.partial/tokenizer.json \(an interrupted build's BPE\) was trained "
        "on a.jsonl, which has changed",
    ):
        build_dataset(DataConfig(out=str(tmp_path / "ds2"), **cfg))


def test_resuming_with_another_tokenizer_is_an_error(corpus_dir, tmp_path, monkeypatch, capsys):
    argv = [
        "--out",
        str(tmp_path / "ds"),
        "--sources",
        str(corpus_dir),
        "--shard_bytes",
        "3000",
        "--workers",
        "1",
        "--val_fraction",
        "0.3",
    ]
    monkeypatch.setenv(shards.STOP_ENV, "1")
    with pytest.raises(RuntimeError):
        cli_main(["data", *argv, "--tokenizer", "bytes"])
    monkeypatch.delenv(shards.STOP_ENV)
    err = cli_error(capsys, *argv, "--tokenizer", "bpe", "--vocab_size", "300")
    assert f"{tmp_path / '.ds.partial' / 'train-00000.bin'} was built with a different tokenizer" in err
    assert not (tmp_path / "ds").exists()


# ---- validation split --------------------------------------------------------------------------------------------


def test_val_cap_moves_the_overflow_to_train(corpus_dir, tmp_path):
    cfg = {"sources": [str(corpus_dir)], "tokenizer": "bytes", "val_fraction": 0.5, "shard_bytes": 3000, "workers": 1}
    full = build_dataset(DataConfig(out=str(tmp_path / "full"), **cfg))
    capped = build_dataset(DataConfig(out=str(tmp_path / "capped"), val_tokens=5000, **cfg))
    a, b = read_meta(full), read_meta(capped)
    val_docs = documents(split_tokens(full, "val"), 256)
    kept = np.searchsorted(np.cumsum([len(d) for d in val_docs]), 5000, side="right")  # documents that fit
    assert b["val_tokens"] == sum(len(d) for d in val_docs[:kept]) <= 5000 < a["val_tokens"]
    assert b["val_tokens_max"] == 5000 and "val_tokens_max" not in a
    assert np.array_equal(split_tokens(capped, "val"), split_tokens(full, "val")[: b["val_tokens"]])
    assert np.array_equal(
        split_tokens(capped, "train"),
        np.concatenate([split_tokens(full, "train"), split_tokens(full, "val")[b["val_tokens"] :]]),
    )  # nothing dropped
    assert any(e.get("byte_offset") for e in b["shards"]["train"])  # the tail of one val shard
    for key in ("n_docs", "chars"):
        assert sum(a[key].values()) == sum(b[key].values()) and b[key]["val"] < a[key]["val"]
    assert b["n_docs"]["val"] == kept
    assert np.array_equal(np.asarray(load_tokens(capped, "train")), split_tokens(capped, "train"))


def test_val_sources_are_the_validation_split(corpus_dir, tmp_path):
    val_src = write_jsonl(tmp_path / "val" / "v.jsonl", make_docs(10, seed=9))
    out = build_dataset(
        DataConfig(
            out=str(tmp_path / "ds"),
            sources=[str(corpus_dir)],
            val_sources=[str(val_src)],
            tokenizer="bytes",
            workers=1,
        )
    )
    meta = read_meta(out)
    train_texts = [t for f in sorted(corpus_dir.iterdir()) for _, t in file_documents(f, f.name, "text")]
    assert documents(split_tokens(out, "train"), 256) == [[*t.encode(), 256] for t in train_texts]
    assert documents(split_tokens(out, "val"), 256) == [[*t.encode(), 256] for t in make_docs(10, seed=9)]
    assert meta["val_sources"] == [str(val_src.resolve())] and meta["n_docs"]["val"] == 10
    capped = build_dataset(
        DataConfig(
            out=str(tmp_path / "c"),
            sources=[str(corpus_dir)],
            val_sources=[str(val_src)],
            tokenizer="bytes",
            val_tokens=meta["val_tokens"] // 2,
            workers=1,
        )
    )
    assert 0 < read_meta(capped)["val_tokens"] <= meta["val_tokens"] // 2
    # a corpus's own validation text past the cap is not used: train is exactly --sources
    assert read_meta(capped)["train_tokens"] == meta["train_tokens"]
    assert read_meta(capped)["n_docs"]["train"] == meta["n_docs"]["train"]
    assert read_meta(capped)["n_docs"]["val"] < meta["n_docs"]["val"]
    second = write_jsonl(tmp_path / "val2" / "w.jsonl", ["more validation text"])
    assert (
        cli_main(
            [
                "data",
                "--out",
                str(tmp_path / "cli"),
                "--sources",
                str(corpus_dir),
                "--val-sources",
                str(val_src),
                str(second),
                "--tokenizer",
                "bytes",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert read_meta(tmp_path / "cli")["val_sources"] == [str(val_src.resolve()), str(second.resolve())]


# ---- errors ------------------------------------------------------------------------------------------------------


def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path, capsys):
    good = "\n".join(json.dumps({"text": f"doc {i} " * 50}) for i in range(400)).encode() + b"\n"
    cases = {
        "trunc.jsonl.zst": (zstd(good, 1)[:-200], r"trunc.jsonl.zst: corrupt or truncated zstd data near byte \d+"),
        "bad.jsonl.zst": ((z := zstd(good, 1))[:300] + b"\x00" * 200 + z[500:], "bad.jsonl.zst: corrupt or trunc"),
        "trunc.jsonl.gz": (gzip.compress(good)[:-100], r"trunc.jsonl.gz: corrupt or truncated gzip data near byte"),
        "notjson.jsonl": (b'{"text": "a"}\n\n{"text": "b"\n', "notjson.jsonl:3: not a JSON object with a 'text' field"),
        "nofield.jsonl": (b'{"text": "a"}\n{"body": "b"}\n', "nofield.jsonl:2: not a JSON object with a 'text' field"),
        "latin1.jsonl": (b'{"text": "caf\xe9"}\n', r"latin1.jsonl:1: not UTF-8 text"),
    }
    import re

    for name, (data, pattern) in cases.items():
        src = tmp_path / name.replace(".", "_")
        src.mkdir()
        (src / name).write_bytes(data)
        for tok in ("bytes", "bpe"):  # bpe: the error comes from the tokenizer's training sample
            err = cli_error(
                capsys, "--out", str(tmp_path / "out"), "--sources", str(src), "--tokenizer", tok, "--vocab_size", "300"
            )
            assert re.search(pattern, err), err
            assert not (tmp_path / "out").exists()


def test_an_error_in_a_worker_reaches_the_user_as_one_line(corpus_dir, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for f in corpus_dir.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    (src / "z.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')  # the last unit's file
    err = cli_error(
        capsys,
        "--out",
        str(tmp_path / "out"),
        "--sources",
        str(src),
        "--tokenizer",
        "bytes",
        "--workers",
        "2",
        "--shard_bytes",
        "3000",
    )
    assert err.endswith("z.jsonl:2: field 'text' is a int, not a string")
    assert not (tmp_path / "out").exists()


def test_tokenizer_and_option_errors(tmp_path, capsys, corpus_dir):
    (tmp_path / "vocab.txt").write_text("a b c")
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.json").write_text("{not json")
    for tok in ("vocab.txt", "empty", "missing.model"):
        err = cli_error(
            capsys, "--out", str(tmp_path / "o"), "--sources", str(corpus_dir), "--tokenizer", str(tmp_path / tok)
        )
        assert f"{str(tmp_path / tok)!r} is none of these" in err
    err = cli_error(
        capsys, "--out", str(tmp_path / "o"), "--sources", str(corpus_dir), "--tokenizer", str(tmp_path / "broken.json")
    )
    assert "broken.json': litgpt.Tokenizer cannot load it" in err
    for flag, value in (("--workers", "-1"), ("--shard_bytes", "0"), ("--val_tokens", "-5")):
        assert flag[2:] in cli_error(capsys, "--out", str(tmp_path / "o"), flag, value)
    with pytest.raises(DataError, match="in both sources and val_sources"):
        build_dataset(
            DataConfig(out=str(tmp_path / "o"), sources=[str(corpus_dir)], val_sources=[str(corpus_dir / "a.jsonl")])
        )
    assert not (tmp_path / "o").exists()
