"""RWKV-4's WKV against the paper's closed form: explicit weighted sums over past tokens."""
import math

import torch

import lrc
from lrc.zoo import rwkv4
from tests.conftest import rel_err
from tests.zoo.helpers import check_against_loop


def closed_form(a, state):
    """Eq. (14) of Peng et al. 2023, summing every past token i < t with weight e^{-(t-1-i)w +
    k_i} (quadratic in T, no recurrence); an initial (num, den) decays in as e^{-t w}."""
    k, v = a["k"], a["v"]
    w, u = torch.exp(a["time_decay"]), a["time_first"]
    b, T, c = k.shape
    num0, den0 = state if state is not None else (torch.zeros(b, c, dtype=torch.float64),) * 2
    ys = []
    for t in range(T):
        i = torch.arange(t, dtype=torch.float64)
        weight = torch.exp(-(t - 1 - i)[None, :, None] * w + k[:, :t])      # (b, t, c)
        bonus = torch.exp(u + k[:, t])
        carry = torch.exp(-t * w)
        num = carry * num0 + (weight * v[:, :t]).sum(1) + bonus * v[:, t]
        den = carry * den0 + weight.sum(1) + bonus
        ys.append(num / den)
    i = torch.arange(T, dtype=torch.float64)
    final = torch.exp(-(T - 1 - i)[None, :, None] * w + k)
    carry = torch.exp(-T * w)
    return (torch.stack(ys, 1),), (carry * num0 + (final * v).sum(1), carry * den0 + final.sum(1))


def test_matches_closed_form():
    check_against_loop(rwkv4.ENTRY, closed_form)


def test_is_a_weighted_average_of_values():
    """From zero state, wkv_t is a convex combination of v_0..v_t: within their range."""
    a = rwkv4.ENTRY.example(t=23)
    y = lrc.compile(rwkv4.rwkv4, backend="reference")(**a)
    lo = torch.cummin(a["v"], 1).values
    hi = torch.cummax(a["v"], 1).values
    assert (y >= lo - 1e-12).all() and (y <= hi + 1e-12).all()
    assert rel_err(y[:, 0], a["v"][:, 0]) <= 1e-12                    # only v_0 at t = 0


def test_init():
    c = 9
    p = rwkv4.init_params({"c": c}, layer_id=0, n_layer=4)
    i = torch.arange(c, dtype=torch.float64)
    assert torch.allclose(p["time_decay"], -5 + 8 * (i / (c - 1)) ** 0.7)
    assert p["time_decay"][0] == -5 and abs(p["time_decay"][-1] - 3) < 1e-12
    zigzag = torch.tensor([0, 0.5, -0.5] * 3, dtype=torch.float64)
    assert torch.allclose(p["time_first"], math.log(0.3) + zigzag)
    p = rwkv4.init_params({"c": c}, layer_id=3, n_layer=4)
    assert torch.allclose(p["time_decay"], -5 + 8 * (i / (c - 1)) ** 2.0)
    decay = torch.exp(-torch.exp(p["time_decay"]))
    assert ((decay > 0) & (decay < 1)).all()
