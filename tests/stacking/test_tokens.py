"""Reading sharded and imported token datasets: a split is one token space however it is sharded (sampling and
validation bit-identical to one file), shards are checked, and Megatron-LM / flat numpy corpora import without a
token copied (stacking/importers.py)."""

import json
import struct

import numpy as np
import pytest
import torch
from conftest import tiny_run_config
from test_golden import synthetic_data

from stacking.config import data_id
from stacking.data import ShardedTokens, TokenDataModule, load_tokens, read_meta, tokenizer_id, val_windows
from stacking.errors import DataError
from stacking.growth.learn import _batches, open_tokens
from stacking.importers import MEGATRON_MAGIC, ImportConfig, import_dataset

GOLDEN_DATA_ID = "data:58cb748860ec69c4"
"""data_id of tests/stacking/test_golden.py's synthetic dir, computed before shards existed: legacy ids must not move."""


def reshard(src, dst, cuts: dict[str, list[int]], header: int = 0):
    """A copy of legacy dir ``src`` whose splits are shards cut at ``cuts`` (token positions), each in its own file
    after ``header`` junk bytes; the first shard's path is absolute, the others relative."""
    meta = json.loads((src / "meta.json").read_text())
    dst.mkdir(parents=True)
    meta["shards"] = {}
    for split, at in cuts.items():
        tokens = np.fromfile(src / f"{split}.bin", dtype=meta["dtype"])
        meta["shards"][split] = []
        for i, part in enumerate(np.split(tokens, at)):
            name = f"{split}-{i:05d}.bin"
            (dst / name).write_bytes(b"J" * header + part.tobytes() + b"tail" * bool(len(part)))  # empty: 0 bytes
            path = str(dst / name) if i == 0 else name
            meta["shards"][split].append({"path": path, "tokens": len(part), "byte_offset": header})
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The golden synthetic data as train.bin/val.bin, as one shard per split, and as uneven shards."""
    root = tmp_path_factory.mktemp("layouts")
    legacy = synthetic_data(root / "legacy")
    one = reshard(legacy, root / "one", {"train": [], "val": []}, header=7)
    many = reshard(legacy, root / "many", {"train": [3, 3, 12_345, 12_400, 31_000], "val": [100, 5_000]}, header=3)
    return legacy, one, many


def micro_batches(data_dir, n=40, seq_len=64, mbs=8, seed=3, start=5):
    dm = TokenDataModule(str(data_dir), seq_len, mbs, seed, val_tokens=4096)
    dm.start_micro_batch = start
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(n)]


def test_sharded_split_samples_like_one_file(layouts):
    legacy, one, many = layouts
    assert isinstance(load_tokens(one, "train"), np.memmap) and isinstance(load_tokens(many, "train"), ShardedTokens)
    ref = micro_batches(legacy)
    for d in (one, many):
        assert read_meta(d)["train_tokens"] == len(load_tokens(d, "train")) == 40_000
        for (x, y), (x2, y2) in zip(ref, micro_batches(d)):
            assert torch.equal(x, x2) and torch.equal(y, y2)
        for seq_len, val_tokens in ((32, 2048), (100, 8000)):
            assert torch.equal(val_windows(legacy, seq_len, val_tokens), val_windows(d, seq_len, val_tokens))


def test_sharded_tokens_read_across_boundaries(layouts):
    legacy, _, many = layouts
    ref, t = np.fromfile(legacy / "train.bin", np.uint16), load_tokens(many, "train")
    assert t.dtype == np.uint16 and np.array_equal(np.asarray(t), ref)
    rng = np.random.default_rng(0)
    for a in [0, 2, 3, 12_344, 12_399, 30_999, 39_990] + list(rng.integers(0, 40_000, 50)):
        b = a + int(rng.integers(0, 2000))
        assert np.array_equal(t[a:b], ref[a:b])
    starts = np.array([0, 1, 2, 12_300, 12_340, 12_390, 30_990, 39_935])  # windows over every shard boundary
    windows = starts[:, None] + np.arange(65)
    assert np.array_equal(t[windows], ref[windows])
    idx = rng.integers(0, 40_000, size=(7, 33))
    assert np.array_equal(t[idx], ref[idx]) and t[-1] == ref[-1] and np.array_equal(t[10:2000:7], ref[10:2000:7])
    with pytest.raises(IndexError):
        t[np.array([40_000])]


def test_data_id_ignores_layout_and_keeps_legacy_ids(layouts):
    legacy, one, many = layouts
    assert data_id(legacy) == data_id(one) == data_id(many) == GOLDEN_DATA_ID


def test_g_learn_reads_sharded_train_split(layouts):
    tokens = open_tokens(layouts[2])
    x, y = next(_batches(tokens, 16, 4, vocab=64, seed=0))
    assert x.shape == y.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])


def _edit_meta(d, fn):
    meta = json.loads((d / "meta.json").read_text())
    fn(meta)
    (d / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: (d / "train-00002.bin").unlink(), r"train-00002\.bin \(shards\.train\[2\].* is missing"),
        (
            lambda d: (d / "val-00001.bin").write_bytes(b"x" * 10),
            r"val-00001\.bin has 10 bytes, fewer than shards\.val",
        ),
        (lambda d: _edit_meta(d, lambda m: m.update(train_tokens=1)), r"meta\.json: shards\.train add up to 40000"),
        (lambda d: _edit_meta(d, lambda m: m["shards"]["val"][0].update(tokens=-1)), r"meta\.json: shards\.val\[0\]"),
        (lambda d: _edit_meta(d, lambda m: m["shards"].pop("val")), r"meta\.json: shards\.val must be a non-empty"),
    ],
)
def test_shard_errors(layouts, tmp_path, edit, match):
    import shutil

    d = tmp_path / "ds"
    shutil.copytree(layouts[2], d)
    _edit_meta(d, lambda m: m["shards"]["train"][0].update(path="train-00000.bin"))  # relative: the copy's file
    edit(d)
    with pytest.raises(DataError, match=match) as e:
        read_meta(d)
    assert "\n" not in str(e.value)


# ---- Megatron-LM indexed datasets --------------------------------------------------------------------------------
def write_megatron(prefix, docs: list[list[np.ndarray]], code: int = 8, dtype=np.uint16, version: int = 1):
    """PREFIX.bin + PREFIX.idx from the published format (megatron/core/datasets/indexed_dataset.py): documents
    made of sequences."""
    seqs = [np.asarray(s, dtype) for doc in docs for s in doc]
    sizes = np.array([len(s) for s in seqs], np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1], dtype=np.int64)]) * np.dtype(dtype).itemsize
    doc_idx = np.concatenate([[0], np.cumsum([len(doc) for doc in docs])]).astype(np.int64)
    (prefix.parent / f"{prefix.name}.bin").write_bytes(b"".join(s.tobytes() for s in seqs))
    head = MEGATRON_MAGIC + struct.pack("<QBQQ", version, code, len(seqs), len(doc_idx))
    idx = head + sizes.tobytes() + pointers.astype(np.int64).tobytes() + doc_idx.tobytes()
    (prefix.parent / f"{prefix.name}.idx").write_bytes(idx)
    return prefix


def random_docs(n_docs, vocab=64, eot=63, seed=0, max_seqs=3):
    """Documents of 1..max_seqs sequences; each document ends with eot."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        seqs = [rng.integers(0, eot, size=int(rng.integers(3, 120))) for _ in range(int(rng.integers(1, max_seqs + 1)))]
        seqs[-1][-1] = eot
        docs.append(seqs)
    return docs


