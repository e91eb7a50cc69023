"""S4, Gu, Goel & Re 2022: HiPPO-LegS in normal-plus-low-rank form, discretized bilinearly.

HiPPO-LegS A = S - P P^T with S normal (-1/2 I plus a skew-symmetric matrix) and P_k =
sqrt(k + 1/2). Diagonalizing S = V diag(Lambda) V^* by a unitary V gives, in the basis
x~ = V^* x, the DPLR matrix diag(Lambda) - P~ P~^* with P~ = V^* P, B~ = V^* B. The step:

    Abar, Bbar = bilinear(dt, diag(Lambda) - P P^*, B)     (Woodbury inside lrc.bilinear)
    x_t = Abar x_{t-1} + Bbar u_t,   y_t = Re(C . x_t) + D u_t

All N modes are kept (not one per conjugate pair as S4's kernel does): the low-rank term sums
over every mode, and `lrc.dplr`'s sum is a plain complex sum, so halving would need 2 Re(...)
inside the matrix. With all modes Re(C . x) is exact.
"""
from __future__ import annotations

import math

import torch

import lrc
from lrc import Param, Seq, State, exp

from ._entry import Sizes, ZooEntry
from ._init import complex_randn, randn


@lrc.recurrence
def s4(u: Seq("b h t"), log_dt: Param("h"), Lambda: Param("n", complex=True),
       P: Param("n", complex=True), B: Param("h n", complex=True),
       C: Param("h n", complex=True), D: Param("h"), x: State("b h n", complex=True)):
    """One token of S4: a bilinear DPLR step per channel, Woodbury's identity inside."""
    A = lrc.dplr(Lambda, P, P)
    Abar, Bbar = lrc.bilinear(exp(log_dt), A, B)
    x = Abar @ x + Bbar * u
    return (C * x).sum("n").real + D * u, x


SIZES = {"h": 5, "n": 7}


def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS (A, B): A_nk = -sqrt(2n+1) sqrt(2k+1) below the diagonal, -(n+1) on it."""
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    A = -torch.tril(q[:, None] * q[None, :], -1) - torch.diag(torch.arange(1, N + 1.0,
                                                                          dtype=torch.float64))
    return A, q.clone()


def nplr_legs(N: int) -> dict[str, torch.Tensor]:
    """HiPPO-LegS diagonalized: Lambda, P~ = V^* P, B~ = V^* B and the unitary V (complex128)."""
    A, B = hippo_legs(N)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    S = A + P[:, None] * P[None, :]
    # S = mean(diag S) I + skew part; -i times the skew part is Hermitian, so eigh gives a
    # unitary V (a plain eig of S would not return orthonormal vectors)
    diag = torch.diagonal(S)
    skew = S - torch.diag(diag)
    w, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    Lambda = diag.mean() + 1j * w
    Vh = V.conj().T
    return {"Lambda": Lambda, "P": Vh @ P.to(V.dtype), "B": Vh @ B.to(V.dtype), "V": V}


def init_params(sizes: Sizes, dt_min: float = 1e-3, dt_max: float = 0.1) -> dict:
    """S4's init: HiPPO-LegS NPLR (B~ = V^* B per channel), C ~ CN(0, 1), log-uniform dt."""
    h, n = sizes["h"], sizes["n"]
    nplr = nplr_legs(n)
    log_dt = torch.empty(h, dtype=torch.float64).uniform_(math.log(dt_min), math.log(dt_max))
    return {"log_dt": log_dt, "Lambda": nplr["Lambda"], "P": nplr["P"],
            "B": nplr["B"].repeat(h, 1), "C": complex_randn(h, n), "D": randn(h)}


def random_inputs(sizes: Sizes) -> dict:
    """u standard normal."""
    return {"u": randn(sizes["b"], sizes["h"], sizes["t"])}


def random_state(sizes: Sizes) -> dict:
    """A state V^* x0 of a real state x0: what S4's real recurrence reaches in this basis."""
    V = nplr_legs(sizes["n"])["V"]
    x0 = randn(sizes["b"], sizes["h"], sizes["n"], std=0.5).to(V.dtype)
    return {"x": x0 @ V.conj()}


ENTRY = ZooEntry(s4, SIZES, init_params, random_inputs, random_state,
                 doc="S4 (DPLR from HiPPO-LegS, bilinear), Gu et al. 2022")
