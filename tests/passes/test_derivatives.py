"""The derived backward (the adjoint step, run in reverse time by the reference interpreter)
matches torch autograd of the float64 reference: every Seq, Param and initial-state gradient,
on every zoo spec and on random linear specs."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import lrc
from lrc.ir.linearity import check_linear
from lrc.passes import pipeline
from lrc.passes.stability import running_maxes, scaled_initial_state
from lrc.runtime.call import make_call
from lrc.runtime.reference import vjp_grads
from lrc.zoo import ZOO
from tests.conftest import rel_err
from tests.strategies import random_specs


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def compare(spec, args: dict, state, reverse: bool = False):
    lowered = pipeline.run(spec.graph).lowered
    backward = lowered.meta("backward")
    check_linear(backward.graph)  # the backward is itself a linear recurrence
    ref = lrc.compile(spec, backend="reference")
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()}
    st = None if state is None else tuple(s.detach().clone().requires_grad_(True)
                                          for s in as_tuple(state))
    y, h = ref(**leaves, initial_state=st, return_final_state=True, reverse=reverse)
    ys, hs = as_tuple(y), as_tuple(h)
    aux = running_maxes(lowered)
    gys = [torch.randn_like(o) for o in ys]
    ghs = None if aux else [torch.randn_like(f) for f in hs]
    loss = sum((o * g).sum() for o, g in zip(ys, gys))
    if ghs:
        loss = loss + sum((f * g).real.sum() if f.is_complex() else (f * g).sum()
                          for f, g in zip(hs, ghs))
    want = torch.autograd.grad(loss, list(leaves.values()) + list(st or ()), allow_unused=True)
    init = st if not aux or st is None else scaled_initial_state(lowered, st)
    call = make_call(lowered, (), {k: v.detach() for k, v in args.items()},
                     initial_state=None if init is None else tuple(x.detach() for x in init),
                     reverse=reverse)
    # torch's gradient of a complex tensor for loss Re(f g) is conj(g): the convention
    # vjp_grads takes the final states' cotangents in
    dfin = None if ghs is None else [g.conj() if g.is_complex() else g for g in ghs]
    grads, dinit = vjp_grads(call, backward, gys, dfin)
    got = [grads.get(k) for k in leaves] + list(dinit[:len(st or ())])
    for name, a, e in zip(list(leaves) + ["initial"] * len(st or ()), got, want):
        if e is None:
            assert a is None or a.abs().max() < 1e-12, name
        else:
            assert rel_err(a, e) <= 1e-9, f"{spec.name}: gradient of {name}"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo(name):
    entry = ZOO[name]
    compare(entry.spec, entry.example(t=13), entry.initial_state())


@pytest.mark.parametrize("name", ["mamba1", "lru", "s4"])
def test_zoo_reverse(name):
    entry = ZOO[name]
    compare(entry.spec, entry.example(t=9), entry.initial_state(), reverse=True)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_specs())
def test_random_specs(rs):
    inp = rs.make_inputs(T=7)
    compare(rs.spec, dict(inp.kwargs), inp.state)


def test_tanh_derivative_keeps_its_digits_where_tanh_saturates():
    """d tanh(u) = sech(u)^2, not 1 - tanh(u)^2 (which cancels to nothing in float32)."""
    import sympy as sp

    from lrc.passes.derivatives import sech_form

    x, y = sp.symbols("x y", real=True)
    d = sech_form(sp.diff(y * sp.tanh(sp.tanh(x)), x))
    assert d == y * sp.sech(x) ** 2 * sp.sech(sp.tanh(x)) ** 2

    @lrc.recurrence
    def spec(h: lrc.State("b"), x: lrc.Seq("b t"), p: lrc.Param("d")):
        return h, lrc.exp(-lrc.softplus(lrc.tanh(p.sum("d")))) * h + lrc.tanh(p.sum("d")) * x

    torch.manual_seed(0)
    x0, p0, h0 = torch.randn(3, 9), torch.full((4,), 1.4) + 0.01 * torch.randn(4), torch.randn(3)
    ours = p0.clone().requires_grad_(True)
    theirs = p0.double().clone().requires_grad_(True)
    y = lrc.compile(spec, backend="triton", lowering="scan")(x0, ours, initial_state=h0)
    y2 = lrc.compile(spec, backend="reference")(x0.double(), theirs, initial_state=h0.double())
    gy = torch.randn_like(y2)
    (g1,) = torch.autograd.grad((y.double() * gy).sum(), ours)
    (g2,) = torch.autograd.grad((y2 * gy).sum(), theirs)
    assert rel_err(g1, g2) <= 1e-5


def test_backward_of_a_where_on_a_relu_of_tanh():
    """Folding a node into a `where` used to make sympy re-evaluate the condition and fail
    ('... is not comparable'); the backward derives, and the kernels' gradients match."""

    @lrc.recurrence
    def spec(h: lrc.State("b"), x: lrc.Seq("b t n"), p: lrc.Param("")):
        a = lrc.exp(-lrc.softplus(p))
        g = lrc.where(lrc.relu(lrc.tanh(x.sum("n"))) > 0.1234, a * h, 0.5 * h) + p
        return lrc.where(g > 0.1234, g, 0.5 * g), g

    pipeline.run(spec.graph)
    torch.manual_seed(0)
    x0, p0 = torch.randn(2, 9, 3), torch.randn(())
    ours = [x0.clone().requires_grad_(True), p0.clone().requires_grad_(True)]
    theirs = [x0.double().requires_grad_(True), p0.double().requires_grad_(True)]
    y = lrc.compile(spec, backend="triton")(*ours)
    y2 = lrc.compile(spec, backend="reference")(*theirs)
    gy = torch.randn_like(y2)
    for a, e in zip(torch.autograd.grad((y.double() * gy).sum(), ours, allow_unused=True),
                    torch.autograd.grad((y2 * gy).sum(), theirs, allow_unused=True)):
        if e is None or a is None:
            assert (a if e is None else e) is None or (a if e is None else e).abs().max() == 0
        else:
            assert rel_err(a, e) <= 1e-3
