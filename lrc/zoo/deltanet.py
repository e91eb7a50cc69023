"""DeltaNet, Schlag et al. 2021 / Yang et al. 2024: a matrix state written by the delta rule.

    k_t <- k_t / ||k_t||,  q_t <- q_t / ||q_t||,  beta_t = sigmoid(b_t)
    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T q_t

(S is key dim x value dim.) The transition is identity minus a rank-1 term: the structure pass
labels it "dplr (diagonal plus rank 1), selective". Keys and queries are L2-normalized inside
the spec (fla's `use_qk_l2norm_in_kernel=True`, scale 1), beta is a sigmoid of a Seq input.
"""
from __future__ import annotations

import lrc
from lrc import Seq, State, sigmoid, sqrt

from ._entry import Sizes, ZooEntry
from ._init import randn


def l2norm(x, dim: str, eps: float = 1e-6):
    """x / sqrt(sum_dim x^2 + eps): fla's l2norm, written in the spec."""
    return x / sqrt((x * x).sum(dim) + eps)


@lrc.recurrence
def deltanet(q: Seq("b t h k"), k: Seq("b t h k"), v: Seq("b t h v"), b: Seq("b t h"),
             S: State("b h k v")):
    """One token of DeltaNet: erase beta of the value stored at k, write beta v there, read q."""
    kn, beta = l2norm(k, "k"), sigmoid(b)
    S = S + beta * kn * (v - (kn * S).sum("k"))
    return (l2norm(q, "k") * S).sum("k"), S


SIZES = {"h": 3, "k": 5, "v": 7}


def init_params(sizes: Sizes) -> dict:
    """DeltaNet's recurrence has no parameters (its projections are outside the spec)."""
    return {}


def random_inputs(sizes: Sizes) -> dict:
    """q, k, v standard normal; b standard normal (beta = sigmoid(b) spread over (0, 1))."""
    b, t, h, k, v = (sizes[x] for x in "bthkv")
    return {"q": randn(b, t, h, k), "k": randn(b, t, h, k), "v": randn(b, t, h, v),
            "b": randn(b, t, h)}


ENTRY = ZooEntry(deltanet, SIZES, init_params, random_inputs,
                 doc="DeltaNet (delta rule, L2-normalized keys), Yang et al. 2024")
