"""G_random masks and parameter freezing, applied by the training module to a `litgpt.GPT` after loading the grown
weights (growth.json ``mask`` / ``trainable``; see docs/formats.md).

A mask is a scalar c ramping 0→1 over ``ramp_tokens`` of the new run (`ramp_value`). It is applied with forward
hooks, so the model class stays litgpt's own and checkpoints keep litgpt's key names:

* depth — for every new block, the outputs of its two residual branches are multiplied by c, through hooks on
  ``block.post_attention_norm`` / ``block.post_mlp_norm`` (``nn.Identity`` in Llama, and the last op of each
  branch in litgpt's Block.forward): ``Y = X + c·MHA(norm(X))``, ``Y = X + c·MLP(norm(X))``.
* width (MSG, Yao et al. 2024) — new residual dims of the embedding and of every branch output are multiplied by c,
  as are the inputs of ``attn.proj`` that come from new heads and the inputs of ``mlp.proj`` from new MLP units.
  RMSNorm statistics are mask-weighted, ``Σ m·x² / Σ m`` with m = 1 on old dims and c on new ones, so at c=0 every
  norm sees exactly the old dims. Hence at c=0 the output equals the base model's whatever the new weights hold.

At c >= 1 every hook returns immediately: the model is then exactly the plain grown model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stacking.errors import GrowthError


def ramp_value(tokens: int, ramp_tokens: int) -> float:
    """Linear 0→1 over ``ramp_tokens`` tokens of training; exactly 1.0 at and after it, and 1.0 if ramp_tokens == 0."""
    if ramp_tokens <= 0 or tokens >= ramp_tokens:
        return 1.0
    return max(0.0, tokens / ramp_tokens)


def _gate_last_dim(x: torch.Tensor, n_old: int, c: float) -> torch.Tensor:
    """[x_old, c·x_new] along the last dim (a new tensor; autograd-safe)."""
    return torch.cat([x[..., :n_old], x[..., n_old:] * c], dim=-1)


class GrowthMask:
    """The G_random mask of a grown model. Build it from growth.json's spec, attach it, then set c every step:

    >>> mask = GrowthMask.from_spec(growth["mask"]).attach(model)
    >>> mask.set_scale(ramp_value(tokens, growth["mask"]["ramp_tokens"]))
    """

    def __init__(
        self,
        direction: str,
        ramp_tokens: int,
        *,
        layers: list[int] | None = None,
        n_embd: int | None = None,
        n_head: int | None = None,
        intermediate_size: int | None = None,
    ):
        self.direction = direction
        self.ramp_tokens = int(ramp_tokens)
        self.layers = list(layers or [])
        self.n_embd, self.n_head, self.intermediate_size = n_embd, n_head, intermediate_size
        self.scale = 0.0
        self._handles: list[Any] = []

    @classmethod
    def from_spec(cls, spec: dict) -> GrowthMask:
        """From growth.json's ``mask``: depth ``{"direction": "depth", "ramp_tokens", "layers": [new block ids]}``;
        width ``{"direction": "width", "ramp_tokens", "n_embd", "n_head", "intermediate_size"}`` (the base sizes)."""
        if not isinstance(spec, dict):
            raise GrowthError(f"mask spec must be a dict (got {type(spec).__name__})")
        direction = spec.get("direction")
        if direction == "depth":
            need = ("ramp_tokens", "layers")
        elif direction == "width":
            need = ("ramp_tokens", "n_embd", "n_head", "intermediate_size")
        else:
            raise GrowthError(f"mask.direction must be 'depth' or 'width' (got {direction!r})")
        missing = [k for k in need if k not in spec]
        if missing:
            raise GrowthError(f"mask spec ({direction}) is missing {missing}")
        return cls(direction, **{k: spec[k] for k in need})

    def spec(self) -> dict:
        if self.direction == "depth":
            return {"direction": "depth", "ramp_tokens": self.ramp_tokens, "layers": self.layers}
        return {
            "direction": "width",
            "ramp_tokens": self.ramp_tokens,
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "intermediate_size": self.intermediate_size,
        }

    def set_scale(self, c: float) -> None:
        """Set the mask value c (0 = base model, 1 = full grown model)."""
        self.scale = float(c)

    # ---- hooks ---------------------------------------------------------------------------------------------
    def _scale_output(self, module, args, output):
        return None if self.scale >= 1.0 else output * self.scale

    def attach(self, model: nn.Module) -> GrowthMask:
        """Register the hooks on a `litgpt.GPT`; returns self. Call once; `detach` removes them."""
        if self._handles:
            raise GrowthError("mask is already attached; call detach() first")
        blocks = model.transformer.h
        if self.direction == "depth":
            bad = [i for i in self.layers if not 0 <= i < len(blocks)]
            if bad:
                raise GrowthError(f"mask.layers {bad} are not layers of this model (n_layer={len(blocks)})")
            for i in self.layers:
                for name in ("post_attention_norm", "post_mlp_norm"):
                    self._handles.append(getattr(blocks[i], name).register_forward_hook(self._scale_output))
            return self
        self._attach_width(model)
        return self

    def _attach_width(self, model: nn.Module) -> None:
        cfg = model.config
        d, hs = self.n_embd, cfg.head_size
        q_old, ffn_old = self.n_head * hs, self.intermediate_size
        if d > cfg.n_embd or self.n_head > cfg.n_head or ffn_old > cfg.intermediate_size:
            raise GrowthError(
                f"width mask base sizes (n_embd={d}, n_head={self.n_head}, intermediate_size="
                f"{ffn_old}) exceed the model's ({cfg.n_embd}, {cfg.n_head}, {cfg.intermediate_size})"
            )

        def gate_output(n_old):
            def hook(module, args, output):
                return None if self.scale >= 1.0 else _gate_last_dim(output, n_old, self.scale)

            return hook

        def gate_input(n_old):
            def hook(module, args):
                return None if self.scale >= 1.0 else (_gate_last_dim(args[0], n_old, self.scale), *args[1:])

            return hook

        def masked_rms_norm(module, args, output):
            if self.scale >= 1.0:
                return None
            x = args[0].float()
            c = self.scale
            sq = x * x
            mean_sq = (sq[..., :d].sum(-1, keepdim=True) + c * sq[..., d:].sum(-1, keepdim=True)) / (
                d + c * (x.shape[-1] - d)
            )
            weight = module.weight.float()
            if getattr(module, "add_unit_offset", False):
                weight = 1 + weight
            return (x * torch.rsqrt(mean_sq + module.eps) * weight).to(args[0].dtype)

        h = self._handles
        h.append(model.transformer.wte.register_forward_hook(gate_output(d)))
        h.append(model.transformer.ln_f.register_forward_hook(masked_rms_norm))
        for block in model.transformer.h:
            for norm in (block.norm_1, block.norm_2):
                if not hasattr(norm, "eps") or not hasattr(norm, "weight"):
                    raise GrowthError(f"width mask needs RMSNorm blocks (found {type(norm).__name__})")
                h.append(norm.register_forward_hook(masked_rms_norm))
            h.append(block.post_attention_norm.register_forward_hook(gate_output(d)))
            h.append(block.post_mlp_norm.register_forward_hook(gate_output(d)))
            h.append(block.attn.proj.register_forward_pre_hook(gate_input(q_old)))
            h.append(block.mlp.proj.register_forward_pre_hook(gate_input(ffn_old)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def apply_trainable(model: nn.Module, names: list[str]) -> int:
    """Freeze every parameter not in ``names`` (llama_pro train_new_only); return the number of trainable scalars."""
    params = dict(model.named_parameters())
    wanted = set(names)
    missing = sorted(wanted - params.keys())
    if missing:
        raise GrowthError(f"trainable names not in the model: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    count = 0
    for name, p in params.items():
        p.requires_grad_(name in wanted)
        count += p.numel() if name in wanted else 0
    return count
