"""Kimi Delta Attention, Kimi Linear 2025: the delta rule with a decay per key channel.

    g_t = -exp(A_log) softplus(f_t + dt_bias)        (per head and key channel; KDA's gate)
    beta_t = sigmoid(b_t),  k, q L2-normalized
    S_t = (I - beta_t k_t k_t^T) diag(exp(g_t)) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T q_t

(S is key dim x value dim; fla's `chunk_kda` with the gate applied, scale 1.) The transition
is diag(alpha) - beta k (alpha * k)^T: a diagonal plus a rank-1 term with two distinct vectors.
"""
from __future__ import annotations

import torch

import lrc
from lrc import Param, Seq, State, exp, sigmoid, softplus

from ._entry import Sizes, ZooEntry
from ._init import dt_bias_init, randn
from .deltanet import l2norm


@lrc.recurrence
def kda(q: Seq("b t h k"), k: Seq("b t h k"), v: Seq("b t h v"), f: Seq("b t h k"),
        b: Seq("b t h"), A_log: Param("h"), dt_bias: Param("h k"), S: State("b h k v")):
    """One token of KDA: per-key decay of the state, then the delta rule's write."""
    kn, beta = l2norm(k, "k"), sigmoid(b)
    S = exp(-exp(A_log) * softplus(f + dt_bias)) * S
    S = S + beta * kn * (v - (kn * S).sum("k"))
    return (l2norm(q, "k") * S).sum("k"), S


SIZES = {"h": 3, "k": 5, "v": 7}


def init_params(sizes: Sizes, A_min: float = 1.0, A_max: float = 16.0) -> dict:
    """A uniform in [1, 16] per head (A_log its log); dt_bias per (head, key) as Mamba's."""
    h, k = sizes["h"], sizes["k"]
    A = torch.empty(h, dtype=torch.float64).uniform_(A_min, A_max)
    return {"A_log": torch.log(A), "dt_bias": dt_bias_init(h * k).reshape(h, k)}


def random_inputs(sizes: Sizes) -> dict:
    """q, k, v, b standard normal; f small (a low-rank projection's output at init)."""
    b, t, h, k, v = (sizes[x] for x in "bthkv")
    return {"q": randn(b, t, h, k), "k": randn(b, t, h, k), "v": randn(b, t, h, v),
            "f": randn(b, t, h, k, std=0.5), "b": randn(b, t, h)}


ENTRY = ZooEntry(kda, SIZES, init_params, random_inputs,
                 doc="Kimi Delta Attention (delta rule, per-key decay), Kimi Linear 2025")
