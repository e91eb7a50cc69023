"""Vision Mamba's bidirectional mixer (Zhu et al. 2024), `bimamba_type="v2"`, with the Vim
repository's constructor arguments and parameter names (in_proj, conv1d / conv1d_b, x_proj /
x_proj_b, dt_proj / dt_proj_b, A_log / A_b_log, D / D_b, out_proj), so a Vim state dict loads.

    x, z = in_proj(u)
    y_f = S6_f(silu(conv1d(x)))                         (left to right)
    y_b = S6_b(silu(conv1d_b(x)))                       (right to left: conv1d_b and the scan
                                                         run on the reversed sequence)
    out = out_proj((y_f + y_b) silu(z)  [/ 2 with if_devide_out])  [* gamma]

Both scans are the zoo's `mamba1` spec; the backward one runs with reverse=True. Every output
token depends on every input token, so there is no causal decode: `step` raises.

`lrc.nn.BiMamba` computes the same mixer with lrc's own names (fwd.* / bwd.*, dt bias inside the
scan) and no cu_seqlens; this module is Vim's, parameter for parameter. Each branch's
parameters get mamba_ssm's `Mamba` init (Vim leaves dt_proj_b at nn.Linear's default init).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from .common import causal_conv, n_sequences
from .mamba import Mamba


def reverse_each(x: torch.Tensor, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """x (b, t, ...) with each sequence reversed in time (the packed ones of cu_seqlens too)."""
    if cu_seqlens is None:
        return x.flip(1)
    cu = cu_seqlens.to(device=x.device, dtype=torch.long)
    t = torch.arange(x.shape[1], device=x.device)
    seq = torch.searchsorted(cu[1:], t, right=True)
    return x[:, cu[seq] + cu[seq + 1] - 1 - t]


class VimMamba(nn.Module):
    """Vim's `Mamba(bimamba_type="v2")` mixer: (b, t, d_model) -> (b, t, d_model), both
    directions, no decode cache."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, if_devide_out: bool = False,
                 init_layer_scale: float | None = None, layer_idx: int | None = None,
                 device: Any = None, dtype: torch.dtype | None = None, backend: str = "auto"):
        super().__init__()
        args = {"d_state": d_state, "d_conv": d_conv, "expand": expand, "dt_rank": dt_rank,
                "dt_min": dt_min, "dt_max": dt_max, "dt_init": dt_init, "dt_scale": dt_scale,
                "dt_init_floor": dt_init_floor, "conv_bias": conv_bias, "bias": bias,
                "device": device, "dtype": dtype, "backend": backend}
        # two mamba_ssm-initialized blocks: the forward branch and the shared projections come
        # from the first, the backward branch from the second (its projections are dropped)
        fwd, bwd = Mamba(d_model, **args), Mamba(d_model, **args)
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner, self.dt_rank, self.layer_idx = fwd.d_inner, fwd.dt_rank, layer_idx
        self.if_devide_out, self.init_layer_scale = if_devide_out, init_layer_scale
        self.in_proj, self.out_proj = fwd.in_proj, fwd.out_proj
        self.conv1d, self.x_proj, self.dt_proj = fwd.conv1d, fwd.x_proj, fwd.dt_proj
        self.A_log, self.D = fwd.A_log, fwd.D
        self.conv1d_b, self.x_proj_b, self.dt_proj_b = bwd.conv1d, bwd.x_proj, bwd.dt_proj
        self.A_b_log, self.D_b = bwd.A_log, bwd.D                 # marked _no_weight_decay
        if init_layer_scale is not None:
            self.gamma = nn.Parameter(init_layer_scale * torch.ones(d_model, device=device))
        self.scan = fwd.scan

    def _branch(self, x: torch.Tensor, reverse: bool,
                cu_seqlens: torch.Tensor | None) -> torch.Tensor:
        """One direction's conv, projections and Mamba-1 scan on x (b, t, d_inner)."""
        if reverse:
            conv, x_proj, dt_proj, A_log, D = (self.conv1d_b, self.x_proj_b, self.dt_proj_b,
                                               self.A_b_log, self.D_b)
            xc = reverse_each(x, cu_seqlens)   # conv1d_b is causal on the reversed sequence
            xc = reverse_each(causal_conv(xc, conv.weight, conv.bias, cu_seqlens), cu_seqlens)
        else:
            conv, x_proj, dt_proj, A_log, D = (self.conv1d, self.x_proj, self.dt_proj,
                                               self.A_log, self.D)
            xc = causal_conv(x, conv.weight, conv.bias, cu_seqlens)
        xc = F.silu(xc)
        dt, B, C = x_proj(xc).split([self.dt_rank, self.d_state, self.d_state], -1)
        dt = F.linear(dt, dt_proj.weight)                       # its bias is the scan's
        # the mamba1 spec is channels-first (b d t), as selective_scan_fn
        y = self.scan(xc.mT, dt.mT, B.mT, C.mT, A_log, D, dt_proj.bias, reverse=reverse,
                      cu_seqlens=cu_seqlens)
        return y.mT

    def forward(self, hidden_states: torch.Tensor,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model). cu_seqlens: packed sequences (b = 1), each
        scanned both ways on its own."""
        n_sequences(hidden_states, cu_seqlens, f"{type(self).__name__}.forward")
        x, z = self.in_proj(hidden_states).chunk(2, -1)
        y = self._branch(x, False, cu_seqlens) + self._branch(x, True, cu_seqlens)
        if self.if_devide_out:
            y = y / 2
        out = self.out_proj(y * F.silu(z))
        return out * self.gamma if self.init_layer_scale is not None else out

    def step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Not available: a bidirectional mixer's output at t depends on the tokens after t."""
        raise NotImplementedError(
            f"{type(self).__name__} is bidirectional: its backward scan reads every later "
            "token, so it has no causal decode step; run forward over the whole sequence")

    def allocate_inference_cache(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: there is no decode (see `step`)."""
        return self.step()
