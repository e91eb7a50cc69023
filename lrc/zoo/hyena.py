"""A Hyena operator of order 2, Poli et al. 2023, with its long convolution as a shift register.

    z_t = x1_t v_t,   y_t = x0_t ((filt * z)_t + bias z_t),   (filt * z)_t = sum_l filt[l] z_{t-l}

The state holds the last L gated inputs (L = the filter length); the step shifts it by one and
puts z_t in front. Hyena makes `filt` with an implicit MLP over positions times an exponential
window; the zoo's init keeps the window and draws the MLP's output at random.
"""
from __future__ import annotations

import math

import torch

import lrc
from lrc import Param, Seq, State

from ._entry import Sizes, ZooEntry
from ._init import randn


@lrc.recurrence
def hyena(v: Seq("b t d"), x1: Seq("b t d"), x0: Seq("b t d"), filt: Param("d l"),
          bias: Param("d"), h: State("b d l")):
    """One token of the order-2 Hyena operator with an explicit filter of length l."""
    z = x1 * v
    h = lrc.shift(h, "l", fill=z)
    return x0 * ((filt * h).sum("l") + bias * z), h


SIZES = {"d": 5, "l": 41}


def exponential_window(d: int, length: int, fast_decay_pct: float = 0.3,
                       slow_decay_pct: float = 1.5, target: float = 1e-2) -> torch.Tensor:
    """Hyena's ExponentialModulation: exp(-|delta_d| t) over t in [0, 1], channel d's rate
    chosen so the window falls to `target` at fast_decay_pct ... slow_decay_pct of the length."""
    deltas = torch.linspace(math.log(target) / fast_decay_pct, math.log(target) / slow_decay_pct,
                            d, dtype=torch.float64)
    t = torch.linspace(0, 1, length, dtype=torch.float64)
    return torch.exp(-t[None, :] * deltas.abs()[:, None])


def init_params(sizes: Sizes) -> dict:
    """A random filter (std l^-1/2) under Hyena's exponential window; bias ~ N(0, 1)."""
    d, length = sizes["d"], sizes["l"]
    filt = randn(d, length, std=length ** -0.5) * exponential_window(d, length)
    return {"filt": filt, "bias": randn(d)}


def random_inputs(sizes: Sizes) -> dict:
    """v, x1, x0 standard normal (the three projections of the short-conv'd input)."""
    b, t, d = sizes["b"], sizes["t"], sizes["d"]
    return {"v": randn(b, t, d), "x1": randn(b, t, d), "x0": randn(b, t, d)}


ENTRY = ZooEntry(hyena, SIZES, init_params, random_inputs,
                 doc="Hyena order-2 operator with an explicit long convolution, Poli et al. 2023")
