"""S4D, Gu, Gupta, Goel & Re 2022: a diagonal complex SSM per channel, ZOH or bilinear.

    A = -exp(log_A_real) + i A_imag,  dt = exp(log_dt)
    x_t = Abar x_{t-1} + Bbar u_t      (ZOH: Abar = exp(dt A), Bbar = (exp(dt A) - 1)/A B;
                                        bilinear: Abar = (1 + dt A/2)/(1 - dt A/2), ...)
    y_t = 2 Re(C . x_t) + D u_t

The state keeps one of each conjugate pair of modes (n = N/2), hence the 2 Re(...).
Channels-first (b h t) as in the S4 repository. Two inits: S4D-Lin and S4D-Inv.
"""
from __future__ import annotations

import math

import torch

import lrc
from lrc import Param, Seq, State, exp

from ._entry import Sizes, ZooEntry
from ._init import complex_randn, randn


@lrc.recurrence
def s4d_zoh(u: Seq("b h t"), log_dt: Param("h"), log_A_real: Param("h n"), A_imag: Param("h n"),
            B: Param("h n", complex=True), C: Param("h n", complex=True), D: Param("h"),
            x: State("b h n", complex=True)):
    """One token of S4D with zero-order hold."""
    A = -exp(log_A_real) + 1j * A_imag
    Abar, Bbar = lrc.zoh(exp(log_dt), A, B)
    x = Abar * x + Bbar * u
    return 2 * (C * x).sum("n").real + D * u, x


@lrc.recurrence
def s4d_bilinear(u: Seq("b h t"), log_dt: Param("h"), log_A_real: Param("h n"),
                 A_imag: Param("h n"), B: Param("h n", complex=True),
                 C: Param("h n", complex=True), D: Param("h"),
                 x: State("b h n", complex=True)):
    """One token of S4D with the bilinear transform."""
    A = -exp(log_A_real) + 1j * A_imag
    Abar, Bbar = lrc.bilinear(exp(log_dt), A, B)
    x = Abar * x + Bbar * u
    return 2 * (C * x).sum("n").real + D * u, x


SIZES = {"h": 5, "n": 3}


def s4d_lin(h: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-Lin: A_k = -1/2 + i pi k, k < n. Returns (log_A_real, A_imag), each (h, n)."""
    k = torch.arange(n, dtype=torch.float64)
    return torch.full((h, n), math.log(0.5), dtype=torch.float64), (math.pi * k).repeat(h, 1)


def s4d_inv(h: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-Inv: A_k = -1/2 + i N/pi (N/(2k+1) - 1) with N = 2n. Returns (log_A_real, A_imag)."""
    N, k = 2 * n, torch.arange(n, dtype=torch.float64)
    imag = N / math.pi * (N / (2 * k + 1) - 1)
    return torch.full((h, n), math.log(0.5), dtype=torch.float64), imag.repeat(h, 1)


INITS = {"lin": s4d_lin, "inv": s4d_inv}


def init_params(sizes: Sizes, init: str = "lin", dt_min: float = 1e-3,
                dt_max: float = 0.1) -> dict:
    """S4D's init: log_dt uniform in [log dt_min, log dt_max], B = 1, C ~ CN(0, 1), D ~ N(0, 1)."""
    h, n = sizes["h"], sizes["n"]
    log_A_real, A_imag = INITS[init](h, n)
    log_dt = torch.empty(h, dtype=torch.float64).uniform_(math.log(dt_min), math.log(dt_max))
    return {"log_dt": log_dt, "log_A_real": log_A_real, "A_imag": A_imag,
            "B": torch.ones(h, n, dtype=torch.complex128), "C": complex_randn(h, n),
            "D": randn(h)}


def random_inputs(sizes: Sizes) -> dict:
    """u standard normal."""
    return {"u": randn(sizes["b"], sizes["h"], sizes["t"])}


ZOH = ZooEntry(s4d_zoh, SIZES, lambda s: init_params(s, "lin"), random_inputs,
               doc="S4D with ZOH and S4D-Lin init, Gu et al. 2022")
BILINEAR = ZooEntry(s4d_bilinear, SIZES, lambda s: init_params(s, "inv"), random_inputs,
                    doc="S4D with the bilinear transform and S4D-Inv init, Gu et al. 2022")