def flat_tokens(docs):
    return np.concatenate([s for doc in docs for s in doc])


def doc_starts(docs):
    return np.cumsum([0] + [sum(len(s) for s in doc) for doc in docs])


def test_megatron_import_round_trip(tmp_path):
    docs_a, docs_b = random_docs(200, seed=1), random_docs(150, seed=2)
    a, b = write_megatron(tmp_path / "a_text_document", docs_a), write_megatron(tmp_path / "b_text_document", docs_b)
    out = import_dataset(
        ImportConfig(paths=[str(a), f"{b}.bin"], out=str(tmp_path / "ds"), vocab_size=64, eot_id=63, val_tokens=3000)
    )
    meta = read_meta(out)
    assert not (out / "train.bin").exists() and sorted(p.name for p in out.iterdir()) == ["meta.json"]
    train, val = np.asarray(load_tokens(out, "train")), np.asarray(load_tokens(out, "val"))
    assert np.array_equal(np.concatenate([train, val]), np.concatenate([flat_tokens(docs_a), flat_tokens(docs_b)]))
    starts_b = doc_starts(docs_b)
    cut = len(flat_tokens(docs_b)) - len(val)
    assert len(val) >= 3000 and cut in starts_b and cut == starts_b[starts_b <= len(flat_tokens(docs_b)) - 3000][-1]
    k = int(np.flatnonzero(starts_b == cut)[0])
    assert meta["n_docs"] == {"train": 200 + k, "val": 150 - k}
    assert [s["byte_offset"] for s in meta["shards"]["val"]] == [2 * cut]
    assert meta["dtype"] == "uint16" and meta["import"]["format"] == "megatron" and meta["tokenizer"] == "imported"
    assert [f["path"] for f in meta["import"]["files"]] == [
        "a_text_document.idx",
        "a_text_document.bin",
        "b_text_document.idx",
        "b_text_document.bin",
    ]
    counts = np.bincount(train, minlength=64) + 1.0
    assert meta["unigram_val_loss"] == pytest.approx(-np.log(counts / counts.sum())[val].mean(), rel=1e-12)
    x, y = next(iter(TokenDataModule(str(out), 32, 4, 0, 1024).train_dataloader()))
    assert x.shape == (4, 32) and int(x.max()) < 64 and torch.equal(x[:, 1:], y[:, :-1])
    assert val_windows(out, 32, 1024).shape == (32, 33)


