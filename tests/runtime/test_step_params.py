"""The decode step's Param-only terms (hoist_params: exp(A_log) computed in float64 before the
kernel) follow the Params' current values on every step, whatever wrote them: writes that
do not bump a tensor's version (`.data.add_`, `.data =`, through `.numpy()`,
`vector_to_parameters`) included. Expected values come from a plain loop written here."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc import Param, Seq, State
from lrc.kernels import host
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


def _writes():
    """Ways to change a Param's values, each (name, write(p, new_values)); most leave
    `p._version` as it was."""

    def data_add(p, v):
        p.data.add_(v - p.detach())

    def data_assign(p, v):
        p.data = v.clone()

    def via_numpy(p, v):
        p.detach().numpy()[...] = v.numpy()

    def vector(p, v):
        torch.nn.utils.vector_to_parameters(v.reshape(-1).clone(), [p])

    def in_place(p, v):
        with torch.no_grad():
            p.copy_(v)

    return [data_add, data_assign, via_numpy, vector, in_place]


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("write", _writes(), ids=lambda w: w.__name__)
def test_step_sees_every_param_write(write, inplace):
    layer = lrc.compile(s6, backend="triton")
    assert layer.program.part.pre  # exp(A_log) is computed before the kernel
    x, g = torch.randn(B, D), torch.randn(B, D)
    Bm, C = torch.randn(B, N), torch.randn(B, N)
    A_log = torch.nn.Parameter(torch.randn(D, N) * 0.5)
    h = torch.randn(B, D, N)

    def check(when):
        state = h.clone()
        y, new = layer.step(x, g, Bm, C, A_log, state=state, inplace=inplace)
        want_y, want_h = one_step(*(v.detach().double() for v in (x, g, Bm, C, A_log, h)))
        assert rel_err(y, want_y) <= 1e-5, when
        assert rel_err(new, want_h) <= 1e-5, when
        if inplace:
            assert new is state

    check("first")
    check("again")  # an in-place step is replayed from here on (FastStep)
    for i in range(2):
        before = A_log.detach().clone()
        write(A_log, torch.randn(D, N) * 0.5 - 0.3 * i)
        assert not torch.equal(A_log.detach(), before)
        check(f"after write {i}")


def test_module_step_after_vector_to_parameters():
    """lrc.nn.Recurrence.step with parameters loaded by vector_to_parameters equals the step
    of a fresh module built with those parameters."""
    from lrc.nn import Recurrence

    A_log = torch.randn(D, N) * 0.5
    mod = Recurrence(s6, backend="triton", A_log=A_log)
    x, g = torch.randn(B, D), torch.randn(B, D)
    Bm, C = torch.randn(B, N), torch.randn(B, N)
    h = torch.randn(B, D, N)
    mod.step(x, g, Bm, C, state=h.clone())
    new = torch.randn(D, N) * 0.5 - 0.5
    torch.nn.utils.vector_to_parameters(new.reshape(-1), mod.parameters())
    y, state = mod.step(x, g, Bm, C, state=h.clone())
    fresh_y, fresh_state = Recurrence(s6, backend="triton", A_log=new).step(
        x, g, Bm, C, state=h.clone())
    want_y, want_h = one_step(*(v.double() for v in (x, g, Bm, C, new, h)))
    assert rel_err(y, want_y) <= 1e-5 and rel_err(state, want_h) <= 1e-5
    assert torch.equal(y, fresh_y) and torch.equal(state, fresh_state)


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
