"""Fair controls (issue 10): fresh data after growth, cooldown branches equal standalone WSD runs, a grown run built
from its checkpoint's config, the init option, and run identity by data content."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_run_config

from stacking.checkpoint import load_litgpt_checkpoint
from stacking.config import config_hash
from stacking.data import TokenDataModule
from stacking.errors import RunError
from stacking.growth import grow_checkpoint
from stacking.train import data_stream, run, stream_start


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def first_batch(cfg, stream, start):
    dm = TokenDataModule(cfg.data_dir, cfg.seq_len, cfg.micro_batch_size, stream["seed"], cfg.val_tokens)
    dm.start_micro_batch = start
    x, _ = next(iter(dm.train_dataloader()))
    return x


@pytest.fixture(scope="module")
def base_run(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    cfg = tiny_run_config(
        tmp, tiny_data, out_dir=str(tmp / "base"), max_tokens=2048, save_at_tokens=[1024], schedule="constant"
    )
    run(cfg)
    return cfg, tmp / "base" / "checkpoints" / "tokens-000000001024"


def test_grown_run_continues_the_base_stream(base_run, tmp_path):
    base_cfg, ckpt = base_run
    grown_dir = grow_checkpoint(ckpt, tmp_path / "grown", "G_stack", g=2)
    _, _, meta, _ = load_litgpt_checkpoint(grown_dir)
    assert meta["data"] == {"seed": 0, "micro_batch_size": 4, "seq_len": 32, "micro_batches": 1024 // (4 * 32)}

    grown_cfg = tiny_run_config(tmp_path, base_cfg.data_dir, model="tiny-L4-D64", init_from=str(grown_dir))
    stream = data_stream(grown_cfg, meta)
    grown_first = first_batch(grown_cfg, stream, stream_start(stream, grown_cfg, 1))
    base_stream = data_stream(base_cfg, {})
    base_at_d = first_batch(base_cfg, base_stream, 1024 // (4 * 32))
    base_first = first_batch(base_cfg, base_stream, 0)
    assert torch.equal(grown_first, base_at_d)
    assert not torch.equal(grown_first, base_first)

    replay = tiny_run_config(
        tmp_path, base_cfg.data_dir, model="tiny-L4-D64", init_from=str(grown_dir), data_stream="replay"
    )
    rs = data_stream(replay, meta)
    assert torch.equal(first_batch(replay, rs, stream_start(rs, replay, 1)), base_first)

    bad = tiny_run_config(
        tmp_path,
        base_cfg.data_dir,
        model="tiny-L4-D64",
        init_from=str(grown_dir),
        micro_batch_size=8,
        global_batch_tokens=256,
    )
    with pytest.raises(RunError, match="data_stream: continue needs the parent's micro_batch_size = 4"):
        data_stream(bad, meta)
    with pytest.raises(RunError, match="not divisible by world size 3"):
        stream_start(stream, grown_cfg, 3)

    # the grown run trains, records its validation windows, and its checkpoints record the continued position
    summary = run(
        tiny_run_config(
            tmp_path,
            base_cfg.data_dir,
            model="tiny-L4-D64",
            init_from=str(grown_dir),
            out_dir=str(tmp_path / "grown_run"),
            max_tokens=1024,
        )
    )
    assert summary["status"] == "done"
    windows = json.loads((tmp_path / "grown_run" / "val_windows.json").read_text())
    assert windows["n_windows"] == 2048 // 32 == len(windows["offsets"])
    assert windows == json.loads((Path(base_cfg.out_dir) / "val_windows.json").read_text())  # same windows
    _, _, end_meta, _ = load_litgpt_checkpoint(tmp_path / "grown_run" / "checkpoints" / "tokens-000000001024")
    assert end_meta["data"]["micro_batches"] == 2 * 1024 // (4 * 32)


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_cooldown_branch_equals_a_standalone_wsd_run(tiny_data, tmp_path):
    main = tiny_run_config(
        tmp_path,
        tiny_data,
        out_dir=str(tmp_path / "main"),
        schedule="constant",
        max_tokens=4096,
        save_state_at_tokens=[2560],
    )
    run(main)
    state = tmp_path / "main" / "states" / "tokens-000000002560.ckpt"
    assert state.is_file()
    branch = tiny_run_config(
        tmp_path,
        tiny_data,
        out_dir=str(tmp_path / "branch"),
        schedule="wsd",
        max_tokens=3584,
        decay_tokens=1024,
        branch_from=str(state),
    )
    s = run(branch)
    assert s["status"] == "done" and s["tokens"] == 3584
    alone = tiny_run_config(
        tmp_path, tiny_data, out_dir=str(tmp_path / "alone"), schedule="wsd", max_tokens=3584, decay_tokens=1024
    )
    a = run(alone)
    b_rows, a_rows = rows(tmp_path / "branch" / "metrics.csv"), rows(tmp_path / "alone" / "metrics.csv")
    assert int(b_rows[0]["tokens"]) == 2560 + 256  # the branch's own rows start after the branch point
    tail = [r for r in a_rows if int(r["tokens"]) > 2560]
    assert [r["tokens"] for r in b_rows] == [r["tokens"] for r in tail]
    for rb, ra in zip(b_rows, tail):
        assert float(rb["lr"]) == pytest.approx(float(ra["lr"]), rel=1e-9)
        assert float(rb["train_loss"]) == pytest.approx(float(ra["train_loss"]), abs=1e-5)
    assert float(b_rows[-1]["lr"]) == pytest.approx(branch.min_lr)
    assert s["final_val_loss"] == pytest.approx(a["final_val_loss"], abs=1e-5)
    assert s["flops"] == pytest.approx(a["flops"])
    # throughput counts the branch's own 1,024 tokens, not the main run's 2,560 before the branch point
    assert s["start_tokens"] == 2560 and a["start_tokens"] == 0
    assert s["tokens_per_s"] == pytest.approx((3584 - 2560) / s["wall_time_s"], rel=1e-6)

    missing = tiny_run_config(
        tmp_path,
        tiny_data,
        out_dir=str(tmp_path / "b2"),
        schedule="wsd",
        max_tokens=3584,
        decay_tokens=1024,
        branch_from=str(tmp_path / "nope.ckpt"),
    )
    with pytest.raises(RunError, match="branch_from .* does not exist"):
        run(missing)
    with pytest.raises(RunError, match="save_state_at_tokens entry 8192 must be"):
        run(
            tiny_run_config(
                tmp_path, tiny_data, out_dir=str(tmp_path / "b3"), save_state_at_tokens=[8192], max_tokens=4096
            )
        )


def test_width_growth_runs_through_train_with_the_checkpoint_config(base_run, tmp_path):
    base_cfg, ckpt = base_run
    grown = grow_checkpoint(ckpt, tmp_path / "gz", "G_zero", direction="width", g=2)
    _, gcfg, _, _ = load_litgpt_checkpoint(grown)
    base_loss = next(r for r in rows(base_cfg.out_dir + "/metrics.csv") if int(r["tokens"]) == 1024)["val_loss"]
    s = run(
        tiny_run_config(
            tmp_path,
            base_cfg.data_dir,
            model="tiny-L2-D128",
            init_from=str(grown),
            out_dir=str(tmp_path / "gzrun"),
            max_tokens=512,
        )
    )
    assert s["status"] == "done"
    first = rows(tmp_path / "gzrun" / "metrics.csv")[0]
    assert float(first["val_loss"]) == pytest.approx(float(base_loss), abs=1e-4)  # exact growth, exact config
    assert json.loads((tmp_path / "gzrun" / "model.json").read_text())["params_total"] > 0
    with pytest.raises(RunError, match="different shape than model 'tiny-L4-D64' in n_layer"):
        run(
            tiny_run_config(
                tmp_path, base_cfg.data_dir, model="tiny-L4-D64", init_from=str(grown), out_dir=str(tmp_path / "bad")
            )
        )
    assert gcfg.n_embd == 128


def test_init_option(tiny_data, tmp_path):
    from stacking.config import resolve_model
    from stacking.module import GPTModule

    cfg = tiny_run_config(tmp_path, tiny_data, init="torch_default")
    mc, _ = resolve_model(cfg)
    emb = GPTModule(cfg, mc, 1.0).model.transformer.wte.weight
    assert 0.9 < emb.std().item() < 1.1  # nn.Embedding's N(0, 1)
    tl = GPTModule(tiny_run_config(tmp_path, tiny_data), mc, 1.0).model.transformer.wte.weight
    assert tl.std().item() == pytest.approx((2 / (5 * 64)) ** 0.5, rel=0.1)
    assert config_hash(cfg) != config_hash(tiny_run_config(tmp_path, tiny_data))
    with pytest.raises(RunError, match="init must be tinyllama or torch_default"):
        run(tiny_run_config(tmp_path, tiny_data, init="xavier"))


def test_run_identity_follows_data_content_not_path(tiny_data, tmp_path):
    copy = tmp_path / "elsewhere" / "ds"
    shutil.copytree(tiny_data, copy)
    assert config_hash(tiny_run_config(tmp_path, tiny_data)) == config_hash(tiny_run_config(tmp_path, copy))
    meta = json.loads((copy / "meta.json").read_text())
    meta["train_tokens"] += 1
    (copy / "meta.json").write_text(json.dumps(meta))
    assert config_hash(tiny_run_config(tmp_path, tiny_data)) != config_hash(tiny_run_config(tmp_path, copy))
