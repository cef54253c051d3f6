"""Domain continued pretraining: `stacking data --tokenizer_from`, the grid's `continued` op (the base trained on
as is), and the report's "Domain and general loss" section on a tiny real sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sweep_helpers import DEFAULTS, run_sweep, write_grid
from test_eval_sets import write_docs

from analysis.domain import domain_table
from analysis.report import write_report
from analysis.sweep import load_sweep
from experiments.grid import expand, parse_grid
from stacking.cli import main as cli_main
from stacking.data import load_tokens, read_meta, tokenizer_id


@pytest.fixture(scope="module")
def domain_data(tiny_data, tmp_path_factory) -> Path:
    """C-like headers tokenized with tiny_data's BPE, built through the CLI."""
    root = tmp_path_factory.mktemp("domain")
    src = write_docs(root / "src", n=30, seed=1)
    out = root / "ds"
    assert (
        cli_main(
            [
                "data",
                "--out",
                str(out),
                "--sources",
                str(src),
                "--tokenizer_from",
                str(tiny_data),
                "--val_fraction",
                "0.3",
            ]
        )
        == 0
    )
    return out


def _val_documents(data_dir: Path) -> list[list[int]]:
    tokens, eot = np.asarray(load_tokens(data_dir, "val")), read_meta(data_dir)["eot_id"]
    ends = np.flatnonzero(tokens == eot)
    return [tokens[a + 1 if i else 0 : b].tolist() for i, (a, b) in enumerate(zip(np.r_[-1, ends[:-1]], ends))]


def test_tokenizer_from_reuses_the_source_tokenizer(tiny_data, domain_data):
    from tokenizers import Tokenizer

    meta = read_meta(domain_data)
    assert meta["tokenizer_from"] == str(tiny_data.resolve())
    assert (domain_data / "tokenizer.json").read_bytes() == (tiny_data / "tokenizer.json").read_bytes()
    assert tokenizer_id(domain_data) == tokenizer_id(tiny_data)
    assert meta["vocab_size"] == read_meta(tiny_data)["vocab_size"] and meta["eot_id"] == read_meta(tiny_data)["eot_id"]
    texts = {p.read_text() for p in (domain_data.parent / "src").iterdir()}
    tok = Tokenizer.from_file(str(tiny_data / "tokenizer.json"))  # the source's own file decodes the new corpus
    docs = _val_documents(domain_data)
    assert docs and all(tok.decode(ids) in texts for ids in docs)


def test_tokenizer_from_a_bytes_dir(tmp_path):
    src = write_docs(tmp_path / "src", n=12)
    assert (
        cli_main(
            [
                "data",
                "--out",
                str(tmp_path / "a"),
                "--sources",
                str(src),
                "--tokenizer",
                "bytes",
                "--val_fraction",
                "0.4",
            ]
        )
        == 0
    )
    assert (
        cli_main(
            [
                "data",
                "--out",
                str(tmp_path / "b"),
                "--sources",
                str(src),
                "--tokenizer_from",
                str(tmp_path / "a"),
                "--val_fraction",
                "0.4",
            ]
        )
        == 0
    )
    meta = read_meta(tmp_path / "b")
    assert (
        meta["tokenizer"] == "bytes" and meta["vocab_size"] == 257 and not (tmp_path / "b" / "tokenizer.json").exists()
    )
    assert tokenizer_id(tmp_path / "b") == "bytes"
    texts = {p.read_text() for p in src.iterdir()}
    assert all(bytes(ids).decode() in texts for ids in _val_documents(tmp_path / "b"))
    assert (
        cli_main(
            ["data", "--out", str(tmp_path / "c"), "--sources", str(src), "--tokenizer_from", str(tmp_path / "nope")]
        )
        == 2
    )


def domain_grid(tiny_data: Path, domain_data: Path) -> dict:
    return dict(
        name="domain",
        targets=["tiny-L2-D32"],
        ops=[{"op": "llama_pro", "label": "llama_pro_new_only", "options": {"train_new_only": True}}, "continued"],
        g=[2],
        d=[1024],
        grown={"total_flops": 2.5e9},
        base={"set": {"data_dir": str(tiny_data), "eval_data_dirs": {"domain": str(domain_data)}}},
        defaults={
            **DEFAULTS,
            "data_dir": str(domain_data),
            "eval_data_dirs": {"general": str(tiny_data)},
            "val_every_tokens": 512,
            "schedule": "cosine",
        },
    )


