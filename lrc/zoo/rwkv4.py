"""RWKV-4's WKV, Peng et al. 2023: an exponentially decayed softmax-like average with a bonus.

    wkv_t = (num_{t-1} + e^{u + k_t} v_t) / (den_{t-1} + e^{u + k_t})
    num_t = e^{-w} num_{t-1} + e^{k_t} v_t,   den_t = e^{-w} den_{t-1} + e^{k_t}

with w = exp(time_decay) > 0 and u = time_first (the bonus of the current token). Written
naively: the max-trick that keeps e^{k} in range is a stability pass's job, not the spec's.
"""
from __future__ import annotations

import math

import torch

import lrc
from lrc import Param, Seq, State, exp

from ._entry import Sizes, ZooEntry
from ._init import randn


@lrc.recurrence
def rwkv4(k: Seq("b t c"), v: Seq("b t c"), time_decay: Param("c"), time_first: Param("c"),
          num: State("b c"), den: State("b c")):
    """One token of RWKV-4's WKV: the output reads the old sums plus the bonus term."""
    decay = exp(-exp(time_decay))
    bonus = exp(time_first + k)
    wkv = (num + bonus * v) / (den + bonus)       # reads the states before this token
    num = decay * num + exp(k) * v
    den = decay * den + exp(k)
    return wkv, (num, den)


SIZES = {"c": 7}


def init_params(sizes: Sizes, layer_id: int = 0, n_layer: int = 2) -> dict:
    """RWKV-4's init: decay speeds -5 + 8 (i/(c-1))^(0.7 + 1.3 ratio), u = log 0.3 + zigzag."""
    c = sizes["c"]
    ratio = layer_id / (n_layer - 1)
    i = torch.arange(c, dtype=torch.float64)
    decay_speed = -5 + 8 * (i / max(c - 1, 1)) ** (0.7 + 1.3 * ratio)
    zigzag = torch.tensor([(j + 1) % 3 - 1 for j in range(c)], dtype=torch.float64) * 0.5
    return {"time_decay": decay_speed, "time_first": math.log(0.3) + zigzag}


def random_inputs(sizes: Sizes) -> dict:
    """k and v standard normal (key/value projections of layer-normed tokens)."""
    b, t, c = sizes["b"], sizes["t"], sizes["c"]
    return {"k": randn(b, t, c), "v": randn(b, t, c)}


def random_state(sizes: Sizes) -> dict:
    """num Gaussian, den positive (it is a sum of exponentials)."""
    b, c = sizes["b"], sizes["c"]
    return {"num": randn(b, c), "den": 0.5 + torch.rand(b, c, dtype=torch.float64)}


ENTRY = ZooEntry(rwkv4, SIZES, init_params, random_inputs, random_state,
                 doc="RWKV-4 WKV with bonus (naive form), Peng et al. 2023")
