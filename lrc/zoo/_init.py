"""Initialization helpers shared by the zoo: float64 draws from the global torch RNG."""
from __future__ import annotations

import math

import torch


def inv_softplus(x: torch.Tensor) -> torch.Tensor:
    """The y with softplus(y) = x (x > 0): x + log(1 - exp(-x)), accurate for small x."""
    return x + torch.log(-torch.expm1(-x))


def log_uniform(shape: tuple[int, ...] | int, lo: float, hi: float) -> torch.Tensor:
    """Samples whose log is uniform in [log lo, log hi]."""
    u = torch.rand(shape, dtype=torch.float64)
    return torch.exp(u * (math.log(hi) - math.log(lo)) + math.log(lo))


def dt_bias_init(d: int, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_floor: float = 1e-4) -> torch.Tensor:
    """Mamba's dt bias: inverse softplus of dt drawn log-uniformly in [dt_min, dt_max]."""
    return inv_softplus(log_uniform(d, dt_min, dt_max).clamp(min=dt_floor))


def complex_randn(*shape: int, std: float = 1.0) -> torch.Tensor:
    """Circular complex Gaussian with E|z|^2 = std^2 (each part has variance std^2 / 2)."""
    re = torch.randn(shape, dtype=torch.float64)
    im = torch.randn(shape, dtype=torch.float64)
    return torch.complex(re, im) * (std / math.sqrt(2))


def randn(*shape: int, std: float = 1.0) -> torch.Tensor:
    """Real float64 Gaussian."""
    return torch.randn(shape, dtype=torch.float64) * std
