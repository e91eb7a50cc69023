"""H3 against its two stages written separately: an explicit short convolution of k (the shift
SSM), then a diagonal SSM loop on the gated product, then the q gate."""
import torch

import lrc
from lrc.zoo import h3
from tests.conftest import rel_err
from tests.zoo.helpers import check_against_loop


def reference(a, state):
    """kc_t = sum_m C_shift[m] k_{t-m} (k before t=0 read from the initial shift state),
    x_t = exp(dt A) x + (exp(dt A) - 1)/A kc_t v_t, y = q (2 Re(C x) + D kc_t v_t)."""
    q, k, v = a["q"], a["k"], a["v"]
    b, T, d = k.shape
    m = a["shift_C"].shape[1]
    s0 = torch.zeros(b, d, m, dtype=torch.float64) if state is None else state[0]
    # the history: s0[:, :, j] is k_{-1-j}; prepend it oldest first
    hist = torch.cat([s0.flip(-1).transpose(1, 2), k], 1)            # (b, m + T, d)
    kc = torch.stack([sum(a["shift_C"][:, j] * hist[:, m + t - j] for j in range(m))
                      for t in range(T)], 1)
    kv = kc * v
    A = -torch.exp(a["log_A_real"]) + 1j * a["A_imag"]
    dtA = torch.exp(a["log_dt"])[:, None] * A
    dA, dB = torch.exp(dtA), torch.expm1(dtA) / A
    n = A.shape[1]
    x = torch.zeros(b, d, n, dtype=torch.complex128) if state is None else state[1]
    ys = []
    for t in range(T):
        x = dA * x + dB * kv[:, t, :, None]
        ys.append(q[:, t] * (2 * (a["C"] * x).sum(-1).real + a["D"] * kv[:, t]))
    s_T = hist[:, T:].flip(1).transpose(1, 2)                          # the last m k's
    return (torch.stack(ys, 1),), (s_T, x)


def test_matches_reference():
    check_against_loop(h3.ENTRY, reference)


def test_matches_reference_long_shift():
    """A shift state longer than the sequence: it still holds part of the initial history."""
    check_against_loop(h3.ENTRY, reference, t=9, m=13)


def test_shift_state_is_recent_keys():
    a = h3.ENTRY.example(t=11)
    _, (s, _) = lrc.compile(h3.h3, backend="reference")(**a, return_final_state=True)
    m = s.shape[-1]
    assert rel_err(s, a["k"][:, -m:].flip(1).transpose(1, 2)) == 0


def test_init():
    p = h3.init_params({"d": 5, "m": 3, "n": 7})
    assert torch.allclose(p["A_imag"][0], torch.pi * torch.arange(7, dtype=torch.float64))
    assert torch.allclose(torch.exp(p["log_A_real"]), torch.full((5, 7), 0.5,
                                                                 dtype=torch.float64))
    dt = torch.exp(p["log_dt"])
    assert (dt >= 1e-3 - 1e-12).all() and (dt <= 0.1 + 1e-12).all()
    assert p["C"].dtype == torch.complex128 and p["shift_C"].shape == (5, 3)
