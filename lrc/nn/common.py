"""Pieces every block shares: the decode cache, the short causal convolution with its window,
gated RMS norms, packed-sequence helpers and the optimizer hints (`param_groups`).

Convolution weights use nn.Conv1d's layout (channels, 1, width), as mamba_ssm and fla do, so
their state dicts load unchanged. A convolution window holds the last `width` inputs of each
sequence, (batch, channels, width), oldest first (mamba_ssm's `conv_state`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn


class Cache:
    """A block's decode cache: named tensors whose first dim is the batch (or the pool of
    states a serving engine indexes with `state_indices`).

    `cache.conv` / `cache.state` ... are plain attributes; `names` lists them in order. Every
    update is in place, so the tensors keep their addresses and a captured CUDA graph that
    reads them stays valid."""

    def __init__(self, **tensors: torch.Tensor):
        self.names = tuple(tensors)
        for k, v in tensors.items():
            setattr(self, k, v)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The cache's tensors by name."""
        return {k: getattr(self, k) for k in self.names}

    @property
    def batch_size(self) -> int:
        """Rows in the cache (sequences, or slots of a state pool)."""
        return getattr(self, self.names[0]).shape[0]

    def zero_(self) -> Cache:
        """Reset every row (a fresh sequence); in place."""
        for v in self.tensors().values():
            v.zero_()
        return self

    def gather(self, indices: torch.Tensor) -> Cache:
        """A new cache holding rows `indices` (copies)."""
        return Cache(**{k: v.index_select(0, indices) for k, v in self.tensors().items()})

    def scatter_(self, indices: torch.Tensor, rows: Cache) -> Cache:
        """Write `rows` (a cache from `gather`) back into rows `indices`; in place."""
        for k, v in self.tensors().items():
            v.index_copy_(0, indices, getattr(rows, k))
        return self

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={tuple(v.shape)}:{v.dtype}" for k, v in self.tensors().items())
        return f"Cache({inner})"


def check_cache(cache: Any, batch: int, what: str) -> None:
    """A clear error for a cache that is not a `Cache` or holds too few rows."""
    if not isinstance(cache, Cache):
        raise TypeError(f"{what}: cache must come from allocate_inference_cache, got "
                        f"{type(cache).__name__}")
    if cache.batch_size != batch:
        raise ValueError(f"{what}: the cache holds {cache.batch_size} sequences, the input "
                         f"{batch} (pass state_indices to address a pool of states)")


def no_weight_decay(*params: nn.Parameter) -> None:
    """Mark parameters to be left out of weight decay (the mamba_ssm convention)."""
    for p in params:
        p._no_weight_decay = True


def param_groups(model: nn.Module, weight_decay: float = 0.1,
                 decay_vectors: bool = False) -> list[dict]:
    """AdamW parameter groups: decayed weights, and the rest with weight_decay=0.

    Left out of decay: every parameter marked `_no_weight_decay` (A_log, D, the Δ bias and
    the like), and with decay_vectors=False every parameter of fewer than 2 dims (biases,
    norm weights). A parameter with an `_optim` dict (the S4 convention, e.g. {"lr": 1e-3})
    gets a group of its own with those settings."""
    decay, plain, special = [], [], {}
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:  # tied weights count once
            continue
        seen.add(id(p))
        opts = getattr(p, "_optim", None)
        if opts:
            key = tuple(sorted(opts.items()))
            special.setdefault(key, []).append(p)
        elif getattr(p, "_no_weight_decay", False) or (p.ndim < 2 and not decay_vectors):
            plain.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    for key, ps in special.items():
        groups.append({"params": ps, "weight_decay": 0.0, **dict(key)})
    return [g for g in groups if g["params"]]


