"""RetNet's retention in recurrent form, Sun et al. 2023: a fixed scalar decay per head.

    S_t = gamma S_{t-1} + k_t v_t^T,   o_t = q_t^T S_t

with gamma_h = 1 - 2^(-5 - h). xPos rotation, the k^-1/2 scale and the group norm are applied
to q, k and o outside the recurrence.
"""
from __future__ import annotations

import torch

import lrc
from lrc import Param, Seq, State

from ._entry import Sizes, ZooEntry
from ._init import randn


@lrc.recurrence
def retnet(q: Seq("b t h k"), k: Seq("b t h k"), v: Seq("b t h v"), gamma: Param("h"),
           S: State("b h k v")):
    """One token of retention: a scalar decay per head, then a read by q."""
    S = gamma * S + k * v
    return (q * S).sum("k"), S


SIZES = {"h": 3, "k": 5, "v": 7}


def init_params(sizes: Sizes) -> dict:
    """RetNet's decays: gamma_h = 1 - 2^(-5 - h)."""
    h = torch.arange(sizes["h"], dtype=torch.float64)
    return {"gamma": 1 - 2.0 ** (-5 - h)}


def random_inputs(sizes: Sizes) -> dict:
    """q, v Gaussian; k Gaussian scaled by k^-1/2 (RetNet scales k)."""
    b, t, h, k, v = (sizes[x] for x in "bthkv")
    return {"q": randn(b, t, h, k), "k": randn(b, t, h, k, std=k ** -0.5),
            "v": randn(b, t, h, v)}


ENTRY = ZooEntry(retnet, SIZES, init_params, random_inputs,
                 doc="RetNet retention, recurrent form, Sun et al. 2023")