def test_megatron_val_import_and_identity(tmp_path):
    """--val_import: a separate val set; data_id follows the content (same files elsewhere: same id)."""
    docs = random_docs(60, seed=3)
    write_megatron(tmp_path / "tr", docs)
    write_megatron(tmp_path / "va", random_docs(20, seed=4))
    cfg = ImportConfig(
        paths=[str(tmp_path / "tr")],
        val_import=[str(tmp_path / "va")],
        out=str(tmp_path / "ds"),
        vocab_size=64,
        eot_id=63,
    )
    meta = read_meta(import_dataset(cfg))
    assert meta["train_tokens"] == len(flat_tokens(docs)) and meta["n_docs"] == {"train": 60, "val": 20}
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in ("tr.bin", "tr.idx", "va.bin", "va.idx"):
        (tmp_path / f).rename(moved / f)
    cfg2 = ImportConfig(
        paths=[str(moved / "tr")],
        val_import=[str(moved / "va.idx")],
        out=str(tmp_path / "ds2"),
        vocab_size=64,
        eot_id=63,
    )
    assert data_id(import_dataset(cfg2)) == data_id(tmp_path / "ds")


def test_megatron_core_builder_files_import(tmp_path):
    """Files written by megatron-core's own IndexedDatasetBuilder (documents of several sequences): byte-identical
    to the spec writer above, and imported with its documents."""
    pytest.importorskip("megatron.core.datasets.indexed_dataset")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    docs = random_docs(80, seed=5, max_seqs=4)
    builder = IndexedDatasetBuilder(str(tmp_path / "mc.bin"), dtype=np.uint16)
    for doc in docs:
        builder.add_document(np.concatenate(doc), [len(s) for s in doc])
    builder.finalize(str(tmp_path / "mc.idx"))
    write_megatron(tmp_path / "spec", docs)
    for ext in ("bin", "idx"):
        assert (tmp_path / f"mc.{ext}").read_bytes() == (tmp_path / f"spec.{ext}").read_bytes()
    ref = IndexedDataset(str(tmp_path / "mc"))
    meta = read_meta(
        import_dataset(
            ImportConfig(
                paths=[str(tmp_path / "mc")], out=str(tmp_path / "ds"), vocab_size=64, eot_id=63, val_tokens=500
            )
        )
    )
    assert sum(meta["n_docs"].values()) == len(ref.document_indices) - 1 == 80
    tokens = np.concatenate([load_tokens(tmp_path / "ds", s)[:] for s in ("train", "val")])
    assert np.array_equal(tokens, np.concatenate([ref[i] for i in range(len(ref))]))


