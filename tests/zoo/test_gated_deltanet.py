"""Gated DeltaNet against its recurrence written as matrix products, token by token."""
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.zoo import gated_deltanet
from tests.zoo.helpers import (
    check_against_loop,
    check_grads_against_loop,
    check_step_against_forward,
)
from tests.zoo.test_deltanet import unit


def loop(a, state):
    """S_t = alpha_t (I - beta k k^T) S_{t-1} + beta k v^T,
    alpha = exp(-A softplus(a + dt_bias))."""
    q, k, v = unit(a["q"]), unit(a["k"]), a["v"]
    beta = torch.sigmoid(a["b"])
    alpha = torch.exp(-torch.exp(a["A_log"]) * F.softplus(a["a"] + a["dt_bias"]))   # (B, T, H)
    B, T, H, K = k.shape
    V = v.shape[-1]
    S = torch.zeros(B, H, K, V, dtype=torch.float64) if state is None else state[0]
    eye = torch.eye(K, dtype=torch.float64)
    ys = []
    for t in range(T):
        kt, bt = k[:, t], beta[:, t, :, None, None]
        P = alpha[:, t, :, None, None] * (eye - bt * kt[..., :, None] * kt[..., None, :])
        S = P @ S + bt * kt[..., :, None] * v[:, t, :, None, :]
        ys.append((q[:, t, :, :, None] * S).sum(-2))
    return (torch.stack(ys, 1),), (S,)


def test_matches_loop():
    check_against_loop(gated_deltanet.ENTRY, loop)


def test_matches_loop_other_sizes():
    check_against_loop(gated_deltanet.ENTRY, loop, b=1, t=23, h=2, k=9, v=3)


def test_gradients_match_loop():
    check_grads_against_loop(gated_deltanet.ENTRY, loop)


def test_step_matches_forward():
    check_step_against_forward(gated_deltanet.ENTRY)


def test_init():
    p = gated_deltanet.init_params({"h": 7})
    A = torch.exp(p["A_log"])
    assert p["A_log"].shape == (7,) and (A >= 1).all() and (A <= 16).all()
    dt = F.softplus(p["dt_bias"])
    assert (dt >= 1e-4).all() and (dt <= 0.1 + 1e-12).all()
