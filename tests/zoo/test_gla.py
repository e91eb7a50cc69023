"""GLA against its parallel (attention) form with cumulative log decays."""
import torch

from lrc.zoo import gla
from tests.zoo.helpers import check_against_loop


def parallel(a, state):
    """o_t = sum_{i<=t} (q_t * exp(G_t - G_i)) . k_i v_i + (q_t * exp(G_t)) S_0, G = cumsum gk
    (Yang et al. 2024, Eq. 3, plus the initial state's term); no recurrence."""
    q, k, v, gk = a["q"], a["k"], a["v"], a["gk"]
    T = q.shape[1]
    G = gk.cumsum(1)                                                   # (b, t, h, k)
    # score[b, h, t, i] = sum_k q_t k_i exp(G_t - G_i), causal
    decay = torch.exp(G[:, :, None] - G[:, None, :])                   # (b, t, i, h, k)
    score = torch.einsum("bthk,bihk,btihk->bhti", q, k, decay)
    score = score * torch.tril(torch.ones(T, T, dtype=torch.float64))
    y = torch.einsum("bhti,bihv->bthv", score, v)
    S_T = torch.einsum("bihk,bihv->bhkv", k * torch.exp(G[:, -1:] - G), v)
    if state is not None:
        y = y + torch.einsum("bthk,bhkv->bthv", q * torch.exp(G), state[0])
        S_T = S_T + torch.exp(G[:, -1])[..., None] * state[0]
    return (y,), (S_T,)


def test_matches_parallel_form():
    check_against_loop(gla.ENTRY, parallel)


def test_matches_parallel_form_other_sizes():
    check_against_loop(gla.ENTRY, parallel, b=3, t=17, h=1, k=3, v=5)


def test_example_gates():
    a = gla.ENTRY.example(t=101)
    decay = torch.exp(a["gk"])
    # logsigmoid(x) / 16 lies in (-inf, 0): decays in (0, 1), near 1 (GLA's normalizer 16)
    assert ((decay > 0) & (decay < 1)).all() and decay.mean() > 0.9
