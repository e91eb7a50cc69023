"""Mamba-1 (S6) against the paper's selective scan written as a float64 loop."""
import math

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.zoo import mamba1
from tests.zoo.helpers import check_against_loop


def loop(a, state):
    """Algorithm 2 of the Mamba paper, channels-first (b d t) as selective_scan_fn."""
    u, dt, B, C = a["u"], a["dt"], a["B"], a["C"]
    A = -torch.exp(a["A_log"])                            # (d, n)
    b, d, T = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=torch.float64) if state is None else state[0]
    ys = []
    for t in range(T):
        delta = F.softplus(dt[:, :, t] + a["dt_bias"])    # (b, d)
        dA = torch.exp(torch.einsum("bd,dn->bdn", delta, A))
        dBu = torch.einsum("bd,bn,bd->bdn", delta, B[:, :, t], u[:, :, t])
        h = dA * h + dBu
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]) + a["D"] * u[:, :, t])
    return (torch.stack(ys, -1),), (h,)


def test_matches_loop():
    check_against_loop(mamba1.ENTRY, loop)


def test_matches_loop_other_sizes():
    check_against_loop(mamba1.ENTRY, loop, b=3, t=19, d=7, n=5)


def test_init():
    p = mamba1.init_params({"d": 9, "n": 5}, dt_min=1e-3, dt_max=0.1)
    # S4D-Real: A[d, n] = -(n + 1) in every channel
    A = -torch.exp(p["A_log"])
    assert torch.allclose(A, -torch.arange(1, 6, dtype=torch.float64).expand(9, 5))
    dt = F.softplus(p["dt_bias"])
    assert (dt >= 1e-3 - 1e-12).all() and (dt <= 0.1 + 1e-12).all()
    assert torch.equal(p["D"], torch.ones(9, dtype=torch.float64))


def test_dt_init_is_log_uniform():
    dt = F.softplus(mamba1.init_params({"d": 4001, "n": 1})["dt_bias"])
    # log dt uniform on [log 1e-3, log 0.1]: its mean is the midpoint, its std range/sqrt(12)
    lo, hi = math.log(1e-3), math.log(0.1)
    assert abs(dt.log().mean().item() - (lo + hi) / 2) < 0.1
    assert abs(dt.log().std().item() - (hi - lo) / math.sqrt(12)) < 0.1
