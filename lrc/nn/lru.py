"""The Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks")
over the zoo's `lru` spec, with the parameter names of the paper's reference JAX code (nu_log,
theta_log, gamma_log, B_re, B_im, C_re, C_im, D), and the paper's residual block around it.

    lambda = exp(-exp(nu_log) + i exp(theta_log)),   B = (B_re + i B_im) exp(gamma_log)
    x_t = lambda x_{t-1} + B u_t,   y_t = Re((C_re + i C_im) x_t) + D u_t

gamma_log is trained, as in the reference code (initialized to log sqrt(1 - |lambda|^2)). The
zoo spec normalizes the input by gamma(nu) = sqrt(1 - |lambda|^2) itself, so the block hands it
B exp(gamma_log) / gamma(nu): the same product, with the spec unchanged.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import lru as zoo_lru
from .common import Cache, DecodeBlock, no_weight_decay


def _log_gamma(nu_log: torch.Tensor) -> torch.Tensor:
    """log sqrt(1 - |lambda|^2) = log sqrt(1 - exp(-2 exp(nu_log))), without cancellation."""
    return 0.5 * torch.log(-torch.expm1(-2 * torch.exp(nu_log)))


class LRU(DecodeBlock):
    """The reference code's `LRU` layer: (b, t, d_model) -> (b, t, d_model) through a complex
    diagonal state of d_hidden modes, with a decode cache. Arguments in the reference's order
    (d_hidden first) and with its defaults; the initialization is the reference's: lambda
    uniform on the ring r_min <= |lambda| <= r_max with phase in [0, max_phase], B and C
    Gaussian with std 1/sqrt(2 d_model) and 1/sqrt(d_hidden) per part, D standard normal."""

    def __init__(self, d_hidden: int, d_model: int, r_min: float = 0.0, r_max: float = 1.0,
                 max_phase: float = 6.28, backend: str = "auto"):
        super().__init__()
        self.d_hidden, self.d_model = d_hidden, d_model
        nu_log, theta_log = zoo_lru.ring_init(d_hidden, r_min, r_max, max_phase)
        self.nu_log = nn.Parameter(nu_log.float())
        self.theta_log = nn.Parameter(theta_log.float())
        self.gamma_log = nn.Parameter(_log_gamma(nu_log).float())
        b_std, c_std = 1 / math.sqrt(2 * d_model), 1 / math.sqrt(d_hidden)
        self.B_re = nn.Parameter(torch.randn(d_hidden, d_model) * b_std)
        self.B_im = nn.Parameter(torch.randn(d_hidden, d_model) * b_std)
        self.C_re = nn.Parameter(torch.randn(d_model, d_hidden) * c_std)
        self.C_im = nn.Parameter(torch.randn(d_model, d_hidden) * c_std)
        self.D = nn.Parameter(torch.randn(d_model))
        no_weight_decay(self.nu_log, self.theta_log, self.gamma_log)
        self.lru = lrc_compile(zoo_lru.lru, backend=backend)

    def _params(self) -> tuple[torch.Tensor, ...]:
        """The spec's Params: nu_log, theta_log, B and C complex64 (B rescaled so that the
        spec's own gamma(nu) becomes exp(gamma_log)), D."""
        nu_log = self.nu_log.float()
        scale = torch.exp(self.gamma_log.float() - _log_gamma(nu_log))[:, None]
        B = torch.complex(self.B_re.float() * scale, self.B_im.float() * scale)
        C = torch.complex(self.C_re.float(), self.C_im.float())
        return self.nu_log, self.theta_log, B, C, self.D

    def forward(self, u: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model). cu_seqlens: packed sequences (b = 1). cache:
        filled with each sequence's final state."""
        self._check_prefill(u, cu_seqlens, cache)
        y = self.lru(u, *self._params(), cu_seqlens=cu_seqlens,
                     return_final_state=cache is not None)
        if cache is not None:
            y, final = y
            cache.state.copy_(final.detach())
        return y

    def _step(self, u: torch.Tensor, cache: Cache) -> torch.Tensor:
        y, _ = self.lru.step(u, *self._params(), state=cache.state, inplace=True)
        return y

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: state (b, d_hidden) complex64."""
        device = device if device is not None else self.D.device
        return Cache(state=torch.zeros(batch_size, self.d_hidden, device=device,
                                       dtype=torch.complex64))


class LRUBlock(DecodeBlock):
    """The paper's residual block around the LRU (its reference `SequenceLayer` with layer
    norm): u + dropout(GLU(dropout(gelu(LRU(LayerNorm(u)))))), GLU(y) = out1(y) *
    sigmoid(out2(y)). Flax's defaults: LayerNorm eps 1e-6, gelu's tanh approximation."""

    def __init__(self, d_model: int, d_hidden: int, dropout: float = 0.0, r_min: float = 0.0,
                 r_max: float = 1.0, max_phase: float = 6.28, backend: str = "auto"):
        super().__init__()
        self.d_model = d_model
        self.normalization = nn.LayerNorm(d_model, eps=1e-6)
        self.seq = LRU(d_hidden, d_model, r_min, r_max, max_phase, backend=backend)
        self.out1 = nn.Linear(d_model, d_model)
        self.out2 = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()

    def _mix(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The residual branch after the LRU: gelu, GLU, dropouts, skip."""
        y = self.drop(F.gelu(y, approximate="tanh"))
        return u + self.drop(self.out1(y) * torch.sigmoid(self.out2(y)))

    def forward(self, u: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model). cu_seqlens: packed sequences (b = 1). cache:
        filled with each sequence's final LRU state."""
        return self._mix(u, self.seq(self.normalization(u), cu_seqlens=cu_seqlens, cache=cache))

    def _step(self, u: torch.Tensor, cache: Cache) -> torch.Tensor:
        return self._mix(u, self.seq._step(self.normalization(u), cache))

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """The LRU's cache: state (b, d_hidden) complex64."""
        return self.seq.allocate_inference_cache(batch_size, max_seqlen, dtype, device)
