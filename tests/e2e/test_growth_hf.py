"""HF round trip: a tiny random transformers Llama (GQA) -> import-hf -> llama_pro -> export-hf -> transformers,
logits unchanged. Sharded and unsharded safetensors, tied embeddings, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from stacking.growth import GrowthError, grow_checkpoint
from stacking.growth.cli import export_hf_main, import_hf_main
from stacking.growth.hf import export_hf, import_hf
from stacking.growth.io import load_checkpoint

pytestmark = pytest.mark.slow  # end to end: `make test-fast` (-m 'not slow') leaves it out


def tiny_llama(tmp_path, name="hf", tie=False, shard=None, seed=0):
    """A random GQA Llama saved with save_pretrained (safetensors; sharded when ``shard`` is given)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=56,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=50000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # non-trivial norms too, or a swapped norm would go unnoticed
        for n, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 if p.dim() > 1 else 0.5 + torch.rand_like(p))
    model.eval()
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(tmp_path / name, **kwargs)
    return model


def hf_logits(model, x):
    with torch.no_grad():
        return model(x).logits


X = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shard", [None, "20KB"], ids=["single", "sharded"])
def test_import_grow_export_round_trip(tmp_path, shard):
    original = tiny_llama(tmp_path, shard=shard)
    if shard:
        assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    import_hf(tmp_path / "hf", tmp_path / "lit")
    ckpt = load_checkpoint(tmp_path / "lit")
    assert (ckpt.config.n_query_groups, ckpt.config.rope_base, ckpt.config.padded_vocab_size) == (2, 50000, 96)
    grow_checkpoint(tmp_path / "lit", tmp_path / "grown", "llama_pro", g=2)
    export_hf(tmp_path / "grown", tmp_path / "hf2", max_shard_size=shard or "5GB")
    assert json.loads((tmp_path / "hf2" / "config.json").read_text())["num_hidden_layers"] == 4
    grown = AutoModelForCausalLM.from_pretrained(tmp_path / "hf2")
    assert grown.config.num_hidden_layers == 4
    torch.testing.assert_close(hf_logits(grown, X), hf_logits(original, X), rtol=1e-5, atol=1e-5)


def test_tied_embeddings_and_cli(tmp_path, capsys):
    original = tiny_llama(tmp_path, tie=True)
    assert import_hf_main([str(tmp_path / "hf"), str(tmp_path / "lit")]) == 0
    assert export_hf_main([str(tmp_path / "lit"), str(tmp_path / "hf2")]) == 0
    assert json.loads((tmp_path / "hf2" / "config.json").read_text())["tie_word_embeddings"] is True
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "hf2")
    torch.testing.assert_close(hf_logits(back, X), hf_logits(original, X), rtol=1e-5, atol=1e-5)
    # a growth op that unties nothing keeps the tie; G_stack changes the function, so only check it loads
    grow_checkpoint(tmp_path / "lit", tmp_path / "stacked", "G_stack", g=2)
    assert export_hf_main([str(tmp_path / "stacked"), str(tmp_path / "hf3")]) == 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "hf3").config.num_hidden_layers == 4


def test_refusals(tmp_path, capsys):
    tiny_llama(tmp_path)
    capsys.readouterr()  # transformers' progress bars
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["hidden_act"] = "gelu"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GrowthError, match="hidden_act='gelu'"):
        import_hf(tmp_path / "hf", tmp_path / "lit")
    assert import_hf_main([str(tmp_path / "hf"), str(tmp_path / "lit")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stacking import-hf: error: cannot import this HF model") and err.count("\n") == 1
    assert import_hf_main([str(tmp_path / "missing"), str(tmp_path / "lit")]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert not (tmp_path / "lit").exists()
