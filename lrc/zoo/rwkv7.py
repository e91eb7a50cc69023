"""RWKV-7 "Goose", Peng et al. 2025: a generalized delta rule, diag(w) plus a rank-1 update
with two distinct vectors.

    w_t  = exp(-exp(-softplus(-w_raw_t) - 0.5))      (decay per key channel, in (0.545, 1))
    kk_t = L2-normalized kk_raw_t,  a_t = sigmoid(a_raw_t)   (the in-context learning rate)
    S_t  = (diag(w_t) - (a_t * kk_t) kk_t^T) S_{t-1} + k_t v_t^T,   o_t = S_t^T r_t

(S is key dim x value dim; in fla's `chunk_rwkv7(r, w, k, v, a, b)` terms, a = -kk,
b = kk * a with the state transposed.) The bonus term and the group norm of the RWKV-7 block
sit outside the recurrence and outside this spec, as in fla's op.
"""
from __future__ import annotations

import lrc
from lrc import Seq, State, exp, sigmoid, softplus

from ._entry import Sizes, ZooEntry
from ._init import randn
from .deltanet import l2norm


@lrc.recurrence
def rwkv7(r: Seq("b t h k"), w: Seq("b t h k"), k: Seq("b t h k"), v: Seq("b t h v"),
          kk: Seq("b t h k"), a: Seq("b t h k"), S: State("b h k v")):
    """One token of RWKV-7's state update: diag(w) - (a kk) kk^T, plus k v^T; read by r."""
    decay = exp(-exp(-softplus(-w) - 0.5))
    kn = l2norm(kk, "k")
    S = decay * S - sigmoid(a) * kn * (kn * S).sum("k") + k * v
    return (r * S).sum("k"), S


SIZES = {"h": 3, "k": 5, "v": 7}


def init_params(sizes: Sizes) -> dict:
    """RWKV-7's recurrence has no parameters (w0, a0 and the LoRAs are outside the spec)."""
    return {}


def random_inputs(sizes: Sizes) -> dict:
    """r, kk, a, w standard normal; k scaled by k^-1/2 and v standard normal, so that the
    state's input k v^T stays O(1) per step."""
    b, t, h, k, v = (sizes[x] for x in "bthkv")
    return {"r": randn(b, t, h, k), "w": randn(b, t, h, k), "k": randn(b, t, h, k, std=k ** -0.5),
            "v": randn(b, t, h, v), "kk": randn(b, t, h, k), "a": randn(b, t, h, k)}


ENTRY = ZooEntry(rwkv7, SIZES, init_params, random_inputs,
                 doc="RWKV-7 (diagonal decay plus rank-1, a != b), Peng et al. 2025")