# ---- flat numpy token files ----------------------------------------------------------------------------------------
def test_flat_raw_and_npy_import(tmp_path):
    rng = np.random.default_rng(6)
    parts = [rng.integers(0, 1000, size=n).astype(np.uint32) for n in (5000, 7000, 6000)]
    for p in parts:
        p[rng.integers(0, len(p), size=30)] = 999
    raw = tmp_path / "raw"
    raw.mkdir()
    for i, p in enumerate(parts):
        p.tofile(raw / f"part-{i}-00000.npy")  # OLMo: raw memmaps named .npy
    meta = read_meta(
        import_dataset(
            ImportConfig(
                paths=[str(raw)], out=str(tmp_path / "ds"), dtype="uint32", vocab_size=1000, eot_id=999, val_tokens=2000
            )
        )
    )
    train, val = (np.asarray(load_tokens(tmp_path / "ds", s)) for s in ("train", "val"))
    assert np.array_equal(np.concatenate([train, val]), np.concatenate(parts))
    start = 6000 - len(val)  # in the last file: just after its last EOT at or before 6000 - 2000
    assert len(val) >= 2000 and parts[2][start - 1] == 999 and not (parts[2][start:4000] == 999).any()
    assert meta["n_docs"] == {"train": int((train == 999).sum()), "val": int((val == 999).sum())}
    npy = tmp_path / "npy"
    npy.mkdir()
    for i, p in enumerate(parts):
        np.save(npy / f"p{i}.npy", p.astype(np.uint16))
    meta2 = read_meta(
        import_dataset(
            ImportConfig(
                paths=[str(npy / f"p{i}.npy") for i in range(3)],
                out=str(tmp_path / "ds2"),
                vocab_size=1000,
                val_tokens=2000,
            )
        )
    )
    assert meta2["dtype"] == "uint16" and meta2["val_tokens"] == 2000 and meta2["eot_id"] is None
    assert meta2["shards"]["train"][0]["byte_offset"] == 128  # the .npy header
    train2, val2 = (np.asarray(load_tokens(tmp_path / "ds2", s)) for s in ("train", "val"))
    assert np.array_equal(np.concatenate([train2, val2]), np.concatenate(parts))


def test_import_with_a_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        ["def f(x): return x"] * 20,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    config = {"eos_token": "<|endoftext|>", "tokenizer_class": "GPTNeoXTokenizer"}  # where litgpt reads EOS
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    np.tile(np.array(tok.encode("def f(x): return x").ids + [0], np.uint16), 400).tofile(tmp_path / "t.bin")
    out = import_dataset(
        ImportConfig(
            paths=[str(tmp_path / "t.bin")],
            out=str(tmp_path / "ds"),
            dtype="uint16",
            tokenizer=str(tmp_path),
            val_tokens=100,
        )
    )
    meta = read_meta(out)
    assert (meta["vocab_size"], meta["eot_id"], meta["tokenizer"]) == (tok.get_vocab_size(), 0, "huggingface")
    assert (out / "tokenizer.json").read_bytes() == (tmp_path / "tokenizer.json").read_bytes()
    assert tokenizer_id(out) == meta["tokenizer_sha256"] and load_tokens(out, "val")[0] != 0


# ---- bad input: one line naming the file ---------------------------------------------------------------------------
def _megatron(t, **kw):
    return write_megatron(t / "m", random_docs(30, seed=7), **kw)


def _patched(t, suffix: str, fn):
    """The Megatron set ``m`` with its .idx or .bin bytes changed by ``fn``."""
    prefix = _megatron(t)
    f = t / f"m{suffix}"
    f.write_bytes(fn(f.read_bytes()))
    return prefix


def _bad_pointer(b: bytes) -> bytes:
    (n_seq,) = struct.unpack("<Q", b[18:26])
    at = 34 + 4 * n_seq + 8 * 3  # pointers[3]
    return b[:at] + struct.pack("<q", 2) + b[at + 8 :]


