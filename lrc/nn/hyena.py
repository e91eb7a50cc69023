"""The Hyena operator of order 2 (Poli et al. 2023) over the zoo's `hyena` spec, with the safari
repository's `HyenaOperator` names (in_proj, short_filter, filter_fn, out_proj) and a decode
cache.

    x0, x1, v = short_filter(in_proj(u))      (a depthwise causal conv, short_filter_order taps)
    z_t = x1_t v_t;  y_t = x0_t ((h * z)_t + bias z_t);  out = out_proj(y)
    h = filter_fn.filter(l_max): an MLP with sine activations over positional features,
        times an exponential decay window, one filter of l_max taps per channel

Decode. The zoo's spec is the long convolution written as a recurrence with a finite state: a
shift register holding the last l_max gated inputs z per channel (like a KV cache of l_max
tokens), so `step` decodes exactly, at O(l_max d_model) per token. The filter has l_max taps,
so a token sees at most l_max - 1 tokens back; for sequences of at most l_max tokens this is
safari's operator (its FFT conv with the filter cut to the sequence's length), longer ones keep
going with the l_max-tap filter where safari's forward cuts the sequence at l_max. Each step
recomputes the filter from its MLP (l_max positions), as each forward does.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import hyena as zoo_hyena
from .common import Cache, DecodeBlock, causal_conv, conv_step, conv_window, no_weight_decay


def _optim(p: nn.Parameter, lr: float, wd: float = 0.0) -> nn.Parameter:
    """Give p the S4/safari optimizer hint {"weight_decay": wd, "lr": lr}; returns p."""
    p._optim = {"weight_decay": wd, "lr": lr}
    return p


class Sin(nn.Module):
    """sin(freq * x) with a trainable frequency per feature (Hyena's filter activation)."""

    def __init__(self, dim: int, w: float = 10.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """sin(freq * x)."""
        return torch.sin(self.freq * x)


class PositionalEmbedding(nn.Module):
    """Hyena's filter input per position l < seq_len: z = [t, cos(f w), -sin(f w)] (the real
    and imaginary parts of exp(-i f w)) with t = l / (seq_len - 1), w = 2 pi l / seq_len and
    (emb_dim - 1) / 2 bands f. z is trainable (lr lr_pos_emb), t a buffer."""

    def __init__(self, emb_dim: int, seq_len: int, lr_pos_emb: float = 1e-5):
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"Hyena: emb_dim {emb_dim} must be odd and at least 3 (time, "
                             "then a cosine and a sine per band)")
        bands = (emb_dim - 1) // 2
        t = torch.linspace(0, 1, seq_len)[None, :, None]                       # (1, L, 1)
        w = 2 * math.pi * torch.arange(seq_len, dtype=torch.float32)[None, :, None] / seq_len
        f = torch.linspace(1e-4, bands - 1, bands)[None, None]                  # (1, 1, bands)
        z = torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], -1)             # (1, L, emb)
        self.z = nn.Parameter(z)
        _optim(self.z, lr_pos_emb)    # on the registered object (HF's loading swaps it)
        self.register_buffer("t", t)

    def forward(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first L positions' (z, t)."""
        return self.z[:, :L], self.t[:, :L]


class ExponentialModulation(nn.Module):
    """The filter's window exp(-|delta_c| t): channel c's rate from log(target)/slow_decay_pct
    (the slowest) to log(target)/fast_decay_pct (the fastest); deltas is a buffer."""

    def __init__(self, d_model: int, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5,
                 target: float = 1e-2):
        super().__init__()
        deltas = torch.linspace(math.log(target) / slow_decay_pct,
                                math.log(target) / fast_decay_pct, d_model)[None, None]
        self.register_buffer("deltas", deltas)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x (1, L, d) times the window at times t (1, L, 1)."""
        return x * torch.exp(-t * self.deltas.abs())


class HyenaFilter(nn.Module):
    """Hyena's implicit long filter: an MLP (emb_dim -> order, sine, num_inner_mlps x (order ->
    order, sine), -> d_model) over positional features, times an exponential window; plus the
    per-channel `bias` (the operator's skip term, a D: no weight decay). The MLP's parameters
    carry the optimizer hint {"weight_decay": wd, "lr": lr}; one sine frequency serves every
    layer of the MLP."""

    def __init__(self, d_model: int, emb_dim: int = 3, order: int = 16, seq_len: int = 1024,
                 lr: float = 1e-3, lr_pos_emb: float = 1e-5, w: float = 1.0, wd: float = 0.0,
                 num_inner_mlps: int = 2, **modulation_args: float):
        super().__init__()
        self.d_model, self.seq_len = d_model, seq_len
        self.bias = nn.Parameter(torch.randn(d_model))
        no_weight_decay(self.bias)
        self.pos_emb = PositionalEmbedding(emb_dim, seq_len, lr_pos_emb)
        act = Sin(order, w)
        layers: list[nn.Module] = [nn.Linear(emb_dim, order), act]
        for _ in range(num_inner_mlps):
            layers += [nn.Linear(order, order), act]
        layers.append(nn.Linear(order, d_model, bias=False))
        self.implicit_filter = nn.Sequential(*layers)
        self.modulation = ExponentialModulation(d_model, **modulation_args)
        for p in self.implicit_filter.parameters():
            _optim(p, lr, wd)

    def filter(self, L: int) -> torch.Tensor:
        """The filter's first L taps, (d_model, L)."""
        z, t = self.pos_emb(L)
        return self.modulation(t, self.implicit_filter(z))[0].mT


class HyenaOperator(DecodeBlock):
    """safari's `HyenaOperator` of order 2 (one head, one block, identity activation):
    (b, t, d_model) -> (b, t, d_model), with a decode cache (see the module's docstring)."""

    def __init__(self, d_model: int, l_max: int, filter_order: int = 64,
                 short_filter_order: int = 3, dropout: float = 0.0, backend: str = "auto",
                 **filter_args: Any):
        super().__init__()
        self.d_model, self.l_max, self.short_filter_order = d_model, l_max, short_filter_order
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.short_filter = nn.Conv1d(3 * d_model, 3 * d_model, short_filter_order,
                                      groups=3 * d_model, padding=short_filter_order - 1)
        self.filter_fn = HyenaFilter(d_model, order=filter_order, seq_len=l_max, **filter_args)
        self.dropout = nn.Dropout(dropout)
        self.ssm = lrc_compile(zoo_hyena.hyena, backend=backend)

    def _gated(self, uc: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The spec's Seq inputs (v, x1, x0) from the short conv's output, and its Params.
        Dropout on x1 is safari's dropout on z = x1 v (the same mask)."""
        x0, x1, v = uc.split(self.d_model, -1)
        return v, self.dropout(x1), x0, self.filter_fn.filter(self.l_max), self.filter_fn.bias

    def forward(self, u: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model). cu_seqlens: packed sequences (b = 1). cache:
        filled with each sequence's short-conv window and its last l_max gated inputs."""
        self._check_prefill(u, cu_seqlens, cache)
        x = self.in_proj(u)
        if cache is not None:
            cache.conv.copy_(conv_window(x.detach(), self.short_filter_order, cu_seqlens))
        uc = causal_conv(x, self.short_filter.weight, self.short_filter.bias, cu_seqlens)
        y = self.ssm(*self._gated(uc), cu_seqlens=cu_seqlens,
                     return_final_state=cache is not None)
        if cache is not None:
            y, final = y
            cache.state.copy_(final.detach())
        return self.out_proj(y)

    def _step(self, u: torch.Tensor, cache: Cache) -> torch.Tensor:
        uc = conv_step(cache.conv, self.in_proj(u), self.short_filter.weight,
                       self.short_filter.bias)
        y, _ = self.ssm.step(*self._gated(uc), state=cache.state, inplace=True)
        return self.out_proj(y)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: conv (b, 3 d_model, short_filter_order) in the weights' dtype; state (b,
        d_model, l_max) float32, the last l_max gated inputs z, newest first."""
        w = self.in_proj.weight
        device = device if device is not None else w.device
        d = self.d_model
        return Cache(conv=torch.zeros(batch_size, 3 * d, self.short_filter_order,
                                      device=device, dtype=dtype or w.dtype),
                     state=torch.zeros(batch_size, d, self.l_max, device=device,
                                       dtype=torch.float32))

