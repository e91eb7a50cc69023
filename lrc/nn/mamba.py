"""Mamba's block (Gu & Dao 2023) over the zoo's `mamba1` spec, with mamba_ssm's `Mamba`
constructor arguments and parameter names (in_proj, conv1d, x_proj, dt_proj, A_log, D,
out_proj), so a mamba_ssm state dict loads unchanged.

    x, z = in_proj(u);  x = silu(conv1d(x));  dt, B, C = x_proj(x);  dt = dt_proj.weight dt
    y = S6(x, dt, B, C; A_log, D, dt_bias = dt_proj.bias);  out = out_proj(y * silu(z))
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import mamba1 as zoo_mamba1
from ..zoo._init import dt_bias_init
from .common import Cache, DecodeBlock, causal_conv, conv_step, conv_window, no_weight_decay


class Mamba(DecodeBlock):
    """mamba_ssm's `Mamba` mixer: (b, t, d_model) -> (b, t, d_model), with a decode cache."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, layer_idx: int | None = None,
                 device: Any = None, dtype: torch.dtype | None = None, backend: str = "auto"):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.layer_idx = layer_idx
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **kw)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **kw)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **kw)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **kw)
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"Mamba: dt_init must be 'random' or 'constant', got {dt_init!r}")
        # the zoo's standard init: A_log = log(1..n), D = 1, dt bias = softplus^-1(dt)
        init = zoo_mamba1.init_params({"d": self.d_inner, "n": d_state}, dt_min, dt_max)
        init["dt_bias"] = dt_bias_init(self.d_inner, dt_min, dt_max, dt_init_floor)
        f32 = {"device": device, "dtype": torch.float32}
        with torch.no_grad():
            self.dt_proj.bias.copy_(init["dt_bias"])
        self.A_log = nn.Parameter(init["A_log"].to(**f32))
        self.D = nn.Parameter(init["D"].to(**f32))
        no_weight_decay(self.A_log, self.D, self.dt_proj.bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **kw)
        self.scan = lrc_compile(zoo_mamba1.mamba1, backend=backend)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x_proj's (dt, B, C) with dt through dt_proj's weight (its bias is the scan's)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], -1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model). cu_seqlens: packed sequences (b = 1). cache:
        filled with each sequence's conv window and final state (a prefill from zero state)."""
        self._check_prefill(hidden_states, cu_seqlens, cache)
        x, z = self.in_proj(hidden_states).chunk(2, -1)
        if cache is not None:
            cache.conv.copy_(conv_window(x.detach(), self.d_conv, cu_seqlens))
        x = F.silu(causal_conv(x, self.conv1d.weight, self.conv1d.bias, cu_seqlens))
        dt, B, C = self._split(x)
        # the mamba1 spec is channels-first (b d t), as selective_scan_fn
        out = self.scan(x.mT, dt.mT, B.mT, C.mT, self.A_log, self.D, self.dt_proj.bias,
                        cu_seqlens=cu_seqlens, return_final_state=cache is not None)
        if cache is not None:
            out, final = out
            cache.ssm.copy_(final.detach())
        return self.out_proj(out.mT * F.silu(z))

    def _step(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, -1)
        x = F.silu(conv_step(cache.conv, x, self.conv1d.weight, self.conv1d.bias))
        dt, B, C = self._split(x)
        y, _ = self.scan.step(x, dt, B, C, self.A_log, self.D, self.dt_proj.bias,
                              state=cache.ssm, inplace=True)
        return self.out_proj(y * F.silu(z))

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: conv (b, d_inner, d_conv) in the weights' dtype, ssm (b, d_inner, d_state)
        float32 (mamba_ssm's conv_state and ssm_state). max_seqlen is unused (no KV)."""
        w = self.conv1d.weight
        device = device if device is not None else w.device
        return Cache(conv=torch.zeros(batch_size, self.d_inner, self.d_conv, device=device,
                                      dtype=dtype or w.dtype),
                     ssm=torch.zeros(batch_size, self.d_inner, self.d_state, device=device,
                                     dtype=torch.float32))
