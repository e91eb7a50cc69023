"""RWKV-6 (Finch), Peng et al. 2024: a matrix state with a data-dependent decay per key.

    w_t = exp(-exp(time_decay + w_t))                 (per head and key, in (0, 1))
    y_t = r_t^T (S_{t-1} + diag(u) k_t v_t^T)         (the bonus u on the current token)
    S_t = diag(w_t) S_{t-1} + k_t v_t^T

`w` is the data-dependent part (RWKV-6's LoRA on the token shift); time_decay its static base.
"""
from __future__ import annotations

import torch

import lrc
from lrc import Param, Seq, State, exp

from ._entry import Sizes, ZooEntry
from ._init import randn


@lrc.recurrence
def rwkv6(r: Seq("b t h k"), k: Seq("b t h k"), v: Seq("b t h v"), w: Seq("b t h k"),
          time_decay: Param("h k"), u: Param("h k"), S: State("b h k v")):
    """One token of RWKV-6: output from the old state plus the bonus, then the update."""
    kv = k * v
    y = (r * (S + u * kv)).sum("k")               # the old state plus the bonus term
    S = exp(-exp(time_decay + w)) * S + kv
    return y, S


SIZES = {"h": 3, "k": 5, "v": 7}


def init_params(sizes: Sizes, layer_id: int = 0, n_layer: int = 2) -> dict:
    """RWKV-6's init over the flattened (h k) channels: decay speed -6 + 5 (i/(n-1))^(0.7 +
    1.3 ratio); bonus u = ratio (1 - i/(n-1)) + 0.1 zigzag."""
    h, k = sizes["h"], sizes["k"]
    n = h * k
    ratio = layer_id / (n_layer - 1)
    i = torch.arange(n, dtype=torch.float64)
    frac = i / max(n - 1, 1)
    decay_speed = -6 + 5 * frac ** (0.7 + 1.3 * ratio)
    zigzag = ((i + 1) % 3 - 1) * 0.1
    return {"time_decay": decay_speed.reshape(h, k),
            "u": (ratio * (1 - frac) + zigzag).reshape(h, k)}


def random_inputs(sizes: Sizes) -> dict:
    """r, k, v standard normal, k scaled by k^-1/2; w small (the decay LoRA at init)."""
    b, t, h, k, v = (sizes[x] for x in "bthkv")
    return {"r": randn(b, t, h, k), "k": randn(b, t, h, k, std=k ** -0.5),
            "v": randn(b, t, h, v), "w": randn(b, t, h, k, std=0.3)}


ENTRY = ZooEntry(rwkv6, SIZES, init_params, random_inputs,
                 doc="RWKV-6 (Finch) matrix-state WKV with data-dependent decay, Peng et al. 2024")
