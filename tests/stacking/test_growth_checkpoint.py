"""Checkpoint-dir growth: the streaming writer, grow_checkpoint's output dir (growth.json, carried metadata,
atomicity), streaming == in-memory, the one-line errors for bad checkpoints, and the `stacking grow` CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
import yaml
from litgpt import GPT, Config

from stacking.growth import GrowthError, grow, grow_checkpoint, learn_flops
from stacking.growth import depth as depth_mod
from stacking.growth.cli import main
from stacking.growth.io import TensorFileWriter, release_pages, save_state_dict
from stacking.growth.masks import GrowthMask

LLAMA = dict(
    bias=False,
    norm_class_name="RMSNorm",
    mlp_class_name="LLaMAMLP",
    parallel_residual=False,
    rotary_percentage=1.0,
    block_size=16,
    vocab_size=50,
    padded_vocab_size=64,
    norm_eps=1e-5,
)


def make_config(**overrides) -> Config:
    return Config(
        name="test-ckpt",
        **{
            **LLAMA,
            "n_layer": 2,
            "n_embd": 32,
            "n_head": 4,
            "n_query_groups": 2,
            "head_size": 8,
            "intermediate_size": 40,
            **overrides,
        },
    )


def write_checkpoint(path, config=None, seed=0, meta=True):
    """A checkpoint dir as stacking train writes it: torch.save'd state dict, config YAML, stacking_meta.json."""
    config = config or make_config()
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 if p.dim() > 1 else 0.5 + torch.rand_like(p))
    path.mkdir(parents=True)
    torch.save(model.state_dict(), path / "lit_model.pth")
    (path / "model_config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    if meta:
        (path / "stacking_meta.json").write_text(
            json.dumps(
                {
                    "tokens": 12288,
                    "flops": 3.5e12,
                    "config_hash": "abc123",
                    "run_dir": "runs/base",
                    "model": "t",
                    "seed": seed,
                }
            )
        )
    return path


def load_dir(path):
    sd = torch.load(path / "lit_model.pth", weights_only=True, mmap=True)
    config = Config(**yaml.safe_load((path / "model_config.yaml").read_text()))
    model = GPT(config)
    model.load_state_dict(sd, strict=True)
    return sd, config, model


# ---- writer ----------------------------------------------------------------------------------------------------
def test_writer_round_trip(tmp_path):
    base = torch.randn(6, 5)
    tensors = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(7, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 3),
        "transposed": torch.randn(4, 3).t(),
        "scalar": torch.tensor(2.5),
        "row_view": base[2:4],
        "col_view": base[:, 1],
        "int": torch.arange(5),
    }
    save_state_dict(tensors, tmp_path / "a.pth")
    for mmap in (True, False):
        loaded = torch.load(tmp_path / "a.pth", weights_only=True, mmap=mmap)
        assert list(loaded) == list(tensors)
        for k, t in tensors.items():
            assert loaded[k].dtype == t.dtype and torch.equal(loaded[k], t), k
    # a writer that fails part-way leaves a file torch refuses rather than a silently short state dict
    with pytest.raises(RuntimeError, match="boom"), TensorFileWriter(tmp_path / "b.pth") as w:
        w.add("x", torch.ones(3))
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        torch.load(tmp_path / "b.pth", weights_only=True)


def test_release_pages_only_forgets_file_backed_pages(tmp_path):
    heap = torch.randn(300_000)
    expected = heap.clone()
    release_pages(heap)  # anonymous memory: must be left alone (MADV_DONTNEED would zero it)
    assert torch.equal(heap, expected)
    save_state_dict({"w": heap}, tmp_path / "w.pth")
    mapped = torch.load(tmp_path / "w.pth", weights_only=True, mmap=True)["w"]
    assert torch.equal(mapped, expected)
    release_pages(mapped)  # file-backed: pages are dropped and re-read from the file on the next touch
    assert torch.equal(mapped, expected)


# ---- grow_checkpoint -------------------------------------------------------------------------------------------
def test_grow_checkpoint_dir_contents(tmp_path):
    src = write_checkpoint(tmp_path / "base")
    dst = grow_checkpoint(src, tmp_path / "grown", "G_random", g=2, seed=4, ramp_tokens=5000)
    assert sorted(p.name for p in dst.iterdir()) == [
        "growth.json",
        "lit_model.pth",
        "model_config.yaml",
        "stacking_meta.json",
    ]
    assert (dst / "stacking_meta.json").read_bytes() == (src / "stacking_meta.json").read_bytes()
    record = json.loads((dst / "growth.json").read_text())
    assert record == {
        "op": "G_random",
        "direction": "depth",
        "g": 2,
        "seed": 4,
        "options": {"ramp_tokens": 5000},
        "source_dir": str(src.resolve()),
        "source_sha256": hashlib.sha256((src / "lit_model.pth").read_bytes()).hexdigest(),
        "mask": {"direction": "depth", "ramp_tokens": 5000, "layers": [2, 3]},
        "trainable": None,
        "extra_flops": 0.0,
    }
    _, config, model = load_dir(dst)
    assert config.n_layer == 4
    # the recorded mask makes the grown model the base model at c = 0
    _, _, base = load_dir(src)
    x = torch.randint(0, 50, (2, 10))
    GrowthMask.from_spec(record["mask"]).attach(model).set_scale(0.0)
    with torch.no_grad():
        assert torch.allclose(model(x), base(x), rtol=0, atol=1e-5)
    assert not list(tmp_path.glob(".grown.tmp-*"))


