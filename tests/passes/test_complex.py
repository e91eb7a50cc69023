"""lower_complex: complex inputs, states and nodes become real pairs; reference and grads kept."""
from __future__ import annotations

import math

import mpmath
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sympy.codegen.cfunctions import expm1, log1p

import lrc
from lrc import Param, Seq, State, cos, exp, log, sin, sqrt, where
from lrc.ir import Input, Map, Rename, Role, Shift, Sum, verify
from lrc.ir.functions import evaluate, phi1
from lrc.passes import expand_discretizations, lower_complex, stabilize
from lrc.passes.complex import SPLIT, part_names, split
from lrc.passes.stability import scaled_initial_state, unscaled_states
from lrc.runtime.reference import call_graph
from tests.conftest import rel_err
from tests.passes.test_expand import (
    B,
    T,
    _args,
    _state,
    assert_preserved,
    crn,
    rn,
    s4d_bilinear,
    s4d_zoh,
    stable_a,
    zoo_case,
    zoo_params,
)

D, N = 3, 5
f64 = torch.float64


def lowered(g):
    """The pipeline up to lower_complex: markers expanded first (they have no split rule)."""
    return lower_complex(stabilize(expand_discretizations(g)))


# ---- specs


@lrc.recurrence
def lru(u: Seq("b t d"), nu_log: Param("n"), theta_log: Param("n"),
        Bp: Param("n d", complex=True), C: Param("d n", complex=True), Dp: Param("d"),
        x: State("b n", complex=True)):
    lam = exp(-exp(nu_log) + 1j * exp(theta_log))
    gamma = sqrt(1 - lam.abs() ** 2)
    x = lam * x + gamma * (Bp * u).sum("d")
    return (C * x).sum("n").real + Dp * u, x


@lrc.recurrence
def real_out(u: Seq("b t d"), lam: Param("d", complex=True), w: Seq("b t d", complex=True),
             h: State("b d", complex=True)):
    a = lam / (1 + lam.abs())                      # |a| < 1: complex division, modulus
    h = a * h + w.conj() * u + 1j * (w * w).imag
    return (h.real, (h / (2 + h)).real + (1 / (1j + h)).imag + h.abs() - h.imag), h


@lrc.recurrence
def functions(u: Seq("b t d"), w: Seq("b t d", complex=True), lam: Param("d", complex=True),
              h: State("b d", complex=True)):
    g = where(u > 0, w, w.conj() * 0.5)            # a complex where
    h = 0.5 * exp(1j * lam.real) * h + g + 0.1 * (log(w) + sqrt(w) + sin(w) * cos(w))
    y1 = sqrt(w).real + log(w).real + cos(w).real + sin(w).imag
    y2 = (w ** -2).real + (w ** 3).imag + lrc.expm1(0.1 * w).imag + lrc.log1p(0.1 * w).real
    return y1 + y2 + (h ** 2).imag, h


@lrc.recurrence
def moves(u: Seq("b t d"), M: Param("d e", complex=True), h: State("b d", complex=True)):
    mixed = (M * h.rename(d="e")).sum("e")         # a complex Rename and Sum
    h = mixed + 0.3j * h.shift("d") + u            # a complex Shift
    return h.real - 2 * h.imag, h


@lrc.recurrence
def zoh_tiny(u: Seq("b t d"), A: Param("d n", complex=True), C: Param("d n", complex=True),
             h: State("b d n", complex=True)):
    Ab, Bb = lrc.zoh(0.5, A, 1)
    h = Ab * h + Bb * u
    return (C * h).sum("n").real, h


def _lru_args():
    radius = 0.9 + 0.09 * torch.rand(N, dtype=f64)
    return {"u": rn(B, T, D), "nu_log": torch.log(-torch.log(radius)),
            "theta_log": torch.log(6.28 * torch.rand(N, dtype=f64) + 0.01),
            "Bp": crn(N, D), "C": crn(D, N), "Dp": rn(D)}


def _c_args():
    w = crn(B, T, D)
    return {"u": rn(B, T, D), "lam": crn(D), "w": w + w.sgn() * 0.2}  # |w| >= 0.2


