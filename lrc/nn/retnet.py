"""RetNet's multi-scale retention (Sun et al. 2023) over the zoo's `retnet` spec, with fla's
`MultiScaleRetention` constructor arguments and parameter names (q_proj, k_proj, v_proj,
g_proj, o_proj, g_norm_swish_gate or g_norm, q/k/v_conv1d, and `rotary.inv_freq` a
non-persistent buffer), so an fla state dict loads unchanged.

    q, k, v = proj(x) (short conv + silu optional);  q, k = rotary(q, k) at each token's position
    o = retention(q / sqrt(d_k), k, v; gamma_h = 1 - 2^(-5 - h))
    out = o_proj(rmsnorm(o) * swish(g_proj(x)))

The rotary position of a token is its index in its own sequence (packed sequences restart at
0); the decode cache keeps each sequence's position next to its state.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import retnet as zoo_retnet
from .common import (
    Cache,
    DecodeBlock,
    GatedRMSNorm,
    RMSNorm,
    causal_conv,
    conv_step,
    conv_window,
    seq_positions,
)
from .gla import GATE_FNS


class RotaryEmbedding(nn.Module):
    """fla's rotary embedding without xPos scaling: the halves (x[:d/2], x[d/2:]) of each head
    rotate as pairs by angle pos * base^(-2i/d) (GPT-NeoX style), computed in float32.
    inv_freq is a non-persistent buffer, as fla's."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"RotaryEmbedding: the head dim {dim} must be even")
        self.dim, self.base = dim, float(base)
        self.register_buffer("inv_freq", self._inv_freq(None), persistent=False)

    def _inv_freq(self, device: Any) -> torch.Tensor:
        i = torch.arange(0, self.dim, 2, device=device, dtype=torch.float32)
        return 1.0 / self.base ** (i / self.dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x (..., heads, dim) rotated to positions pos, which broadcast against x's leading
        dims (the heads excluded); in x's dtype."""
        # a model cast to bf16 casts the buffer too: recompute it in float32, as fla does
        inv = self.inv_freq
        inv = inv if inv.dtype == torch.float32 else self._inv_freq(x.device)
        ang = (pos.to(torch.float32)[..., None] * inv)[..., None, :]   # (..., 1, dim / 2)
        cos, sin = torch.cos(ang), torch.sin(ang)
        x1, x2 = x.float().chunk(2, -1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)


class MultiScaleRetention(DecodeBlock):
    """fla's `MultiScaleRetention` layer: (b, t, hidden_size) -> (b, t, hidden_size).

    `mode` is accepted for compatibility (lrc's plan picks the lowering); feature_map is one of
    the gate functions' names or None. forward returns the output only (fla returns a
    triple)."""

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, expand_k: float = 1.0,
                 expand_v: float = 2.0, num_heads: int = 8, num_kv_heads: int | None = None,
                 feature_map: str | None = None, use_short_conv: bool = False,
                 conv_size: int = 4, conv_bias: bool = False, use_output_gate: bool = True,
                 gate_fn: str = "swish", elementwise_affine: bool | None = True,
                 norm_eps: float = 1e-5, fuse_norm: bool = True, layer_idx: int | None = None,
                 backend: str = "auto"):
        super().__init__()
        for what, fn in (("feature_map", feature_map), ("gate_fn", gate_fn)):
            if fn is not None and fn not in GATE_FNS:
                raise ValueError(f"MultiScaleRetention: {what} {fn!r}; one of "
                                 f"{sorted(GATE_FNS)}")
        self.mode, self.hidden_size, self.num_heads = mode, hidden_size, num_heads
        self.num_kv_heads = num_kv_heads if num_kv_heads is not None else num_heads
        self.num_kv_groups = num_heads // self.num_kv_heads
        self.feature_map = feature_map
        self.feature_map_fn = GATE_FNS[feature_map] if feature_map is not None else None
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.use_output_gate, self.layer_idx = use_output_gate, layer_idx
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        if self.key_dim % num_heads or self.value_dim % num_heads:
            raise ValueError(f"MultiScaleRetention: num_heads {num_heads} must divide the key "
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
        self.rotary = RotaryEmbedding(self.head_k_dim)
        self.retention = lrc_compile(zoo_retnet.retnet, backend=backend)

    def _convs(self) -> list[tuple[str, int]]:
        return [("q_conv1d", self.key_dim), ("k_conv1d", self.key_dim_per_group),
                ("v_conv1d", self.value_dim_per_group)]

    def _gamma(self, device: Any) -> torch.Tensor:
        """The fixed decay per head, 1 - 2^(-5 - h), in float32 whatever the model's dtype
        (bf16 would round the slowest decays to 1)."""
        h = torch.arange(self.num_heads, device=device, dtype=torch.float32)
        return 1 - 2.0 ** (-5 - h)

    def _heads(self, q, k, v, pos) -> tuple[torch.Tensor, ...]:
        """Split into heads, feature map, rotary at positions pos, q scaled by d_k^-1/2, kv
        heads repeated for MQA/GQA."""
        q, k = q.unflatten(-1, (-1, self.head_k_dim)), k.unflatten(-1, (-1, self.head_k_dim))
        v = v.unflatten(-1, (-1, self.head_v_dim))
        if self.feature_map_fn is not None:
            q, k = self.feature_map_fn(q), self.feature_map_fn(k)
        q, k = self.rotary(q, pos), self.rotary(k, pos)
        if self.num_kv_groups > 1:
            k = k.repeat_interleave(self.num_kv_groups, -2)
            v = v.repeat_interleave(self.num_kv_groups, -2)
        return q * self.head_k_dim ** -0.5, k, v

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
        cache: filled with the conv windows, each sequence's final state and its length."""
        self._check_prefill(hidden_states, cu_seqlens, cache)
        x = hidden_states
        t = x.shape[1]
        qkv = [self.q_proj(x), self.k_proj(x), self.v_proj(x)]
        if self.use_short_conv:
            for i, (name, _) in enumerate(self._convs()):
                conv = getattr(self, name)
                if cache is not None:
                    getattr(cache, name).copy_(conv_window(qkv[i].detach(), self.conv_size,
                                                           cu_seqlens))
                qkv[i] = F.silu(causal_conv(qkv[i], conv.weight, conv.bias, cu_seqlens))
        if cu_seqlens is None:
            pos = torch.arange(t, device=x.device)
        else:
            pos = seq_positions(cu_seqlens, t)
        q, k, v = self._heads(*qkv, pos)
        o = self.retention(q, k, v, self._gamma(x.device), cu_seqlens=cu_seqlens,
                           return_final_state=cache is not None)
        if cache is not None:
            o, final = o
            cache.state.copy_(final.detach())
            if cu_seqlens is None:
                cache.offset.fill_(t)
            else:
                cache.offset.copy_(cu_seqlens[1:] - cu_seqlens[:-1])
        return self._output(o, x)

    def _step(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        qkv = [self.q_proj(x), self.k_proj(x), self.v_proj(x)]
        if self.use_short_conv:
            for i, (name, _) in enumerate(self._convs()):
                conv = getattr(self, name)
                qkv[i] = F.silu(conv_step(getattr(cache, name), qkv[i], conv.weight, conv.bias))
        q, k, v = self._heads(*qkv, cache.offset)
        o, _ = self.retention.step(q, k, v, self._gamma(x.device), state=cache.state,
                                   inplace=True)
        cache.offset.add_(1)
        return self._output(o, x)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: state (b, num_heads, head_k_dim, head_v_dim) float32, offset (b,) int64
        (the rotary position of each sequence's next token), and with short convs the
        windows q_conv1d, k_conv1d, v_conv1d (b, channels, conv_size)."""
        w = self.q_proj.weight
        device = device if device is not None else w.device
        tensors = {"state": torch.zeros(batch_size, self.num_heads, self.head_k_dim,
                                        self.head_v_dim, device=device, dtype=torch.float32),
                   "offset": torch.zeros(batch_size, device=device, dtype=torch.int64)}
        if self.use_short_conv:
            for name, d in self._convs():
                tensors[name] = torch.zeros(batch_size, d, self.conv_size, device=device,
                                            dtype=dtype or w.dtype)
        return Cache(**tensors)
