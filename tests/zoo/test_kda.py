"""Kimi Delta Attention against its recurrence written as matrix products, token by token."""
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.zoo import kda
from tests.zoo.helpers import (
    check_against_loop,
    check_grads_against_loop,
    check_step_against_forward,
)
from tests.zoo.test_deltanet import unit


def loop(a, state):
    """S_t = (I - beta k k^T) diag(alpha_t) S_{t-1} + beta k v^T, alpha per key channel."""
    q, k, v = unit(a["q"]), unit(a["k"]), a["v"]
    beta = torch.sigmoid(a["b"])
    A = torch.exp(a["A_log"])[:, None]                                          # (H, 1)
    alpha = torch.exp(-A * F.softplus(a["f"] + a["dt_bias"]))                   # (B, T, H, K)
    B, T, H, K = k.shape
    V = v.shape[-1]
    S = torch.zeros(B, H, K, V, dtype=torch.float64) if state is None else state[0]
    eye = torch.eye(K, dtype=torch.float64)
    ys = []
    for t in range(T):
        kt, bt = k[:, t], beta[:, t, :, None, None]
        P = (eye - bt * kt[..., :, None] * kt[..., None, :]) @ torch.diag_embed(alpha[:, t])
        S = P @ S + bt * kt[..., :, None] * v[:, t, :, None, :]
        ys.append((q[:, t, :, :, None] * S).sum(-2))
    return (torch.stack(ys, 1),), (S,)


def test_matches_loop():
    check_against_loop(kda.ENTRY, loop)


def test_matches_loop_other_sizes():
    check_against_loop(kda.ENTRY, loop, b=1, t=23, h=2, k=9, v=3)


def test_gradients_match_loop():
    check_grads_against_loop(kda.ENTRY, loop)


def test_step_matches_forward():
    check_step_against_forward(kda.ENTRY)


def test_init():
    p = kda.init_params({"h": 3, "k": 5})
    assert p["A_log"].shape == (3,) and p["dt_bias"].shape == (3, 5)