CASES = {
    "s4d_zoh": (s4d_zoh, lambda: _args(s4d_zoh), lambda: _state(s4d_zoh)),
    "s4d_bilinear": (s4d_bilinear, lambda: _args(s4d_bilinear), lambda: _state(s4d_bilinear)),
    "lru": (lru, _lru_args, lambda: crn(B, N)),
    "moves": (moves, lambda: {"u": rn(B, T, D), "M": crn(D, D) * 0.2}, lambda: crn(B, D)),
    "real_out": (real_out, _c_args, lambda: crn(B, D)),      # a complex Seq input too
    "functions": (functions, _c_args, lambda: crn(B, D)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_and_grads_preserved(case):
    spec, args, state = CASES[case]
    g2 = assert_preserved(spec.graph, lowered, args(), state(), grads=True)
    assert not any(n.complex for n in g2.nodes)
    assert not any(isinstance(n, Map) and sp.I in sp.preorder_traversal(n.expr)
                   for n in g2.nodes)
    for n in spec.graph.inputs():
        if n.complex:  # Seq, Param and State alike
            assert {g2[p].part for p in part_names(n.name)} == {"re", "im"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_initial_state_grads(case):
    """Gradients reach a complex initial state through the split one too."""
    spec, args, state = CASES[case]
    g, a, h0 = spec.graph, args(), state()
    grads = []
    for graph in (expand_discretizations(g), lowered(g)):
        h = h0.clone().requires_grad_(True)
        outs, fins = call_graph(graph, **a, initial_state=h)
        loss = sum(o.square().sum() for o in outs) + sum(f.abs().square().sum() for f in fins)
        grads.append(torch.autograd.grad(loss, h)[0])
    assert grads[0].is_complex() and rel_err(grads[1], grads[0]) <= 1e-10


def test_split_convention():
    """Names, roles, dims, annotation, arg/part of the parts; state pairs; real nodes kept."""
    g = expand_discretizations(lru.graph)
    g2 = verify(lower_complex(g))
    for n in g.inputs():
        if n.complex:
            re, im = (g2[p] for p in part_names(n.name))
            for p, part in ((re, "re"), (im, "im")):
                assert isinstance(p, Input) and not p.complex
                assert (p.role, p.dims, p.annotation, p.arg, p.part) == \
                       (n.role, n.dims, n.annotation, n.name, part)
            assert n.name not in g2
        else:
            assert g2[n.name] == n
    assert g2.states == (("x.re", "x'.re"), ("x.im", "x'.im"))
    assert g2.state_args == ("x",) and g2.params == g.params and g2.outputs == g.outputs
    assert lower_complex(g2) == g2


def test_sum_rename_shift_parts():
    """Complex Sum, Rename and Shift nodes become real pairs moving the parts."""
    g = moves.graph
    g2 = assert_preserved(g, lowered, CASES["moves"][1](), CASES["moves"][2](), grads=True)
    kinds = set()
    for n in g.nodes:
        if n.complex and not isinstance(n, (Map, Input)):
            kinds.add(type(n))
            for p, a in zip(part_names(n.name), part_names(n.arg), strict=True):
                assert type(g2[p]) is type(n) and g2[p].arg == a and g2[p].dims == n.dims
    assert kinds == {Sum, Rename, Shift}


def test_phi1_at_and_near_zero():
    """ZOH with a complex A that is exactly 0 and tiny: finite, and the complex graph's values."""
    # tiny |dt*A| below 1e-11: the interpreter's phi1 (the baseline) is 1 + x/2 below
    # |x| = 1e-6, whose gradient is off by x/3, so its own gradient is exact only there
    a = stable_a(D, N) * torch.where(torch.rand(D, N) < 0.5, 1.0,
                                     10.0 ** torch.randint(-30, -11, (D, N)).double())
    a[0, 0], a[1, 1] = 0, 1e-200
    args = {"u": rn(B, T, D), "A": a, "C": crn(D, N)}
    g2 = assert_preserved(expand_discretizations(zoh_tiny.graph), lower_complex, args,
                          crn(B, D, N), grads=True)
    assert not any(n.complex for n in g2.nodes)


# ---- the split rules, one by one, against torch's complex arithmetic

z, x = sp.Symbol("z"), sp.Symbol("x", real=True)
zr, zi = sp.Symbol("z.re", real=True), sp.Symbol("z.im", real=True)
EXPRS = {
    "add": z + x + 2j, "mul": z * z * x, "conj_mul": z * sp.conjugate(z), "inv": 1 / z,
    "pow-3": z ** -3, "pow5": z ** 5, "sqrt": sp.sqrt(z), "pow_real": z ** (x / 3),
    "real_base": 2 ** z, "exp": sp.exp(z), "log": sp.log(z), "expm1": expm1(z / 4),
    "log1p": log1p(z / 4), "phi1": phi1(z), "sin": sp.sin(z), "cos": sp.cos(z),
    "abs": sp.Abs(z), "arg": sp.arg(z), "re": sp.re(z) * x, "im": sp.im(z), "conj": sp.conjugate(z),
    "where": sp.Piecewise((z, x > 0), (sp.conjugate(z) * 2, True)),
    "where_real": sp.Piecewise((sp.re(z), sp.im(z) > 0), (x, True)),
}


@pytest.mark.parametrize("name", sorted(EXPRS))
def test_split_rule(name):
    expr = EXPRS[name]
    zv = crn(200) + 0.1 * crn(200).sgn()
    xv = rn(200)
    want = evaluate(expr, {z: zv, x: xv})
    want = want if torch.is_tensor(want) and want.is_complex() else torch.complex(
        want * torch.ones_like(xv), torch.zeros_like(xv))
    re, im = split(expr, {z: (zr, zi)})
    env = {zr: zv.real, zi: zv.imag, x: xv}
    got = torch.complex(*(evaluate(p, env) * torch.ones_like(xv) for p in (re, im)))
    assert not (re.free_symbols | im.free_symbols) & {z}
    assert rel_err(got, want) <= 1e-12


def test_unknown_head_refused():
    with pytest.raises(NotImplementedError, match="tanh"):
        split(sp.tanh(z), {z: (zr, zi)})
    assert sp.tanh not in SPLIT
    assert split(sp.tanh(x), {z: (zr, zi)}) == (sp.tanh(x), 0)  # real arguments need no rule


# ---- phi1 of a complex argument: accurate in float64 and float32, finite gradient at 0


def _phi1_exact(a: float, b: float) -> complex:
    with mpmath.workdps(60):
        w = mpmath.mpc(a, b)
        return complex(1 if w == 0 else mpmath.expm1(w) / w)


def _phi1_split(a: torch.Tensor, b: torch.Tensor):
    re, im = split(phi1(z), {z: (zr, zi)})
    return evaluate(re, {zr: a, zi: b}), evaluate(im, {zr: a, zi: b})


def _mag(draw_sign: float, e: float) -> float:
    return draw_sign * 10.0 ** e


coord = st.one_of(st.floats(-30, 30), st.builds(_mag, st.sampled_from([-1.0, 1.0]),
                                                 st.floats(-40, 0)), st.just(0.0))


@settings(max_examples=300, deadline=None)
@given(coord, st.one_of(st.floats(-3, 3), st.builds(_mag, st.sampled_from([-1.0, 1.0]),
                                                    st.floats(-40, 0.4)), st.just(0.0)))
def test_phi1_complex_accuracy(a, b):
    """|b| < 2*pi keeps phi1 away from its zeros, so relative error is meaningful."""
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 5e-5)):
        ta, tb = torch.tensor([a], dtype=dtype), torch.tensor([b], dtype=dtype)
        want = _phi1_exact(float(ta), float(tb))  # of the rounded input
        re, im = _phi1_split(ta, tb)
        got = complex(float(re), float(im))
        assert math.isfinite(got.real) and math.isfinite(got.imag)
        assert abs(got - want) <= tol * abs(want), (dtype, a, b, got, want)


def test_phi1_complex_gradient_finite_at_zero():
    a = torch.tensor([0.0, 1e-300, 0.0, 1e-3], dtype=f64, requires_grad=True)
    b = torch.tensor([0.0, 0.0, 1e-300, 0.0], dtype=f64, requires_grad=True)
    re, im = _phi1_split(a, b)
    (re.sum() + im.sum()).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert torch.allclose(a.grad[:3], torch.full((3,), 0.5, dtype=f64))


@pytest.mark.parametrize("mag", [1e-30, 1e-12, 1e-6, 3e-3, 9.9e-3, 1.01e-2, 0.1, 1.0, 3.0])
def test_phi1_complex_derivative(mag):
    """d phi1/da = phi1'(z) = (e^z (z - 1) + 1)/z^2 (holomorphic), to 1e-10 on both sides of
    the series threshold: the autograd of the split form is what a backward pass sees."""
    th = torch.rand(16, dtype=f64) * 2 * math.pi
    a = (mag * torch.cos(th)).requires_grad_(True)
    b = (mag * torch.sin(th)).requires_grad_(True)
    re, im = _phi1_split(a, b)
    (d_re,) = torch.autograd.grad(re.sum(), a, retain_graph=True)
    (d_im,) = torch.autograd.grad(im.sum(), a)
    with mpmath.workdps(60):
        want = []
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            w = mpmath.mpc(x, y)
            want.append(complex(mpmath.diff(lambda v: mpmath.expm1(v) / v, w)))
    want_t = torch.tensor(want, dtype=torch.complex128)
    assert rel_err(torch.complex(d_re, d_im), want_t) <= 1e-10


# ---- the zoo and random specs


@pytest.mark.parametrize("name", zoo_params())
def test_zoo(name):
    g, args, state = zoo_case(name)
    state = state if isinstance(state, tuple) else (state,)
    g2 = assert_preserved(g, lowered, args, state, grads=True, start=scaled_initial_state,
                          restore=unscaled_states)
    assert not any(n.complex for n in g2.nodes)
    for n in g2.inputs(Role.STATE):
        assert n.part in ("", "re", "im")


def test_random_specs():
    from hypothesis import HealthCheck

    from tests.strategies import random_specs

    seed = int(torch.randint(0, 2**31, ()))

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(random_specs())
    def check(rs):
        spec, make_inputs = rs
        inp = make_inputs(T=T, seed=seed)
        g2 = assert_preserved(spec.graph, lowered, inp.kwargs, inp.state, grads=True,
                              start=scaled_initial_state, restore=unscaled_states)
        assert not any(n.complex for n in g2.nodes)

    check()
