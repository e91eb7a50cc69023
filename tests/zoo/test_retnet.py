"""RetNet against the paper's parallel form of retention, (Q K^T * D) V."""
import torch

from lrc.zoo import retnet
from tests.zoo.helpers import check_against_loop


def parallel(a, state):
    """Sun et al. 2023, Eq. (5): D_nm = gamma^(n-m) for n >= m else 0, per head; an initial
    state S_0 adds gamma^(n+1) q_n S_0."""
    q, k, v, gamma = a["q"], a["k"], a["v"], a["gamma"]
    T = q.shape[1]
    n = torch.arange(T, dtype=torch.float64)
    diff = n[:, None] - n[None, :]
    D = torch.where(diff >= 0, gamma[:, None, None] ** diff.clamp(min=0), 0.0)   # (h, T, T)
    y = torch.einsum("bnhk,bmhk,hnm,bmhv->bnhv", q, k, D, v)
    S_T = torch.einsum("hm,bmhk,bmhv->bhkv", gamma[:, None] ** (T - 1 - n), k, v)
    if state is not None:
        y = y + torch.einsum("hn,bnhk,bhkv->bnhv", gamma[:, None] ** (n + 1), q, state[0])
        S_T = S_T + gamma[:, None, None] ** T * state[0]
    return (y,), (S_T,)


def test_matches_parallel_form():
    check_against_loop(retnet.ENTRY, parallel)


def test_matches_parallel_form_other_sizes():
    check_against_loop(retnet.ENTRY, parallel, b=1, t=45, h=5, k=3, v=3)


def test_init():
    g = retnet.init_params({"h": 8})["gamma"]
    assert torch.allclose(g, torch.tensor([1 - 2.0 ** (-5 - i) for i in range(8)],
                                          dtype=torch.float64))
    assert g[0] == 1 - 1 / 32 and (g < 1).all() and (g.diff() > 0).all()
