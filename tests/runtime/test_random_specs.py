"""Calling-convention invariants on hypothesis-generated random linear specs:
reverse = flipping time, prefill + steps = one forward, cu_seqlens = separate runs."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import rel_err
from tests.runtime.test_call import compiled
from tests.strategies import random_specs

TOL = 1e-10
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def assert_close(got, want, what):
    for i, (a, b) in enumerate(zip(as_tuple(got), as_tuple(want), strict=True)):
        err = rel_err(a, b)
        assert err <= TOL, f"{what} {i}: relative error {err:.2e}"


def time_axis(rs, i):
    """The time axis of output i in the layout the layer returns."""
    axes = rs.spec.graph.out_axes[i]
    return axes.index((rs.time,))


@SETTINGS
@given(random_specs(), st.integers(1, 10), st.integers(0, 2**16))
def test_reverse_equals_flipping_time(rs, T, seed):
    layer = compiled(rs.spec)
    inp = rs.make_inputs(T=T, seed=seed)
    y, fin = layer(*inp.args, initial_state=inp.state, reverse=True, return_final_state=True)
    y2, fin2 = layer(*inp.flip_time().args, initial_state=inp.state, return_final_state=True)
    flipped = tuple(o.flip(time_axis(rs, i)) for i, o in enumerate(as_tuple(y2)))
    assert_close(y, flipped, "output")
    assert_close(fin, fin2, "final state")


@SETTINGS
@given(random_specs(), st.integers(0, 8), st.integers(1, 4), st.integers(0, 2**16))
def test_prefill_then_steps_equals_forward(rs, T, k, seed):
    layer = compiled(rs.spec)
    inp = rs.make_inputs(T=T + k, seed=seed)
    y, fin = layer(*inp.args, initial_state=inp.state, return_final_state=True)
    state = inp.state
    if T:
        _, state = layer(*inp.slice_time(0, T).args, initial_state=inp.state,
                         return_final_state=True)
    for i in range(T, T + k):
        y_i, state = layer.step(*inp.token(i), state=state)
        want = tuple(o.select(time_axis(rs, j), i) for j, o in enumerate(as_tuple(y)))
        assert_close(y_i, want, f"step {i} output")
    assert_close(state, fin, "final state")


@SETTINGS
@given(random_specs(), st.lists(st.integers(0, 6), min_size=1, max_size=4), st.booleans(),
       st.integers(0, 2**16))
def test_cu_seqlens_equals_separate_runs(rs, lens, reverse, seed):
    layer = compiled(rs.spec)
    total = sum(lens)
    if total == 0:
        lens, total = lens + [1], total + 1
    inp = rs.make_inputs(T=total, batch=1, seed=seed, state_batch=len(lens))
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()))
    y, fin = layer(*inp.args, initial_state=inp.state, cu_seqlens=cu, reverse=reverse,
                   return_final_state=True)
    for k, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        state_k = inp.state_of(k)
        fin_k = tuple(f.narrow(a, k, 1)
                      for f, a in zip(as_tuple(fin), inp.batch_axes, strict=True))
        if e == s:      # an empty sequence keeps its initial state
            assert_close(fin_k, state_k, "empty sequence's final state")
            continue
        yk, fk = layer(*inp.slice_time(s, e).args, initial_state=state_k, reverse=reverse,
                       return_final_state=True)
        got = tuple(o.narrow(time_axis(rs, j), s, e - s) for j, o in enumerate(as_tuple(y)))
        assert_close(got, yk, f"sequence {k} output")
        assert_close(fin_k, fk, f"sequence {k} final state")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_specs(), st.integers(0, 2**16))
def test_state_none_is_zeros_and_low_precision_dtypes(rs, seed):
    layer = compiled(rs.spec)
    inp = rs.make_inputs(T=5, seed=seed)
    zeros = tuple(torch.zeros_like(s) for s in inp.state)
    assert_close(layer(*inp.args), layer(*inp.args, initial_state=zeros), "zero state")
    y, fin = layer(*inp.to(torch.float32).args, return_final_state=True)
    assert all(o.dtype == torch.float32 for o in as_tuple(y))
    assert all(f.dtype in (torch.float32, torch.complex64) for f in as_tuple(fin))
