"""H3, Fu, Dao et al. 2023: a shift SSM on k, a multiplicative gate with v, a diagonal SSM, a
gate with q (head dim 1, as in the paper's main models).

    s_t   = shift(s_{t-1}) with s_t[0] = k_t          (the shift SSM's state: recent k's)
    kc_t  = sum_m C_shift[m] s_t[m]                   (its output: a short causal conv of k)
    x_t   = Abar x_{t-1} + Bbar (kc_t v_t)            (S4D-Lin diagonal SSM, ZOH, B = 1)
    y_t   = q_t (2 Re(C . x_t) + D kc_t v_t)

Both SSMs are states of one spec; the diagonal SSM reads the shift SSM's new state, which is
still affine in the (joint) old state.
"""
from __future__ import annotations

import math

import torch

import lrc
from lrc import Param, Seq, State, exp

from ._entry import Sizes, ZooEntry
from ._init import complex_randn, randn
from .s4d import s4d_lin


@lrc.recurrence
def h3(q: Seq("b t d"), k: Seq("b t d"), v: Seq("b t d"), shift_C: Param("d m"),
       log_dt: Param("d"), log_A_real: Param("d n"), A_imag: Param("d n"),
       C: Param("d n", complex=True), D: Param("d"),
       s: State("b d m"), x: State("b d n", complex=True)):
    """One token of H3: shift SSM on k, gate by v, diagonal SSM, gate by q."""
    s = lrc.shift(s, "m", fill=k)
    kv = (shift_C * s).sum("m") * v
    Abar, Bbar = lrc.zoh(exp(log_dt), -exp(log_A_real) + 1j * A_imag)
    x = Abar * x + Bbar * kv
    return q * (2 * (C * x).sum("n").real + D * kv), (s, x)


SIZES = {"d": 5, "m": 3, "n": 7}


def init_params(sizes: Sizes, dt_min: float = 1e-3, dt_max: float = 0.1) -> dict:
    """H3's init: shift SSM's C ~ N(0, 1/m); the diagonal SSM is S4D-Lin with log-uniform dt,
    C ~ CN(0, 1), D ~ N(0, 1)."""
    d, m, n = sizes["d"], sizes["m"], sizes["n"]
    log_A_real, A_imag = s4d_lin(d, n)
    log_dt = torch.empty(d, dtype=torch.float64).uniform_(math.log(dt_min), math.log(dt_max))
    return {"shift_C": randn(d, m, std=m ** -0.5), "log_dt": log_dt, "log_A_real": log_A_real,
            "A_imag": A_imag, "C": complex_randn(d, n), "D": randn(d)}


def random_inputs(sizes: Sizes) -> dict:
    """q, k, v standard normal."""
    b, t, d = sizes["b"], sizes["t"], sizes["d"]
    return {"q": randn(b, t, d), "k": randn(b, t, d), "v": randn(b, t, d)}


ENTRY = ZooEntry(h3, SIZES, init_params, random_inputs,
                 doc="H3 (shift SSM, diagonal SSM, gates), Fu, Dao et al. 2023")
