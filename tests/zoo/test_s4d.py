"""S4D (ZOH and bilinear) against its recurrence and against its convolution kernel."""
import math

import pytest
import torch

import lrc
from lrc.zoo import s4d
from tests.conftest import rel_err
from tests.zoo.helpers import check_against_loop

ENTRIES = {"zoh": s4d.ZOH, "bilinear": s4d.BILINEAR}


def discretize(a, method):
    """(dA, dB) of S4D's discretizations, each (h, n)."""
    A = -torch.exp(a["log_A_real"]) + 1j * a["A_imag"]
    dtA = torch.exp(a["log_dt"])[:, None] * A
    if method == "zoh":
        dA = torch.exp(dtA)
        return dA, (dA - 1) / A * a["B"]
    dt = torch.exp(a["log_dt"])[:, None]
    return (1 + dtA / 2) / (1 - dtA / 2), dt / (1 - dtA / 2) * a["B"]


def make_loop(method):
    def loop(a, state):
        dA, dB = discretize(a, method)
        u = a["u"]
        x = (torch.zeros(u.shape[0], *dA.shape, dtype=torch.complex128) if state is None
             else state[0])
        ys = []
        for t in range(u.shape[-1]):
            x = dA * x + dB * u[:, :, t, None]
            ys.append(2 * (a["C"] * x).sum(-1).real + a["D"] * u[:, :, t])
        return (torch.stack(ys, -1),), (x,)
    return loop


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["lin", "inv"])
def test_matches_loop(method, init):
    entry = ENTRIES[method]
    args = entry.example()
    args.update(s4d.init_params(entry.resolve(), init))
    check_against_loop(entry, make_loop(method), args=args)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_matches_convolution_kernel(method):
    """S4D's convolution mode: K_l = 2 Re(sum_n C dB dA^l), y = K * u + D u (causal)."""
    entry = ENTRIES[method]
    a = entry.example(t=29)
    dA, dB = discretize(a, method)
    T = a["u"].shape[-1]
    powers = dA[..., None] ** torch.arange(T, dtype=torch.float64)       # (h, n, T)
    K = 2 * torch.einsum("hn,hnl->hl", a["C"] * dB, powers).real
    u = a["u"]
    want = torch.zeros_like(u)
    for t in range(T):
        want[:, :, t] = (K[:, :t + 1].flip(-1) * u[:, :, :t + 1]).sum(-1)
    want = want + a["D"][:, None] * u
    got = lrc.compile(entry.spec, backend="reference")(**a)
    assert rel_err(got, want) <= 1e-10


def test_inits():
    h, n = 3, 5
    log_re, im = s4d.s4d_lin(h, n)
    assert torch.allclose(-torch.exp(log_re), torch.full((h, n), -0.5, dtype=torch.float64))
    assert torch.allclose(im[1], math.pi * torch.arange(n, dtype=torch.float64))
    log_re, im = s4d.s4d_inv(h, n)
    N = 2 * n
    want = torch.tensor([N / math.pi * (N / (2 * k + 1) - 1) for k in range(n)],
                        dtype=torch.float64)
    assert torch.allclose(im[2], want) and torch.allclose(-torch.exp(log_re), -0.5 + 0 * im)
    p = s4d.init_params({"h": 101, "n": n})
    dt = torch.exp(p["log_dt"])
    assert (dt >= 1e-3 - 1e-12).all() and (dt <= 0.1 + 1e-12).all()
    assert torch.equal(p["B"], torch.ones(101, n, dtype=torch.complex128))
    assert p["C"].is_complex() and p["C"].imag.abs().sum() > 0
    # ZOH of a stable A is stable: |dA| = exp(-dt / 2) < 1
    assert (discretize(p, "zoh")[0].abs() < 1).all()
    assert (discretize(p, "bilinear")[0].abs() < 1).all()
