"""The zoo tests' shared check: a compiled spec against a test's own float64 loop.

A loop takes the arguments by name (float64/complex128, the spec's layouts) and the initial
states (a tuple, or None for zeros) and returns (outputs tuple, final states tuple).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import lrc
from lrc.zoo import ZooEntry
from tests.conftest import rel_err

Loop = Callable[[dict[str, torch.Tensor], tuple | None], tuple[tuple, tuple]]

TOL64, TOL32 = 1e-10, 1e-5


def as_tuple(x: Any) -> tuple:
    """x if a tuple, else (x,)."""
    return x if isinstance(x, tuple) else (x,)


def wide(x: torch.Tensor) -> torch.Tensor:
    """x in float64 (complex128 if complex)."""
    return x.to(torch.complex128 if x.is_complex() else torch.float64)


def run(entry: ZooEntry, args: dict, state=None, **kw) -> tuple[tuple, tuple]:
    """The compiled spec's (outputs, final states), both as tuples."""
    out, fin = lrc.compile(entry.spec, backend="reference")(**args, initial_state=state,
                                                            return_final_state=True, **kw)
    return as_tuple(out), as_tuple(fin)


def errors(got: tuple[tuple, tuple], want: tuple[tuple, tuple]) -> list[float]:
    """Relative L2 errors of every output and final state."""
    (go, gs), (wo, ws) = got, want
    assert len(go) == len(wo) and len(gs) == len(ws)
    return [rel_err(a, b) for a, b in zip(go + gs, wo + ws, strict=True)]


def check_against_loop(entry: ZooEntry, loop: Loop, b: int = 2, t: int = 37,
                       args: dict | None = None, **dims: int) -> dict[str, float]:
    """float64 from zero and from a nonzero state (<= 1e-10), float32 inputs (<= 1e-5)."""
    args = args if args is not None else entry.example(b, t, **dims)
    worst = {}
    worst["f64"] = max(errors(run(entry, args), loop(args, None)))
    s0 = as_tuple(entry.initial_state(b, **dims))
    from_s0 = run(entry, args, s0)
    worst["f64_state"] = max(errors(from_s0, loop(args, s0)))
    # the initial state must matter, else the check above is the zero-state one again
    assert rel_err(from_s0[0][0], run(entry, args)[0][0]) > 1e-3
    a32 = {k: v.to(torch.complex64 if v.is_complex() else torch.float32) for k, v in args.items()}
    s32 = tuple(s.to(torch.complex64 if s.is_complex() else torch.float32) for s in s0)
    got32 = run(entry, a32, s32)
    assert all(o.dtype == torch.float32 for o in got32[0])
    want32 = loop({k: wide(v) for k, v in a32.items()}, tuple(wide(s) for s in s32))
    worst["f32"] = max(errors(got32, want32))
    assert worst["f64"] <= TOL64, worst
    assert worst["f64_state"] <= TOL64, worst
    assert worst["f32"] <= TOL32, worst
    return worst


def check_grads_against_loop(entry: ZooEntry, loop: Loop, b: int = 2, t: int = 19,
                             tol: float = 1e-9, **dims: int) -> dict[str, float]:
    """Every gradient (inputs, Params, initial states) of a random loss through the compiled
    spec (float64 reference backend) against the same through the test's loop."""
    args = entry.example(b, t, **dims)
    s0 = as_tuple(entry.initial_state(b, **dims))
    leaves = {**args, **{f"state{i}": s for i, s in enumerate(s0)}}

    def grads(fn):
        xs = {k: v.clone().requires_grad_() for k, v in leaves.items()}
        a = {k: xs[k] for k in args}
        st = tuple(xs[f"state{i}"] for i in range(len(s0)))
        outs, fins = fn(a, st)
        torch.manual_seed(1234)
        # by shape, not randn_like: that follows the strides, which differ between the two
        loss = sum((o * torch.randn(o.shape, dtype=o.dtype)).sum() for o in outs + fins)
        return dict(zip(xs, torch.autograd.grad(loss, list(xs.values())), strict=True))

    got = grads(lambda a, st: run(entry, a, st))
    want = grads(loop)
    errs = {k: rel_err(got[k], want[k]) for k in leaves}
    assert max(errs.values()) <= tol, errs
    return errs


def check_step_against_forward(entry: ZooEntry, t: int = 12, prefill: int = 7,
                               backend: str = "reference", tol: float = 1e-10) -> None:
    """Prefill `prefill` tokens, then step the rest one at a time: the forward's outputs."""
    g = entry.spec.graph
    layer = lrc.compile(entry.spec, backend=backend)
    args = entry.example(t=t)
    s0 = entry.initial_state()
    tax = {k: g.annotation(k).axes.index((g.time,)) for k in args
           if (g.time,) in g.annotation(k).axes}
    full = as_tuple(layer(**args, initial_state=s0))
    pre = {k: (v.narrow(tax[k], 0, prefill) if k in tax else v) for k, v in args.items()}
    _, state = layer(**pre, initial_state=s0, return_final_state=True)
    for i in range(prefill, t):
        tok = {k: (v.select(tax[k], i) if k in tax else v) for k, v in args.items()}
        y, state = layer.step(**tok, state=state)
        for j, (yj, fj) in enumerate(zip(as_tuple(y), full, strict=True)):
            assert rel_err(yj, fj.select(g.out_axes[j].index((g.time,)), i)) <= tol, (i, j)
