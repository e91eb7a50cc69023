"""Mamba-2's block (Dao & Gu 2024) over the zoo's `mamba2` (SSD) spec, with mamba_ssm's
`Mamba2` constructor arguments and parameter names (in_proj, conv1d, dt_bias, A_log, D, norm,
out_proj), so a mamba_ssm state dict loads unchanged.

    z, xBC, dt = in_proj(u);  x, B, C = silu(conv1d(xBC))
    y = SSD(x, dt, B, C; A_log, D, dt_bias);  out = out_proj(rmsnorm(y * silu(z)))
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import mamba2 as zoo_mamba2
from ..zoo._init import dt_bias_init
from .common import (
    Cache,
    DecodeBlock,
    GatedRMSNorm,
    causal_conv,
    conv_step,
    conv_window,
    no_weight_decay,
)


class Mamba2(DecodeBlock):
    """mamba_ssm's `Mamba2` mixer: (b, t, d_model) -> (b, t, d_model), with a decode cache.

    Not supported (a clear error): d_ssm < d_inner (the extra gated-MLP channels),
    D_has_hdim, a dt_limit other than (0, inf). chunk_size and use_mem_eff_path are accepted
    for compatibility; lrc's plan picks the lowering."""

    def __init__(self, d_model: int, d_state: int = 128, d_conv: int = 4,
                 conv_init: float | None = None, expand: int = 2, headdim: int = 64,
                 d_ssm: int | None = None, ngroups: int = 1,
                 A_init_range: tuple[float, float] = (1, 16), D_has_hdim: bool = False,
                 rmsnorm: bool = True, norm_before_gate: bool = False, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 dt_limit: tuple[float, float] = (0.0, float("inf")), bias: bool = False,
                 conv_bias: bool = True, chunk_size: int = 256, use_mem_eff_path: bool = True,
                 layer_idx: int | None = None, device: Any = None,
                 dtype: torch.dtype | None = None, backend: str = "auto"):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.headdim, self.ngroups, self.layer_idx = headdim, ngroups, layer_idx
        self.rmsnorm, self.chunk_size = rmsnorm, chunk_size
        if d_ssm not in (None, self.d_inner):
            raise NotImplementedError(f"Mamba2: d_ssm={d_ssm} < d_inner={self.d_inner} (the "
                                      "gated-MLP channels) is not supported")
        if D_has_hdim or tuple(dt_limit) != (0.0, float("inf")):
            raise NotImplementedError("Mamba2: D_has_hdim=True and a dt_limit are not "
                                      "supported (the SSD spec has one D per head, no clamp)")
        if self.d_inner % headdim:
            raise ValueError(f"Mamba2: headdim {headdim} does not divide d_inner {self.d_inner}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"Mamba2: ngroups {ngroups} does not divide nheads {self.nheads}")
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias, **kw)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim,
                                padding=d_conv - 1, bias=conv_bias, **kw)
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)
        sizes = {"g": ngroups, "r": self.nheads // ngroups, "p": headdim, "n": d_state}
        init = zoo_mamba2.init_params(sizes, *A_init_range, dt_min, dt_max)
        f32 = {"device": device, "dtype": torch.float32}
        self.dt_bias = nn.Parameter(dt_bias_init(self.nheads, dt_min, dt_max, dt_init_floor)
                                    .to(**f32))
        self.A_log = nn.Parameter(init["A_log"].to(**f32))
        self.D = nn.Parameter(init["D"].to(**f32))
        no_weight_decay(self.dt_bias, self.A_log, self.D)
        if rmsnorm:
            self.norm = GatedRMSNorm(self.d_inner, eps=1e-5, norm_before_gate=norm_before_gate,
                                     group_size=self.d_inner // ngroups).to(**kw)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **kw)
        self.ssd = lrc_compile(zoo_mamba2.mamba2, backend=backend)

    def _gate(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The gated norm (or silu gate without rmsnorm), then out_proj; y (..., d_inner)."""
        y = self.norm(y, z) if self.rmsnorm else y * F.silu(z)
        return self.out_proj(y)

    def _split(self, xBC: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x by head, B by group, C by group) from the convolved channels."""
        gn = self.ngroups * self.d_state
        x, B, C = xBC.split([self.d_inner, gn, gn], -1)
        return (x.unflatten(-1, (self.nheads, self.headdim)),
                B.unflatten(-1, (self.ngroups, self.d_state)),
                C.unflatten(-1, (self.ngroups, self.d_state)))

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model). cu_seqlens: packed sequences (b = 1). cache:
        filled with each sequence's conv window and final state (a prefill from zero state)."""
        self._check_prefill(hidden_states, cu_seqlens, cache)
        z, xBC, dt = self.in_proj(hidden_states).split(
            [self.d_inner, self.conv_dim, self.nheads], -1)
        if cache is not None:
            cache.conv.copy_(conv_window(xBC.detach(), self.d_conv, cu_seqlens))
        xBC = F.silu(causal_conv(xBC, self.conv1d.weight, self.conv1d.bias, cu_seqlens))
        x, B, C = self._split(xBC)
        out = self.ssd(x, dt, B, C, self.A_log, self.D, self.dt_bias, cu_seqlens=cu_seqlens,
                       return_final_state=cache is not None)
        if cache is not None:
            out, final = out
            cache.ssm.copy_(final.detach())
        return self._gate(out.flatten(-2), z)

    def _step(self, u: torch.Tensor, cache: Cache) -> torch.Tensor:
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, self.nheads], -1)
        xBC = F.silu(conv_step(cache.conv, xBC, self.conv1d.weight, self.conv1d.bias))
        x, B, C = self._split(xBC)
        y, _ = self.ssd.step(x, dt, B, C, self.A_log, self.D, self.dt_bias, state=cache.ssm,
                             inplace=True)
        return self._gate(y.flatten(-2), z)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: conv (b, conv_dim, d_conv) in the weights' dtype, ssm (b, nheads, headdim,
        d_state) float32 (mamba_ssm's conv_state and ssm_state)."""
        w = self.conv1d.weight
        device = device if device is not None else w.device
        return Cache(conv=torch.zeros(batch_size, self.conv_dim, self.d_conv, device=device,
                                      dtype=dtype or w.dtype),
                     ssm=torch.zeros(batch_size, self.nheads, self.headdim, self.d_state,
                                     device=device, dtype=torch.float32))