STREAMED = [
    ("G_stack", {}),
    ("G_direct", {}),
    ("interpolate", {}),
    ("G_zero", {}),
    ("G_random", {}),
    ("llama_pro", {"groups": 1, "train_new_only": True}),
    ("solar_dus", {"m": 1}),
    ("G_stack", {"layers": [1, 0, 1]}),
]


@pytest.mark.parametrize("op,opts", STREAMED, ids=[f"{o}-{i}" for i, (o, _) in enumerate(STREAMED)])
def test_streaming_equals_in_memory(tmp_path, op, opts):
    src = write_checkpoint(tmp_path / "base")
    dst = grow_checkpoint(src, tmp_path / "grown", op, g=2, seed=7, **opts)
    sd, config, _ = load_dir(dst)
    base_sd = torch.load(src / "lit_model.pth", weights_only=True)
    res = grow(base_sd, make_config(), op, g=2, seed=7, return_info=True, **opts)
    assert asdict(config) == asdict(res.config)
    assert list(sd) == list(GPT(config).state_dict())  # litgpt's own key order
    assert all(torch.equal(sd[k], res.state_dict[k]) for k in res.state_dict)
    record = json.loads((dst / "growth.json").read_text())
    assert record["trainable"] == res.trainable and record["mask"] == res.mask


def test_width_and_trainable_records(tmp_path):
    src = write_checkpoint(tmp_path / "base", meta=False)
    dst = grow_checkpoint(src, tmp_path / "wide", "G_random", direction="width", g=2, ramp_tokens=10)
    assert not (dst / "stacking_meta.json").exists()
    record = json.loads((dst / "growth.json").read_text())
    assert record["mask"] == {
        "direction": "width",
        "ramp_tokens": 10,
        "n_embd": 32,
        "n_head": 4,
        "intermediate_size": 40,
    }
    assert load_dir(dst)[1].n_embd == 64
    # llama_pro 2 -> 3 layers: one group [0, 1], then a zeroed copy of its top block: [0, 1, 1']
    dst = grow_checkpoint(src, tmp_path / "pro", "llama_pro", g=1.5, groups=1, train_new_only=True)
    record = json.loads((dst / "growth.json").read_text())
    assert record["g"] == 1.5 and record["options"] == {"groups": 1, "copies": 1, "train_new_only": True}
    sd, config, _ = load_dir(dst)
    assert config.n_layer == 3 and not sd["transformer.h.2.mlp.proj.weight"].any()
    assert record["trainable"] == [k for k in sd if k.startswith("transformer.h.2.")]


def test_extra_flops_and_split_records(tmp_path):
    """growth.json: extra_flops is G_learn's map training (learn_flops of the two configs), 0.0 for every other op;
    G_direct width records its split."""
    data = tmp_path / "tokens"
    data.mkdir()
    np.tile(np.arange(20, dtype=np.uint16), 50).tofile(data / "train.bin")
    (data / "meta.json").write_text(json.dumps({"vocab_size": 50, "dtype": "uint16"}))
    src = write_checkpoint(tmp_path / "base")
    dst = grow_checkpoint(src, tmp_path / "ligo", "G_learn", data=str(data), learn_steps=2, batch_size=2)
    record = json.loads((dst / "growth.json").read_text())
    config = load_dir(dst)[1]
    assert record["options"]["learn_steps"] == 2 and record["options"]["seq_len"] == 16
    assert record["extra_flops"] == learn_flops(config, make_config(), learn_steps=2, batch_size=2, seq_len=16) > 0
    dst = grow_checkpoint(src, tmp_path / "wide", "G_direct", direction="width", seed=3)
    record = json.loads((dst / "growth.json").read_text())
    assert record["options"] == {"symmetric": False} and record["extra_flops"] == 0.0
    dst = grow_checkpoint(src, tmp_path / "wide_sym", "G_direct", direction="width", symmetric=True)
    assert json.loads((dst / "growth.json").read_text())["options"] == {"symmetric": True}


def test_growth_failure_leaves_no_output(tmp_path, monkeypatch):
    src = write_checkpoint(tmp_path / "base")

    def failing(plan, state_dict, src_config, writer):
        writer.add("transformer.wte.weight", state_dict["transformer.wte.weight"])
        raise OSError("disk full")

    monkeypatch.setattr(depth_mod, "stream_plan", failing)
    with pytest.raises(OSError, match="disk full"):
        grow_checkpoint(src, tmp_path / "grown", "G_stack", g=2)
    assert not (tmp_path / "grown").exists()
    assert not list(tmp_path.glob(".grown.tmp-*"))


