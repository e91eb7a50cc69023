"""Hawk/Griffin's recurrent block (De et al. 2024, Fig. 2) over the zoo's `rglru` spec:

    out = out_proj(gelu(gate_proj x) * RG-LRU(u, gate_r u, gate_i u)),  u = conv(in_proj x)

The RG-LRU's gates are dense linear maps of u (Griffin's are block-diagonal, one block per
head: a dense map holds them as a special case). Parameter names are lrc's own
(no peer library holds this block in torch): gate_proj, in_proj, conv.conv, gate_r, gate_i,
rglru.Lambda, out_proj.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from .common import (
    Cache,
    CausalConv1d,
    DecodeBlock,
    causal_conv,
    conv_step,
    conv_window,
    no_weight_decay,
)
from .recurrence import Recurrence


class GriffinRecurrentBlock(DecodeBlock):
    """Griffin's temporal-mixing recurrent block (Hawk is a stack of these with MLPs):
    (b, t, d_model) -> (b, t, d_model), with a decode cache."""

    def __init__(self, d_model: int, d_rnn: int | None = None, conv_width: int = 4,
                 backend: str = "auto"):
        super().__init__()
        d_rnn = d_rnn or d_model
        self.d_model, self.d_rnn, self.conv_width = d_model, d_rnn, conv_width
        self.gate_proj = nn.Linear(d_model, d_rnn)
        self.in_proj = nn.Linear(d_model, d_rnn)
        self.conv = CausalConv1d(d_rnn, conv_width)
        self.gate_r = nn.Linear(d_rnn, d_rnn)
        self.gate_i = nn.Linear(d_rnn, d_rnn)
        self.rglru = Recurrence.from_zoo("rglru", backend=backend, d=d_rnn)
        no_weight_decay(self.rglru.Lambda)
        self.out_proj = nn.Linear(d_rnn, d_model)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model). cu_seqlens: packed sequences (b = 1). cache:
        filled with each sequence's conv window and final state."""
        self._check_prefill(x, cu_seqlens, cache)
        gate = F.gelu(self.gate_proj(x), approximate="tanh")
        u = self.in_proj(x)
        if cache is not None:
            cache.conv.copy_(conv_window(u.detach(), self.conv_width, cu_seqlens))
        u = causal_conv(u, self.conv.conv.weight, self.conv.conv.bias, cu_seqlens)
        h = self.rglru(u, self.gate_r(u), self.gate_i(u), cu_seqlens=cu_seqlens,
                       return_final_state=cache is not None)
        if cache is not None:
            h, final = h
            cache.state.copy_(final.detach())
        return self.out_proj(h * gate)

    def _step(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        gate = F.gelu(self.gate_proj(x), approximate="tanh")
        u = conv_step(cache.conv, self.in_proj(x), self.conv.conv.weight, self.conv.conv.bias)
        h, _ = self.rglru.layer.step(u, self.gate_r(u), self.gate_i(u), self.rglru.Lambda,
                                     state=cache.state, inplace=True)
        return self.out_proj(h * gate)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: conv (b, d_rnn, conv_width) in the weights' dtype, state (b, d_rnn) float32."""
        w = self.in_proj.weight
        device = device if device is not None else w.device
        return Cache(conv=torch.zeros(batch_size, self.d_rnn, self.conv_width, device=device,
                                      dtype=dtype or w.dtype),
                     state=torch.zeros(batch_size, self.d_rnn, device=device,
                                       dtype=torch.float32))
