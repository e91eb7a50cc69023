"""expand_discretizations: every marker becomes primitive sympy, and the reference is preserved.

Also home of the helpers the pass tests share: `assert_preserved` (a pass keeps the float64
reference and the verifier happy) and `zoo_params` (whatever `lrc.zoo.ZOO` holds).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

import mpmath
import pytest
import sympy as sp
import torch

import lrc
from lrc import Param, Seq, State, exp, softplus
from lrc.ir import Graph, Map, verify
from lrc.ir.functions import EVAL, MARKERS, evaluate, zoh_b
from lrc.passes import PIPELINE, check_linear, expand_discretizations
from lrc.passes.expand import EXPAND, has_marker, prune, rewrite
from lrc.runtime.reference import call_graph
from tests.conftest import rel_err

T, B, D, N = 37, 2, 3, 5
TOL = 1e-10
f64, c128 = torch.float64, torch.complex128


# ---- shared helpers


def assert_preserved(g: Graph, pass_: Callable[[Graph], Graph], args: dict, state=None,
                     grads: bool = False, restore: Callable | None = None,
                     start: Callable | None = None) -> Graph:
    """pass_(g) passes the verifier and gives g's outputs and final states (and gradients of
    a random projection of both, for every argument and the initial state).

    `start`/`restore` map the user's initial/final states to/from the new graph's (for a pass
    that adds states)."""
    g2 = verify(pass_(g))
    single = isinstance(state, torch.Tensor)
    states = () if state is None else (state,) if single else tuple(state)
    results = []
    for graph in (g, g2):
        leaves = [v.detach().clone().requires_grad_(grads) for v in args.values()]
        st = [s.detach().clone().requires_grad_(grads) for s in states]
        init = (st[0] if single else tuple(st)) if st else None
        if graph is g2 and start is not None and init is not None:
            init = start(g2, tuple(st))
        outs, fins = call_graph(graph, **dict(zip(args, leaves, strict=True)), initial_state=init)
        if graph is g2 and restore is not None:
            fins = restore(g2, fins)
        results.append((outs, fins, leaves + st))
    (outs1, fin1, leaves1), (outs2, fin2, leaves2) = results
    assert len(outs1) == len(outs2) and len(fin1) == len(fin2)
    for what, a, e in [("output", a, e) for a, e in zip(outs2, outs1, strict=True)] + \
                      [("final state", a, e) for a, e in zip(fin2, fin1, strict=True)]:
        err = rel_err(a, e)
        assert err <= TOL, f"{what}: relative error {err:.2e} > {TOL:.0e}"
    if grads:
        names = list(args) + [f"initial state {i}" for i in range(len(states))]
        ws = [torch.randn_like(x) for x in outs1 + fin1]
        losses = [sum((x * w.conj()).real.sum() for x, w in zip(o + f, ws, strict=True))
                  for o, f in ((outs1, fin1), (outs2, fin2))]
        # a pass may fold a difference of equal terms to a constant (tanh(v) - tanh(v)):
        # no argument reaches that graph's outputs, and the original's gradients must be 0
        gs = [torch.autograd.grad(loss, lv, allow_unused=True) if loss.requires_grad
              else (None,) * len(lv) for loss, lv in zip(losses, (leaves1, leaves2), strict=True)]
        for k, e, a in zip(names, *gs, strict=True):
            if e is None or a is None:
                assert all(x is None or x.abs().max() == 0 for x in (a, e)), k
                continue
            err = rel_err(a, e)
            assert err <= TOL, f"grad of {k}: relative error {err:.2e} > {TOL:.0e}"
    return g2


def zoo_params() -> list:
    """One pytest param per lrc.zoo.ZOO entry; a skipped one while the zoo does not import."""
    try:
        zoo = importlib.import_module("lrc.zoo")
        names = sorted(zoo.ZOO)
    except Exception as e:  # the zoo is written by another engineer; it may not exist yet
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no lrc.zoo.ZOO yet: {e!r}"))]
    return names


def zoo_case(name: str) -> tuple[Graph, dict, object]:
    """A zoo entry's graph, example arguments (float64, T=37) and a nonzero initial state."""
    from lrc.zoo import ZOO

    entry = ZOO[name]
    return entry.spec.graph, entry.example(b=B, t=T, dtype=f64), entry.initial_state(b=B)


