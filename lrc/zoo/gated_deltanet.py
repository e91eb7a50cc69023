"""Gated DeltaNet, Yang, Kautz & Hatamizadeh 2024: the delta rule with a scalar decay per head.

    alpha_t = exp(g_t),  g_t = -exp(A_log) softplus(a_t + dt_bias)      (Mamba-2's gate)
    beta_t  = sigmoid(b_t),  k, q L2-normalized
    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T q_t

(S is key dim x value dim; fla's `chunk_gated_delta_rule` with g = log alpha, scale 1.) Written
as in the paper: decay, then the delta rule's write, so the transition is alpha (I - beta k k^T).
"""
from __future__ import annotations

import torch

import lrc
from lrc import Param, Seq, State, exp, sigmoid, softplus

from ._entry import Sizes, ZooEntry
from ._init import dt_bias_init, randn
from .deltanet import l2norm


@lrc.recurrence
def gated_deltanet(q: Seq("b t h k"), k: Seq("b t h k"), v: Seq("b t h v"), a: Seq("b t h"),
                   b: Seq("b t h"), A_log: Param("h"), dt_bias: Param("h"),
                   S: State("b h k v")):
    """One token of Gated DeltaNet: decay the head's state, then the delta rule's write."""
    kn, beta = l2norm(k, "k"), sigmoid(b)
    alpha = exp(-exp(A_log) * softplus(a + dt_bias))
    S = alpha * S
    S = S + beta * kn * (v - (kn * S).sum("k"))
    return (l2norm(q, "k") * S).sum("k"), S


SIZES = {"h": 3, "k": 5, "v": 7}


def init_params(sizes: Sizes, A_min: float = 1.0, A_max: float = 16.0) -> dict:
    """The released init: A uniform in [1, 16] per head (A_log its log), dt_bias as Mamba's."""
    h = sizes["h"]
    A = torch.empty(h, dtype=torch.float64).uniform_(A_min, A_max)
    return {"A_log": torch.log(A), "dt_bias": dt_bias_init(h)}


def random_inputs(sizes: Sizes) -> dict:
    """q, k, v, b standard normal; a small (a projection's output at init)."""
    b, t, h, k, v = (sizes[x] for x in "bthkv")
    return {"q": randn(b, t, h, k), "k": randn(b, t, h, k), "v": randn(b, t, h, v),
            "a": randn(b, t, h, std=0.5), "b": randn(b, t, h)}


ENTRY = ZooEntry(gated_deltanet, SIZES, init_params, random_inputs,
                 doc="Gated DeltaNet (delta rule, scalar decay per head), Yang et al. 2024")
