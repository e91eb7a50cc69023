"""The decode step's Param-only terms (hoist_params: exp(A_log) computed in float64 before the
kernel) are kept from one step to the next while the Params are the same tensors at the same
version; an in-place update or another tensor recomputes them. Expected values come from a
plain loop written here."""
from __future__ import annotations

import torch

import lrc
from lrc import Param, Seq, State
from lrc.kernels import host
from lrc.lowering.scan import call as scan_call
from tests.conftest import rel_err

B, D, N = 3, 37, 5


@lrc.recurrence
def s6(x: Seq("b t d"), g: Seq("b t d"), Bm: Seq("b t n"), C: Seq("b t n"),
       A_log: Param("d n"), h: State("b d n")):
    h = lrc.exp(lrc.softplus(g) * -lrc.exp(A_log)) * h + Bm * x
    return (C * h).sum("n"), h


def one_step(x, g, Bm, C, A_log, h):
    a = torch.exp(torch.nn.functional.softplus(g)[..., None] * -torch.exp(A_log))
    h = a * h + Bm[:, None, :] * x[..., None]
    return (C[:, None, :] * h).sum(-1), h


def test_step_keeps_param_terms_until_they_change(monkeypatch):
    layer = lrc.compile(s6, backend="triton")
    assert layer.program.part.pre  # exp(A_log) is computed before the kernel
    runs = []
    real = scan_call.evaluate
    monkeypatch.setattr(scan_call, "evaluate", lambda *a: (runs.append(1), real(*a))[1])
    x, g = torch.randn(B, D), torch.randn(B, D)
    Bm, C = torch.randn(B, N), torch.randn(B, N)
    A_log = torch.randn(D, N) * 0.5
    h = torch.randn(B, D, N)

    def check(A):
        state = h.clone()
        y, _ = layer.step(x, g, Bm, C, A, state=state, inplace=True)
        want_y, want_h = one_step(*(v.double() for v in (x, g, Bm, C, A, h)))
        assert rel_err(y, want_y) <= 1e-5 and rel_err(state, want_h) <= 1e-5

    check(A_log)
    check(A_log)
    assert len(runs) == 1  # the second step reused exp(A_log)
    with torch.no_grad():
        A_log.mul_(0.5)  # in place: the version changes
    check(A_log)
    assert len(runs) == 2
    check(A_log.clone())  # another tensor, same values
    assert len(runs) == 3


def test_pre_work_converts_only_the_inputs_it_reads(monkeypatch):
    """Pre work (here exp(A_log), float64 then float32) gets canonical float32 copies of the
    inputs it reads alone; the Seq inputs go to the kernels as given. Counted by the copies
    made, and the call still matches the plain loop."""

    layer = lrc.compile(s6, backend="triton")
    made = []
    real = host.to_canonical
    monkeypatch.setattr(host, "to_canonical",
                        lambda g, x, ann, *a: (made.append(ann.role), real(g, x, ann, *a))[1])
    T = 5
    x, g = torch.randn(B, T, D), torch.randn(B, T, D)
    Bm, C = torch.randn(B, T, N), torch.randn(B, T, N)
    A_log = torch.randn(D, N) * 0.5
    y = layer(x, g, Bm, C, A_log)
    assert made and all(r.value == "Param" for r in made)  # A_log's copy, no Seq copies
    h = torch.zeros(B, D, N, dtype=torch.float64)
    for t in range(T):
        want, h = one_step(*(v.double() for v in (x[:, t], g[:, t], Bm[:, t], C[:, t])),
                           A_log.double(), h)
        assert rel_err(y[:, t], want) <= 1e-5
