"""Discretization helpers and DPLR matrices against textbook formulas in plain loops."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc import Param, Seq, State
from tests.ir.test_interpret import B, D, N, T, check, f64, rn, run

C128 = torch.complex128


def _diag_spec(method: str):
    @lrc.recurrence(name=f"s4d_{method}")
    def s4d(x: Seq("b t d"), log_dt: Param("d"), A: Param("d n"), Bp: Param("d n"),
            C: Param("d n"), h: State("b d n")):
        Abar, Bbar = lrc.discretize(method, lrc.exp(log_dt), A, Bp)
        h = Abar * h + Bbar * x
        return (C * h).sum("n"), h

    return s4d


# textbook (A-bar, B-bar) for a diagonal A, DESIGN.md section 3
TEXTBOOK = {
    "zoh": lambda dt, A, Bp: (torch.exp(dt * A), (torch.exp(dt * A) - 1) / A * Bp),
    "bilinear": lambda dt, A, Bp: ((1 + dt * A / 2) / (1 - dt * A / 2), dt / (1 - dt * A / 2) * Bp),
    "euler": lambda dt, A, Bp: (1 + dt * A, dt * Bp),
    "mamba": lambda dt, A, Bp: (torch.exp(dt * A), dt * Bp),
}


@pytest.mark.parametrize("method", sorted(TEXTBOOK))
def test_diagonal_discretizations(method):
    x, log_dt = rn(B, T, D), rn(D) * 0.5 - 2
    A, Bp, C, h0 = -torch.rand(D, N, dtype=f64) - 0.1, rn(D, N), rn(D, N), rn(B, D, N)
    (y,), (hT,) = run(_diag_spec(method), x, log_dt, A, Bp, C, initial_state=h0)
    Abar, Bbar = TEXTBOOK[method](torch.exp(log_dt)[:, None], A, Bp)
    h, ys = h0, []
    for t in range(T):
        h = Abar * h + Bbar * x[:, t, :, None]
        ys.append((C * h).sum(-1))
    check(y, torch.stack(ys, 1))
    check(hT, h)


@lrc.recurrence
def zoh_no_b(x: Seq("b t d"), dt: Seq("b t d"), A: Param("d"), h: State("b d")):
    Abar, Bbar = lrc.zoh(lrc.softplus(dt), A)            # B defaults to 1
    h = Abar * h + Bbar * x
    return h, h


def test_zoh_default_b_and_selective_dt():
    x, dt, A, h0 = rn(B, T, D), rn(B, T, D), -torch.rand(D, dtype=f64) - 0.1, rn(B, D)
    (y,), _ = run(zoh_no_b, x, dt, A, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        delta = torch.nn.functional.softplus(dt[:, t])
        h = torch.exp(delta * A) * h + torch.expm1(delta * A) / A * x[:, t]
        ys.append(h)
    check(y, torch.stack(ys, 1))


def _dplr_matrix(Lam, P, Q):
    """diag(Lambda) - P Q^*, per channel: (d, n, n)."""
    return torch.diag_embed(Lam) - P[:, :, None] * Q.conj()[:, None, :]


@lrc.recurrence
def s4_bilinear(x: Seq("b t d"), Lam: Param("d n", complex=True), P: Param("d n", complex=True),
                Q: Param("d n", complex=True), Bp: Param("d n", complex=True),
                C: Param("d n", complex=True), log_dt: Param("d"),
                h: State("b d n", complex=True)):
    Abar, Bbar = lrc.bilinear(lrc.exp(log_dt), lrc.dplr(Lam, P, Q), Bp)
    h = Abar @ h + Bbar * x
    return (C * h).real.sum("n"), h


def _s4_inputs():
    Lam = -torch.rand(D, N, dtype=f64) * 0.5 - 0.1 + 1j * rn(D, N)
    P, Q = rn(D, N, dtype=C128) * 0.3, rn(D, N, dtype=C128) * 0.3
    Bp, C = rn(D, N, dtype=C128), rn(D, N, dtype=C128)
    return Lam, P, Q, Bp, C, rn(D) * 0.3 - 2


def test_dplr_bilinear_uses_woodbury_correctly():
    x, h0 = rn(B, T, D), rn(B, D, N, dtype=C128)
    Lam, P, Q, Bp, C, log_dt = _s4_inputs()
    (y,), (hT,) = run(s4_bilinear, x, Lam, P, Q, Bp, C, log_dt, initial_state=h0)
    A = _dplr_matrix(Lam, P, Q)
    dt = torch.exp(log_dt)[:, None, None]
    eye = torch.eye(N, dtype=C128)
    left = eye - dt / 2 * A
    Abar = torch.linalg.solve(left, eye + dt / 2 * A)                   # (d, n, n)
    Bbar = torch.linalg.solve(left, (dt[..., 0] * Bp)[..., None])[..., 0]
    h, ys = h0, []
    for t in range(T):
        h = torch.einsum("dnm,bdm->bdn", Abar, h) + Bbar * x[:, t, :, None]
        ys.append((C * h).real.sum(-1))
    check(y, torch.stack(ys, 1))
    check(hT, h)


@lrc.recurrence
def s4_euler(x: Seq("b t d"), Lam: Param("d n", complex=True), P: Param("d n", complex=True),
             Q: Param("d n", complex=True), Bp: Param("d n", complex=True),
             C: Param("d n", complex=True), log_dt: Param("d"),
             h: State("b d n", complex=True)):
    Abar, Bbar = lrc.euler(lrc.exp(log_dt), lrc.dplr(Lam, P, Q), Bp)
    h = Abar @ h + Bbar * x
    return (C * h).real.sum("n"), h


def test_dplr_euler():
    x, h0 = rn(B, T, D), rn(B, D, N, dtype=C128)
    Lam, P, Q, Bp, C, log_dt = _s4_inputs()
    (y,), (hT,) = run(s4_euler, x, Lam, P, Q, Bp, C, log_dt, initial_state=h0)
    dt = torch.exp(log_dt)[:, None, None]
    Abar = torch.eye(N, dtype=C128) + dt * _dplr_matrix(Lam, P, Q)
    h, ys = h0, []
    for t in range(T):
        h = torch.einsum("dnm,bdm->bdn", Abar, h) + dt[..., 0] * Bp * x[:, t, :, None]
        ys.append((C * h).real.sum(-1))
    check(y, torch.stack(ys, 1))
    check(hT, h)


def test_zoh_is_finite_where_a_is_zero():
    """(exp(dt A) - 1) / A -> dt as A -> 0: ZOH of a zero eigenvalue is an integrator."""
    x, log_dt, Bp, C, h0 = rn(B, T, D), rn(D) * 0.5 - 2, rn(D, N), rn(D, N), rn(B, D, N)
    A = -torch.rand(D, N, dtype=f64) - 0.1
    A[:, 0] = 0.0
    A[0, 1] = -1e-9
    (y,), (hT,) = run(_diag_spec("zoh"), x, log_dt, A, Bp, C, initial_state=h0)
    dt = torch.exp(log_dt)[:, None]
    Abar = torch.exp(dt * A)
    Bbar = torch.where(A == 0, dt, torch.expm1(dt * A) / torch.where(A == 0, 1.0, A)) * Bp
    h, ys = h0, []
    for t in range(T):
        h = Abar * h + Bbar * x[:, t, :, None]
        ys.append((C * h).sum(-1))
    check(y, torch.stack(ys, 1))
    check(hT, h)
