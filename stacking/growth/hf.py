"""Hugging Face Llama checkpoints <-> litgpt checkpoint dirs, so a released model can be grown and handed back.

The tensor renaming is litgpt's own (`convert_hf_checkpoint.copy_weights_hf_llama`,
`convert_lit_checkpoint.copy_weights_llama`: q/k/v are fused as ``[all Q | all K | all V]``, no permutation
since both use rotate-half RoPE). What is ours: building the litgpt Config from config.json (litgpt only knows its
own zoo by name), the reverse config.json, and streaming — import writes each tensor as soon as litgpt's converter
produces it, export writes safetensors shard by shard, so neither holds the whole model.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from litgpt import Config
from litgpt.scripts.convert_hf_checkpoint import copy_weights_hf_llama
from litgpt.scripts.convert_lit_checkpoint import copy_weights_llama
from safetensors import safe_open
from safetensors.torch import save_file

from stacking.checkpoint import CONFIG, WEIGHTS, check_state_dict, load_checkpoint, load_weights
from stacking.checkpoint import save_model_config as save_config
from stacking.errors import GrowthError
from stacking.fsutil import atomic_dir
from stacking.growth.io import check_new_dir
from stacking.growth.tensorfile import TensorFileWriter, release_pages

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
DEFAULT_SHARD_BYTES = 5 * 2**30


# ---- config.json <-> litgpt.Config -----------------------------------------------------------------------------
def config_from_hf(hf: dict, name: str = "hf-llama") -> Config:
    """A litgpt Config for an HF Llama config.json (GQA, tied or untied embeddings, default or llama3 RoPE)."""
    problems = []
    if hf.get("model_type") not in ("llama", "mistral"):
        problems.append(f"model_type={hf.get('model_type')!r} (supported: 'llama', 'mistral')")
    if hf.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={hf.get('hidden_act')!r}")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        problems.append("attention_bias/mlp_bias=true")
    if hf.get("sliding_window") and hf.get("model_type") == "mistral":
        problems.append(f"sliding_window={hf['sliding_window']}")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    rope_theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
    adjustments = None
    if rope_type == "llama3":
        adjustments = {
            "factor": rope["factor"],
            "low_freq_factor": rope["low_freq_factor"],
            "high_freq_factor": rope["high_freq_factor"],
            "original_max_seq_len": rope["original_max_position_embeddings"],
        }
    elif rope_type != "default":
        problems.append(f"rope_type={rope_type!r} (supported: default, llama3)")
    if problems:
        raise GrowthError(f"cannot import this HF model: unsupported {', '.join(problems)}")
    n_head = hf["num_attention_heads"]
    return Config(
        name=name,
        block_size=hf.get("max_position_embeddings", 4096),
        n_layer=hf["num_hidden_layers"],
        n_embd=hf["hidden_size"],
        n_head=n_head,
        n_query_groups=hf.get("num_key_value_heads") or n_head,
        head_size=hf.get("head_dim") or hf["hidden_size"] // n_head,
        intermediate_size=hf["intermediate_size"],
        vocab_size=hf["vocab_size"],
        padded_vocab_size=hf["vocab_size"],  # the embedding has exactly vocab_size rows
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_base=int(rope_theta) if float(rope_theta).is_integer() else rope_theta,
        rope_adjustments=adjustments,
        bias=False,
        norm_class_name="RMSNorm",
        mlp_class_name="LLaMAMLP",
        parallel_residual=False,
        rotary_percentage=1.0,
    )


def config_to_hf(config: Config, *, tied: bool, dtype: torch.dtype) -> dict:
    """config.json for a Llama-style litgpt Config (refuses configs a LlamaForCausalLM cannot express)."""
    problems = [
        f"{k}={getattr(config, k)!r}"
        for k, ok in (
            ("norm_class_name", config.norm_class_name == "RMSNorm"),
            ("mlp_class_name", config.mlp_class_name == "LLaMAMLP"),
            ("bias", not config.bias and not config.attn_bias and not config.lm_head_bias),
            ("parallel_residual", not config.parallel_residual),
            ("rotary_percentage", config.rotary_percentage == 1.0),
            ("norm_qk", not config.norm_qk),
            ("post_attention_norm", not config.post_attention_norm and not config.post_mlp_norm),
            ("scale_embeddings", not config.scale_embeddings),
            ("sliding_window_size", config.sliding_window_size is None),
            (
                "attention_logit_softcapping",
                config.attention_logit_softcapping is None and config.final_logit_softcapping is None,
            ),
            ("attention_scores_scalar", config.attention_scores_scalar is None),
            ("rope_interleave", not config.rope_interleave),
            ("rope_condense_ratio", config.rope_condense_ratio == 1),
            ("n_expert", config.n_expert == 0),
        )
        if not ok
    ]
    adj = config.rope_adjustments
    if adj and set(adj) != {"factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len"}:
        problems.append(f"rope_adjustments={adj!r}")
    if problems:
        raise GrowthError(f"cannot export to HF Llama: unsupported {', '.join(problems)}")
    rope = {"rope_theta": float(config.rope_base), "rope_type": "default"}
    if adj:
        rope.update(
            rope_type="llama3",
            factor=adj["factor"],
            low_freq_factor=adj["low_freq_factor"],
            high_freq_factor=adj["high_freq_factor"],
            original_max_position_embeddings=adj["original_max_seq_len"],
        )
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.n_embd,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_query_groups,
        "head_dim": config.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        # transformers >= 5 reads rope_parameters; older versions read rope_theta / rope_scaling
        "rope_theta": float(config.rope_base),
        "rope_parameters": rope,
        **({"rope_scaling": rope} if adj else {}),
        "vocab_size": config.padded_vocab_size,  # the embedding matrix has the padded number of rows
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


# ---- import ----------------------------------------------------------------------------------------------------
class _LazyTensor:
    """Looks like litgpt's not-yet-loaded tensor (`load_param` calls ``_load_tensor``): read on demand."""

    def __init__(self, load):
        self._load = load

    def _load_tensor(self) -> torch.Tensor:
        return self._load()


