"""Mamba-2 (SSD) against its recurrence written with explicit heads and groups."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

import lrc
from lrc.zoo import mamba2
from tests.zoo.helpers import check_against_loop


def loop(a, state):
    """SSD's recurrent form: per head i (group i // r), h = exp(dt A) h + dt x B^T."""
    x, dt, B, C = a["x"], a["dt"], a["B"], a["C"]
    b, T, H, p = x.shape
    g, n = B.shape[2], B.shape[3]
    group = torch.arange(H) // (H // g)                       # which group each head reads
    A = -torch.exp(a["A_log"])
    h = torch.zeros(b, H, p, n, dtype=torch.float64) if state is None else state[0].clone()
    ys = []
    for t in range(T):
        delta = F.softplus(dt[:, t] + a["dt_bias"])           # (b, H)
        Bh, Ch = B[:, t, group], C[:, t, group]               # (b, H, n)
        h = (torch.exp(delta * A)[:, :, None, None] * h
             + torch.einsum("bh,bhp,bhn->bhpn", delta, x[:, t], Bh))
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch) + a["D"][:, None] * x[:, t])
    return (torch.stack(ys, 1),), (h,)


@pytest.mark.parametrize("g,r", [(2, 3), (1, 5), (3, 1)])
def test_matches_loop(g, r):
    check_against_loop(mamba2.ENTRY, loop, g=g, r=r)


def test_groups_are_shared_by_their_heads():
    """Heads of one group see the same B, C: with equal x, dt and params their outputs agree."""
    a = mamba2.ENTRY.example(g=2, r=3)
    a["x"] = a["x"][:, :, :1].expand_as(a["x"]).contiguous()
    a["dt"] = a["dt"][:, :, :1].expand_as(a["dt"]).contiguous()
    for k in ("A_log", "D", "dt_bias"):
        a[k] = a[k][:1].expand_as(a[k]).contiguous()
    y = lrc.compile(mamba2.mamba2, backend="reference")(**a)
    assert torch.allclose(y[:, :, 0], y[:, :, 2]) and torch.allclose(y[:, :, 3], y[:, :, 5])
    assert not torch.allclose(y[:, :, 0], y[:, :, 3])


def test_init():
    p = mamba2.init_params({"g": 3, "r": 5})
    negA = torch.exp(p["A_log"])
    assert p["A_log"].shape == (15,)
    assert (negA >= 1).all() and (negA <= 16).all()
    dt = F.softplus(p["dt_bias"])
    assert (dt >= 1e-3 - 1e-12).all() and (dt <= 0.1 + 1e-12).all()
    assert torch.equal(p["D"], torch.ones(15, dtype=torch.float64))