def test_continued_is_the_base_trained_on_from_its_checkpoint(tiny_data, domain_data):
    runs = {
        r.name.split("-")[4] if r.kind == "grown" else r.kind: r
        for r in expand(parse_grid(domain_grid(tiny_data, domain_data)))
    }
    base, cont, pro = runs["base"], runs["continued"], runs["llama_pro_new_only"]
    assert cont.kind == "grown" and cont.op == "continued" and cont.grow is None and cont.deps == [base.id]
    assert cont.config.init_from == f"{base.config.out_dir}/checkpoints/tokens-{1024:012d}"
    assert cont.config.model_overrides == base.config.model_overrides == {"n_layer": 1}
    assert cont.model == base.model == "tiny-L1-D32" and pro.model == "tiny-L2-D32"
    assert cont.flops_per_token == base.flops_per_token < pro.flops_per_token
    assert cont.tokens > pro.tokens  # the same FLOPs on the smaller model: more tokens
    for r in (cont, pro):
        assert 2.5e9 - 256 * r.flops_per_token < r.flops <= 2.5e9
        assert r.config.data_dir == str(domain_data.resolve())
        assert r.config.eval_data_dirs == {"general": str(tiny_data.resolve())}
    assert base.config.data_dir == str(tiny_data.resolve())


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_report_reads_domain_gain_and_forgetting(tiny_data, domain_data, tmp_path):
    grid = write_grid(tmp_path / "domain.yaml", domain_data, domain_grid(tiny_data, domain_data))
    sweep_dir = tmp_path / "sweep"
    proc = run_sweep(grid, "--out", sweep_dir, "--jobs", "2", "--threads", "1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = pd.read_csv(sweep_dir / "results.csv")
    assert list(res.columns)[-2:] == ["final_val_loss_domain", "final_val_loss_general"]
    table = domain_table(load_sweep(sweep_dir))
    assert set(table["method"]) == {"llama_pro_new_only", "continued", "scratch"}
    assert (table["general"] == "general").all()
    base = res[res["kind"] == "base"].iloc[0]
    base_metrics = pd.read_csv(sweep_dir / base["run_dir"] / "metrics.csv")
    at_d = base_metrics[base_metrics["tokens"] == 1024].dropna(subset=["val_loss"]).iloc[-1]
    for _, r in table.iterrows():  # base at d: its own val_loss is the general set, val_loss_domain the domain
        assert r["general_base"] == pytest.approx(at_d["val_loss"])
        assert r["domain_base"] == pytest.approx(at_d["val_loss_domain"])
        row = res[res["run_id"] == r["run_id"]].iloc[0]
        assert r["domain_final"] == pytest.approx(row["final_val_loss"])
        assert r["general_final"] == pytest.approx(row["final_val_loss_general"])
        assert r["domain_gain"] == pytest.approx(r["domain_base"] - r["domain_final"])
        assert r["forgetting"] == pytest.approx(r["general_final"] - r["general_base"])
        assert np.isfinite(r[["domain_gain", "forgetting"]].astype(float)).all()
    # llama_pro's identity blocks: its first evaluation after growth is the base's at d, on both sets
    pro = res[res["run_id"].str.contains("llama_pro_new_only")].iloc[0]
    first = pd.read_csv(sweep_dir / pro["run_dir"] / "metrics.csv").iloc[0]
    assert first["val_loss"] == pytest.approx(at_d["val_loss_domain"], rel=1e-5)
    assert first["val_loss_general"] == pytest.approx(at_d["val_loss"], rel=1e-5)
    rep = write_report(sweep_dir, bootstrap=0)
    md = rep.path.read_text()
    assert "## Domain and general loss" in md and "| continued |" in md and "| llama_pro_new_only |" in md
    assert (rep.path.parent / "domain.csv").is_file() and (rep.path.parent / "figures" / "domain.png").is_file()
    assert json.loads((sweep_dir / "plan.json").read_text())  # the plan was written (sweep dir complete)
