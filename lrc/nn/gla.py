"""Gated Linear Attention's layer (Yang et al. 2024) over the zoo's `gla` spec, with fla's
`GatedLinearAttention` constructor arguments and parameter names (q_proj, k_proj, v_proj,
g_proj, gk_proj, o_proj, g_norm_swish_gate or g_norm, q/k/v_conv1d), so an fla state dict
loads unchanged.

    q, k, v = proj(x) (short conv + silu optional);  gk = logsigmoid(gk_proj(x)) / 16
    o = GLA(q / sqrt(d_k), k, v, gk);  out = o_proj(rmsnorm(o) * swish(g_proj(x)))
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import gla as zoo_gla
from .common import Cache, DecodeBlock, GatedRMSNorm, RMSNorm, causal_conv, conv_step, conv_window

GATE_FNS = {"swish": F.silu, "silu": F.silu, "sigmoid": torch.sigmoid, "relu": F.relu,
            "gelu": F.gelu}


class GatedLinearAttention(DecodeBlock):
    """fla's `GatedLinearAttention` layer: (b, t, hidden_size) -> (b, t, hidden_size).

    `mode` is accepted for compatibility (lrc's plan picks the lowering); feature maps are
    not supported (a clear error). forward returns the output only (fla returns a triple)."""

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, expand_k: float = 0.5,
                 expand_v: float = 1.0, num_heads: int = 4, num_kv_heads: int | None = None,
                 feature_map: str | None = None, use_short_conv: bool = False,
                 conv_size: int = 4, conv_bias: bool = False, use_output_gate: bool = True,
                 gate_fn: str = "swish", elementwise_affine: bool | None = True,
                 norm_eps: float = 1e-5, gate_logit_normalizer: int = 16,
                 gate_low_rank_dim: int = 16, clamp_min: float | None = None,
                 fuse_norm: bool = True, layer_idx: int | None = None,
                 backend: str = "auto"):
        super().__init__()
        if feature_map is not None:
            raise NotImplementedError("GatedLinearAttention: feature_map is not supported")
        if gate_fn not in GATE_FNS:
            raise ValueError(f"GatedLinearAttention: gate_fn {gate_fn!r}; one of "
                             f"{sorted(GATE_FNS)}")
        self.mode, self.hidden_size, self.num_heads = mode, hidden_size, num_heads
        self.num_kv_heads = num_kv_heads if num_kv_heads is not None else num_heads
        self.num_kv_groups = num_heads // self.num_kv_heads
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.use_output_gate, self.clamp_min = use_output_gate, clamp_min
        self.gate_logit_normalizer, self.layer_idx = gate_logit_normalizer, layer_idx
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        if self.key_dim % num_heads or self.value_dim % num_heads:
            raise ValueError(f"GatedLinearAttention: num_heads {num_heads} must divide the key "
                             f"dim {self.key_dim} and the value dim {self.value_dim}")
        self.key_dim_per_group = self.key_dim // self.num_kv_groups
        self.value_dim_per_group = self.value_dim // self.num_kv_groups
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim_per_group, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim_per_group, bias=False)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        if use_short_conv:
            for name, d in self._convs():
                setattr(self, name, nn.Conv1d(d, d, conv_size, groups=d, padding=conv_size - 1,
                                              bias=conv_bias))
        self.gk_proj = nn.Sequential(
            nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
            nn.Linear(gate_low_rank_dim, self.key_dim_per_group, bias=True))
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.fuse_norm_and_gate = gate_fn == "swish" and fuse_norm and use_output_gate
        if self.fuse_norm_and_gate:
            self.g_norm_swish_gate = GatedRMSNorm(self.head_v_dim, eps=norm_eps,
                                                  norm_before_gate=True,
                                                  elementwise_affine=bool(elementwise_affine))
        else:
            self.g_norm = RMSNorm(self.head_v_dim, eps=norm_eps,
                                  elementwise_affine=bool(elementwise_affine))
            self.gate_fn = GATE_FNS[gate_fn]
        self.gla = lrc_compile(zoo_gla.gla, backend=backend)

    def _convs(self) -> list[tuple[str, int]]:
        return [("q_conv1d", self.key_dim), ("k_conv1d", self.key_dim_per_group),
                ("v_conv1d", self.value_dim_per_group)]

    def _heads(self, q, k, v, gk) -> tuple[torch.Tensor, ...]:
        """Split into heads (kv heads repeated for MQA/GQA), the log decay, q scaled."""
        def split(x, d, repeat):
            x = x.unflatten(-1, (-1, d))
            return x.repeat_interleave(self.num_kv_groups, -2) if repeat else x
        reps = self.num_kv_groups > 1
        q = split(q, self.head_k_dim, False) * self.head_k_dim ** -0.5
        k, gk = split(k, self.head_k_dim, reps), split(gk, self.head_k_dim, reps)
        v = split(v, self.head_v_dim, reps)
        gk = F.logsigmoid(gk) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = torch.clamp_min(gk, self.clamp_min)
        return q, k, v, gk

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Norm and output gate per head, then o_proj; o (..., h, head_v_dim)."""
        if self.use_output_gate:
            g = self.g_proj(x)
            if self.fuse_norm_and_gate:
                o = self.g_norm_swish_gate(o, g.unflatten(-1, (-1, self.head_v_dim))).flatten(-2)
            else:
                o = self.g_norm(o).flatten(-2) * self.gate_fn(g)
        else:
            o = self.g_norm(o).flatten(-2)
        return self.o_proj(o.to(x.dtype))

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, hidden_size) -> (b, t, hidden_size). cu_seqlens: packed sequences (b = 1).
        cache: filled with the conv windows and each sequence's final state."""
        self._check_prefill(hidden_states, cu_seqlens, cache)
        x = hidden_states
        qkv = [self.q_proj(x), self.k_proj(x), self.v_proj(x)]
        if self.use_short_conv:
            for i, (name, _) in enumerate(self._convs()):
                conv = getattr(self, name)
                if cache is not None:
                    getattr(cache, name).copy_(conv_window(qkv[i].detach(), self.conv_size,
                                                           cu_seqlens))
                qkv[i] = F.silu(causal_conv(qkv[i], conv.weight, conv.bias, cu_seqlens))
        q, k, v, gk = self._heads(*qkv, self.gk_proj(x))
        o = self.gla(q, k, v, gk, cu_seqlens=cu_seqlens, return_final_state=cache is not None)
        if cache is not None:
            o, final = o
            cache.state.copy_(final.detach())
        return self._output(o, x)

    def _step(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        qkv = [self.q_proj(x), self.k_proj(x), self.v_proj(x)]
        if self.use_short_conv:
            for i, (name, _) in enumerate(self._convs()):
                conv = getattr(self, name)
                qkv[i] = F.silu(conv_step(getattr(cache, name), qkv[i], conv.weight, conv.bias))
        q, k, v, gk = self._heads(*qkv, self.gk_proj(x))
        o, _ = self.gla.step(q, k, v, gk, state=cache.state, inplace=True)
        return self._output(o, x)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: state (b, num_heads, head_k_dim, head_v_dim) float32, and with short convs
        the windows q_conv1d, k_conv1d, v_conv1d (b, channels, conv_size)."""
        w = self.q_proj.weight
        device = device if device is not None else w.device
        tensors = {"state": torch.zeros(batch_size, self.num_heads, self.head_k_dim,
                                        self.head_v_dim, device=device, dtype=torch.float32)}
        if self.use_short_conv:
            for name, d in self._convs():
                tensors[name] = torch.zeros(batch_size, d, self.conv_size, device=device,
                                            dtype=dtype or w.dtype)
        return Cache(**tensors)