def rn(*shape, dtype=f64):
    return torch.randn(*shape, dtype=dtype)


def crn(*shape):
    return torch.complex(rn(*shape), rn(*shape))


def stable_a(*shape):
    """Complex A with real part in [-1, -0.1] (a decaying mode) and a random frequency."""
    return torch.complex(-0.1 - 0.9 * torch.rand(*shape, dtype=f64), 3 * rn(*shape))


# ---- specs covering each rule


@lrc.recurrence
def s4d_zoh(u: Seq("b t d"), log_dt: Param("d"), A: Param("d n", complex=True),
            Bp: Param("d n", complex=True), C: Param("d n", complex=True),
            h: State("b d n", complex=True)):
    Ab, Bb = lrc.zoh(exp(log_dt), A, Bp)
    h = Ab * h + Bb * u
    return 2 * (C * h).sum("n").real, h


@lrc.recurrence
def s4d_bilinear(u: Seq("b t d"), log_dt: Param("d"), A: Param("d n", complex=True),
                 Bp: Param("d n", complex=True), C: Param("d n", complex=True),
                 h: State("b d n", complex=True)):
    Ab, Bb = lrc.bilinear(exp(log_dt), A, Bp)
    h = Ab * h + Bb * u
    return 2 * (C * h).sum("n").real, h


@lrc.recurrence
def s4d_euler(u: Seq("b t d"), log_dt: Param("d"), A: Param("d n"), Bp: Param("d n"),
              C: Param("d n"), h: State("b d n")):
    Ab, Bb = lrc.euler(exp(log_dt), A, Bp)
    h = Ab * h + Bb * u
    return (C * h).sum("n"), h


@lrc.recurrence
def mamba1_zoh(u: Seq("b t d"), dt: Seq("b t d"), Bs: Seq("b t n"), C: Seq("b t n"),
               A: Param("d n"), Dp: Param("d"), h: State("b d n")):
    Ab, Bb = lrc.zoh(softplus(dt), A, Bs)
    h = Ab * h + Bb * u
    return (C * h).sum("n") + Dp * u, h


@lrc.recurrence
def mamba1_mix(u: Seq("b t d"), dt: Seq("b t d"), Bs: Seq("b t n"), C: Seq("b t n"),
               A: Param("d n"), Dp: Param("d"), h: State("b d n")):
    Ab, Bb = lrc.mamba_mix(softplus(dt), A, Bs)
    h = Ab * h + Bb * u
    return (C * h).sum("n") + Dp * u, h


def _args(spec) -> dict:
    """Random arguments for the specs above: decaying A, moderate step sizes, nothing zero."""
    g = spec.graph
    out = {}
    for name in g.params:
        ann = g.annotation(name)
        shape = tuple({"b": B, "t": T, "d": D, "n": N}[d] for d in ann.dims)
        if name == "A":
            out[name] = stable_a(*shape) if ann.complex else -0.1 - torch.rand(*shape, dtype=f64)
        elif name == "log_dt":
            out[name] = -3 + rn(*shape) * 0.5
        else:
            out[name] = crn(*shape) if ann.complex else rn(*shape)
    return out


def _state(spec):
    g = spec.graph
    states = []
    for arg in g.state_args:
        ann = g.annotation(arg)
        shape = tuple({"b": B, "d": D, "n": N}[d] for d in ann.dims)
        states.append(crn(*shape) if ann.complex else rn(*shape))
    return states[0] if len(states) == 1 else tuple(states)


SPECS = [s4d_zoh, s4d_bilinear, s4d_euler, mamba1_zoh, mamba1_mix]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_reference_preserved(spec):
    g2 = assert_preserved(spec.graph, expand_discretizations, _args(spec), _state(spec),
                          grads=True)
    assert has_marker(spec.graph[spec.graph.new_state_names[0]].expr)
    for n in g2.nodes:
        assert not (isinstance(n, Map) and has_marker(n.expr)), f"marker left in {n.name}"
    assert not any(has_marker(e) for e, _ in g2.sources)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_graph_shape_kept(spec):
    """Only Map expressions change: names, dims, complex flags and the signature stay."""
    g, g2 = spec.graph, expand_discretizations(spec.graph)
    assert [(n.name, n.dims, n.complex, type(n)) for n in g.nodes] == \
           [(n.name, n.dims, n.complex, type(n)) for n in g2.nodes]
    assert (g.params, g.states, g.outputs, g.out_axes) == \
           (g2.params, g2.states, g2.outputs, g2.out_axes)
    assert expand_discretizations(g2) == g2  # idempotent


