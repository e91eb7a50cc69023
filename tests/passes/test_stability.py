"""stabilize: log-space decays, the running-max trick (RWKV-4), the clamped segment decay."""
from __future__ import annotations

import pytest
import sympy as sp
import torch
from sympy.codegen.cfunctions import expm1

import lrc
from lrc import Param, Seq, State, exp, sigmoid, sqrt
from lrc.ir import Input, Map, Role, SpecError, interpret, verify
from lrc.ir.functions import evaluate
from lrc.ir.functions import sigmoid as sigmoid_fn
from lrc.ir.functions import softplus as softplus_fn
from lrc.ir.nodes import symbol
from lrc.layout import to_canonical
from lrc.passes import check_linear, expand_discretizations, stabilize
from lrc.passes.stability import (
    log_decay,
    log_space_decays,
    max_trick,
    running_maxes,
    scaled_by,
    scaled_initial_state,
    segment_decay,
    unscaled_states,
)
from lrc.runtime.bind import bind_sizes
from lrc.runtime.reference import call_graph
from tests.conftest import rel_err
from tests.passes.test_expand import B, T, assert_preserved, rn, zoo_case, zoo_params

D = 5
f64, f32 = torch.float64, torch.float32


def coef_of(g, state: str) -> sp.Basic:
    """The coefficient of the old state's symbol in its update (the one term holding it)."""
    s = symbol(state, g[state].complex)
    expr = g[dict(g.states)[state]].expr
    terms = [t for t in sp.Add.make_args(expr) if s in t.free_symbols]
    assert len(terms) == 1, f"{state} appears in {len(terms)} terms of {expr}"
    return terms[0] / s


# ---- (a) log-space decays


@lrc.recurrence
def rglru_pow(x: Seq("b t d"), gate_r: Seq("b t d"), gate_i: Seq("b t d"), L: Param("d"),
              h: State("b d")):
    a = sigmoid(L) ** (8 * sigmoid(gate_r))         # Griffin's form; a node (two roots read it)
    h = a * h + sqrt(1 - a ** 2) * (sigmoid(gate_i) * x)
    return (h, sqrt(1 - a ** 2)), h


@lrc.recurrence
def products(x: Seq("b t d"), f: Seq("b t d"), w: Param("d"), c: Param("d"), h: State("b d")):
    h = sigmoid(f) * exp(-exp(w)) * 0.5 * exp(c * f) * h + x
    return h * 2, h


@lrc.recurrence
def kept(x: Seq("b t d"), f: Seq("b t d"), w: Param("d"), h1: State("b d"), h2: State("b d"),
         h3: State("b d"), h4: State("b d")):
    h1 = exp(-exp(w)) * h1 + x                       # already one exp: stays
    h2 = 0.9 * h2 + x                                # a constant: stays
    h3 = (1 - sigmoid(f)) * h3 + sigmoid(f) * x      # not a product of exponentials: stays
    h4 = -exp(f) * h4 + x                            # negative: no log
    return h1 + h2 + h3 + h4, (h1, h2, h3, h4)


@lrc.recurrence
def cplx(x: Seq("b t d"), nu: Param("d"), th: Param("d"), h: State("b d", complex=True),
         g: State("b d", complex=True)):
    lam = exp(-exp(nu) + 1j * exp(th))
    h = lam * lam * h + x                            # exp(z)*exp(z) -> exp(2z): fine for complex
    g = (lam ** 0.5) * g + x                         # exp(z)**0.5 != exp(z/2) in general: stays
    return (h + g).real, (h, g)


def _args(spec):
    g = spec.graph
    out = {}
    for name in g.params:
        ann = g.annotation(name)
        shape = tuple({"b": B, "t": T, "d": D}[d] for d in ann.dims)
        out[name] = rn(*shape)
    return out


def _state(spec):
    g = spec.graph
    st = tuple(torch.complex(rn(B, D), rn(B, D)) if g.annotation(a).complex else rn(B, D)
               for a in g.state_args)
    return st[0] if len(st) == 1 else st


