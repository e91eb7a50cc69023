"""H3's layer (Fu, Dao et al. 2023) over the zoo's `h3` spec, with the safari repository's
`H3` names (q_proj, k_proj, v_proj, ssm_k_kernel, ssm_k_D, kernel, D, output_linear) and a
decode cache holding both SSMs' states.

    q, k, v = q_proj(u), k_proj(u), v_proj(u)
    kc_t = sum_m C_shift[m] k_{t-m} + ssm_k_D k_t        (the shift SSM: a short conv of k)
    x_t  = Abar x_{t-1} + Bbar (kc_t v_t)                 (S4D-Lin diagonal SSM, ZOH, B = 1)
    y_t  = q_t (2 Re(C . x_t) + D kc_t v_t);  out = output_linear(y)

Head dim 1, as the paper's main models and the zoo's spec (safari's head_dim > 1 makes kv an
outer product per head: not this spec). The shift SSM's D term is folded into its first tap
(both multiply k_t), so the spec sees one filter.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import h3 as zoo_h3
from ..zoo._init import randn
from .common import Cache, DecodeBlock, no_weight_decay
from .s4d import S4DKernel


class ShiftKernel(nn.Module):
    """The shift SSM's output map C (H, d_state): tap m multiplies k_{t-m} (safari's
    SSKernelShift with B = e_0, whose kernel is C itself). Init as the zoo's: N(0, 1/d_state)."""

    def __init__(self, d_model: int, N: int = 64):
        super().__init__()
        self.C = nn.Parameter(randn(d_model, N, std=N ** -0.5).float())


class H3(DecodeBlock):
    """safari's `H3` layer: (b, t, d_model) -> (b, t, d_model), with a decode cache.

    d_state is both SSMs' size: the shift SSM's taps and the diagonal SSM's N (d_state / 2
    complex modes, one of each conjugate pair). kernel_args (dt_min, dt_max, lr) go to the
    diagonal SSM's S4DKernel."""

    def __init__(self, d_model: int, d_state: int = 64, layer_idx: int | None = None,
                 device: Any = None, dtype: torch.dtype | None = None, backend: str = "auto",
                 **kernel_args: Any):
        super().__init__()
        if d_state % 2:
            raise ValueError(f"H3: d_state {d_state} must be even (the diagonal SSM keeps "
                             "d_state / 2 conjugate pairs of modes)")
        kw = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.layer_idx = d_model, d_state, layer_idx
        self.q_proj = nn.Linear(d_model, d_model, **kw)
        self.k_proj = nn.Linear(d_model, d_model, **kw)
        self.v_proj = nn.Linear(d_model, d_model, **kw)
        self.ssm_k_kernel = ShiftKernel(d_model, d_state)
        self.ssm_k_D = nn.Parameter(torch.randn(d_model))
        self.kernel = S4DKernel(d_model, N=d_state, **kernel_args)
        self.D = nn.Parameter(torch.randn(d_model))
        no_weight_decay(self.ssm_k_D, self.D)
        self.output_linear = nn.Linear(d_model, d_model, **kw)
        self.ssm = lrc_compile(zoo_h3.h3, backend=backend)
        if device is not None:
            self.to(device)

    def _params(self) -> tuple[torch.Tensor, ...]:
        """The spec's Params: the shift filter (ssm_k_D added to tap 0), then the diagonal SSM."""
        C = self.ssm_k_kernel.C
        shift_C = torch.cat([C[:, :1] + self.ssm_k_D[:, None], C[:, 1:]], 1)
        k = self.kernel
        return shift_C, k.log_dt, k.log_A_real, k.A_imag, k.complex_c(), self.D

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model). cu_seqlens: packed sequences (b = 1). cache:
        filled with each sequence's shift and diagonal SSM states (a prefill from zero)."""
        self._check_prefill(hidden_states, cu_seqlens, cache)
        u = hidden_states
        y = self.ssm(self.q_proj(u), self.k_proj(u), self.v_proj(u), *self._params(),
                     cu_seqlens=cu_seqlens, return_final_state=cache is not None)
        if cache is not None:
            y, (shift, ssm) = y
            cache.shift.copy_(shift.detach())
            cache.ssm.copy_(ssm.detach())
        return self.output_linear(y.to(self.output_linear.weight.dtype))

    def _step(self, u: torch.Tensor, cache: Cache) -> torch.Tensor:
        y, _ = self.ssm.step(self.q_proj(u), self.k_proj(u), self.v_proj(u), *self._params(),
                             state=(cache.shift, cache.ssm), inplace=True)
        return self.output_linear(y.to(self.output_linear.weight.dtype))

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: shift (b, d_model, d_state) float32, the last d_state k's (newest first);
        ssm (b, d_model, d_state / 2) complex64. max_seqlen is unused (no KV)."""
        device = device if device is not None else self.D.device
        return Cache(shift=torch.zeros(batch_size, self.d_model, self.d_state, device=device,
                                       dtype=torch.float32),
                     ssm=torch.zeros(batch_size, self.d_model, self.d_state // 2, device=device,
                                     dtype=torch.complex64))