def seq_positions(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """For packed sequences: each token's position inside its own sequence, (total,)."""
    cu = cu_seqlens.to(torch.long)
    t = torch.arange(total, device=cu.device)
    seq = torch.searchsorted(cu[1:], t, right=True)
    return t - cu[seq]


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise causal convolution over time of x (b, t, c) with nn.Conv1d's (c, 1, w)
    weight: y_t = sum_j weight[:, 0, j] x_{t-w+1+j} + bias. With cu_seqlens (b = 1), no
    token sees a token of the sequence before it."""
    w = weight.shape[-1]
    if cu_seqlens is None:
        y = F.conv1d(x.transpose(1, 2), weight, bias, padding=w - 1, groups=x.shape[-1])
        return y[..., :x.shape[1]].transpose(1, 2)
    pos = seq_positions(cu_seqlens, x.shape[1])
    xp = F.pad(x, (0, 0, w - 1, 0))
    y = torch.zeros_like(x)
    for j in range(w):
        shift = w - 1 - j  # weight tap j reads x_{t - shift}
        tap = xp[:, j:j + x.shape[1]] * weight[:, 0, j]
        y = y + torch.where((pos >= shift)[None, :, None], tap, torch.zeros_like(tap))
    return y if bias is None else y + bias


def conv_window(x: torch.Tensor, width: int,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """The last `width` inputs of each sequence of x (b, t, c) as a window (b', c, width),
    zeros before a sequence's start; b' = b, or the number of sequences with cu_seqlens."""
    if cu_seqlens is None:
        t = x.shape[1]
        xs = x[:, -width:] if t >= width else F.pad(x, (0, 0, width - t, 0))
        return xs.transpose(1, 2)
    cu = cu_seqlens.to(torch.long)
    start, end = cu[:-1], cu[1:]
    idx = end[:, None] - width + torch.arange(width, device=cu.device)     # (n, width)
    rows = x[0, idx.clamp(min=0)]                                          # (n, width, c)
    rows = rows * (idx >= start[:, None])[..., None].to(rows.dtype)
    return rows.transpose(1, 2)


def conv_step(window: torch.Tensor, x_t: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None) -> torch.Tensor:
    """Shift x_t (b, c) into the window (b, c, w) in place; the convolution's output (b, c)."""
    window.copy_(torch.roll(window, shifts=-1, dims=-1))
    window[:, :, -1] = x_t.detach().to(window.dtype)   # a cache holds no autograd history
    y = (window.float() * weight[:, 0].float()).sum(-1)   # accumulated in float32
    y = y if bias is None else y + bias.float()
    return y.to(x_t.dtype)


class RMSNorm(nn.Module):
    """RMS norm over the last dim with a learned scale (`weight`), computed in float32."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x / rms(x) * weight, in x's dtype."""
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        return y.to(x.dtype)


class GatedRMSNorm(nn.Module):
    """RMS norm with a silu gate, over groups of `group_size` channels (`weight` per channel).

    norm_before_gate=True: rmsnorm(x) * silu(z) (fla's FusedRMSNormGated); False:
    rmsnorm(x * silu(z)) (Mamba-2's RMSNormGated)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, norm_before_gate: bool = False,
                 group_size: int | None = None, elementwise_affine: bool = True):
        super().__init__()
        self.eps, self.norm_before_gate = eps, norm_before_gate
        self.group_size = group_size or hidden_size
        if hidden_size % self.group_size:
            raise ValueError(f"GatedRMSNorm: group_size {self.group_size} does not divide "
                             f"hidden_size {hidden_size}")
        self.weight = nn.Parameter(torch.ones(hidden_size)) if elementwise_affine else None

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The gated norm of x (..., hidden_size) with gate z of the same shape."""
        x32, z32 = x.float(), z.float()
        if not self.norm_before_gate:
            x32 = x32 * F.silu(z32)
        g = x32.unflatten(-1, (-1, self.group_size))
        y = (g * torch.rsqrt(g.square().mean(-1, keepdim=True) + self.eps)).flatten(-2)
        if self.weight is not None:
            y = y * self.weight.float()
        if self.norm_before_gate:
            y = y * F.silu(z32)
        return y.to(x.dtype)


def n_sequences(x: torch.Tensor, cu_seqlens: torch.Tensor | None, what: str) -> int:
    """The number of sequences in x (b, t, ...): b, or len(cu_seqlens) - 1 (then b must be 1)."""
    if cu_seqlens is None:
        return x.shape[0]
    if x.shape[0] != 1:
        raise ValueError(f"{what}: with cu_seqlens the sequences are packed along time with "
                         f"batch size 1, got batch {x.shape[0]}")
    return cu_seqlens.numel() - 1


class DecodeBlock(nn.Module):
    """A block with a decode cache: subclasses give `_step(x_t (b, d_model), cache)` and
    `allocate_inference_cache`; `step` adds the (b, 1, d) form and `state_indices`."""

    def step(self, hidden_states: torch.Tensor, cache: Cache,
             state_indices: torch.Tensor | None = None) -> torch.Tensor:
        """One token per sequence, (b, d_model) or (b, 1, d_model) -> the same shape; the
        cache advances in place. state_indices (b,) int64: the rows of a pool cache to use."""
        what = f"{type(self).__name__}.step"
        if hidden_states.dim() == 3:
            if hidden_states.shape[1] != 1:
                raise ValueError(f"{what} takes one token per sequence, got "
                                 f"{hidden_states.shape[1]} (run forward(..., cache=) first)")
            return self.step(hidden_states[:, 0], cache, state_indices)[:, None]
        if state_indices is None:
            check_cache(cache, hidden_states.shape[0], what)
            return self._step(hidden_states, cache)
        check_cache(cache, cache.batch_size, what)
        rows = cache.gather(state_indices)
        out = self._step(hidden_states, rows)
        cache.scatter_(state_indices, rows)
        return out

    def _step(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        raise NotImplementedError

    def _check_prefill(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None,
                       cache: Cache | None) -> None:
        """Errors for a packed input of batch > 1, or a cache of the wrong size."""
        what = f"{type(self).__name__}.forward"
        n = n_sequences(x, cu_seqlens, what)
        if cache is not None:
            check_cache(cache, n, what)


class CausalConv1d(nn.Module):
    """Depthwise causal convolution over time of (b, t, d) inputs (Griffin's and Mamba's conv)."""

    def __init__(self, d: int, width: int = 4):
        super().__init__()
        self.width = width
        self.conv = nn.Conv1d(d, d, width, groups=d, padding=width - 1)

    def forward(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """y_t from x_{t-width+1..t} (from x_{t..t+width-1} with reverse=True)."""
        if reverse:
            return self.forward(x.flip(1)).flip(1)
        return self.conv(x.transpose(1, 2))[..., :x.shape[1]].transpose(1, 2)
