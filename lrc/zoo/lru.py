"""The Linear Recurrent Unit, Orvieto et al. 2023: a complex diagonal recurrence, gamma-normalized.

    lambda = exp(-exp(nu_log) + i exp(theta_log)),   gamma = sqrt(1 - |lambda|^2)
    x_t = lambda x_{t-1} + gamma (B u_t),   y_t = Re(C x_t) + D u_t

B (n x d) and C (d x n) are complex matrices. The paper trains a separate gamma_log initialized
to this value; here gamma is recomputed from nu, which keeps the normalization exact in training.
"""
from __future__ import annotations

import math

import torch

import lrc
from lrc import Param, Seq, State, exp, expm1, sqrt

from ._entry import Sizes, ZooEntry
from ._init import complex_randn, randn


@lrc.recurrence
def lru(u: Seq("b t d"), nu_log: Param("n"), theta_log: Param("n"),
        B: Param("n d", complex=True), C: Param("d n", complex=True), D: Param("d"),
        x: State("b n", complex=True)):
    """One token of the LRU: complex diagonal decay, gamma-normalized input."""
    lam = exp(-exp(nu_log) + 1j * exp(theta_log))
    gamma = sqrt(-expm1(-2 * exp(nu_log)))        # sqrt(1 - |lambda|^2) without cancellation
    x = lam * x + gamma * (B * u).sum("d")
    return (C * x).sum("n").real + D * u, x


SIZES = {"d": 5, "n": 7}


def ring_init(n: int, r_min: float = 0.9, r_max: float = 0.999,
              max_phase: float = 2 * math.pi) -> tuple[torch.Tensor, torch.Tensor]:
    """(nu_log, theta_log) with lambda uniform on the ring r_min <= |lambda| <= r_max, phase in
    [0, max_phase] (uniform in area: |lambda|^2 is uniform in [r_min^2, r_max^2])."""
    u1 = torch.rand(n, dtype=torch.float64)
    u2 = torch.rand(n, dtype=torch.float64)
    nu = -0.5 * torch.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2)
    return torch.log(nu), torch.log(max_phase * u2)


def init_params(sizes: Sizes, r_min: float = 0.9, r_max: float = 0.999,
                max_phase: float = 2 * math.pi) -> dict:
    """The LRU's init: the ring, B ~ CN(0, 1/d), C ~ CN(0, 1/n), D ~ N(0, 1)."""
    d, n = sizes["d"], sizes["n"]
    nu_log, theta_log = ring_init(n, r_min, r_max, max_phase)
    return {"nu_log": nu_log, "theta_log": theta_log, "B": complex_randn(n, d, std=d ** -0.5),
            "C": complex_randn(d, n, std=n ** -0.5), "D": randn(d)}


def random_inputs(sizes: Sizes) -> dict:
    """u standard normal."""
    return {"u": randn(sizes["b"], sizes["t"], sizes["d"])}


ENTRY = ZooEntry(lru, SIZES, init_params, random_inputs,
                 doc="Linear Recurrent Unit, Orvieto et al. 2023")