def test_zoh_forms():
    """The ZOH rules give exactly exp(dt*A) and dt*phi1(dt*A) (exact sympy, no floats)."""
    dt, A = sp.Symbol("dt", real=True), sp.Symbol("A")
    from lrc.ir.functions import phi1, zoh_a

    assert rewrite(zoh_a(dt, A), EXPAND) == sp.exp(dt * A)
    assert rewrite(zoh_b(dt, A), EXPAND) == dt * phi1(dt * A)
    assert not any(isinstance(a, sp.Float) for m in MARKERS
                   for a in sp.preorder_traversal(rewrite(m(dt, A), EXPAND)))


@pytest.mark.parametrize("marker", MARKERS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_rule_matches_marker_eval(marker, cplx):
    """Each expansion evaluates to the marker's own textbook evaluation rule."""
    dt, A = sp.Symbol("dt", real=True), sp.Symbol("A") if cplx else sp.Symbol("A", real=True)
    vals = {dt: torch.rand(64, dtype=f64) + 0.01,
            A: stable_a(64) if cplx else -2 * torch.rand(64, dtype=f64) - 0.01}
    want = EVAL[marker](vals[dt], vals[A])
    got = evaluate(rewrite(marker(dt, A), EXPAND), vals)
    got = got * torch.ones_like(want)  # euler_b/mamba_b -> dt does not vary with A
    assert rel_err(got, want) <= 1e-13


# ---- ZOH's B-bar as A -> 0: finite and accurate in float32 and float64

A_VALUES = [0.0, 1e-40, -1e-30, 1e-20, -1e-12, 3e-9, -1e-8, 2e-7, -1e-6, 1e-6, 5e-6, -1e-4,
            1e-3, -0.02, 0.5, -1.0, 3.0, -40.0]
DT_VALUES = [1e-3, 0.1, 1.0]


def _zoh_b_exact(dt: float, a: float) -> float:
    """(exp(dt*a) - 1)/a at 50 digits, dt at a = 0."""
    with mpmath.workdps(50):
        if a == 0:
            return float(mpmath.mpf(dt))
        return float(mpmath.expm1(mpmath.mpf(dt) * mpmath.mpf(a)) / mpmath.mpf(a))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_zoh_b_stable_as_a_to_0(dtype, tol):
    dt_s, a_s = sp.Symbol("dt", real=True), sp.Symbol("A", real=True)
    expr = rewrite(zoh_b(dt_s, a_s), EXPAND)
    pairs = [(dt, a) for dt in DT_VALUES for a in A_VALUES]
    dt = torch.tensor([p[0] for p in pairs], dtype=dtype)
    a = torch.tensor([p[1] for p in pairs], dtype=dtype)
    got = evaluate(expr, {dt_s: dt, a_s: a})
    want = torch.tensor([_zoh_b_exact(float(x), float(y)) for x, y in zip(dt, a, strict=True)],
                        dtype=f64)
    assert got.dtype == dtype and torch.isfinite(got).all()
    err = ((got.double() - want).abs() / want.abs()).max().item()
    assert err <= tol, f"{dtype}: max relative error {err:.2e}"
    # the textbook form fails here: 0/0 at A = 0, and cancellation for tiny nonzero A
    naive = (torch.exp(dt * a) - 1) / a
    assert torch.isnan(naive[a == 0]).all()
    nz = a != 0
    assert ((naive[nz].double() - want[nz]).abs() / want[nz].abs()).max() > 1e-2


def test_marker_eval_agrees_at_zero():
    """The zoh_b marker's own evaluation rule and its expansion agree at A = 0 (both dt)."""
    dt_s, a_s = sp.Symbol("dt", real=True), sp.Symbol("A", real=True)
    dt, a = torch.rand(5, dtype=f64) + 0.1, torch.zeros(5, dtype=f64)
    assert torch.equal(EVAL[zoh_b](dt, a), dt)
    assert torch.equal(evaluate(rewrite(zoh_b(dt_s, a_s), EXPAND), {dt_s: dt, a_s: a}), dt)


# ---- the rewrite engine and prune


def test_rewrite_reaches_fixed_point():
    x, y = sp.symbols("x y", real=True)
    f = sp.Function("f")
    rules = (
        # f(f(a)) -> f(a)
        (f, lambda e: e.args[0] if isinstance(e.args[0], f) else None),
        # f(a + b) -> f(a) + f(b)
        (f, lambda e: sp.Add(*(f(t) for t in e.args[0].args)) if isinstance(e.args[0], sp.Add)
         else None),
    )
    assert rewrite(f(f(f(x + f(f(y))))), rules) == f(x) + f(y)
    loop = ((f, lambda e: f(e.args[0] + 1)),)  # never settles
    with pytest.raises(RuntimeError, match="fixed point"):
        rewrite(f(x), loop)


def test_prune_drops_dead_nodes_only():
    g = expand_discretizations(s4d_zoh.graph)
    dead = Map("%dead", g[g.new_state_names[0]].dims, sp.Symbol("u", real=True) * 2)
    g_dead = g.replace(nodes=g.nodes + (dead,))
    assert "%dead" in g_dead and prune(g_dead) == g and prune(g) is g


# ---- the zoo and random specs


@pytest.mark.parametrize("name", zoo_params())
def test_zoo(name):
    g, args, state = zoo_case(name)
    g2 = assert_preserved(g, expand_discretizations, args, state)
    assert not any(isinstance(n, Map) and has_marker(n.expr) for n in g2.nodes)


@pytest.mark.parametrize("name", zoo_params())
def test_zoo_pipeline(name):
    """The whole PIPELINE keeps the reference (the max trick's scaled states mapped back)."""
    from lrc.passes.stability import scaled_initial_state, unscaled_states

    assert PIPELINE[:2] == (check_linear, expand_discretizations)

    def run_all(g):
        for p in PIPELINE:
            g = verify(p(g))
        return g

    g, args, state = zoo_case(name)
    state = state if isinstance(state, tuple) else (state,)
    assert_preserved(g, run_all, args, state, start=scaled_initial_state,
                     restore=unscaled_states)


def test_random_specs():
    """Random linear specs of tests/strategies.py (after check_linear, which the trace ran)."""
    from hypothesis import HealthCheck, given, settings

    from tests.strategies import random_specs

    seed = int(torch.randint(0, 2**31, ()))

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(random_specs())
    def check(rs):
        spec, make_inputs = rs
        inp = make_inputs(T=T, seed=seed)
        assert_preserved(spec.graph, expand_discretizations, inp.kwargs, inp.state)

    check()


def test_random_specs_pipeline():
    """The whole PIPELINE keeps the reference of random linear specs: outputs, final states and
    the gradient of every argument and initial state."""
    from hypothesis import HealthCheck, given, settings

    from lrc.passes.stability import scaled_initial_state, unscaled_states
    from tests.strategies import random_specs

    seed = int(torch.randint(0, 2**31, ()))

    def run_all(g):
        for p in PIPELINE[1:]:  # the trace ran check_linear
            g = verify(p(g))
        return g

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(random_specs())
    def check(rs):
        spec, make_inputs = rs
        inp = make_inputs(T=T, seed=seed)
        assert_preserved(spec.graph, run_all, inp.kwargs, inp.state, grads=True,
                         start=scaled_initial_state, restore=unscaled_states)

    check()


def test_merge_duplicates():
    """The same sum and the same tanh written twice become one node each; outputs, states and
    gradients are kept, and f(s) - f(s) is exactly 0 in the generated kernel."""
    from lrc.passes import merge_duplicates

    @lrc.recurrence
    def spec(h: State("b n"), x: Seq("b t d"), p: Param("n")):
        a = lrc.exp(-softplus(p))
        u = 3.0 * (lrc.tanh(x.sum("d")) - lrc.tanh(x.sum("d")))
        return h, a * h + u + x.sum("d")

    g = spec.graph
    g2 = merge_duplicates(g)
    assert len(g2.nodes) < len(g.nodes)
    args = {"x": torch.randn(B, T, D, dtype=torch.float64),
            "p": torch.randn(N, dtype=torch.float64) + 4}
    assert_preserved(g, merge_duplicates, args, torch.randn(B, N, dtype=torch.float64),
                     grads=True)
    from lrc.passes import pipeline

    lowered = pipeline.run(g).lowered  # the two tanh terms cancel before any code is made
    assert not any(isinstance(n, Map) and n.expr.has(sp.tanh) for n in lowered.nodes)
