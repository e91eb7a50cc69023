"""The float64 reference interpreter against independent plain-PyTorch loops written here.

Each spec is a small layer; each loop is the same recurrence written by hand over ordinary
tensors in the user's layout. Odd sizes (T=37), fresh random inputs, tolerance 1e-10.
"""
from __future__ import annotations

import torch
import torch.nn.functional as nnf

import lrc
from lrc import Param, Seq, State, exp, sigmoid, softplus
from lrc.runtime.reference import call_graph
from tests.conftest import rel_err

T, B, D, N = 37, 2, 5, 3
TOL = 1e-10
f64 = torch.float64


def rn(*shape, dtype=f64):
    return torch.randn(*shape, dtype=dtype)


def run(spec, *args, **kw):
    """The reference interpreter on a traced spec: (outputs, final states) as lists."""
    return call_graph(spec.graph, *args, **kw)


def check(actual, expected, tol=TOL):
    err = rel_err(actual, expected)
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


# ---- elementwise (HGRN-like): state = channels


@lrc.recurrence
def hgrn(x: Seq("b t d"), f: Seq("b t d"), h: State("b d")):
    a = sigmoid(f)
    h = a * h + (1 - a) * x
    return h, h


def test_elementwise():
    x, f, h0 = rn(B, T, D), rn(B, T, D), rn(B, D)
    (y,), (hT,) = run(hgrn, x, f, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        a = torch.sigmoid(f[:, t])
        h = a * h + (1 - a) * x[:, t]
        ys.append(h)
    check(y, torch.stack(ys, 1))
    check(hT, h)


# ---- diagonal selective (Mamba-1)


@lrc.recurrence
def mamba1(u: Seq("b t d"), dt: Seq("b t d"), Bm: Seq("b t n"), C: Seq("b t n"),
           A: Param("d n"), Dp: Param("d"), dt_bias: Param("d"), h: State("b d n")):
    delta = softplus(dt + dt_bias)
    h = exp(delta * A) * h + delta * Bm * u
    return (C * h).sum("n") + Dp * u, h


def mamba1_loop(u, dt, Bm, C, A, Dp, dt_bias, h):
    """u, dt: (b, t, d); Bm, C: (b, t, n)."""
    ys = []
    for t in range(u.shape[1]):
        delta = nnf.softplus(dt[:, t] + dt_bias)[:, :, None]
        h = torch.exp(delta * A) * h + delta * Bm[:, t, None, :] * u[:, t, :, None]
        ys.append((C[:, t, None, :] * h).sum(-1) + Dp * u[:, t])
    return torch.stack(ys, 1), h


def mamba1_inputs():
    return (rn(B, T, D), rn(B, T, D) - 1, rn(B, T, N), rn(B, T, N), -torch.rand(D, N, dtype=f64)
            - 0.5, rn(D), rn(D))


def test_mamba1():
    args, h0 = mamba1_inputs(), rn(B, D, N)
    (y,), (hT,) = run(mamba1, *args, initial_state=h0)
    ye, he = mamba1_loop(*args, h0)
    check(y, ye)
    check(hT, he)


@lrc.recurrence
def mamba1_bdt(u: Seq("b d t"), dt: Seq("b d t"), Bm: Seq("b n t"), C: Seq("b n t"),
               A: Param("d n"), Dp: Param("d"), dt_bias: Param("d"), h: State("b d n")):
    delta = softplus(dt + dt_bias)
    h = exp(delta * A) * h + delta * Bm * u
    return (C * h).sum("n") + Dp * u, h


def test_mamba1_b_d_t_layout():
    args, h0 = mamba1_inputs(), rn(B, D, N)
    ye, he = mamba1_loop(*args, h0)
    bdt = [x.transpose(1, 2).contiguous() if x.dim() == 3 else x for x in args]
    (y,), (hT,) = run(mamba1_bdt, *bdt, initial_state=h0)
    assert y.shape == (B, D, T)  # the layout of u, the Seq holding exactly y's dims
    check(y, ye.transpose(1, 2))
    check(hT, he)


@lrc.recurrence(time="l")
def mamba1_l(u: Seq("b l d"), dt: Seq("b l d"), Bm: Seq("b l n"), C: Seq("b l n"),
             A: Param("d n"), Dp: Param("d"), dt_bias: Param("d"), h: State("b d n")):
    delta = softplus(dt + dt_bias)
    h = exp(delta * A) * h + delta * Bm * u
    return (C * h).sum("n") + Dp * u, h


def test_renamed_time_dim():
    args, h0 = mamba1_inputs(), rn(B, D, N)
    (y,), (hT,) = run(mamba1_l, *args, initial_state=h0)
    ye, he = mamba1_loop(*args, h0)
    assert mamba1_l.graph.time == "l"
    check(y, ye)
    check(hT, he)


# ---- matrix mixing of the state through rename + sum


@lrc.recurrence
def mixing(x: Seq("b t d"), Abar: Param("d n m"), Bp: Param("d n"), C: Param("d n"),
           h: State("b d n")):
    h = (Abar * h.rename(n="m")).sum("m") + Bp * x
    return (C * h).sum("n"), h


def test_matrix_mixing():
    x, Bp, C, h0 = rn(B, T, D), rn(D, N), rn(D, N), rn(B, D, N)
    Abar = rn(D, N, N) * 0.4
    (y,), (hT,) = run(mixing, x, Abar, Bp, C, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        h = torch.einsum("dnm,bdm->bdn", Abar, h) + Bp * x[:, t, :, None]
        ys.append((C * h).sum(-1))
    check(y, torch.stack(ys, 1))
    check(hT, h)


@lrc.recurrence
def transpose_mix(x: Seq("t a b"), W: Param("a b"), h: State("a b")):
    h = W * h.rename(a="b", b="a") + x
    return h.sum("a", "b"), h


def test_rename_swap_is_a_transpose():
    x, W, h0 = rn(T, 4, 4), rn(4, 4) * 0.5, rn(4, 4)
    (y,), (hT,) = run(transpose_mix, x, W, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        h = W * h.T + x[t]
        ys.append(h.sum())
    check(y, torch.stack(ys))
    check(hT, h)


@lrc.recurrence
def chained_rename(x: Seq("t a b"), W: Param("b c"), h: State("a b")):
    z = (x * h).rename(a="b", b="c")        # z[b, c] = (x h)[a=b, b=c]
    return (W * z).sum("b", "c"), h * 0.5 + x


def test_chained_rename():
    x, W, h0 = rn(T, 3, 3), rn(3, 3), rn(3, 3)
    (y,), (hT,) = run(chained_rename, x, W, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        ys.append((W * (x[t] * h)).sum())
        h = h * 0.5 + x[t]
    check(y, torch.stack(ys))
    check(hT, h)


# ---- several states (RWKV-4's numerator and denominator), outputs from the old states


@lrc.recurrence
def wkv(k: Seq("b t d"), v: Seq("b t d"), w: Param("d"), u: Param("d"),
        num: State("b d"), den: State("b d")):
    ek, euk = exp(k), exp(u + k)
    y = (num + euk * v) / (den + euk)
    decay = exp(-exp(w))
    return y, (decay * num + ek * v, decay * den + ek)


def test_several_states():
    k, v, w, u = rn(B, T, D) * 0.5, rn(B, T, D), rn(D), rn(D)
    num0, den0 = rn(B, D), torch.rand(B, D, dtype=f64) + 1
    (y,), (numT, denT) = run(wkv, k, v, w, u, initial_state=(num0, den0))
    num, den, ys = num0, den0, []
    decay = torch.exp(-torch.exp(w))
    for t in range(T):
        ek, euk = torch.exp(k[:, t]), torch.exp(u + k[:, t])
        ys.append((num + euk * v[:, t]) / (den + euk))
        num, den = decay * num + ek * v[:, t], decay * den + ek
    check(y, torch.stack(ys, 1))
    check(numT, num)
    check(denT, den)


@lrc.recurrence
def two_outputs(x: Seq("b t d"), h: State("b d")):
    h_new = 0.9 * h + x
    return (lrc.tanh(h_new) * h, (h_new * h_new).sum("d")), h_new


def test_outputs_nonlinear_in_old_and_new_state():
    x, h0 = rn(B, T, D), rn(B, D)
    (y0, y1), (hT,) = run(two_outputs, x, initial_state=h0)
    h, y0s, y1s = h0, [], []
    for t in range(T):
        hn = 0.9 * h + x[:, t]
        y0s.append(torch.tanh(hn) * h)
        y1s.append((hn * hn).sum(-1))
        h = hn
    check(y0, torch.stack(y0s, 1))
    assert y1.shape == (B, T)
    check(y1, torch.stack(y1s, 1))
    check(hT, h)


# ---- complex states (LRU): complex params, outputs through .real / .imag


@lrc.recurrence
def lru(x: Seq("b t d"), nu: Param("d"), theta: Param("d"), Bc: Param("d", complex=True),
        C: Param("d", complex=True), h: State("b d", complex=True)):
    lam = exp(-exp(nu) + 1j * exp(theta))
    gamma = lrc.sqrt(1 - lrc.abs(lam) ** 2)
    h = lam * h + gamma * Bc * x
    return 2 * (C * h).real - (0.5j * h).imag, h


def test_complex_state():
    x, nu, theta, h0 = rn(B, T, D), rn(D), rn(D), rn(B, D, dtype=torch.complex128)
    Bc, C = rn(D, dtype=torch.complex128), rn(D, dtype=torch.complex128)
    (y,), (hT,) = run(lru, x, nu, theta, Bc, C, initial_state=h0)
    assert not y.is_complex() and hT.dtype == torch.complex128
    lam = torch.exp(-torch.exp(nu) + 1j * torch.exp(theta))
    gamma = torch.sqrt(1 - lam.abs() ** 2)
    h, ys = h0, []
    for t in range(T):
        h = lam * h + gamma * Bc * x[:, t]
        ys.append(2 * (C * h).real - (0.5j * h).imag)
    check(y, torch.stack(ys, 1))
    check(hT, h)


@lrc.recurrence
def complex_reset(x: Seq("b t d"), c: Param("d", complex=True),
                  h: State("b d", complex=True)):
    h2 = x * 2.0             # a real value for a complex state
    return (c * h2).real + (c * h).real, h2


def test_complex_state_given_a_real_value():
    x, c = rn(B, T, D), rn(D, dtype=torch.complex128)
    h0 = rn(B, D, dtype=torch.complex128)
    (y,), (hT,) = run(complex_reset, x, c, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        hn = x[:, t] * 2.0
        ys.append((c * hn).real + (c * h).real)
        h = hn.to(torch.complex128)
    check(y, torch.stack(ys, 1))
    check(hT, h)


@lrc.recurrence
def broadcast_state(x: Seq("b t d"), h: State("b d n")):
    s = x.sum("d") * 0.5                   # over (b): broadcast to the state's (b, d, n)
    return (s, (h * x).sum("n")), s


def test_new_state_broadcast_from_fewer_dims():
    x, h0 = rn(B, T, D), rn(B, D, N)
    (y0, y1), (hT,) = run(broadcast_state, x, initial_state=h0)
    assert y0.shape == (B, T)              # the output keeps its own dims
    h, w0, w1 = h0, [], []
    for t in range(T):
        s = x[:, t].sum(-1) * 0.5
        w0.append(s)
        w1.append((h * x[:, t, :, None]).sum(-1))
        h = s[:, None, None].expand(B, D, N)
    check(y0, torch.stack(w0, 1))
    check(y1, torch.stack(w1, 1))
    check(hT, h)
