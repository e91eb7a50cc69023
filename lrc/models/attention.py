"""Causal multi-head attention through `F.scaled_dot_product_attention`, with rotary position
embeddings and a preallocated KV cache, so a model mixes it with lrc blocks behind one
interface: `forward(x, cu_seqlens=, cache=)`, `step(x_t, cache, state_indices=)`.

The KV cache holds `max_seqlen` positions per sequence and each sequence's length on the
device; a step writes at that position and masks the rest, with no host sync, so it can be
captured in a CUDA graph.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from ..nn.common import Cache, DecodeBlock, seq_positions


def rotary(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) of x (..., t, d) by angle pos * base^(-2i/d);
    pos broadcasts against x's leading dims and t."""
    half = x.shape[-1] // 2
    freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    ang = pos.to(torch.float32)[..., None] * freq
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x.float()[..., :half], x.float()[..., half:2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, x.float()[..., 2 * half:]], -1)
    return out.to(x.dtype)


class Attention(DecodeBlock):
    """Causal self-attention: in_proj (q, k, v), rotary embeddings, SDPA, out_proj."""

    def __init__(self, d_model: int, num_heads: int = 4, max_seqlen: int = 2048,
                 rotary_base: float = 10000.0, bias: bool = False):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"Attention: num_heads {num_heads} does not divide {d_model}")
        self.d_model, self.num_heads = d_model, num_heads
        self.head_dim, self.max_seqlen = d_model // num_heads, max_seqlen
        self.rotary_base = rotary_base
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _qkv(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v as (..., heads, t, head_dim), q and k rotated to positions pos."""
        q, k, v = self.in_proj(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        q, k, v = (t.transpose(-2, -3) for t in (q, k, v))
        return rotary(q, pos, self.rotary_base), rotary(k, pos, self.rotary_base), v

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model), causal; with cu_seqlens (b = 1) no token
        attends to another sequence. cache: filled with each sequence's keys and values."""
        self._check_prefill(x, cu_seqlens, cache)
        b, t, _ = x.shape
        if cu_seqlens is None:
            pos = torch.arange(t, device=x.device)
            q, k, v = self._qkv(x, pos)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            pos = seq_positions(cu_seqlens, t)
            seq = torch.arange(t, device=x.device) - pos        # each token's sequence start
            q, k, v = self._qkv(x, pos)
            mask = (seq[:, None] == seq[None, :]) & (pos[:, None] >= pos[None, :])
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if cache is not None:
            self._fill(cache, k.detach(), v.detach(), cu_seqlens, t)
        return self.out_proj(o.transpose(1, 2).flatten(-2))

    def _fill(self, cache: Cache, k: torch.Tensor, v: torch.Tensor,
              cu_seqlens: torch.Tensor | None, t: int) -> None:
        room = cache.k.shape[2]
        if cu_seqlens is None:
            if t > room:
                raise ValueError(f"Attention: {t} tokens exceed the cache's max_seqlen {room}")
            cache.k[:, :, :t] = k.to(cache.k.dtype)
            cache.v[:, :, :t] = v.to(cache.v.dtype)
            cache.length.fill_(t)
            return
        cu = cu_seqlens.tolist()
        for i, (s, e) in enumerate(zip(cu[:-1], cu[1:], strict=True)):
            if e - s > room:
                raise ValueError(f"Attention: sequence {i} has {e - s} tokens, more than the "
                                 f"cache's max_seqlen {room}")
            cache.k[i, :, :e - s] = k[0, :, s:e].to(cache.k.dtype)
            cache.v[i, :, :e - s] = v[0, :, s:e].to(cache.v.dtype)
        cache.length.copy_(cu_seqlens[1:] - cu_seqlens[:-1])

    def _step(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        b = x.shape[0]
        pos = cache.length                                           # (b,)
        q, k, v = self._qkv(x[:, None], pos[:, None, None])          # (b, h, 1, hd)
        rows = torch.arange(b, device=x.device)
        cache.k[rows, :, pos] = k[:, :, 0].to(cache.k.dtype)
        cache.v[rows, :, pos] = v[:, :, 0].to(cache.v.dtype)
        keys = torch.arange(cache.k.shape[2], device=x.device)
        mask = (keys[None, :] <= pos[:, None])[:, None, None, :]     # (b, 1, 1, L)
        o = F.scaled_dot_product_attention(q, cache.k.to(q.dtype), cache.v.to(q.dtype),
                                           attn_mask=mask)
        cache.length.add_(1)
        return self.out_proj(o[:, :, 0].flatten(-2))

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: k and v (b, heads, max_seqlen, head_dim), length (b,) int64."""
        w = self.in_proj.weight
        device = device if device is not None else w.device
        L = max_seqlen or self.max_seqlen
        shape = (batch_size, self.num_heads, L, self.head_dim)
        return Cache(k=torch.zeros(shape, device=device, dtype=dtype or w.dtype),
                     v=torch.zeros(shape, device=device, dtype=dtype or w.dtype),
                     length=torch.zeros(batch_size, device=device, dtype=torch.long))
