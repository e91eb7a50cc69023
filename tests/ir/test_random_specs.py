"""Property tests on hypothesis-generated random linear specs (tests/strategies.py).

(a) every generated spec traces, verifies and prints deterministically; (b) the float64
reference interpreter agrees with the strategy's independent plain-torch loop at 1e-10.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrc.ir import verify
from lrc.ir.linearity import check_linear
from lrc.ir.trace import trace
from lrc.runtime.reference import call_graph
from tests.conftest import rel_err
from tests.strategies import random_specs

TOL = 1e-10
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_close(got, want, what):
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        err = rel_err(a, b)
        assert err <= TOL, f"{what} {i}: relative error {err:.2e}"


@SETTINGS
@given(random_specs())
def test_generated_specs_trace_verify_and_print_deterministically(rs):
    g = rs.spec.graph
    assert verify(g) is g
    assert check_linear(g) is g
    again = trace(rs.spec.fn, time=rs.time, name=rs.spec.name)
    assert str(again) == str(g) and again == g


@SETTINGS
@given(random_specs(), st.integers(1, 12), st.integers(1, 3), st.booleans(),
       st.integers(0, 2**16))
def test_reference_agrees_with_an_independent_loop(rs, T, batch, reverse, seed):
    inp = rs.make_inputs(T=T, batch=batch, seed=seed)
    outs, finals = call_graph(rs.spec.graph, *inp.args, initial_state=inp.state,
                              reverse=reverse)
    want_outs, want_finals = rs.expected(inp, reverse=reverse)
    assert_close(outs, want_outs, "output")
    assert_close(finals, want_finals, "final state")


@settings(max_examples=10, deadline=None)
@given(random_specs(max_states=1, complex_states=False))
def test_strategy_options(rs):
    assert len(rs.states) == 1 and not rs.states[0].complex
    spec, make_inputs = rs
    assert spec is rs.spec and make_inputs(T=3).T == 3
