"""Mamba-1's selective scan (S6), Gu & Dao 2023, in mamba_ssm's `selective_scan_fn` layout.

    dt_t = softplus(dt_t + dt_bias),  A = -exp(A_log)
    h_t  = exp(dt_t A) h_{t-1} + dt_t B_t u_t     (Mamba's mix: ZOH for A, Euler for B)
    y_t  = C_t . h_t + D u_t

Channels-first (b d t) as in mamba_ssm; `lrc.compile` accepts exactly that layout.
"""
from __future__ import annotations

import math

import torch

import lrc
from lrc import Param, Seq, State, exp, softplus

from ._entry import Sizes, ZooEntry
from ._init import dt_bias_init, randn


@lrc.recurrence
def mamba1(u: Seq("b d t"), dt: Seq("b d t"), B: Seq("b n t"), C: Seq("b n t"),
           A_log: Param("d n"), D: Param("d"), dt_bias: Param("d"),
           h: State("b d n")):
    """One token of S6: a selective diagonal SSM per channel d with state size n."""
    delta = softplus(dt + dt_bias)
    Abar, Bbar = lrc.mamba_mix(delta, -exp(A_log), B)
    h = Abar * h + Bbar * u
    return (C * h).sum("n") + D * u, h


SIZES = {"d": 5, "n": 3}


def init_params(sizes: Sizes, dt_min: float = 1e-3, dt_max: float = 0.1) -> dict:
    """Mamba's init: A_log[d, n] = log(n + 1) (S4D-Real), D = 1, dt_bias = softplus^-1(dt)."""
    d, n = sizes["d"], sizes["n"]
    A_log = torch.log(torch.arange(1, n + 1, dtype=torch.float64)).repeat(d, 1)
    return {"A_log": A_log, "D": torch.ones(d, dtype=torch.float64),
            "dt_bias": dt_bias_init(d, dt_min, dt_max)}


def random_inputs(sizes: Sizes) -> dict:
    """u, B, C standard normal; dt as dt_proj's output at init (std ~ dt_rank^-0.5)."""
    b, t, d, n = sizes["b"], sizes["t"], sizes["d"], sizes["n"]
    return {"u": randn(b, d, t), "dt": randn(b, d, t, std=1 / math.sqrt(3)),
            "B": randn(b, n, t), "C": randn(b, n, t)}


ENTRY = ZooEntry(mamba1, SIZES, init_params, random_inputs,
                 doc="Mamba-1 selective scan (S6), Gu & Dao 2023")
