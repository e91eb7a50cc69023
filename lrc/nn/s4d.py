"""S4D's layer (Gu, Gupta, Goel & Re 2022) over the zoo's `s4d_zoh` spec, with the S4
repository's standalone `S4D` arguments and parameter names (D, kernel.log_dt, kernel.C as a
real view, kernel.log_A_real, kernel.A_imag, output_linear.0), so its state dicts load.

    y = gelu(SSM_ZOH(u) + D u);  out = GLU(conv1x1(y))    (B = 1, folded into C as in S4D)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import s4d as zoo_s4d
from .common import Cache, DecodeBlock, no_weight_decay


class S4DKernel(nn.Module):
    """S4D's parameters: log_dt (H), C (H, N/2, 2) the real view of a complex tensor,
    log_A_real and A_imag (H, N/2) with the S4D-Lin init. With lr, A and dt get the S4
    `_optim` hint {"weight_decay": 0, "lr": lr}; they are never weight-decayed."""

    def __init__(self, d_model: int, N: int = 64, dt_min: float = 0.001, dt_max: float = 0.1,
                 lr: float | None = None):
        super().__init__()
        if N % 2:
            raise ValueError(f"S4D: d_state {N} must be even (conjugate pairs of modes)")
        sizes = {"h": d_model, "n": N // 2}
        init = zoo_s4d.init_params(sizes, "lin", dt_min, dt_max)
        self.C = nn.Parameter(torch.view_as_real(init["C"].to(torch.complex64)).contiguous())
        for name in ("log_dt", "log_A_real", "A_imag"):
            self.register_parameter(name, nn.Parameter(init[name].float()))
            p = getattr(self, name)   # the registered object (HF's meta-device loading swaps it)
            no_weight_decay(p)
            if lr is not None:
                p._optim = {"weight_decay": 0.0, "lr": lr}

    def complex_c(self) -> torch.Tensor:
        """C as a complex64 (H, N/2) tensor."""
        return torch.view_as_complex(self.C.float())


class S4D(DecodeBlock):
    """The S4 repository's `S4D` layer: (b, t, d_model) -> (b, t, d_model) (transposed=True:
    (b, d_model, t), the S4 default), with a decode cache. Returns the output only (S4 returns
    (y, None)); dropout is plain nn.Dropout."""

    def __init__(self, d_model: int, d_state: int = 64, dropout: float = 0.0,
                 transposed: bool = False, backend: str = "auto", **kernel_args: Any):
        super().__init__()
        self.h, self.n, self.transposed = d_model, d_state, transposed
        self.d_output = d_model
        self.D = nn.Parameter(torch.randn(d_model))
        no_weight_decay(self.D)
        self.kernel = S4DKernel(d_model, N=d_state, **kernel_args)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
        self.output_linear = nn.Sequential(nn.Conv1d(d_model, 2 * d_model, kernel_size=1),
                                           nn.GLU(dim=-2))
        self.ssm = lrc_compile(zoo_s4d.s4d_zoh, backend=backend)

    def _params(self) -> tuple[torch.Tensor, ...]:
        k = self.kernel
        B = torch.ones(self.h, self.n // 2, dtype=torch.complex64, device=k.C.device)
        return k.log_dt, k.log_A_real, k.A_imag, B, k.complex_c(), self.D

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
        y = self.output_linear(self.dropout(self.activation(y.to(u.dtype))))
        return y if self.transposed else y.mT

    def _step(self, u: torch.Tensor, cache: Cache) -> torch.Tensor:
        y, _ = self.ssm.step(u, *self._params(), state=cache.state, inplace=True)
        y = self.output_linear(self.dropout(self.activation(y.to(u.dtype)))[..., None])
        return y[..., 0]

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: state (b, d_model, d_state / 2) complex64."""
        device = device if device is not None else self.D.device
        return Cache(state=torch.zeros(batch_size, self.h, self.n // 2, device=device,
                                       dtype=torch.complex64))

