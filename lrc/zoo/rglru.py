"""Hawk/Griffin's Real-Gated Linear Recurrent Unit, De et al. 2024.

    r_t = sigmoid(gate_r_t),  i_t = sigmoid(gate_i_t),  a_t = sigmoid(Lambda)^(c r_t), c = 8
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t),   y_t = h_t

log a_t = -c softplus(-Lambda) r_t is formed in log space, and sqrt(1 - a_t^2) as
sqrt(-expm1(2 log a_t)), so a_t near 1 loses nothing to cancellation. The gates arrive as
pre-activations (Griffin's block-diagonal linear maps of x run outside the recurrence).
"""
from __future__ import annotations

import torch

import lrc
from lrc import Param, Seq, State, exp, expm1, sigmoid, softplus, sqrt

from ._entry import Sizes, ZooEntry
from ._init import randn

C_RGLRU = 8.0


@lrc.recurrence
def rglru(x: Seq("b t d"), gate_r: Seq("b t d"), gate_i: Seq("b t d"), Lambda: Param("d"),
          h: State("b d")):
    """One token of the RG-LRU: a gated, normalized elementwise recurrence."""
    log_a = -C_RGLRU * softplus(-Lambda) * sigmoid(gate_r)
    h = exp(log_a) * h + sqrt(-expm1(2 * log_a)) * (sigmoid(gate_i) * x)
    return h, h


SIZES = {"d": 7}


def init_params(sizes: Sizes, min_rad: float = 0.9, max_rad: float = 0.999) -> dict:
    """Griffin's init: a = sigmoid(Lambda) with a^2 uniform in [min_rad^2, max_rad^2]."""
    a = torch.sqrt(torch.empty(sizes["d"], dtype=torch.float64)
                   .uniform_(min_rad ** 2, max_rad ** 2))
    return {"Lambda": torch.log(a) - torch.log1p(-a)}


def random_inputs(sizes: Sizes) -> dict:
    """x and the two gate pre-activations standard normal."""
    b, t, d = sizes["b"], sizes["t"], sizes["d"]
    return {"x": randn(b, t, d), "gate_r": randn(b, t, d), "gate_i": randn(b, t, d)}


ENTRY = ZooEntry(rglru, SIZES, init_params, random_inputs,
                 doc="Hawk/Griffin RG-LRU, De et al. 2024")