@pytest.mark.parametrize("spec", [rglru_pow, products, kept, cplx], ids=lambda s: s.name)
def test_log_space_preserves_reference(spec):
    assert_preserved(spec.graph, log_space_decays, _args(spec), _state(spec), grads=True)


def test_sigmoid_power_becomes_one_exp():
    g = rglru_pow.graph
    gate = next(n for n in g.nodes if isinstance(n, Map) and n.name.startswith("%"))
    assert isinstance(gate.expr, sp.Pow) and isinstance(gate.expr.base, sigmoid_fn)
    g2 = verify(log_space_decays(g))
    gr, L = symbol("gate_r"), symbol("L")
    E = -8 * sigmoid_fn(gr) * softplus_fn(-L)
    coef = coef_of(g2, "h")
    assert isinstance(coef, sp.exp) and sp.simplify(log_decay(coef) - E) == 0
    # the gate node, read by the second output too, computes the same exp(E)
    assert isinstance(g2[gate.name].expr, sp.exp)
    assert sp.simplify(g2[gate.name].expr.args[0] - E) == 0
    # and 1 - a**2 became -expm1(2 E) in both places
    for name in (g2.outputs[1], g2.new_state_names[0]):
        found = [e for e in sp.preorder_traversal(g2[name].expr) if isinstance(e, expm1)]
        assert found and sp.simplify(found[0].args[0] - 2 * E) == 0, name


def test_one_minus_a_squared_float32():
    """a = sigmoid(L)**(8 r) near 1: sqrt(1 - a**2) in float32 loses digits, -expm1 does not."""
    args = {"x": rn(B, T, D), "gate_r": rn(B, T, D), "gate_i": rn(B, T, D),
            "L": 12 + torch.rand(D, dtype=f64)}
    state = (rn(B, D),)
    g = rglru_pow.graph
    _, want = call_graph(g, **args, initial_state=state)[0]
    errs = []
    for graph in (g, log_space_decays(g)):
        values, init, sizes, T_ = _canonical(graph, args, state, f32)
        got = interpret.run(graph, values, init, sizes, T_)[0][1]
        errs.append(rel_err(got, to_canonical(g, want, g.annotation("x"), sizes, True)))
    assert errs[1] <= 1e-5 and errs[0] >= 100 * errs[1], errs


def test_products_merge():
    g = verify(log_space_decays(products.graph))
    f, w, c = symbol("f"), symbol("w"), symbol("c")
    coef = coef_of(g, "h")
    k, rest = coef.as_coeff_Mul()
    assert k == 0.5 and isinstance(rest, sp.exp)     # sympy keeps a number out of exp
    want = -softplus_fn(-f) - sp.exp(w) + c * f + sp.log(0.5)
    assert abs(float(sp.simplify(log_decay(coef) - want).subs({f: 0.3, w: 0.2, c: 0.7}))) < 1e-14
    assert sp.exp(w) in sp.preorder_traversal(coef)  # exp(-exp(w)) kept its inner exp


def test_non_exponential_coefficients_kept():
    g = kept.graph
    g2 = verify(log_space_decays(g))
    for s in ("h1", "h2", "h3", "h4"):
        assert coef_of(g2, s) == coef_of(g, s), s
    assert log_decay(coef_of(g2, "h2")) is None


def test_complex_exponents():
    g2 = verify(log_space_decays(cplx.graph))
    nu, th = symbol("nu"), symbol("th")
    assert coef_of(g2, "h") == sp.exp(2 * (-sp.exp(nu) + sp.I * sp.exp(th)))
    assert coef_of(g2, "g") == coef_of(cplx.graph, "g")


# ---- (b) the running max (RWKV-4)


@lrc.recurrence
def rwkv4(k: Seq("b t c"), v: Seq("b t c"), w: Param("c"), u: Param("c"), num: State("b c"),
          den: State("b c")):
    decay = exp(-exp(w))
    wkv = (num + exp(u + k) * v) / (den + exp(u + k))
    num = decay * num + exp(k) * v
    den = decay * den + exp(k)
    return wkv, (num, den)


