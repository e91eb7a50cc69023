"""The torch lowering (what backend='auto' runs for CPU tensors) against the float64 reference:
every zoo spec's outputs, final states and gradients, reverse, cu_seqlens, initial states and
decode steps, random specs, steep and near-one decays, long sequences; and the routing."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import lrc
from lrc import Param, Seq, State, exp, index, softplus, tanh
from lrc.lowering.torch.scan import diagonal_scan
from lrc.zoo import ZOO
from tests.conftest import rel_err
from tests.strategies import random_specs

FWD, GRAD = 1e-4, 1e-3
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def narrow(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex64 if x.is_complex() else torch.float32)


def cast(value, f):
    return tuple(f(x) for x in value) if isinstance(value, tuple) else f(value)


def ours_and_reference(spec):
    layer = lrc.compile(spec)
    return layer, lrc.compile(spec, backend="reference")


def test_auto_on_cpu_runs_the_torch_lowering_and_triton_stays_available():
    e = ZOO["mamba1"]
    layer = lrc.compile(e.spec)
    args = e.example(b=2, t=8, dtype=torch.float32)
    layer(**args)
    assert "torch" in layer.programs and "torch lowering" in layer.plan.note
    kern = lrc.compile(e.spec, backend="triton")
    y = kern(**args)
    assert "torch" not in kern.programs  # the generated kernels ran, under the interpreter
    assert rel_err(y, layer(**args)) <= FWD


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_forward_final_state_and_gradients(name, reverse):
    e = ZOO[name]
    layer, ref = ours_and_reference(e.spec)
    args, h0 = e.example(b=2, t=37), e.initial_state()
    ours = {k: narrow(v).requires_grad_(True) for k, v in args.items()}
    wide = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()}
    h_ours = cast(h0, lambda x: narrow(x).requires_grad_(True))
    h_wide = cast(h0, lambda x: x.detach().clone().requires_grad_(True))
    y, fin = layer(**ours, initial_state=h_ours, return_final_state=True, reverse=reverse)
    y_r, fin_r = ref(**wide, initial_state=h_wide, return_final_state=True, reverse=reverse)
    for a, b in zip(as_tuple(y) + as_tuple(fin), as_tuple(y_r) + as_tuple(fin_r), strict=True):
        assert a.dtype in (torch.float32, torch.complex64)
        assert rel_err(a, b) <= FWD, name
    # one random cotangent for every output and final state, the same for both
    cots = [torch.randn_like(b) for b in as_tuple(y_r) + as_tuple(fin_r)]
    loss = lambda outs: sum((o * c.to(o.dtype)).real.sum() for o, c in zip(outs, cots, strict=True))
    loss(as_tuple(y) + as_tuple(fin)).backward()
    loss(as_tuple(y_r) + as_tuple(fin_r)).backward()
    for k in args:
        assert rel_err(ours[k].grad, wide[k].grad) <= GRAD, (name, k)
    for a, b in zip(as_tuple(h_ours), as_tuple(h_wide), strict=True):
        assert rel_err(a.grad, b.grad) <= GRAD, (name, "initial state")


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_cu_seqlens_and_steps(name):
    e = ZOO[name]
    layer, ref = ours_and_reference(e.spec)
    g = e.spec.graph
    seq = {n.arg for n in g.inputs(lrc.ir.dims.Role.SEQ)}
    args = e.example(b=1, t=23)
    h0 = e.initial_state(b=3)
    cu = torch.tensor([0, 5, 5, 23])
    ours = {k: narrow(v) for k, v in args.items()}
    y, fin = layer(**ours, initial_state=cast(h0, narrow), cu_seqlens=cu,
                   return_final_state=True)
    y_r, fin_r = ref(**args, initial_state=h0, cu_seqlens=cu, return_final_state=True)
    for a, b in zip(as_tuple(y) + as_tuple(fin), as_tuple(y_r) + as_tuple(fin_r), strict=True):
        assert rel_err(a, b) <= FWD, name
    # prefill 20 tokens, then step the last 3: the outputs of the whole forward
    args = e.example(b=2, t=23)
    ours = {k: narrow(v) for k, v in args.items()}
    axis = {k: g.annotation(k).axes.index((g.time,)) for k in seq}
    first = {k: (v.narrow(axis[k], 0, 20) if k in seq else v) for k, v in ours.items()}
    y_all = as_tuple(ref(**args))
    _, state = layer(**first, return_final_state=True)
    out_axes = [ax.index((g.time,)) for ax in g.out_axes]
    for i in range(20, 23):
        tok = {k: (v.select(axis[k], i) if k in seq else v) for k, v in ours.items()}
        y_i, state = layer.step(**tok, state=state)
        for a, b, ax in zip(as_tuple(y_i), y_all, out_axes, strict=True):
            assert rel_err(a, b.select(ax, i)) <= FWD, (name, i)


def test_step_inplace_updates_the_state():
    e = ZOO["mamba1"]
    layer = lrc.compile(e.spec)
    args = e.example(b=2, t=4, dtype=torch.float32)
    y, fin = layer(**args, return_final_state=True)
    state = torch.zeros_like(fin)
    for i in range(4):
        tok = {k: (v[..., i] if k in ("u", "dt", "B", "C") else v) for k, v in args.items()}
        y_i, new = layer.step(**tok, state=state, inplace=True)
        assert new is state
        assert rel_err(y_i, y[..., i]) <= FWD
    assert rel_err(state, fin) <= FWD


@SETTINGS
@given(random_specs())
def test_random_specs_forward_and_final_state(rs):
    layer = lrc.compile(rs.spec)
    inp = rs.make_inputs(T=9, dtype=torch.float32)
    y, h = layer(*inp.args, initial_state=inp.state, return_final_state=True)
    want_y, want_h = rs.expected(inp.to(torch.float64))
    for a, b in zip(as_tuple(y) + as_tuple(h), tuple(want_y) + tuple(want_h), strict=True):
        assert rel_err(a, b) <= FWD, rs.source


@SETTINGS
@given(random_specs())
def test_random_specs_gradients(rs):
    layer, ref = ours_and_reference(rs.spec)
    inp = rs.make_inputs(T=7, dtype=torch.float64)
    ours = [narrow(x).requires_grad_(True) for x in inp.args]
    wide = [x.detach().clone().requires_grad_(True) for x in inp.args]
    s_ours = tuple(narrow(s).requires_grad_(True) for s in inp.state)
    s_wide = tuple(s.detach().clone().requires_grad_(True) for s in inp.state)
    y, h = layer(*ours, initial_state=s_ours, return_final_state=True)
    y_r, h_r = ref(*wide, initial_state=s_wide, return_final_state=True)
    cots = [torch.randn_like(b) for b in as_tuple(y_r) + as_tuple(h_r)]
    loss = lambda outs: sum((o * c.to(o.dtype)).real.sum() for o, c in zip(outs, cots, strict=True))
    loss(as_tuple(y) + as_tuple(h)).backward()
    loss(as_tuple(y_r) + as_tuple(h_r)).backward()
    for a, b in zip(ours + list(s_ours), wide + list(s_wide), strict=True):
        if b.grad is None:  # an argument no output reads
            assert a.grad is None or not a.grad.any(), rs.source
            continue
        assert rel_err(a.grad, b.grad) <= GRAD, rs.source


@lrc.recurrence
def decayed(x: Seq("b t d"), w: Seq("b t d"), h: State("b d")):
    h = exp(w) * h + x
    return h, h


@pytest.mark.parametrize("T", [4096])
@pytest.mark.parametrize("what", ["steep", "near_one", "mixed"])
def test_steep_and_near_one_decays_over_long_sequences(what, T):
    layer, ref = ours_and_reference(decayed)
    x = torch.randn(2, T, 5, dtype=torch.float64)
    w = {"steep": -40 - 40 * torch.rand(2, T, 5, dtype=torch.float64),  # exp(w) ~ 1e-17..1e-35
         "near_one": -1e-4 * torch.rand(2, T, 5, dtype=torch.float64),
         "mixed": torch.where(torch.rand(2, T, 5) < 0.1, -60.0, -1e-3).double()}[what]
    ours = [narrow(x).requires_grad_(True), narrow(w).requires_grad_(True)]
    wide = [x.clone().requires_grad_(True), w.clone().requires_grad_(True)]
    y, h = layer(*ours, return_final_state=True)
    y_r, h_r = ref(*wide, return_final_state=True)
    assert torch.isfinite(y).all()
    assert rel_err(y, y_r) <= FWD and rel_err(h, h_r) <= FWD
    c = torch.randn_like(y_r)
    (y * c.float()).sum().backward()
    (y_r * c).sum().backward()
    for a, b in zip(ours, wide, strict=True):
        assert rel_err(a.grad, b.grad) <= GRAD, what


@pytest.mark.parametrize("T", [1, 5, 16, 17, 100, 257])
def test_diagonal_scan_against_a_loop(T):
    a = torch.rand(T, 3, 4, dtype=torch.float64)
    b = torch.randn(T, 3, 4, dtype=torch.float64)
    h0 = torch.randn(3, 4, dtype=torch.float64)
    for reverse in (False, True):
        want, h = [None] * T, h0
        for t in reversed(range(T)) if reverse else range(T):
            h = a[t] * h + b[t]
            want[t] = h
        assert rel_err(diagonal_scan(a, b, h0, reverse), torch.stack(want)) <= 1e-12


@pytest.mark.parametrize("T", [3, 20])
def test_diagonal_scan_gradients_real_and_complex(T):
    a = torch.rand(T, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(T, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, dtype=torch.float64, requires_grad=True)
    ac = torch.polar(torch.rand(T, 2, dtype=torch.float64), torch.randn(T, 2,
                                                                       dtype=torch.float64))
    bc = torch.randn(T, 2, dtype=torch.complex128, requires_grad=True)
    for reverse in (False, True):
        f = lambda a, b, h0, r=reverse: diagonal_scan(a, b, h0, r)
        assert torch.autograd.gradcheck(f, (a, b, h0))
        assert torch.autograd.gradcheck(f, (ac.requires_grad_(True), bc, h0))
        assert torch.autograd.gradcheck(f, (a[:1], b, h0))  # a broadcast over time


@lrc.recurrence
def delta_rule(q: Seq("b t h k"), k: Seq("b t h k"), v: Seq("b t h v"), beta: Seq("b t h"),
               S: State("b h k v")):
    S = S - beta * k * (k * S).sum("k") + beta * k * v
    return (q * S).sum("k"), S


def test_matrix_state_against_a_plain_loop():
    b, t, h, dk, dv = 2, 64, 2, 4, 3
    q, v = torch.randn(b, t, h, dk), torch.randn(b, t, h, dv)
    k = torch.nn.functional.normalize(torch.randn(b, t, h, dk), dim=-1)
    beta = torch.rand(b, t, h)
    y = lrc.compile(delta_rule)(q, k, v, beta)
    S, want = torch.zeros(b, h, dk, dv, dtype=torch.float64), []
    for i in range(t):
        ki, bi = k[:, i].double(), beta[:, i, :, None, None].double()
        S = S - bi * ki[..., None] * torch.einsum("bhk,bhkv->bhv", ki, S)[:, :, None] \
            + bi * ki[..., None] * v[:, i, :, None].double()
        want.append(torch.einsum("bhk,bhkv->bhv", q[:, i].double(), S))
    assert rel_err(y, torch.stack(want, 1)) <= FWD


def test_torch_compile_fullgraph_runs_the_torch_lowering():
    e = ZOO["rglru"]
    layer = lrc.compile(e.spec)
    args = e.example(b=2, t=11, dtype=torch.float32)
    model = lambda *a: torch.tanh(layer(*a)).sum()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    leaves = [a.clone().requires_grad_(True) for a in args.values()]
    eager = [a.clone().requires_grad_(True) for a in args.values()]
    got, want = compiled(*leaves), model(*eager)
    assert "torch" in layer.programs
    assert rel_err(got, want) <= 1e-5
    got.backward()
    want.backward()
    for a, b in zip(leaves, eager, strict=True):
        assert rel_err(a.grad, b.grad) <= 1e-4


def test_a_state_whose_new_value_reads_only_an_earlier_state():
    """h1' reads the old h0 (complex) and not h1: its value is computed for all steps before
    h1's loop (a case the hypothesis search found: the loop looked it up among its per-step
    values and failed). Outputs, final states and gradients against the reference."""

    @lrc.recurrence
    def coupled(h1: State("b d n"), h0: State("b", complex=True), x0: Seq("b t n"),
                x1: Seq("t b"), p5: Param("d")):
        v3 = exp(-softplus(tanh(x0.sum("n")))) * h0
        v7 = v3 + (0.6 + 0.3j) * tanh(x0.sum("n"))
        v12 = index("d") + 0.5 + ((index("d") + 0.5) * h0).real
        return h1, (v12 + 0 * p5 + 0 * x1, v7)

    b, t, d, n = 2, 7, 3, 4
    args = [torch.randn(b, t, n, dtype=torch.float64), torch.randn(t, b, dtype=torch.float64),
            torch.randn(d, dtype=torch.float64)]
    s0 = (torch.randn(b, d, n, dtype=torch.float64),
          torch.randn(b, dtype=torch.complex128))
    ours = [a.float().requires_grad_() for a in args]
    y, h = lrc.compile(coupled)(*ours, initial_state=tuple(
        s.to(torch.complex64 if s.is_complex() else torch.float32) for s in s0),
        return_final_state=True)
    theirs = [a.clone().requires_grad_() for a in args]
    y2, h2 = lrc.compile(coupled, backend="reference")(*theirs, initial_state=s0,
                                                        return_final_state=True)
    assert rel_err(y, y2) <= FWD
    for a, e in zip(h, h2, strict=True):
        assert rel_err(a, e) <= FWD
    (y.sum() + h[0].sum()).backward()
    (y2.sum() + h2[0].sum()).backward()
    assert rel_err(ours[0].grad, theirs[0].grad) <= 1e-3  # x0: the only input h0 and y read
