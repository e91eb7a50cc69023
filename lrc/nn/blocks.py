"""Vision Mamba's bidirectional mixer as a module (Griffin's recurrent block is in rglru.py).

The projections, short convolutions and gates around each recurrence are plain PyTorch; the
recurrence itself is a `Recurrence` over a zoo spec with its standard initialization.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from .common import CausalConv1d
from .recurrence import Recurrence


class _MambaDirection(nn.Module):
    """One direction of Vim's mixer: conv, the x -> (dt, B, C) projections, the Mamba-1 scan."""

    def __init__(self, d_inner: int, d_state: int, dt_rank: int, conv_width: int,
                 backend: str = "auto"):
        super().__init__()
        self.d_state, self.dt_rank = d_state, dt_rank
        self.conv = CausalConv1d(d_inner, conv_width)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=False)      # the bias is the scan's
        nn.init.uniform_(self.dt_proj.weight, -dt_rank ** -0.5, dt_rank ** -0.5)
        self.scan = Recurrence.from_zoo("mamba1", backend=backend, d=d_inner, n=d_state)

    def forward(self, x: torch.Tensor, reverse: bool) -> torch.Tensor:
        u = F.silu(self.conv(x, reverse=reverse))                   # (b, t, d_inner)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], -1)
        dt = self.dt_proj(dt)
        # the mamba1 spec is channels-first (b d t), as mamba_ssm's selective_scan_fn
        y = self.scan(u.transpose(1, 2), dt.transpose(1, 2), B.transpose(1, 2),
                      C.transpose(1, 2), reverse=reverse)
        return y.transpose(1, 2)


class BiMamba(nn.Module):
    """Vision Mamba's bidirectional mixer (Zhu et al. 2024): a forward and a backward Mamba-1
    branch with separate parameters on the same projected tokens, summed, gated by silu(z).
    The backward branch is the same spec run with reverse=True (no flipped copies)."""

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2,
                 dt_rank: int | None = None, conv_width: int = 4, backend: str = "auto"):
        super().__init__()
        d_inner = expand * d_model
        dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.fwd = _MambaDirection(d_inner, d_state, dt_rank, conv_width, backend)
        self.bwd = _MambaDirection(d_inner, d_state, dt_rank, conv_width, backend)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model); every output token sees every input token."""
        x, z = self.in_proj(x).chunk(2, -1)
        y = self.fwd(x, reverse=False) + self.bwd(x, reverse=True)
        return self.out_proj(y * F.silu(z))
