"""Hypothesis-generated random linear specs through the generated kernels, against an
independent plain-PyTorch loop (tests/strategies.py) and the float64 reference's gradients."""
from __future__ import annotations

import contextlib

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lrc
from tests.conftest import rel_err
from tests.strategies import random_specs

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@SETTINGS
@given(random_specs())
def test_forward_and_final_state(rs):
    kern = lrc.compile(rs.spec, backend="triton", lowering="scan")
    inp = rs.make_inputs(T=9, dtype=torch.float32)
    y, h = kern(*inp.args, initial_state=inp.state, return_final_state=True)
    want_y, want_h = rs.expected(inp.to(torch.float64))
    for a, e in zip(as_tuple(y) + as_tuple(h), tuple(want_y) + tuple(want_h)):
        assert rel_err(a, e) <= 1e-4, rs.source


@SETTINGS
@given(random_specs(max_states=1))
def test_gradients(rs):
    kern = lrc.compile(rs.spec, backend="triton", lowering="scan")
    ref = lrc.compile(rs.spec, backend="reference")
    inp = rs.make_inputs(T=7, dtype=torch.float64)
    ours = [x.detach().to(torch.complex64 if x.is_complex() else torch.float32)
            .requires_grad_(True) for x in inp.args]
    theirs = [x.detach().clone().requires_grad_(True) for x in inp.args]
    y = as_tuple(kern(*ours))
    y2 = as_tuple(ref(*theirs))
    gys = [torch.randn_like(o) for o in y2]
    live = [i for i, o in enumerate(y2) if o.requires_grad]  # an output may read no input
    if not live:
        assert not any(o.requires_grad for o in y)
        return
    g1 = torch.autograd.grad(sum((y[i].double() * gys[i]).sum() for i in live), ours,
                             allow_unused=True)
    g2 = torch.autograd.grad(sum((y2[i] * gys[i]).sum() for i in live), theirs,
                             allow_unused=True)
    for a, e in zip(g1, g2):
        if e is None or a is None:  # no gradient flows: the other side is none or zeros
            other = a if e is None else e
            assert other is None or other.abs().max() == 0, rs.source
            continue
        assert rel_err(a, e) <= 1e-3, rs.source



@contextlib.contextmanager
def two_level():
    """Time cut into three segments of two-step chunks (where the states' blocks are
    independent; others run the one-segment scan)."""
    import lrc

    with lrc.config.override(scan_chunk=2, scan_segments=3):
        yield


@SETTINGS
@given(random_specs())
def test_two_level_scan(rs):
    with two_level():
        test_forward_and_final_state.hypothesis.inner_test(rs)


@SETTINGS
@given(random_specs(max_states=1))
def test_two_level_gradients(rs):
    with two_level():
        test_gradients.hypothesis.inner_test(rs)


@SETTINGS
@given(random_specs(), st.lists(st.integers(0, 6), min_size=1, max_size=4), st.booleans())
def test_cu_seqlens(rs, lens, reverse):
    """Packed sequences (random lengths, empty ones too) in one launch where the kernels can:
    each as the plain-PyTorch loop computes it alone from its own initial state."""
    from lrc.layout import batch_dim

    kern = lrc.compile(rs.spec, backend="triton", lowering="scan")
    assume(batch_dim(kern.program.g) is not None and sum(lens) > 0)
    bounds = [0] + torch.tensor(lens).cumsum(0).tolist()
    inp = rs.make_inputs(T=bounds[-1], batch=1, state_batch=len(lens), seed=2)
    low = inp.to(torch.float32)
    y, h = kern(*low.args, initial_state=low.state, cu_seqlens=torch.tensor(bounds),
                reverse=reverse, return_final_state=True)
    ys, hs = as_tuple(y), as_tuple(h)
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        fins = [got.narrow(ax, k, 1) for got, ax in zip(hs, inp.batch_axes)]
        if a == b:  # an empty sequence keeps its initial state
            for got, s0 in zip(fins, inp.state_of(k)):
                assert rel_err(got, s0) <= 1e-6, rs.source
            continue
        one = inp.slice_time(a, b)
        one = type(one)(one.args, one.names, one.time_axes, inp.state_of(k), one.batch_axes)
        want_y, want_h = rs.expected(one, reverse=reverse)
        for got, axes, e in zip(ys, kern.lowered.out_axes, want_y):
            t_ax = list(axes).index((kern.lowered.time,))
            assert rel_err(got.narrow(t_ax, a, b - a), e) <= 1e-4, rs.source
        for got, e in zip(fins, want_h):
            assert rel_err(got, e) <= 1e-4, rs.source
