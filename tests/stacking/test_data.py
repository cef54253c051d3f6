"""The data layer: validation windows spread over every val document, named corpus sources, the `stacking data` CLI."""

import hashlib
import json
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from stacking import corpus
from stacking.cli import main as cli_main
from stacking.corpus import DataConfig, build_dataset, collect_files
from stacking.data import (
    load_tokens,
    read_meta,
    val_window_offsets,
    val_windows,
)
from stacking.errors import DataError


def covered_documents(tokens: np.ndarray, eot_id: int, offsets: np.ndarray, seq_len: int) -> np.ndarray:
    """Per document: does some window have one of its tokens among its targets (offset+1 … offset+seq_len)?"""
    target = np.zeros(len(tokens), bool)
    for o in offsets:
        target[o + 1 : o + seq_len + 1] = True
    ends = np.flatnonzero(tokens == eot_id) + 1
    return np.array([target[s:e].any() for s, e in zip(np.r_[0, ends[:-1]], ends)])


def check_window_invariants(data_dir, seq_len: int, val_tokens: int) -> np.ndarray:
    offsets = val_window_offsets(data_dir, seq_len, val_tokens)
    n_val = read_meta(data_dir)["val_tokens"]
    assert offsets.dtype == np.int64
    assert len(offsets) == min(val_tokens // seq_len, (n_val - 1) // seq_len)
    assert offsets[0] >= 0 and offsets[-1] + seq_len + 1 <= n_val  # inside val.bin
    assert (np.diff(offsets) >= seq_len).all()  # sorted; no token is a target twice
    return offsets


def fake_dataset(path: Path, doc_lengths, eot_id: int = 0, seed: int = 0) -> np.ndarray:
    """A dataset dir whose val.bin holds documents of these lengths (each ending with EOT), without building."""
    rng = np.random.default_rng(seed)
    docs = [np.r_[rng.integers(eot_id + 1, eot_id + 100, n - 1), eot_id] for n in doc_lengths]
    val = np.concatenate(docs).astype(np.uint16)
    path.mkdir(parents=True)
    val.tofile(path / "val.bin")
    np.arange(1, 20, dtype=np.uint16).tofile(path / "train.bin")
    (path / "meta.json").write_text(
        json.dumps({"dtype": "uint16", "eot_id": eot_id, "vocab_size": 100, "train_tokens": 19, "val_tokens": len(val)})
    )
    return val


@pytest.fixture(scope="module")
def docs_data(tmp_path_factory) -> Path:
    """A built bytes dataset from 40 text files of very different lengths: about 20 val documents."""
    src = tmp_path_factory.mktemp("docs")
    for i in range(40):
        (src / f"doc{i:02d}.txt").write_text(f"document {i}: " + "lorem ipsum " * (3 + (i * 37) % 200))
    return build_dataset(
        DataConfig(out=str(src.parent / "ds"), sources=[str(src)], tokenizer="bytes", val_fraction=0.5)
    )


# ---- validation windows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", [8, 32])
def test_every_val_document_gets_a_window(docs_data, seq_len):
    meta = read_meta(docs_data)
    tokens = np.asarray(load_tokens(docs_data, "val"))
    n_docs = int((tokens == meta["eot_id"]).sum())
    assert n_docs >= 10
    val_tokens = 64 * seq_len
    assert val_tokens // seq_len >= n_docs
    offsets = check_window_invariants(docs_data, seq_len, val_tokens)
    assert covered_documents(tokens, meta["eot_id"], offsets, seq_len).all()
    # the old scheme (the first val_tokens of val.bin) would have missed documents
    old = np.arange(val_tokens // seq_len) * seq_len
    assert not covered_documents(tokens, meta["eot_id"], old, seq_len).all()


def test_val_windows_are_deterministic_and_read_the_offsets(docs_data, tmp_path):
    offsets = val_window_offsets(docs_data, 16, 512)
    w = val_windows(docs_data, 16, 512)
    assert w.shape == (len(offsets), 17) and str(w.dtype) == "torch.int64"
    tokens = np.asarray(load_tokens(docs_data, "val"))
    assert all((w[i].numpy() == tokens[o : o + 17]).all() for i, o in enumerate(offsets))
    # a pure function of the files: the same from a copy of the dir, and on every call
    shutil.copytree(docs_data, tmp_path / "copy")
    assert (val_window_offsets(tmp_path / "copy", 16, 512) == offsets).all()
    assert (val_windows(docs_data, 16, 512) == w).all()


def test_fewer_windows_than_documents_are_evenly_spaced(tmp_path):
    val = fake_dataset(tmp_path / "ds", [1, 5, 3000, 2, 40, 700, 9] * 10)
    offsets = check_window_invariants(tmp_path / "ds", 32, 32 * 20)
    gaps = np.diff(offsets)
    assert len(offsets) == 20 and gaps.max() - gaps.min() <= 2 and abs(gaps.mean() - len(val) / 20) < 2


def test_documents_get_windows_in_proportion_to_their_length(tmp_path):
    val = fake_dataset(tmp_path / "ds", [100, 10_000, 3, 5_000, 50])
    offsets = check_window_invariants(tmp_path / "ds", 16, 16 * 60)
    assert covered_documents(val, 0, offsets, 16).all()
    starts = np.searchsorted(np.cumsum([100, 10_000, 3, 5_000, 50]), offsets, side="right")
    per_doc = np.bincount(starts, minlength=5)
    assert per_doc[1] > 1.7 * per_doc[3] > 10  # ≈ 2:1 for the two long documents


def test_short_val_split_gives_fewer_windows(tmp_path):
    fake_dataset(tmp_path / "ds", [30, 41, 29])  # 100 tokens: room for (100 - 1) // 16 = 6 windows
    offsets = check_window_invariants(tmp_path / "ds", 16, 16 * 100)
    assert len(offsets) == 6
    assert len(check_window_invariants(tmp_path / "ds", 99, 1000)) == 1


@pytest.mark.parametrize("seed", range(40))
def test_window_invariants_on_random_documents(tmp_path, seed):
    rng = np.random.default_rng(seed)
    n_docs = int(rng.integers(1, 60))
    lengths = [
        rng.integers(1, 300, n_docs),
        rng.geometric(0.02, n_docs),
        np.where(rng.random(n_docs) < 0.7, rng.integers(1, 5, n_docs), rng.integers(100, 3000, n_docs)),
    ]
    lengths = lengths[seed % 3]
    val = fake_dataset(tmp_path / "ds", lengths, eot_id=7, seed=seed)
    seq_len = int(rng.integers(1, min(200, len(val) - 1) + 1))
    val_tokens = int(rng.integers(seq_len, 20_000))
    offsets = check_window_invariants(tmp_path / "ds", seq_len, val_tokens)
    if len(offsets) >= n_docs:
        covered = covered_documents(val, 7, offsets, seq_len)
        covered[0] |= lengths[0] == 1  # a one-token document at offset 0 can never be a target
        assert covered.all()


def test_val_window_errors(docs_data, tmp_path):
    with pytest.raises(DataError, match="seq_len must be >= 1"):
        val_window_offsets(docs_data, 0, 100)
    with pytest.raises(DataError, match=r"val_tokens \(10\) must be >= seq_len \(16\)"):
        val_windows(docs_data, 16, 10)
    fake_dataset(tmp_path / "short", [5, 4])
    with pytest.raises(DataError, match="fewer than seq_len"):
        val_window_offsets(tmp_path / "short", 9, 100)
    with pytest.raises(DataError, match="does not exist"):
        val_window_offsets(tmp_path / "nothing", 8, 100)


# ---- corpus sources ----------------------------------------------------------------------------------------------


@pytest.fixture
def fake_roots(tmp_path, monkeypatch) -> dict[str, Path]:
    """Tiny stand-ins for the three named sources' roots."""
    roots = {name: tmp_path / name for name in corpus.NAMED_SOURCES}
    files = {
        "stdlib/os.py": "import sys\n" * 40,
        "stdlib/json/__init__.py": "x = 1\n" * 30,
        "stdlib/test/test_os.py": "skip\n",
        "stdlib/test_x.py": "skip\n",
        "site-packages/pkg/core.py": "def f():\n    pass\n" * 30,
        "site-packages/pkg/tests/t.py": "skip\n",
        "site-packages/pkg/README.md": "not python\n",
        "site-packages/other/_vendor/core.py": "def f():\n    pass\n" * 30,
        "site-packages/copy_of_os.py": "import sys\n" * 40,
        "c-headers/stdio.h": "int printf(const char *, ...);\n" * 30,
        "c-headers/sys/types.h": "typedef long ssize_t;\n" * 30,
        "c-headers/impl.c": "int main() {}\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(corpus, "named_source_roots", lambda name: [roots[name]])
    return roots


def test_named_sources_combine_and_mix_with_paths(fake_roots, tmp_path):
    (tmp_path / "extra.txt").write_text("plain text " * 50)
    found, desc = collect_files(["stdlib", "site-packages", "c-headers", str(tmp_path / "extra.txt")])
    assert [(key, src) for _, key, src in found] == [
        ("json/__init__.py", "stdlib"),
        ("os.py", "stdlib"),  # stdlib keys as before sources had names
        ("site-packages/copy_of_os.py", "site-packages"),
        ("site-packages/other/_vendor/core.py", "site-packages"),
        ("site-packages/pkg/core.py", "site-packages"),
        ("c-headers" + str(fake_roots["c-headers"] / "stdio.h"), "c-headers"),
        ("c-headers" + str(fake_roots["c-headers"] / "sys/types.h"), "c-headers"),
        (str(tmp_path / "extra.txt"), str(tmp_path / "extra.txt")),
    ]
    assert desc[0].startswith("python-stdlib:") and desc[1:3] == [
        f"python-site-packages:{fake_roots['site-packages']}",
        f"c-headers:{fake_roots['c-headers']}",
    ]
    assert collect_files([])[0] == collect_files(["stdlib"])[0]
    out = build_dataset(
        DataConfig(
            out=str(tmp_path / "ds"),
            tokenizer="bytes",
            val_fraction=0.3,
            sources=["stdlib", "site-packages", "c-headers", str(tmp_path / "extra.txt")],
        )
    )
    meta = read_meta(out)
    # the vendored copy and the copy of a stdlib file are skipped: identical text cannot land in both splits
    assert meta["named_sources"] == {
        "stdlib": {"roots": [str(fake_roots["stdlib"])], "n_files": 2, "n_duplicates_skipped": 0},
        "site-packages": {"roots": [str(fake_roots["site-packages"])], "n_files": 1, "n_duplicates_skipped": 2},
        "c-headers": {"roots": [str(fake_roots["c-headers"])], "n_files": 2, "n_duplicates_skipped": 0},
    }
    assert meta["n_files"] == 6 and len(meta["sha256"]["files"]) == 6
    assert meta["train_tokens"] + meta["val_tokens"] == sum(meta["chars"].values()) + 6  # ASCII: byte = char


@pytest.mark.slow  # > 5 s: out of the fast lane (make test-fast), in make test and CI
def test_real_named_sources_with_few_files(tmp_path):
    for name, suffix in (("site-packages", ".py"), ("c-headers", ".h")):
        if not corpus.named_source_roots(name):
            continue
        found, _ = collect_files([name])
        assert found and all(f.suffix == suffix and not {"test", "tests"} & set(f.parts) for f, _, _ in found)
        out = build_dataset(
            DataConfig(out=str(tmp_path / name), sources=[name], max_files=6, tokenizer="bytes", val_fraction=0.5)
        )
        meta = read_meta(out)
        info = meta["named_sources"][name]
        assert info["n_files"] + info["n_duplicates_skipped"] == 6 == meta["n_files"] + info["n_duplicates_skipped"]
    assert corpus.named_source_roots("site-packages")[0] == Path(sysconfig.get_paths()["purelib"])


def test_source_errors(tmp_path, monkeypatch):
    cfg = {"out": str(tmp_path / "x"), "tokenizer": "bytes"}
    with pytest.raises(DataError, match="'nope' does not exist .*stdlib, site-packages, c-headers"):
        build_dataset(DataConfig(sources=["nope"], **cfg))
    with pytest.raises(DataError, match="'stdlib' is given twice"):
        build_dataset(DataConfig(sources=["stdlib", "stdlib"], **cfg))
    with pytest.raises(DataError, match="max_files must be >= 0"):
        build_dataset(DataConfig(max_files=-1, **cfg))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no text, .jsonl, .* or .parquet files"):
        build_dataset(DataConfig(sources=[str(tmp_path / "empty")], **cfg))
    monkeypatch.setattr(corpus, "_C_HEADER_ROOTS", (str(tmp_path / "no-include"),))
    with pytest.raises(DataError, match="named source 'c-headers' has no directory on this machine"):
        build_dataset(DataConfig(sources=["c-headers"], **cfg))
    with pytest.raises(DataError, match="unknown named source"):
        corpus.named_source_roots("everything")
    assert not (tmp_path / "x").exists()


def test_cli_data_takes_several_sources(tmp_path, capsys):
    # directory sources: split keys relative to each dir (a0.txt … b.jsonl), so the hash split does not depend on
    # tmp_path (a file source's key is its path as given): a0, a4 train; a1–a3, a5, b.jsonl val at val_fraction 0.5
    (tmp_path / "da").mkdir()
    (tmp_path / "db").mkdir()
    for i in range(6):
        (tmp_path / "da" / f"a{i}.txt").write_text(f"text {i} " * 40)
    (tmp_path / "db" / "b.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i} " * 30}) for i in range(6)))
    assert (
        cli_main(
            [
                "data",
                "--out",
                str(tmp_path / "ds"),
                "--sources",
                str(tmp_path / "da"),
                str(tmp_path / "db"),
                "--tokenizer",
                "bytes",
                "--val_fraction",
                "0.5",
            ]
        )
        == 0
    )
    assert read_meta(tmp_path / "ds")["n_files"] == 7
    # the list forms jsonargparse reads keep working: a YAML list, a JSON list, --sources+
    (tmp_path / "cfg.yaml").write_text(f"sources: [{tmp_path / 'da'}, {tmp_path / 'db'}]\n")
    for i, argv in enumerate(
        (
            ["--config", str(tmp_path / "cfg.yaml")],
            ["--sources", f"[{tmp_path / 'da'}, {tmp_path / 'db'}]"],
            ["--sources+", str(tmp_path / "da"), "--sources+", str(tmp_path / "db")],
        )
    ):
        assert (
            cli_main(["data", "--out", str(tmp_path / f"l{i}"), "--tokenizer", "bytes", "--val_fraction", "0.5", *argv])
            == 0
        )
        assert read_meta(tmp_path / f"l{i}")["n_files"] == 7
    capsys.readouterr()
    assert cli_main(["data", "--out", str(tmp_path / "e"), "--sources", "stdlib", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stacking data: error: data source 'nope' does not exist") and "\n" not in err
    assert cli_main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(w in out for w in ("site-packages", "c-headers", "stdlib", "val_window_offsets"))


def test_stdlib_corpus_is_the_one_built_before_sources_had_names():
    """Same files, keys and hashes as `data/stdlib-bpe4096` when that was built by this interpreter."""
    built = Path(__file__).parents[2] / "data/stdlib-bpe4096/meta.json"
    found, desc = collect_files([])
    if not built.exists() or json.loads(built.read_text())["sources"] != desc:
        pytest.skip("no data/stdlib-bpe4096 built by this interpreter")
    hashes = {key: hashlib.sha256(f.read_bytes()).hexdigest() for f, key, _ in found}
    assert hashes == json.loads(built.read_text())["sha256"]["files"]
