"""DeltaNet against the delta rule written as matrix products, token by token."""
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.zoo import deltanet
from tests.zoo.helpers import (
    check_against_loop,
    check_grads_against_loop,
    check_step_against_forward,
)


def unit(x):
    """x / sqrt(||x||^2 + 1e-6) over the last axis."""
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def loop(a, state):
    """S_t = (I - beta k k^T) S_{t-1} + beta k v^T per (batch, head); o_t = S_t^T q_t."""
    q, k, v = unit(a["q"]), unit(a["k"]), a["v"]
    beta = torch.sigmoid(a["b"])
    B, T, H, K = k.shape
    V = v.shape[-1]
    S = torch.zeros(B, H, K, V, dtype=torch.float64) if state is None else state[0]
    eye = torch.eye(K, dtype=torch.float64)
    ys = []
    for t in range(T):
        kt = k[:, t]                                                   # (B, H, K)
        P = eye - beta[:, t, :, None, None] * kt[..., :, None] * kt[..., None, :]
        S = P @ S + beta[:, t, :, None, None] * kt[..., :, None] * v[:, t, :, None, :]
        ys.append((q[:, t, :, :, None] * S).sum(-2))
    return (torch.stack(ys, 1),), (S,)


def test_matches_loop():
    check_against_loop(deltanet.ENTRY, loop)


def test_matches_loop_other_sizes():
    check_against_loop(deltanet.ENTRY, loop, b=1, t=23, h=2, k=9, v=3)


def test_gradients_match_loop():
    check_grads_against_loop(deltanet.ENTRY, loop)


def test_step_matches_forward():
    check_step_against_forward(deltanet.ENTRY)


def test_keys_are_normalized():
    """Scaling k or q by a positive factor changes nothing (both are L2-normalized)."""
    a = deltanet.ENTRY.example(t=9)
    (y,), _ = loop(a, None)
    b = dict(a, k=a["k"] * 3.0, q=a["q"] * 0.5)
    from tests.zoo.helpers import run
    (y2,), _ = run(deltanet.ENTRY, b)
    assert torch.allclose(y, y2, atol=1e-5)
    assert F.sigmoid(a["b"]).min() > 0
