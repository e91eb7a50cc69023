"""The reference interpreter against plain loops: shifts, where, grouped dims, every function.

Same oracle as test_interpret.py: each spec is checked against a loop written here by hand.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as nnf

import lrc
from lrc import Param, Seq, State, where
from lrc.ir import Shift, verify
from lrc.runtime.reference import call_graph
from tests.conftest import rel_err
from tests.ir.test_interpret import TOL, B, D, N, T, check, f64, hgrn, rn, run

# ---- shift registers (H3, Hyena): lrc.shift and the .shift method


@lrc.recurrence
def shift_fill(x: Seq("b t d"), K: Param("d n"), h: State("b d n")):
    h = lrc.shift(h, "n", fill=x)            # h[n] <- h[n-1], h[0] <- x
    return (K * h).sum("n"), h


@lrc.recurrence
def shift_method(x: Seq("b t d"), K: Param("d n"), e0: Param("n"), h: State("b d n")):
    h = 0.5 * h.shift("n") + e0 * x          # zero fill, plus an input on every position
    return (K * h).sum("n"), h


def _shifted(h):
    return torch.cat([torch.zeros_like(h[..., :1]), h[..., :-1]], -1)


def test_shift_register_is_a_fir_filter():
    x, K, h0 = rn(B, T, D), rn(D, N), rn(B, D, N)
    (y,), (hT,) = run(shift_fill, x, K, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        h = _shifted(h)
        h[..., 0] = x[:, t]
        ys.append((K * h).sum(-1))
    check(y, torch.stack(ys, 1))
    check(hT, h)
    # from a zero state it is the causal convolution y_t = sum_k K[k] x_{t-k}
    (y0,), _ = run(shift_fill, x, K)
    conv = sum(K[:, k] * nnf.pad(x, (0, 0, k, 0))[:, :T] for k in range(N))
    check(y0, conv)


def test_shift_method_zero_fill():
    x, K, e0, h0 = rn(B, T, D), rn(D, N), rn(N), rn(B, D, N)
    (y,), (hT,) = run(shift_method, x, K, e0, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        h = 0.5 * _shifted(h) + e0 * x[:, t, :, None]
        ys.append((K * h).sum(-1))
    check(y, torch.stack(ys, 1))
    check(hT, h)


@pytest.mark.parametrize("offset", [-1, 2, -2, N, -N - 1])
def test_shift_offsets(offset):
    """A pass may write Shift(offset=k): out[i] = arg[i - k], zero out of range."""
    g = shift_method.graph
    g = g.replace(nodes=tuple(dataclasses.replace(n, offset=offset) if isinstance(n, Shift)
                              else n for n in g.nodes))
    assert verify(g) is g
    x, K, e0, h0 = rn(B, T, D), rn(D, N), rn(N), rn(B, D, N)
    (y,), (hT,) = call_graph(g, x, K, e0, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        moved = torch.zeros_like(h)
        for i in range(N):
            if 0 <= i - offset < N:
                moved[..., i] = h[..., i - offset]
        h = 0.5 * moved + e0 * x[:, t, :, None]
        ys.append((K * h).sum(-1))
    check(y, torch.stack(ys, 1))
    check(hT, h)


# ---- where: a condition on the inputs, the state in the values


@lrc.recurrence
def gated(x: Seq("b t d"), g: Seq("b t d"), h: State("b d")):
    a = where(g > 0, lrc.sigmoid(g), 0.25)
    h = where((g < -1) | (g > 1), a * h, 0.5 * h) + x
    return where(h > 0, h, 0.1 * h), h


def test_where():
    x, g, h0 = rn(B, T, D), rn(B, T, D), rn(B, D)
    (y,), (hT,) = run(gated, x, g, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        gt = g[:, t]
        a = torch.where(gt > 0, torch.sigmoid(gt), 0.25)
        h = torch.where((gt < -1) | (gt > 1), a * h, 0.5 * h) + x[:, t]
        ys.append(torch.where(h > 0, h, 0.1 * h))
    check(y, torch.stack(ys, 1))
    check(hT, h)


@lrc.recurrence
def nested_where(x: Seq("b t d"), z: Seq("b t d"), h: State("b d")):
    m = where(x > 0, x, z)                 # comparing m: sympy writes ITE(x > 0, ..., ...)
    h = where(m > 0.5, 0.9 * h, 0.5 * h) + x
    return h, h


def test_comparison_of_a_where():
    x, z, h0 = rn(B, T, D), rn(B, T, D), rn(B, D)
    (y,), _ = run(nested_where, x, z, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        m = torch.where(x[:, t] > 0, x[:, t], z[:, t])
        h = torch.where(m > 0.5, 0.9 * h, 0.5 * h) + x[:, t]
        ys.append(h)
    check(y, torch.stack(ys, 1))


# ---- grouped dims: Mamba-2's heads (g r) sharing B and C within a group


@lrc.recurrence
def ssd(x: Seq("b t (g r) p"), dt: Seq("b t (g r)"), Bm: Seq("b t g n"), C: Seq("b t g n"),
        A: Param("(g r)"), h: State("b (g r) p n")):
    a = lrc.exp(lrc.softplus(dt) * A)
    h = a * h + lrc.softplus(dt) * Bm * x
    return (C * h).sum("n"), h


def test_grouped_dims():
    G, R, P = 2, 3, 4
    x, dt = rn(B, T, G * R, P), rn(B, T, G * R)
    Bm, C = rn(B, T, G, N), rn(B, T, G, N)
    A, h0 = -torch.rand(G * R, dtype=f64) - 0.5, rn(B, G * R, P, N)
    (y,), (hT,) = run(ssd, x, dt, Bm, C, A, initial_state=h0)
    assert y.shape == (B, T, G * R, P)
    h, ys = h0, []
    for t in range(T):
        delta = nnf.softplus(dt[:, t])                                   # (b, gr)
        Bh = Bm[:, t].repeat_interleave(R, 1)                           # (b, gr, n)
        Ch = C[:, t].repeat_interleave(R, 1)
        h = (torch.exp(delta * A)[:, :, None, None] * h
             + (delta[:, :, None, None] * Bh[:, :, None, :] * x[:, t, :, :, None]))
        ys.append((Ch[:, :, None, :] * h).sum(-1))
    check(y, torch.stack(ys, 1))
    check(hT, h)


# ---- every function the step may use, in gates and outputs


@lrc.recurrence
def functions(x: Seq("b t d"), z: Seq("b t d"), p: Param("d"), h: State("b d")):
    g1 = lrc.silu(x) + lrc.logsigmoid(z) - lrc.relu(p) + lrc.tanh(z) * lrc.cos(x)
    g2 = lrc.sqrt(lrc.abs(z) + 0.5) + lrc.log(lrc.softplus(x) + 1) - lrc.log1p(lrc.sin(z) ** 2)
    g3 = lrc.maximum(x, z) - lrc.minimum(x, p) + lrc.expm1(lrc.tanh(x)) + z ** 3 / (2 + x ** 2)
    a = lrc.sigmoid(g1) * lrc.exp(-lrc.abs(g2))
    h = a * h + g3 / 4 + (abs(p) + 1) ** 0.5
    return h * g2 - 2 ** z, h


def test_every_function():
    x, z, p, h0 = rn(B, T, D), rn(B, T, D), rn(D), rn(B, D)
    (y,), (hT,) = run(functions, x, z, p, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        xt, zt = x[:, t], z[:, t]
        g1 = nnf.silu(xt) + nnf.logsigmoid(zt) - torch.relu(p) + torch.tanh(zt) * torch.cos(xt)
        g2 = (torch.sqrt(zt.abs() + 0.5) + torch.log(nnf.softplus(xt) + 1)
              - torch.log1p(torch.sin(zt) ** 2))
        g3 = (torch.maximum(xt, zt) - torch.minimum(xt, p) + torch.expm1(torch.tanh(xt))
              + zt ** 3 / (2 + xt ** 2))
        a = torch.sigmoid(g1) * torch.exp(-g2.abs())
        h = a * h + g3 / 4 + (p.abs() + 1) ** 0.5
        ys.append(h * g2 - 2 ** zt)
    check(y, torch.stack(ys, 1))
    check(hT, h)


@lrc.recurrence
def softplus_big(x: Seq("b t d"), h: State("b d")):
    return lrc.softplus(x) + lrc.sigmoid(-x) + lrc.logsigmoid(x), 0.5 * h + x


def test_functions_stable_at_large_arguments():
    x = rn(B, T, D) * 400                    # softplus(400) must not overflow to inf
    (y,), _ = run(softplus_big, x)
    check(y, nnf.softplus(x) + torch.sigmoid(-x) + nnf.logsigmoid(x))


@lrc.recurrence
def positions(x: Seq("b t n"), h: State("b n")):
    i = lrc.index("n")
    h = h * (1 / (i + 2)) + x * (i + 1)
    return h, h


def test_index():
    x, h0 = rn(B, T, N), rn(B, N)
    (y,), _ = run(positions, x, initial_state=h0)
    i = torch.arange(N, dtype=f64)
    h, ys = h0, []
    for t in range(T):
        h = h / (i + 2) + x[:, t] * (i + 1)
        ys.append(h)
    check(y, torch.stack(ys, 1))


# ---- unusual new states: unchanged, a constant, swapped, one input's broadcast


@lrc.recurrence
def odd_states(x: Seq("b t d"), p: Param("d"), h1: State("b d"), h2: State("b d"),
               keep: State("b d"), zero: State("d")):
    return h1 + 2 * h2 + keep + zero + x, (h2, h1, keep, 0)


def test_unchanged_constant_and_swapped_states():
    x, p = rn(B, T, D), rn(D)
    h1, h2, keep, zero = rn(B, D), rn(B, D), rn(B, D), rn(D)
    (y,), finals = run(odd_states, x, p, initial_state=(h1, h2, keep, zero))
    a, b_, z, ys = h1, h2, zero, []
    for t in range(T):
        ys.append(a + 2 * b_ + keep + z + x[:, t])
        a, b_, z = b_, a, torch.zeros_like(z)
    check(y, torch.stack(ys, 1))
    for got, want in zip(finals, (a, b_, keep, z), strict=True):
        check(got, want)


@pytest.mark.parametrize("t_len", [1, 2])
def test_tiny_lengths(t_len):
    x, f, h0 = rn(B, t_len, D), rn(B, t_len, D), rn(B, D)
    (y,), (hT,) = run(hgrn, x, f, initial_state=h0)
    h, ys = h0, []
    for t in range(t_len):
        a = torch.sigmoid(f[:, t])
        h = a * h + (1 - a) * x[:, t]
        ys.append(h)
    assert rel_err(y, torch.stack(ys, 1)) <= TOL
    assert rel_err(hT, h) <= TOL

