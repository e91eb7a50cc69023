"""S4's layer (Gu, Goel & Re 2022) over the zoo's `s4` spec: the S4 repository's `S4Block`
around an `FFTConv` with the NPLR kernel (HiPPO-LegS), with a decode cache.

    A = diag(Lambda) - P P^*,  Lambda = -exp(log_A_real) + i A_imag,  dt = exp(log_dt)
    x_t = Abar x_{t-1} + Bbar u_t  (bilinear),  y = gelu(Re(C . x_t) + D u_t)
    out = GLU(output_linear(y))

What the zoo's spec fixes, and how it differs from the S4 repository's `SSMKernelDPLR`: all N
modes are kept (S4 keeps one of each conjugate pair, hence its N/2 and 2 Re(...)); Lambda and P
are shared by every channel (S4's n_ssm=1) while B and C are per channel; A's real part is
parametrized like lrc's S4D (log_A_real, S4's real_transform='exp'). Training runs the compiled
layer's convolution or scan lowering; decode runs the recurrence itself (the S4 promise).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import s4 as zoo_s4
from .common import Cache, DecodeBlock, no_weight_decay


class S4Kernel(nn.Module):
    """S4's NPLR parameters: log_dt (H), log_A_real and A_imag (N), P (N, 2), B and C (H, N, 2)
    (complex tensors as real views), HiPPO-LegS initialized. Everything but C is left out of
    weight decay (S4's wd=0 for dt, A, P, B); with lr those also get the S4 `_optim` hint
    {"weight_decay": 0, "lr": lr}."""

    def __init__(self, d_model: int, N: int = 64, dt_min: float = 0.001, dt_max: float = 0.1,
                 lr: float | None = None):
        super().__init__()
        init = zoo_s4.init_params({"h": d_model, "n": N}, dt_min, dt_max)
        Lambda = init["Lambda"]
        self.log_dt = nn.Parameter(init["log_dt"].float())
        self.log_A_real = nn.Parameter(torch.log(-Lambda.real).float())
        self.A_imag = nn.Parameter(Lambda.imag.float())
        for name in ("P", "B", "C"):
            real = torch.view_as_real(init[name].to(torch.complex64)).contiguous()
            self.register_parameter(name, nn.Parameter(real))
        for p in (self.log_dt, self.log_A_real, self.A_imag, self.P, self.B):
            no_weight_decay(p)
            if lr is not None:
                p._optim = {"weight_decay": 0.0, "lr": lr}

    def spec_params(self) -> tuple[torch.Tensor, ...]:
        """The spec's Params: log_dt, Lambda, P, B, C (complex64 where complex)."""
        Lambda = torch.complex(-torch.exp(self.log_A_real.float()), self.A_imag.float())
        return (self.log_dt, Lambda, *(torch.view_as_complex(getattr(self, n).float())
                                       for n in ("P", "B", "C")))


class S4(DecodeBlock):
    """The S4 repository's `S4Block` (FFTConv with the NPLR kernel, GELU, a GLU output linear):
    (b, t, d_model) -> (b, t, d_model) ((b, d_model, t) with transposed=True), with a decode
    cache. Returns the output only (S4 returns (y, state)); dropout is plain nn.Dropout."""

    def __init__(self, d_model: int, d_state: int = 64, dropout: float = 0.0,
                 transposed: bool = False, backend: str = "auto", **kernel_args: Any):
        super().__init__()
        self.h, self.n, self.transposed = d_model, d_state, transposed
        self.d_output = d_model
        self.kernel = S4Kernel(d_model, N=d_state, **kernel_args)
        self.D = nn.Parameter(torch.randn(d_model))
        no_weight_decay(self.D)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
        # S4Block's LinearActivation(final_act='glu') on the (b, t, h) layout
        self.output_linear = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))
        self.ssm = lrc_compile(zoo_s4.s4, backend=backend)

    def _params(self) -> tuple[torch.Tensor, ...]:
        return (*self.kernel.spec_params(), self.D)

    def _head(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """GELU, dropout and the GLU output linear on the SSM's output y (..., h)."""
        return self.output_linear(self.dropout(self.activation(y.to(dtype))))

    def forward(self, u: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model) ((b, d_model, t) with transposed=True).
        cu_seqlens: packed sequences (b = 1). cache: filled with each final state."""
        x = u if self.transposed else u.mT                       # (b, h, t) as the spec
        self._check_prefill(x.mT, cu_seqlens, cache)
        y = self.ssm(x, *self._params(), cu_seqlens=cu_seqlens,
                     return_final_state=cache is not None)
        if cache is not None:
            y, final = y
            cache.state.copy_(final.detach())
        y = self._head(y.mT, u.dtype)
        return y.mT if self.transposed else y

    def _step(self, u: torch.Tensor, cache: Cache) -> torch.Tensor:
        y, _ = self.ssm.step(u, *self._params(), state=cache.state, inplace=True)
        return self._head(y, u.dtype)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: state (b, d_model, d_state) complex64 (every mode, in the NPLR basis)."""
        device = device if device is not None else self.D.device
        return Cache(state=torch.zeros(batch_size, self.h, self.n, device=device,
                                       dtype=torch.complex64))
