"""The LRU against its recurrence with materialized complex matrices."""
import math

import pytest
import torch

from lrc.zoo import lru
from tests.zoo.helpers import check_against_loop


def loop(a, state):
    """Orvieto et al.'s Eq. (6)-(7): x_k = diag(lambda) x_{k-1} + gamma B u_k, y = Re(C x) + D u."""
    lam = torch.exp(-torch.exp(a["nu_log"]) + 1j * torch.exp(a["theta_log"]))
    gamma = torch.sqrt(1 - lam.abs() ** 2)
    B_norm = a["B"] * gamma[:, None]                                   # (n, d)
    u = a["u"]
    x = (torch.zeros(u.shape[0], lam.shape[0], dtype=torch.complex128) if state is None
         else state[0])
    ys = []
    for t in range(u.shape[1]):
        x = lam * x + u[:, t].to(B_norm.dtype) @ B_norm.T
        ys.append((x @ a["C"].T).real + a["D"] * u[:, t])
    return (torch.stack(ys, 1),), (x,)


def test_matches_loop():
    check_against_loop(lru.ENTRY, loop)


def test_matches_loop_wide_ring():
    """Eigenvalues spread over a wide ring and every phase: fast and slow, oscillating modes."""
    args = lru.ENTRY.example(d=3, n=9)
    nu_log, theta_log = lru.ring_init(9, r_min=0.2, r_max=0.99, max_phase=2 * math.pi)
    args.update(nu_log=nu_log, theta_log=theta_log)
    check_against_loop(lru.ENTRY, loop, args=args, d=3, n=9)


@pytest.mark.parametrize("r_min,r_max,max_phase", [(0.9, 0.999, 2 * math.pi),
                                                   (0.4, 0.9, math.pi / 10)])
def test_ring_init(r_min, r_max, max_phase):
    nu_log, theta_log = lru.ring_init(2001, r_min, r_max, max_phase)
    lam = torch.exp(-torch.exp(nu_log) + 1j * torch.exp(theta_log))
    mod, phase = lam.abs(), torch.exp(theta_log)
    assert (mod >= r_min - 1e-12).all() and (mod <= r_max + 1e-12).all()
    assert (phase >= 0).all() and (phase <= max_phase).all()
    # uniform on the ring: |lambda|^2 uniform, so its mean is the midpoint of [r_min^2, r_max^2]
    assert abs((mod ** 2).mean().item() - (r_min ** 2 + r_max ** 2) / 2) < 0.02


def test_init_scales():
    p = lru.init_params({"d": 301, "n": 203})
    assert abs((p["B"].abs() ** 2).mean().item() * 301 - 1) < 0.05
    assert abs((p["C"].abs() ** 2).mean().item() * 203 - 1) < 0.05
    assert p["B"].shape == (203, 301) and p["C"].shape == (301, 203)
