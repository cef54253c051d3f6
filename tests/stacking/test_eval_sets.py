"""eval_data_dirs: more validation sets measured at every evaluation (metrics.csv val_loss_<name>), their checks
before compute (one line each), and run identities that stay what they were for configs that do not use them."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import tiny_run_config

from stacking.config import RunConfig, config_hash, data_id, validate
from stacking.corpus import DataConfig, build_dataset
from stacking.data import tokenizer_id
from stacking.errors import RunError
from stacking.train import run


def write_docs(root: Path, n: int = 24, seed: int = 0) -> Path:
    """``n`` small C-like text files (a second corpus, unlike the stdlib's Python)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = "".join(f"#define NAME_{seed}_{i}_{k} ({k} * {i} + {seed})\nint f{i}_{k}(int x);\n" for k in range(40))
        (root / f"h{i:02d}.h").write_text(f"/* header {i} */\n{body}")
    return root


@pytest.fixture(scope="module")
def second_data(tiny_data, tmp_path_factory) -> Path:
    """A corpus of other text with tiny_data's BPE tokenizer (tokenizer_from)."""
    root = tmp_path_factory.mktemp("second")
    return build_dataset(
        DataConfig(
            out=str(root / "ds"),
            sources=[str(write_docs(root / "src"))],
            tokenizer_from=str(tiny_data),
            val_fraction=0.3,
        )
    )


@pytest.fixture(scope="module")
def bytes_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bytes")
    return build_dataset(
        DataConfig(out=str(root / "ds"), sources=[str(write_docs(root / "src"))], tokenizer="bytes", val_fraction=0.3)
    )


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_a_run_measures_every_eval_set_at_every_evaluation(tiny_data, second_data, tmp_path):
    cfg = tiny_run_config(tmp_path, tiny_data, eval_data_dirs={"other": str(second_data), "same": str(tiny_data)})
    summary = run(cfg)
    assert summary["status"] == "done"
    rows = read_rows(tmp_path / "run" / "metrics.csv")
    assert list(rows[0])[-2:] == ["val_loss_other", "val_loss_same"]
    evals = [r for r in rows if r["val_loss"]]
    assert len(evals) == cfg.max_tokens // cfg.val_every_tokens + 1  # the start, every 1024 tokens, the end
    for r in rows:
        if r["val_loss"]:
            assert math.isfinite(float(r["val_loss_other"])) and math.isfinite(float(r["val_loss_same"]))
            assert float(r["val_loss_same"]) == float(r["val_loss"])  # the same windows, the same evaluation
            assert float(r["val_loss_other"]) != float(r["val_loss"])
        else:
            assert r["val_loss_other"] == r["val_loss_same"] == ""
    assert summary["final_val_loss_other"] == float(evals[-1]["val_loss_other"])
    assert summary["final_val_loss_same"] == summary["final_val_loss"]


def _hash_before_eval_sets(cfg: RunConfig) -> str:
    """config_hash as it was written before eval_data_dirs existed (every field but the display options)."""
    d = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "progress_bar", "logger", "eval_data_dirs")}
    d["data_dir"] = data_id(cfg.data_dir)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def test_run_ids_without_eval_sets_are_unchanged(tiny_data, second_data, tmp_path):
    cfg = tiny_run_config(tmp_path, tiny_data)
    assert config_hash(cfg) == _hash_before_eval_sets(cfg)
    assert config_hash(RunConfig()) == _hash_before_eval_sets(RunConfig())
    with_evals = tiny_run_config(tmp_path, tiny_data, eval_data_dirs={"other": str(second_data)})
    assert config_hash(with_evals) != config_hash(cfg)
    # eval sets enter by content, like data_dir: the same dir under another path is the same run
    moved = tiny_run_config(tmp_path, tiny_data, eval_data_dirs={"other": str(second_data) + "/."})
    assert config_hash(moved) == config_hash(with_evals)


def test_rebuilt_datasets_keep_their_data_id(tiny_data, tmp_path):
    """meta.json now records tokenizer_sha256; a dataset built before (without it) has the same id."""
    meta = json.loads((tiny_data / "meta.json").read_text())
    assert meta["tokenizer_sha256"] == hashlib.sha256((tiny_data / "tokenizer.json").read_bytes()).hexdigest()
    old = tmp_path / "old"
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "tokenizer_sha256"}))
    assert data_id(old) == data_id(tiny_data)


def test_eval_set_errors_are_one_line_before_compute(tiny_data, second_data, bytes_data, tmp_path):
    cases = [
        ({"b": str(bytes_data)}, r"eval_data_dirs\.b: .* has another tokenizer than data_dir .*--tokenizer_from"),
        ({"gone": str(tmp_path / "nope")}, r"eval_data_dirs\.gone: data_dir .*nope' does not exist"),
        ({"val-loss": str(second_data)}, r"eval_data_dirs name 'val-loss' is not a safe column name"),
        ({"1st": str(second_data)}, r"eval_data_dirs name '1st' is not a safe column name"),
    ]
    for evals, msg in cases:
        cfg = tiny_run_config(tmp_path, tiny_data, eval_data_dirs=evals)
        with pytest.raises(RunError, match=msg) as e:
            validate(cfg)
        assert "\n" not in str(e.value)
        with pytest.raises(RunError):
            run(cfg)
        assert not (tmp_path / "run").exists()  # nothing written, nothing computed


def test_tokenizer_id_of_datasets_built_before_the_hash(tiny_data, bytes_data, tmp_path):
    """Dirs whose meta.json lacks tokenizer_sha256 are identified by hashing their tokenizer.json."""
    old = tmp_path / "old"
    old.mkdir()
    for f in [*tiny_data.glob("*.bin"), tiny_data / "tokenizer.json"]:
        (old / f.name).write_bytes(f.read_bytes())
    meta = json.loads((tiny_data / "meta.json").read_text())
    del meta["tokenizer_sha256"]
    (old / "meta.json").write_text(json.dumps(meta))
    assert tokenizer_id(old) == tokenizer_id(tiny_data) == meta_hash(tiny_data)
    assert tokenizer_id(bytes_data) == "bytes"


def meta_hash(d: Path) -> str:
    return json.loads((d / "meta.json").read_text())["tokenizer_sha256"]


def test_cli_tokenizer_from_takes_the_hyphenated_flag_too(tiny_data, tmp_path, capsys):
    from stacking.cli import main as cli_main

    src = write_docs(tmp_path / "src", n=8)
    for i, flag in enumerate(("--tokenizer-from", "--tokenizer_from")):
        out = tmp_path / f"ds{i}"
        assert (
            cli_main(["data", "--out", str(out), "--sources", str(src), flag, str(tiny_data), "--val-fraction=0.3"])
            == 0
        )
        meta = json.loads((out / "meta.json").read_text())
        assert (
            meta["tokenizer_from"]
            and (out / "tokenizer.json").read_bytes() == (Path(tiny_data) / "tokenizer.json").read_bytes()
        )