@lrc.recurrence
def rwkv4_after(k: Seq("b t c"), v: Seq("b t c"), w: Param("c"), num: State("b c"),
                den: State("b c")):
    ek = exp(k)                                      # a gate node both updates read
    num = exp(-exp(w)) * num + ek * v
    den = exp(-exp(w)) * den + ek
    return num / den, (num, den)                     # reads the new states


def _rwkv_args(spec, scale: float = 1.0, shift: float = 0.0):
    args = {"k": shift + scale * rn(B, T, D), "v": rn(B, T, D), "w": rn(D) * 0.5}
    if "u" in spec.graph.params:
        args["u"] = rn(D) * 0.5
    return args


def _rwkv_state():
    return rn(B, D), 0.5 + torch.rand(B, D, dtype=f64)


@pytest.mark.parametrize("spec", [rwkv4, rwkv4_after], ids=lambda s: s.name)
def test_max_trick_preserves_reference(spec):
    for state in (None, _rwkv_state()):
        assert_preserved(spec.graph, stabilize, _rwkv_args(spec, 3.0), state, grads=True,
                         start=scaled_initial_state, restore=unscaled_states)


@pytest.mark.parametrize("spec", [rwkv4, rwkv4_after], ids=lambda s: s.name)
def test_max_trick_graph(spec):
    g = spec.graph
    g2 = verify(stabilize(g))
    assert running_maxes(g2) == ("num.max",) and scaled_by(g2, "num.max") == ("num", "den")
    m = g2["num.max"]
    assert isinstance(m, Input) and m.role is Role.STATE and not m.complex
    assert (m.dims, m.annotation) == (g["num"].dims, g["num"].annotation)
    assert g2.states == g.states + (("num.max", "num.max'"),)
    assert g2.state_args == ("num", "den", "num.max") and g2.params == g.params
    assert isinstance(g2["num.max'"].expr, sp.Max)
    # the scaled updates are no longer affine in the states: the linearity check must run first
    with pytest.raises(SpecError, match="not affine"):
        check_linear(g2)


def _canonical(g, args: dict, states: tuple, dtype: torch.dtype):
    """Canonical tensors in `dtype` for interpret.run, by input node name."""
    sizes, T_ = bind_sizes(g, {k: (v, g.annotation(k)) for k, v in args.items()}, True)
    values = {n.name: to_canonical(g, args[n.arg], n.annotation, sizes, n.role is Role.SEQ)
              .to(dtype) for n in g.inputs() if n.role in (Role.SEQ, Role.PARAM)}
    st = dict(zip(g.state_args, states, strict=True))
    init = {n.name: to_canonical(g, st[n.arg], n.annotation, sizes, False).to(dtype)
            for n in g.inputs(Role.STATE)}
    return values, init, sizes, T_


@pytest.mark.parametrize("spec", [rwkv4, rwkv4_after], ids=lambda s: s.name)
def test_max_trick_float32_no_overflow(spec):
    """k around 100: e^k overflows float32. The naive graph's outputs are not finite; the
    stabilized one's are, and match the float64 reference."""
    args = _rwkv_args(spec, scale=3.0, shift=100.0)
    state = _rwkv_state()
    (want,), _ = call_graph(spec.graph, **args, initial_state=state)
    naive = interpret.run(spec.graph, *_canonical(spec.graph, args, state, f32))[0][0]
    assert naive.dtype == f32 and not torch.isfinite(naive).all()
    g2 = stabilize(spec.graph)
    values, init, sizes, T_ = _canonical(g2, args, scaled_initial_state(g2, state), f32)
    (got,), finals = interpret.run(g2, values, init, sizes, T_)
    assert got.dtype == f32 and torch.isfinite(got).all()
    assert all(torch.isfinite(f).all() for f in finals)
    want_c = to_canonical(spec.graph, want, spec.graph.annotation("k"), sizes, True)
    assert rel_err(got, want_c) <= 1e-5


