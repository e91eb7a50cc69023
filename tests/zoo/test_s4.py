"""S4 (DPLR HiPPO-LegS, bilinear) against materialized matrices and the real HiPPO recurrence."""
import pytest
import torch

from lrc.zoo import s4
from tests.conftest import rel_err
from tests.zoo.helpers import check_against_loop, run


def bilinear_matrices(a):
    """Per channel: Abar = (I - dt/2 A)^-1 (I + dt/2 A), Bbar = (I - dt/2 A)^-1 dt B, with A
    = diag(Lambda) - P P^* materialized and the inverse by torch.linalg.solve."""
    n = a["Lambda"].shape[0]
    A = torch.diag(a["Lambda"]) - torch.outer(a["P"], a["P"].conj())
    dt = torch.exp(a["log_dt"]).to(torch.complex128)[:, None, None]          # (h, 1, 1)
    eye = torch.eye(n, dtype=torch.complex128)
    left = eye - dt / 2 * A
    Abar = torch.linalg.solve(left, eye + dt / 2 * A)                          # (h, n, n)
    Bbar = torch.linalg.solve(left, dt[..., 0] * a["B"])                       # (h, n)
    return Abar, Bbar


def loop(a, state):
    """x_t = Abar x_{t-1} + Bbar u_t, y_t = Re(C x_t) + D u_t, as matrix-vector products."""
    Abar, Bbar = bilinear_matrices(a)
    u = a["u"]
    b, h, T = u.shape
    x = (torch.zeros(b, h, Abar.shape[-1], dtype=torch.complex128) if state is None
         else state[0])
    ys = []
    for t in range(T):
        x = torch.einsum("hij,bhj->bhi", Abar, x) + Bbar * u[:, :, t, None]
        ys.append(torch.einsum("hn,bhn->bh", a["C"], x).real + a["D"] * u[:, :, t])
    return (torch.stack(ys, -1),), (x,)


def test_matches_materialized_loop():
    check_against_loop(s4.ENTRY, loop)


def test_matches_materialized_loop_random_dplr():
    """Any DPLR matrix, not only HiPPO's: a random stable Lambda and a random complex P."""
    a = s4.ENTRY.example(n=5, h=3)
    real, imag = torch.rand(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    a["Lambda"] = -real - 0.1 + 1j * imag
    a["P"] = 0.3 * torch.randn(5, dtype=torch.complex128)
    check_against_loop(s4.ENTRY, loop, args=a, n=5, h=3)


def test_matches_real_hippo_recurrence():
    """At init, in HiPPO's own real basis: x_t = Abar x_{t-1} + Bbar u_t with the real LegS
    matrices and no diagonalization; the eigenbasis C~ maps back as C = C~ V^*."""
    a = s4.ENTRY.example(n=9, h=3, t=41)
    n = 9
    A, B = s4.hippo_legs(n)
    V = s4.nplr_legs(n)["V"]
    C = a["C"] @ V.conj().T                                                    # (h, n) complex
    dt = torch.exp(a["log_dt"])
    eye = torch.eye(n, dtype=torch.float64)
    x0 = torch.randn(2, 3, n, dtype=torch.float64)
    x = x0.clone()
    u = a["u"]
    ys = []
    for t in range(u.shape[-1]):
        x = torch.stack([torch.linalg.solve(eye - dt[i] / 2 * A,
                                            (eye + dt[i] / 2 * A) @ x[:, i].T
                                            + dt[i] * B[:, None] * u[None, :, i, t]).T
                         for i in range(3)], 1)
        ys.append(torch.einsum("hn,bhn->bh", C, x.to(C.dtype)).real + a["D"] * u[:, :, t])
    want = torch.stack(ys, -1)
    (got,), (fin,) = run(s4.ENTRY, a, (x0.to(torch.complex128) @ V.conj(),))
    assert rel_err(got, want) <= 1e-10
    assert rel_err(fin, x.to(torch.complex128) @ V.conj()) <= 1e-10


@pytest.mark.parametrize("n", [7, 16, 64])
def test_nplr_reconstructs_hippo(n):
    A, B = s4.hippo_legs(n)
    nplr = s4.nplr_legs(n)
    V, Lam, P = nplr["V"], nplr["Lambda"], nplr["P"]
    eye = torch.eye(n, dtype=torch.complex128)
    assert (V.conj().T @ V - eye).abs().max() < 1e-10                         # V unitary
    rebuilt = V @ (torch.diag(Lam) - torch.outer(P, P.conj())) @ V.conj().T
    assert (rebuilt - A).abs().max() < 1e-6 * A.abs().max()
    assert (V @ nplr["B"] - B).abs().max() < 1e-6
    assert torch.allclose(Lam.real, torch.full((n,), -0.5, dtype=torch.float64))
    # the textbook LegS entries
    assert A[0, 0] == -1 and A[2, 1] == -(5 * 3) ** 0.5 and A[1, 2] == 0
    assert torch.allclose(B, torch.sqrt(2 * torch.arange(n, dtype=torch.float64) + 1))


def test_init_params():
    p = s4.init_params({"h": 33, "n": 7})
    dt = torch.exp(p["log_dt"])
    assert (dt >= 1e-3 - 1e-12).all() and (dt <= 0.1 + 1e-12).all()
    assert torch.allclose(p["B"][0], s4.nplr_legs(7)["B"]) and torch.equal(p["B"][0], p["B"][5])
    # the discretized matrix is stable: spectral radius < 1 in every channel
    a = {**p, "u": None}
    Abar, _ = bilinear_matrices(a)
    assert (torch.linalg.eigvals(Abar).abs() < 1).all()