class _WritingDict(dict):
    """A state dict that writes every tensor to the file the moment a converter stores it, keeping only a record.
    (litgpt's converter keeps the fused qkv tensors otherwise; for a 7B MHA model that is ~3 GB.)"""

    def __init__(self, writer: TensorFileWriter):
        super().__init__()
        self.writer = writer

    def __setitem__(self, key, value):
        if isinstance(value, torch.Tensor):
            value = self.writer.store_early(value)
        super().__setitem__(key, value)


def _hf_weights(hf_dir: Path, dtype: torch.dtype | None) -> dict[str, _LazyTensor]:
    """Every tensor of a HF checkpoint (sharded or not; safetensors or .bin), lazily."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({hf_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(hf_dir.glob("*.safetensors")) or sorted(hf_dir.glob("pytorch_model*.bin"))
    if not files:
        raise GrowthError(f"HF dir {str(hf_dir)!r} has no *.safetensors or pytorch_model*.bin weights")
    weights: dict[str, _LazyTensor] = {}
    for path in files:
        if not path.is_file():
            raise GrowthError(f"{path} is listed in model.safetensors.index.json but missing")
        if path.suffix == ".safetensors":
            handle = safe_open(str(path), framework="pt")
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                weights[name] = _LazyTensor(lambda h=handle, n=name: _cast(h.get_tensor(n), dtype))
        else:
            sd = load_weights(path)
            for name, t in sd.items():
                weights[name] = _LazyTensor(lambda t=t: _cast(t, dtype))
    return weights


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return t if dtype is None else t.to(dtype)


def import_hf(hf_dir, lit_dir, *, dtype: torch.dtype | None = None) -> Path:
    """HF Llama dir (config.json + safetensors) -> litgpt checkpoint dir (lit_model.pth + model_config.yaml)."""
    hf_dir, lit_dir = Path(hf_dir), check_new_dir(lit_dir)
    if not (hf_dir / "config.json").is_file():
        raise GrowthError(f"HF dir {str(hf_dir)!r} has no config.json")
    config = config_from_hf(json.loads((hf_dir / "config.json").read_text()), name=hf_dir.resolve().name)
    hf_weights = _hf_weights(hf_dir, dtype)
    # litgpt's converter loads q/k/v as it meets them and fuses them only at the end of its call, and sets a missing
    # lm_head to wte at the end of every call. So call it once for the non-layer tensors (wte first, so the tie
    # works), then once per layer: memory stays at one layer however the shards are cut.
    groups: dict[int, dict[str, _LazyTensor]] = {}
    for name, lazy in hf_weights.items():
        m = re.match(r"^model\.layers\.(\d+)\.", name)
        groups.setdefault(int(m[1]) if m else -1, {})[name] = lazy
    with atomic_dir(lit_dir) as tmp:
        with TensorFileWriter(tmp / WEIGHTS) as writer:
            state = _WritingDict(writer)
            for idx in sorted(groups):
                try:
                    copy_weights_hf_llama(config, {}, state, groups[idx])
                except KeyError as e:
                    raise GrowthError(
                        f"HF checkpoint has a tensor litgpt's Llama converter does not map: {e} "
                        f"(or lacks model.embed_tokens.weight)"
                    ) from None
            writer.save(dict(state))
        check_state_dict(load_weights(tmp / WEIGHTS), config, where=f"weights converted from {hf_dir}")
        save_config(config, tmp / CONFIG)
        for name in TOKENIZER_FILES:
            if (hf_dir / name).is_file():
                shutil.copyfile(hf_dir / name, tmp / name)
    return lit_dir


# ---- export ----------------------------------------------------------------------------------------------------
def _parse_size(size) -> int:
    """Bytes from an int or a string like '5GB' / '500MB' / '20KB'."""
    if isinstance(size, int):
        return size
    s = str(size).strip().upper()
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10), ("B", 1)):
        if s.endswith(unit):
            try:
                return int(float(s[: -len(unit)]) * factor)
            except ValueError:
                break
    raise GrowthError(f"max_shard_size must be bytes or like '5GB', '500MB' (got {size!r})")


def export_hf(lit_dir, hf_dir, *, max_shard_size=DEFAULT_SHARD_BYTES, dtype: torch.dtype | None = None) -> Path:
    """litgpt checkpoint dir -> HF Llama dir (config.json + model.safetensors, sharded above ``max_shard_size``)."""
    limit = _parse_size(max_shard_size)
    hf_dir = check_new_dir(hf_dir)
    ckpt = load_checkpoint(lit_dir)
    sd = ckpt.state_dict
    tied = torch.equal(sd["transformer.wte.weight"], sd["lm_head.weight"])
    out_dtype = dtype or sd["transformer.wte.weight"].dtype
    hf_config = config_to_hf(ckpt.config, tied=tied, dtype=out_dtype)
    hf_sd: dict[str, torch.Tensor] = {}
    copy_weights_llama(ckpt.config, hf_sd, sd, untie_weights=tied)  # untie_weights=True skips lm_head

    shards: list[list[str]] = [[]]  # greedy packing in converter order
    size = 0
    for name, t in hf_sd.items():
        nbytes = t.numel() * out_dtype.itemsize
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    n = len(shards)
    names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    with atomic_dir(hf_dir) as tmp:
        weight_map = {}
        for file_name, keys in zip(names, shards):
            # clone: q/k/v are views of one fused tensor, and safetensors refuses tensors that share memory
            tensors = {k: hf_sd[k].to(out_dtype).contiguous().clone() for k in keys}
            save_file(tensors, str(tmp / file_name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(keys, file_name))
            del tensors
            for k in keys:
                release_pages(hf_sd[k])
        if n > 1:
            total = sum(hf_sd[k].numel() * out_dtype.itemsize for k in hf_sd)
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
            )
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=1))
        for name in TOKENIZER_FILES:
            if (ckpt.path / name).is_file():
                shutil.copyfile(ckpt.path / name, tmp / name)
    return Path(hf_dir)