@lrc.recurrence
def no_division(k: Seq("b t c"), v: Seq("b t c"), w: Param("c"), num: State("b c")):
    num = exp(-exp(w)) * num + exp(k) * v
    return num * 2, num                              # nothing divides: no rescaling


@lrc.recurrence
def reduced(k: Seq("b t c"), v: Seq("b t c"), w: Param("c"), num: State("b c"),
            den: State("b c")):
    num = exp(-exp(w)) * num + exp(k) * v
    den = exp(-exp(w)) * den + exp(k)
    return num.sum("c") / den.sum("c"), (num, den)   # a Sum reads them: not rewritten


@pytest.mark.parametrize("spec", [no_division, reduced], ids=lambda s: s.name)
def test_max_trick_leaves_others(spec):
    g = log_space_decays(spec.graph)
    assert max_trick(g) == g and running_maxes(max_trick(g)) == ()


# ---- (c) the clamped segment decay


def test_segment_decay_expression():
    ci, cj = sp.symbols("cum_i cum_j", real=True)
    assert segment_decay(ci, cj) == sp.exp(sp.Min(ci - cj, 0))


def test_segment_decay_no_nan():
    """Strong decays over 37 steps: exp(cum_i - cum_j) overflows where i < j; masking that by
    a product (forward) or a where (its gradient) gives NaN. The clamped form does not."""
    log_a = -60 * torch.rand(T, dtype=f32)           # per-step log-decays, cum down to ~ -1100
    ci, cj = sp.symbols("cum_i cum_j", real=True)
    expr = segment_decay(ci, cj)
    mask = torch.ones(T, T).tril().bool()
    x = torch.randn(T, T, dtype=f32)
    exact = torch.exp((log_a.double().cumsum(0)[:, None] - log_a.double().cumsum(0)[None, :])
                      .clamp(max=0)) * mask

    def masked(clamp: bool):
        cum = log_a.clone().requires_grad_(True).cumsum(0)
        env = {ci: cum[:, None], cj: cum[None, :]}
        decay = evaluate(expr, env) if clamp else torch.exp(cum[:, None] - cum[None, :])
        prod = decay * mask                            # the masked-matmul form
        chosen = torch.where(mask, decay, torch.zeros_like(decay))
        (grad,) = torch.autograd.grad((chosen * x).sum(), cum)
        return decay, prod, grad

    decay, prod, grad = masked(clamp=False)
    assert not torch.isfinite(decay).all() and torch.isnan(prod).any() and torch.isnan(grad).any()
    decay, prod, grad = masked(clamp=True)
    assert torch.isfinite(decay).all() and (decay <= 1).all()
    assert torch.isfinite(prod).all() and torch.isfinite(grad).all()
    assert rel_err(prod, exact) <= 1e-4  # fp32 cumsums reach ~1e3: their rounding shows


# ---- the zoo and random specs


@pytest.mark.parametrize("name", zoo_params())
def test_zoo(name):
    g, args, state = zoo_case(name)
    state = state if isinstance(state, tuple) else (state,)
    g2 = assert_preserved(g, lambda g: stabilize(expand_discretizations(g)), args, state,
                          grads=True, start=scaled_initial_state, restore=unscaled_states)
    for s in running_maxes(g2):
        assert isinstance(g2[dict(g2.states)[s]].expr, sp.Max)
    assert stabilize(g2) == g2  # idempotent: a rescaled group is not rescaled again


def test_random_specs():
    from hypothesis import HealthCheck, given, settings

    from tests.strategies import random_specs

    seed = int(torch.randint(0, 2**31, ()))

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(random_specs())
    def check(rs):
        spec, make_inputs = rs
        inp = make_inputs(T=T, seed=seed)
        assert_preserved(spec.graph, lambda g: stabilize(expand_discretizations(g)), inp.kwargs,
                         inp.state, start=scaled_initial_state, restore=unscaled_states)

    check()