def test_checkpoint_errors(tmp_path):
    src = write_checkpoint(tmp_path / "base")
    with pytest.raises(GrowthError, match="does not exist"):
        grow_checkpoint(tmp_path / "nope", tmp_path / "out", "G_stack")
    # output dir exists and is not empty: refused before any work
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(GrowthError, match="already exists and is not empty"):
        grow_checkpoint(src, tmp_path / "busy", "G_stack")
    assert (tmp_path / "busy" / "x").read_text() == "keep me"
    # keys not matching model_config.yaml
    bad = write_checkpoint(tmp_path / "bad")
    (bad / "model_config.yaml").write_text(yaml.safe_dump(asdict(make_config(n_layer=3))))
    with pytest.raises(GrowthError, match=r"does not match its model config .*missing: transformer\.h\.2"):
        grow_checkpoint(bad, tmp_path / "out", "G_stack")
    # truncated weights
    trunc = write_checkpoint(tmp_path / "trunc")
    data = (trunc / "lit_model.pth").read_bytes()
    (trunc / "lit_model.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(GrowthError, match="truncated or corrupt"):
        grow_checkpoint(trunc, tmp_path / "out", "G_stack")
    # missing files
    (trunc / "lit_model.pth").unlink()
    with pytest.raises(GrowthError, match="do not exist"):
        grow_checkpoint(trunc, tmp_path / "out", "G_stack")
    (src / "model_config.yaml").rename(src / "other.yaml")
    with pytest.raises(GrowthError, match="has no model_config.yaml"):
        grow_checkpoint(src, tmp_path / "out", "G_stack")
    assert not (tmp_path / "out").exists()


# ---- CLI -------------------------------------------------------------------------------------------------------
def test_cli_grow_and_errors(tmp_path, capsys):
    src = write_checkpoint(tmp_path / "base")
    assert (
        main([str(src), str(tmp_path / "g1"), "--op", "llama_pro", "--g", "2", "--groups", "1", "--train-new-only"])
        == 0
    )
    record = json.loads((tmp_path / "g1" / "growth.json").read_text())
    assert record["options"] == {"groups": 1, "copies": 2, "train_new_only": True}
    assert "n_layer 2->4" in capsys.readouterr().out

    target = tmp_path / "target.yaml"
    target.write_text(yaml.safe_dump(asdict(make_config(n_embd=64, n_head=8, n_query_groups=4, intermediate_size=80))))
    assert main([str(src), str(tmp_path / "g2"), "--op", "G_direct", "--direction", "width", "--to", str(target)]) == 0
    assert load_dir(tmp_path / "g2")[1].n_embd == 64
    assert main([str(src), str(tmp_path / "g3"), "--op", "G_direct", "--direction", "width", "--symmetric"]) == 0
    assert json.loads((tmp_path / "g3" / "growth.json").read_text())["options"] == {"symmetric": True}

    for argv, expected in [
        ([str(src), str(tmp_path / "e1"), "--op", "solar_dus", "--m", "2"], "m must be an integer in 0..1"),
        ([str(src), str(tmp_path / "e2"), "--op", "G_stack", "--g", "1.5"], "g must be an integer"),
        ([str(src), str(tmp_path / "e3"), "--op", "interpolate", "--m", "1"], "--m not used by interpolate"),
        ([str(tmp_path / "nope"), str(tmp_path / "e4"), "--op", "G_stack"], "does not exist"),
        ([str(src), str(tmp_path / "e5"), "--op", "G_zero", "--g", "2", "--to", str(target)], "either --g or --to"),
        ([str(src), str(tmp_path / "e7"), "--op", "G_stack", "--symmetric"], "--symmetric not used by G_stack"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("stacking grow: error: ") and expected in err and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert main([str(src), str(tmp_path / "e6"), "--op", "G_bogus"]) == 2  # argparse choices
    assert "invalid choice" in capsys.readouterr().err
    assert not any((tmp_path / f"e{i}").exists() for i in range(1, 8))


def test_cli_help_documents_every_op_and_option(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in (
        "G_stack",
        "G_direct",
        "interpolate",
        "G_zero",
        "G_random",
        "G_learn",
        "llama_pro",
        "solar_dus",
        "--layers",
        "--order",
        "--ramp-tokens",
        "--learn-steps",
        "--data",
        "--seq-len",
        "--batch-size",
        "--lr",
        "--groups",
        "--copies",
        "--train-new-only",
        "--m",
        "--to",
        "--seed",
        "--direction",
        "--symmetric",
    ):
        assert word in text, word


def test_cli_to_preset(tmp_path):
    from stacking.models import model_config

    base = model_config("tiny-L2-D64", vocab_size=50, block_size=16)
    src = write_checkpoint(tmp_path / "base", config=base)
    assert main([str(src), str(tmp_path / "grown"), "--op", "G_stack", "--to", "tiny-L4-D64"]) == 0
    config = load_dir(tmp_path / "grown")[1]
    assert (config.n_layer, config.name, config.padded_vocab_size) == (4, "tiny-L4-D64", base.padded_vocab_size)