def _gone(t, name: str):
    prefix = _megatron(t)
    (t / name).unlink()
    return prefix if name == "m.idx" else t / "m.idx"


def _raw(t, n_bytes):
    (t / "r.raw").write_bytes(np.arange(n_bytes, dtype=np.uint8).tobytes())
    return t / "r.raw"


BAD = {  # case: (make the input, ImportConfig fields, the message)
    "missing .idx": (lambda t: _gone(t, "m.idx"), {}, r"m\.idx is missing"),
    "missing .bin": (lambda t: _gone(t, "m.bin"), {}, r"m\.bin is missing"),
    "magic": (lambda t: _patched(t, ".idx", lambda b: b"XX" + b[2:]), {}, r"m\.idx at byte 0: not a Megatron index"),
    "version": (lambda t: _megatron(t, version=2), {}, r"m\.idx at byte 9: index version 2"),
    "dtype code": (lambda t: _megatron(t, code=9), {}, r"m\.idx at byte 17: unknown dtype code 9"),
    "float code": (lambda t: _megatron(t, code=7, dtype=np.float32), {}, r"byte 17: dtype float32 is not a token"),
    "--dtype": (lambda t: _megatron(t), {"dtype": "uint32"}, r"m\.idx at byte 17: the index holds uint16"),
    "short .idx": (lambda t: _patched(t, ".idx", lambda b: b[:-3]), {}, r"m\.idx has \d+ bytes; its header"),
    "short .bin": (
        lambda t: _patched(t, ".bin", lambda b: b[:-10]),
        {},
        r"m\.idx: sequence \d+ \(byte \d+ \+ \d+ tokens\) ends past the end of \S*m\.bin",
    ),
    "long .bin": (
        lambda t: _patched(t, ".bin", lambda b: b + b"\0\0"),
        {},
        r"m\.idx: its sequences hold \d+ tokens .* but \S*m\.bin has",
    ),
    "pointer": (lambda t: _patched(t, ".idx", _bad_pointer), {}, r"m\.idx: sequence 3 starts at byte 2 of \S*m\.bin"),
    "raw size": (lambda t: _raw(t, 4001), {"dtype": "uint16"}, r"r\.raw has 4001 bytes, not a multiple of uint16"),
    "raw dtype": (lambda t: _raw(t, 4000), {}, r"r\.raw is a raw token file .* give --dtype"),
    "token id": (
        lambda t: _raw(t, 4000),
        {"dtype": "uint8", "vocab_size": 200},
        r"r\.raw at byte 200: token id 200 is outside \[0, vocab_size=200\)",
    ),
    "too small": (lambda t: _raw(t, 100), {"dtype": "uint8", "val_tokens": 100}, r"r\.raw has 100 tokens: too few"),
    "missing path": (lambda t: t / "nothing", {}, r"nothing does not exist"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_import_errors_name_the_file(tmp_path, case):
    make, kw, match = BAD[case]
    path = make(tmp_path)
    cfg = ImportConfig(paths=[str(path)], out=str(tmp_path / "ds"), **{"vocab_size": 256, "val_tokens": 64, **kw})
    with pytest.raises(DataError, match=match) as e:
        import_dataset(cfg)
    assert "\n" not in str(e.value) and not (tmp_path / "ds").exists()


# ---- a run on imported data --------------------------------------------------------------------------------------
def test_training_run_on_an_imported_dataset(tmp_path):
    from stacking.train import run

    legacy = synthetic_data(tmp_path / "legacy")
    tokens = np.concatenate([np.fromfile(legacy / f"{s}.bin", np.uint16) for s in ("train", "val")])
    ends = np.flatnonzero(tokens == 63) + 1
    docs = [[d] for d in np.split(tokens, ends) if len(d)]
    write_megatron(tmp_path / "walk", docs)
    data = import_dataset(
        ImportConfig(
            paths=[str(tmp_path / "walk")], out=str(tmp_path / "ds"), vocab_size=64, eot_id=63, val_tokens=8000
        )
    )
    run(tiny_run_config(tmp_path, data, max_tokens=1280, val_every_tokens=1024))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["final_val_loss"] < read_meta(data)["unigram_val_loss"] + 1
