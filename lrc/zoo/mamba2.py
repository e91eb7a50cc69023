"""Mamba-2's SSD, Dao & Gu 2024: a scalar decay per head, B and C shared by the heads of a group.

    dt_t = softplus(dt_t + dt_bias),  A = -exp(A_log)            (one per head)
    h_t  = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T                  (h: head dim p x state dim n)
    y_t  = h_t C_t + D x_t

Heads are the memory axis `(g r)`: g groups (mamba_ssm's ngroups) of r heads each, so
x is (b, t, nheads, p) and B, C are (b, t, ngroups, n) exactly as `mamba_chunk_scan_combined`
takes them; head i reads group i // r.
"""
from __future__ import annotations

import torch

import lrc
from lrc import Param, Seq, State, exp, softplus

from ._entry import Sizes, ZooEntry
from ._init import dt_bias_init, randn


@lrc.recurrence
def mamba2(x: Seq("b t (g r) p"), dt: Seq("b t (g r)"), B: Seq("b t g n"), C: Seq("b t g n"),
           A_log: Param("(g r)"), D: Param("(g r)"), dt_bias: Param("(g r)"),
           h: State("b (g r) p n")):
    """One token of SSD: a (p x n) state per head, decayed by one scalar per head."""
    delta = softplus(dt + dt_bias)
    Abar, Bbar = lrc.mamba_mix(delta, -exp(A_log), B)
    h = Abar * h + Bbar * x
    return (C * h).sum("n") + D * x, h


SIZES = {"g": 3, "r": 3, "p": 5, "n": 7}


def init_params(sizes: Sizes, A_min: float = 1.0, A_max: float = 16.0, dt_min: float = 1e-3,
                dt_max: float = 0.1) -> dict:
    """Mamba-2's init: -A uniform in [1, 16] per head, D = 1, dt_bias = softplus^-1(dt)."""
    heads = sizes["g"] * sizes["r"]
    A = torch.empty(heads, dtype=torch.float64).uniform_(A_min, A_max)
    return {"A_log": torch.log(A), "D": torch.ones(heads, dtype=torch.float64),
            "dt_bias": dt_bias_init(heads, dt_min, dt_max)}


def random_inputs(sizes: Sizes) -> dict:
    """x, B, C standard normal; dt small (in_proj's output at init)."""
    b, t, g, r, p, n = (sizes[k] for k in "btgrpn")
    return {"x": randn(b, t, g * r, p), "dt": randn(b, t, g * r, std=0.5),
            "B": randn(b, t, g, n), "C": randn(b, t, g, n)}


ENTRY = ZooEntry(mamba2, SIZES, init_params, random_inputs,
                 doc="Mamba-2 SSD with ngroups, Dao & Gu 2024")
