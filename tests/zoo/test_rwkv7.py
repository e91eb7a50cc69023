"""RWKV-7 against fla's naive recurrence (state transposed to key x value), token by token."""
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.zoo import rwkv7
from tests.zoo.helpers import (
    check_against_loop,
    check_grads_against_loop,
    check_step_against_forward,
)
from tests.zoo.test_deltanet import unit


def loop(a, state):
    """fla's naive_recurrent_rwkv7 with a = -kk, b = kk * sigmoid(a_raw), w = exp(-e^-0.5 ...):
    sa = S^T a (a value vector); S = diag(w) S + b sa^T + k v^T; o = S^T r."""
    r, k, v = a["r"], a["k"], a["v"]
    kk = unit(a["kk"])
    w = torch.exp(-torch.exp(-F.softplus(-a["w"]) - 0.5))
    av, bv = -kk, kk * torch.sigmoid(a["a"])
    B, T, H, K = k.shape
    V = v.shape[-1]
    S = torch.zeros(B, H, K, V, dtype=torch.float64) if state is None else state[0]
    ys = []
    for t in range(T):
        sa = torch.einsum("bhkv,bhk->bhv", S, av[:, t])
        S = (w[:, t, :, :, None] * S + bv[:, t, :, :, None] * sa[:, :, None, :]
             + k[:, t, :, :, None] * v[:, t, :, None, :])
        ys.append(torch.einsum("bhkv,bhk->bhv", S, r[:, t]))
    return (torch.stack(ys, 1),), (S,)


def test_matches_loop():
    check_against_loop(rwkv7.ENTRY, loop)


def test_matches_loop_other_sizes():
    check_against_loop(rwkv7.ENTRY, loop, b=1, t=23, h=2, k=9, v=3)


def test_gradients_match_loop():
    check_grads_against_loop(rwkv7.ENTRY, loop)


def test_step_matches_forward():
    check_step_against_forward(rwkv7.ENTRY)


def test_decay_range():
    """w lies in (exp(-e^-0.5), 1), RWKV-7's bound."""
    a = rwkv7.ENTRY.example(t=50)
    w = torch.exp(-torch.exp(-F.softplus(-a["w"]) - 0.5))
    assert (w > 0.545).all() and (w < 1).all()
