"""RWKV-6 against its recurrence with explicit matrix products per head."""
import torch

from lrc.zoo import rwkv6
from tests.zoo.helpers import check_against_loop


def loop(a, state):
    """Finch's WKV: o_t = r_t^T (S + diag(u) k_t v_t^T), S = diag(w_t) S + k_t v_t^T."""
    r, k, v = a["r"], a["k"], a["v"]
    b, T, h, dk = k.shape
    S = (torch.zeros(b, h, dk, v.shape[-1], dtype=torch.float64) if state is None
         else state[0].clone())
    ys = []
    for t in range(T):
        kv = torch.einsum("bhi,bhj->bhij", k[:, t], v[:, t])          # outer products
        bonus = torch.einsum("bhi,hi,bhi->bh", r[:, t], a["u"], k[:, t])
        ys.append(torch.einsum("bhi,bhij->bhj", r[:, t], S) + bonus[..., None] * v[:, t])
        w = torch.exp(-torch.exp(a["time_decay"] + a["w"][:, t]))     # (b, h, k)
        S = torch.diag_embed(w) @ S + kv
    return (torch.stack(ys, 1),), (S,)


def test_matches_loop():
    check_against_loop(rwkv6.ENTRY, loop)


def test_matches_loop_other_sizes():
    check_against_loop(rwkv6.ENTRY, loop, b=1, t=21, h=1, k=7, v=3)


def test_init():
    h, k = 3, 5
    n = h * k
    p = rwkv6.init_params({"h": h, "k": k}, layer_id=0, n_layer=3)
    i = torch.arange(n, dtype=torch.float64)
    assert torch.allclose(p["time_decay"].flatten(), -6 + 5 * (i / (n - 1)) ** 0.7)
    zigzag = ((i + 1) % 3 - 1) * 0.1
    assert torch.allclose(p["u"].flatten(), zigzag)                   # ratio 0: zigzag only
    p = rwkv6.init_params({"h": h, "k": k}, layer_id=2, n_layer=3)
    assert torch.allclose(p["u"].flatten(), (1 - i / (n - 1)) + zigzag)
    decay = torch.exp(-torch.exp(p["time_decay"]))
    assert ((decay > 0) & (decay < 1)).all()
