"""Gated Linear Attention, Yang et al. 2024: a matrix state with a per-key decay in log space.

    S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T,   o_t = q_t^T S_t

gk <= 0 is the log decay as fla's `chunk_gla` takes it (logsigmoid(x W) / 16 in GLA's layer).
There are no Params: the decay is all data-dependent. q arrives scaled (fla's scale=k^-1/2).
"""
from __future__ import annotations

import torch

import lrc
from lrc import Seq, State, exp

from ._entry import Sizes, ZooEntry
from ._init import randn


@lrc.recurrence
def gla(q: Seq("b t h k"), k: Seq("b t h k"), v: Seq("b t h v"), gk: Seq("b t h k"),
        S: State("b h k v")):
    """One token of GLA: per-key decay of the (k x v) state, then a read by q."""
    S = exp(gk) * S + k * v
    return (q * S).sum("k"), S


SIZES = {"h": 3, "k": 5, "v": 7}


def init_params(sizes: Sizes) -> dict:
    """GLA's recurrence has no parameters."""
    return {}


def random_inputs(sizes: Sizes, normalizer: float = 16.0) -> dict:
    """q (scaled by k^-1/2), k, v Gaussian; gk = logsigmoid(N(0, 1)) / 16 as GLA's gate makes."""
    b, t, h, k, v = (sizes[x] for x in "bthkv")
    gk = torch.nn.functional.logsigmoid(randn(b, t, h, k)) / normalizer
    return {"q": randn(b, t, h, k, std=k ** -0.5), "k": randn(b, t, h, k),
            "v": randn(b, t, h, v), "gk": gk}


ENTRY = ZooEntry(gla, SIZES, init_params, random_inputs,
                 doc="Gated Linear Attention (per-key decay), Yang et al. 2024")
