"""The in-place decode step replayed from its recorded launch (triton_call.FastStep): after a
first full step with a signature, later tokens (new tensors each) fire the recorded launch
with their own tensors; a Param updated in place, another Param tensor or another layout
takes the full path again. Expected values come from a plain loop written here."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc import Param, Seq, State, exp, softplus
from lrc.runtime import scan_runtime, triton_call
from tests.conftest import rel_err
from tests.runtime.test_step_params import B, D, N, one_step, s6


def test_fast_step_over_tokens_and_its_fallbacks(monkeypatch):
    layer = lrc.compile(s6, backend="triton")
    full = []
    real = triton_call.step
    monkeypatch.setattr(triton_call, "step", lambda *a, **k: (full.append(1), real(*a, **k))[1])
    A_log = torch.randn(D, N) * 0.5
    h = torch.randn(B, D, N)
    state, want = h.clone(), h.double()
    for t in range(5):  # fresh tensors each token, as a decode loop makes them
        x, g = torch.randn(B, D), torch.randn(B, D)
        Bm, C = torch.randn(B, N), torch.randn(B, N)
        if t == 3:
            with torch.no_grad():
                A_log.mul_(0.9)  # in place: the kept exp(A_log) is stale, the full path runs
        y, out = layer.step(x, g, Bm, C=C, A_log=A_log, state=state, inplace=True)
        want_y, want = one_step(*(v.double() for v in (x, g, Bm, C, A_log)), want)
        assert out is state
        assert rel_err(y, want_y) <= 1e-5, t
        assert rel_err(state, want) <= 1e-5, t
    assert len(full) == 2  # the first token and the one after the update (re-recorded)
    assert len(layer._fast_steps) == 1

    # another layout of x (a strided view): its own signature, recorded and replayed alike
    for _ in range(2):
        x = torch.randn(D, B).t()
        g, Bm, C = torch.randn(B, D), torch.randn(B, N), torch.randn(B, N)
        y, _ = layer.step(x, g, Bm, C=C, A_log=A_log, state=state, inplace=True)
        want_y, want = one_step(*(v.double() for v in (x, g, Bm, C, A_log)), want)
        assert rel_err(y, want_y) <= 1e-5 and rel_err(state, want) <= 1e-5
    assert len(full) == 3 and len(layer._fast_steps) == 2


def test_fast_step_outputs_are_new_tensors():
    layer = lrc.compile(s6, backend="triton")
    A_log = torch.randn(D, N) * 0.5
    state = torch.randn(B, D, N)
    args = [torch.randn(B, D), torch.randn(B, D), torch.randn(B, N), torch.randn(B, N)]
    ys = [layer.step(*args, A_log, state=state, inplace=True)[0] for _ in range(3)]
    assert ys[1] is not ys[2] and ys[1].data_ptr() != ys[2].data_ptr()
    assert not torch.equal(ys[1], ys[2])  # the state moved on between the two steps


@lrc.recurrence
def hpn(x: Seq("b t h p"), dt: Seq("b t h p"), A: Param("h p n"), B: Seq("b t n"),
        C: Seq("b t n"), s: State("b h p n")):
    """selective_state_update's recurrence: grid dims b and h (two axes of the step grid)."""
    d = softplus(dt)
    s = exp(d * A) * s + d * B * x
    return (C * s).sum("n"), s


def hpn_step(x, dt, A, B, C, s):
    d = torch.nn.functional.softplus(dt)[..., None]
    s = torch.exp(d * A) * s + d * B[:, None, None, :] * x[..., None]
    return (C[:, None, None, :] * s).sum(-1), s


@pytest.mark.parametrize("two", [False, True])
def test_step_grid_on_one_axis_and_on_several(monkeypatch, two):
    """The step kernel's program ids taken apart by division (one axis) or read from the
    grid's axes (GRID2D), for one grid dim (Mamba-1 style) and two (b, h)."""
    monkeypatch.setattr(scan_runtime, "STEP_GRID2D", two)
    layer = lrc.compile(hpn, backend="triton")
    b, h, p, n = 3, 5, 7, 4
    args = [torch.randn(b, h, p), torch.randn(b, h, p), -torch.rand(h, p, n),
            torch.randn(b, n), torch.randn(b, n)]
    state = torch.randn(b, h, p, n)
    want_y, want = hpn_step(*(v.double() for v in args), state.double())
    y, _ = layer.step(*args, state=state, inplace=True)
    assert rel_err(y, want_y) <= 1e-5 and rel_err(state, want) <= 1e-5
    layer1 = lrc.compile(s6, backend="triton")
    A_log = torch.randn(D, N) * 0.5
    state = torch.randn(B, D, N)
    xs = [torch.randn(B, D), torch.randn(B, D), torch.randn(B, N), torch.randn(B, N)]
    want_y, want = one_step(*(v.double() for v in (*xs, A_log)), state.double())
    y, _ = layer1.step(*xs, A_log, state=state, inplace=True)
    assert rel_err(y, want_y) <= 1e-5 and rel_err(state, want) <= 1e-5


def test_step_grid_shapes(monkeypatch):
    t = lrc.compile(hpn, backend="triton").program.tilings.get("step")
    t = t or lrc.compile(hpn, backend="triton").program.tiling
    sizes = {"b": 64, "h": 80, "p": 64, "n": 128}
    blocks = {d: 16 for d in t.split}
    grid = scan_runtime.step_grid(t, sizes, blocks)
    assert len(grid) == 3 and grid[0] * grid[1] * grid[2] == \
        scan_runtime.grid_size(t, sizes, blocks)
    big = {d: (70000 if d in t.grid else s) for d, s in sizes.items()}
    assert len(scan_runtime.step_grid(t, big, blocks)) == 1  # past CUDA's 65535: one axis
    monkeypatch.setattr(scan_runtime, "STEP_GRID2D", False)
    assert len(scan_runtime.step_grid(t, sizes, blocks)) == 1


@pytest.mark.gpu
def test_gpu_fast_step_mamba1_size():
    """The replay through the compiled kernel's launcher (Direct), at bench.py's decode shape
    of Mamba-1 (B64 D4096 N16), against the plain loop over several tokens."""
    layer = lrc.compile(s6, backend="triton")
    b, d, n = 64, 4096, 16
    A_log = (torch.randn(d, n, device="cuda") * 0.5)
    state = torch.randn(b, d, n, device="cuda")
    want = state.double()
    for _ in range(4):
        x, g = torch.randn(b, d, device="cuda"), torch.randn(b, d, device="cuda")
        Bm, C = torch.randn(b, n, device="cuda"), torch.randn(b, n, device="cuda")
        y, _ = layer.step(x, g, Bm, C, A_log, state=state, inplace=True)
        want_y, want = one_step(*(v.double() for v in (x, g, Bm, C, A_log)), want)
        assert rel_err(y, want_y) <= 1e-5 and rel_err(state, want) <= 1e-5
    (fast,) = layer._fast_steps.values()
    assert fast.direct is not None
