"""The compiled layer's calling convention (DESIGN.md section 1): arguments, outputs, states,
reverse, cu_seqlens and the decode step, on the reference backend. Expected values come from
plain loops written here."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc import Param, Seq, State
from lrc.runtime.reference import call_graph
from tests.conftest import rel_err

T, B, D, N = 37, 3, 5, 4
TOL = 1e-10
f64 = torch.float64


def rn(*shape, dtype=f64):
    return torch.randn(*shape, dtype=dtype)


def compiled(spec):
    """The layer on the reference backend: the calling convention every backend must match."""
    return lrc.compile(spec, backend="reference")


@lrc.recurrence
def diag(x: Seq("b t d"), g: Seq("b t d"), Bm: Seq("b t n"), C: Seq("b t n"), A: Param("d n"),
         h: State("b d n")):
    h = lrc.exp(lrc.softplus(g) * A) * h + Bm * x
    return (C * h).sum("n"), h


def diag_loop(x, g, Bm, C, A, h):
    ys = []
    for t in range(x.shape[1]):
        a = torch.exp(torch.nn.functional.softplus(g[:, t])[..., None] * A)
        h = a * h + Bm[:, t, None, :] * x[:, t, :, None]
        ys.append((C[:, t, None, :] * h).sum(-1))
    return torch.stack(ys, 1), h


def diag_inputs(b=B, t=T):
    return rn(b, t, D), rn(b, t, D), rn(b, t, N), rn(b, t, N), -torch.rand(D, N, dtype=f64) - .2


@lrc.recurrence
def two(x: Seq("b t d"), w: Param("d"), num: State("b d"), den: State("b d")):
    a = lrc.sigmoid(w)
    num, den = a * num + lrc.exp(x) * x, a * den + lrc.exp(x)
    return (num / den, num - den), (num, den)


def two_loop(x, w, num, den):
    a, y0, y1 = torch.sigmoid(w), [], []
    for t in range(x.shape[1]):
        num, den = a * num + torch.exp(x[:, t]) * x[:, t], a * den + torch.exp(x[:, t])
        y0.append(num / den)
        y1.append(num - den)
    return (torch.stack(y0, 1), torch.stack(y1, 1)), (num, den)


def close(a, b):
    return rel_err(a, b) <= TOL


# ---- arguments


def test_positional_keyword_and_mixed_agree():
    layer = compiled(diag)
    x, g, Bm, C, A = diag_inputs()
    want, _ = diag_loop(x, g, Bm, C, A, torch.zeros(B, D, N, dtype=f64))
    assert close(layer(x, g, Bm, C, A), want)
    assert close(layer(A=A, C=C, Bm=Bm, g=g, x=x), want)
    assert close(layer(x, g, C=C, A=A, Bm=Bm), want)


def test_single_output_is_a_tensor_several_a_tuple():
    y = compiled(diag)(*diag_inputs())
    assert isinstance(y, torch.Tensor) and y.shape == (B, T, D)
    x, w = rn(B, T, D), rn(D)
    ys = compiled(two)(x, w)
    assert isinstance(ys, tuple) and len(ys) == 2
    (w0, w1), _ = two_loop(x, w, torch.zeros(B, D, dtype=f64), torch.zeros(B, D, dtype=f64))
    assert close(ys[0], w0) and close(ys[1], w1)


def test_return_final_state_and_initial_state_single():
    layer = compiled(diag)
    args, h0 = diag_inputs(), rn(B, D, N)
    y, hT = layer(*args, initial_state=h0, return_final_state=True)
    want_y, want_h = diag_loop(*args, h0)
    assert isinstance(hT, torch.Tensor) and hT.shape == (B, D, N)
    assert close(y, want_y) and close(hT, want_h)
    # initial_state=None means zeros
    y0, h0T = layer(*args, initial_state=None, return_final_state=True)
    zy, zh = diag_loop(*args, torch.zeros(B, D, N, dtype=f64))
    assert close(y0, zy) and close(h0T, zh)


def test_several_states_are_tuples_in_declaration_order():
    layer = compiled(two)
    x, w = rn(B, T, D), rn(D)
    num0, den0 = rn(B, D), rn(B, D).abs() + 1
    (y0, y1), (numT, denT) = layer(x, w, initial_state=(num0, den0), return_final_state=True)
    (w0, w1), (wn, wd) = two_loop(x, w, num0, den0)
    assert close(y0, w0) and close(y1, w1) and close(numT, wn) and close(denT, wd)
    assert close(layer(x, w, initial_state=[num0, den0])[0], w0)   # a list works too


def test_chaining_final_state_equals_one_long_run():
    layer = compiled(diag)
    args = diag_inputs()
    y, hT = layer(*args, return_final_state=True)
    first = [a[:, :20] if a.dim() == 3 else a for a in args]
    rest = [a[:, 20:] if a.dim() == 3 else a for a in args]
    y1, h1 = layer(*first, return_final_state=True)
    y2, h2 = layer(*rest, initial_state=h1, return_final_state=True)
    assert close(torch.cat([y1, y2], 1), y) and close(h2, hT)


# ---- reverse


def test_reverse_equals_flipping_time():
    layer = compiled(diag)
    args, h0 = diag_inputs(), rn(B, D, N)
    y, hT = layer(*args, initial_state=h0, reverse=True, return_final_state=True)
    flipped = [a.flip(1) if a.dim() == 3 else a for a in args]
    want_y, want_h = diag_loop(*flipped, h0)
    assert close(y, want_y.flip(1)) and close(hT, want_h)


@lrc.recurrence
def bdt(x: Seq("b d t"), h: State("b d")):
    h = 0.8 * h + x
    return h * h, h


def test_reverse_with_time_not_second():
    layer = compiled(bdt)
    x = rn(B, D, T)
    y = layer(x, reverse=True)
    h, ys = torch.zeros(B, D, dtype=f64), [None] * T
    for t in reversed(range(T)):
        h = 0.8 * h + x[:, :, t]
        ys[t] = h * h
    assert close(y, torch.stack(ys, -1))


# ---- cu_seqlens


@pytest.mark.parametrize("reverse", [False, True])
def test_cu_seqlens_equals_separate_runs(reverse):
    layer = compiled(diag)
    lens = [7, 1, 13, 16]
    args = diag_inputs(b=1, t=sum(lens))
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    h0 = rn(len(lens), D, N)
    y, hT = layer(*args, cu_seqlens=cu, initial_state=h0, reverse=reverse,
                  return_final_state=True)
    assert y.shape == (1, sum(lens), D) and hT.shape == (len(lens), D, N)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        part = [a[:, s:e] if a.dim() == 3 else a for a in args]
        if reverse:
            part = [a.flip(1) if a.dim() == 3 else a for a in part]
        want_y, want_h = diag_loop(*part, h0[i:i + 1])
        if reverse:
            want_y = want_y.flip(1)
        assert close(y[:, s:e], want_y), f"sequence {i}"
        assert close(hT[i:i + 1], want_h), f"sequence {i}"


def test_cu_seqlens_zero_initial_states_and_several_states():
    layer = compiled(two)
    lens = [5, 11, 3]
    x, w = rn(1, sum(lens), D), rn(D)
    cu = torch.tensor([0, 5, 16, 19], dtype=torch.int64)
    (y0, y1), (numT, denT) = layer(x, w, cu_seqlens=cu, return_final_state=True)
    assert numT.shape == (3, D)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        z = torch.zeros(1, D, dtype=f64)
        (w0, w1), (wn, wd) = two_loop(x[:, s:e], w, z, z)
        assert close(y0[:, s:e], w0) and close(y1[:, s:e], w1)
        assert close(numT[i:i + 1], wn) and close(denT[i:i + 1], wd)


def test_cu_seqlens_empty_sequence_keeps_its_initial_state():
    layer = compiled(diag)
    args = diag_inputs(b=1, t=10)
    h0 = rn(3, D, N)
    cu = torch.tensor([0, 4, 4, 10])
    y, hT = layer(*args, cu_seqlens=cu, initial_state=h0, return_final_state=True)
    assert close(hT[1], h0[1])
    part = [a[:, 4:] if a.dim() == 3 else a for a in args]
    assert close(y[:, 4:], diag_loop(*part, h0[2:3])[0])


# ---- the decode step


def test_prefill_then_steps_equals_forward():
    layer = compiled(diag)
    args, h0, k = diag_inputs(), rn(B, D, N), 5
    y, hT = layer(*args, initial_state=h0, return_final_state=True)
    pre = [a[:, :T - k] if a.dim() == 3 else a for a in args]
    _, state = layer(*pre, initial_state=h0, return_final_state=True)
    for i in range(T - k, T):
        tok = [a[:, i] if a.dim() == 3 else a for a in args]
        y_i, state = layer.step(*tok, state=state)
        assert y_i.shape == (B, D)
        assert close(y_i, y[:, i]), f"step {i}"
    assert close(state, hT)


def test_step_state_none_is_zeros_and_keywords_work():
    layer = compiled(diag)
    x, g, Bm, C, A = (a[:, 0] if a.dim() == 3 else a for a in diag_inputs())
    y, h = layer.step(x, g, Bm, C, A)
    y2, h2 = layer.step(x=x, g=g, Bm=Bm, C=C, A=A, state=torch.zeros(B, D, N, dtype=f64))
    want_y, want_h = diag_loop(x[:, None], g[:, None], Bm[:, None], C[:, None], A,
                               torch.zeros(B, D, N, dtype=f64))
    assert close(y, want_y[:, 0]) and close(h, want_h)
    assert close(y2, y) and close(h2, h)


def test_step_several_states_and_outputs():
    layer = compiled(two)
    x, w = rn(B, 1, D), rn(D)
    num0, den0 = rn(B, D), rn(B, D).abs() + 1
    (y0, y1), (num, den) = layer.step(x[:, 0], w, state=(num0, den0))
    (w0, w1), (wn, wd) = two_loop(x, w, num0, den0)
    assert close(y0, w0[:, 0]) and close(y1, w1[:, 0]) and close(num, wn) and close(den, wd)


def test_step_inplace_updates_the_given_tensors():
    layer = compiled(two)
    x, w = rn(B, 1, D), rn(D)
    num0, den0 = rn(B, D), rn(B, D).abs() + 1
    num, den = num0.clone(), den0.clone()
    _, (n2, d2) = layer.step(x[:, 0], w, state=(num, den), inplace=True)
    _, (wn, wd) = two_loop(x, w, num0, den0)
    assert n2 is num and d2 is den
    assert close(num, wn) and close(den, wd)
    single = compiled(diag)
    h = rn(B, D, N)
    h_copy = h.clone()
    tok = [a[:, 0] if a.dim() == 3 else a for a in diag_inputs()]
    _, out = single.step(*tok, state=h, inplace=True)
    assert out is h and not torch.equal(h, h_copy)
    want = diag_loop(*[a[:, None] for a in tok[:4]], tok[4], h_copy)[1]
    assert close(h, want)


# ---- output layouts: a Seq's holding exactly the output's dims, else a Seq's holding more,
# else the dims in argument order


@lrc.recurrence
def layouts(x: Seq("d t b"), z: Seq("n b t d"), A: Param("k d"), h: State("b d k")):
    h = 0.5 * h + A * x
    return (h.sum("k"), (z * x).sum("d"), h), h


def test_output_layouts():
    x, z, A, h0 = rn(D, T, B), rn(N, B, T, D), rn(2, D), rn(B, D, 2)
    y0, y1, y2 = compiled(layouts)(x, z, A, initial_state=h0)
    assert y0.shape == (D, T, B)            # x holds exactly (b, d) + time
    assert y1.shape == (N, B, T)            # z holds (n, b) + time, and more
    assert y2.shape == (D, T, B, 2)         # no Seq holds k: Seq dims first, then the rest
    h, w0, w1, w2 = h0, [], [], []
    for t in range(T):
        h = 0.5 * h + A.T * x[:, t].T[:, :, None]
        w0.append(h.sum(-1).T)
        w1.append((z[:, :, t] * x[:, t].T).sum(-1))
        w2.append(h.permute(1, 0, 2))
    assert close(y0, torch.stack(w0, 1)) and close(y1, torch.stack(w1, 2))
    assert close(y2, torch.stack(w2, 1))


# ---- graphs a pass made: a complex Seq split into real and imaginary parts


@lrc.recurrence
def complex_seq(u: Seq("b t d"), w: Seq("b t d", complex=True), lam: Param("d", complex=True),
                h: State("b d", complex=True)):
    h = 0.5 * lam * h + w * u
    return (h * w.conj()).real, h


def test_reference_runs_a_graph_with_a_split_complex_seq():
    from lrc.passes import lower_complex

    g = lower_complex(complex_seq.graph)
    assert {n.part for n in g.inputs() if n.arg == "w"} == {"re", "im"}
    u, w = rn(B, T, D), rn(B, T, D, dtype=torch.complex128)
    lam, h0 = rn(D, dtype=torch.complex128), rn(B, D, dtype=torch.complex128)
    (y,), (hT,) = call_graph(g, u, w, lam, initial_state=h0)
    h, ys = h0, []
    for t in range(T):
        h = 0.5 * lam * h + w[:, t] * u[:, t]
        ys.append((h * w[:, t].conj()).real)
    assert y.dtype == f64 and hT.dtype == torch.complex128
    assert close(y, torch.stack(ys, 1)) and close(hT, h)


def test_broadcast_shape_matches_torch():
    """bind.broadcast_shape (the convolution's host path) agrees with torch.broadcast_shapes
    and refuses what it refuses."""
    from lrc.layout import broadcast_shape

    cases = [((2, 1, 3), (4, 3)), ((), (5,)), ((1,), (1,)), ((3, 1), (1, 4), (2, 1, 1)),
             ((0, 1), (1, 7)), ((6,),)]
    for shapes in cases:
        assert broadcast_shape(*shapes) == tuple(torch.broadcast_shapes(*shapes))
    with pytest.raises(RuntimeError):
        torch.broadcast_shapes((2, 3), (4, 3))
    with pytest.raises(RuntimeError, match="do not broadcast"):
        broadcast_shape((2, 3), (4, 3))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_time_dim_keeps_the_graph(backend):
    """T = 0: outputs with no time steps and the final state still have a grad_fn, and every
    gradient comes back (zeros) on both backends."""
    layer = lrc.compile(diag, backend=backend)
    x, g, Bm, C, A = (v.float().requires_grad_() for v in diag_inputs(t=0))
    A.data.fill_(float("inf"))  # never reached: no step runs
    h0 = torch.randn(3, 5, 4)
    y, hT = layer(x, g, Bm, C, A, return_final_state=True)
    assert y.shape[1] == 0 and y.grad_fn is not None and hT.grad_fn is not None
    assert torch.equal(hT, torch.zeros_like(hT))
    grads = torch.autograd.grad(y.sum() + hT.sum(), (x, g, Bm, C, A))
    for v, gv in zip((x, g, Bm, C, A), grads, strict=True):
        assert gv.shape == v.shape and torch.equal(gv, torch.zeros_like(v))
    y, hT = layer(x, g, Bm, C, A, initial_state=h0, return_final_state=True)
    assert y.grad_fn is not None and torch.equal(hT, h0)
