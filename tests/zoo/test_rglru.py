"""Hawk/Griffin's RG-LRU against the paper's equations, a_t as a power (not in log space)."""
import torch

import lrc
from lrc.zoo import rglru
from tests.conftest import rel_err
from tests.zoo.helpers import check_against_loop


def loop(a, state):
    """Eqs. (1)-(4) of De et al.: a_t = a^(c r_t), h_t = a_t h + sqrt(1 - a_t^2)(i_t x_t)."""
    x = a["x"]
    base = torch.sigmoid(a["Lambda"])
    h = torch.zeros(x.shape[0], x.shape[2], dtype=torch.float64) if state is None else state[0]
    ys = []
    for t in range(x.shape[1]):
        r, i = torch.sigmoid(a["gate_r"][:, t]), torch.sigmoid(a["gate_i"][:, t])
        a_t = base ** (8 * r)
        h = a_t * h + torch.sqrt(1 - a_t ** 2) * (i * x[:, t])
        ys.append(h)
    return (torch.stack(ys, 1),), (h,)


def test_matches_loop():
    check_against_loop(rglru.ENTRY, loop)


def test_matches_loop_long():
    check_against_loop(rglru.ENTRY, loop, b=1, t=301, d=3)


def test_decay_near_one_keeps_precision():
    """With a_t within 1e-9 of 1, sqrt(1 - a_t^2) ~ 4e-5 still has full relative precision."""
    a = rglru.ENTRY.example(t=5)
    a["Lambda"] = torch.full_like(a["Lambda"], 24.0)                # softplus(-24) ~ 4e-11
    y = lrc.compile(rglru.rglru, backend="reference")(**a)
    log_a = -8 * torch.nn.functional.softplus(-a["Lambda"]) * torch.sigmoid(a["gate_r"])
    first = torch.sqrt(-torch.expm1(2 * log_a[:, 0])) * torch.sigmoid(a["gate_i"][:, 0]) \
        * a["x"][:, 0]
    assert rel_err(y[:, 0], first) <= 1e-12


def test_init():
    lam = rglru.init_params({"d": 2001})["Lambda"]
    base = torch.sigmoid(lam)
    assert (base >= 0.9 - 1e-12).all() and (base <= 0.999 + 1e-12).all()
    # a^2 uniform on [0.81, 0.998]
    assert abs((base ** 2).mean().item() - (0.81 + 0.998) / 2) < 0.01
