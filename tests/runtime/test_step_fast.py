"""The in-place decode step replayed from its recorded launch (triton_call.FastStep): after a
first full step with a signature, later tokens (new tensors each) fire the recorded launch
with their own tensors, recomputing the Param-only terms from the Params each time (a Param
updated in place stays on the replay and is seen); another layout takes the full path.
Expected values come from a plain loop written here."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc.lowering.scan import call as triton_call
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
                A_log.mul_(0.9)  # in place: the replay recomputes exp(A_log)
        y, out = layer.step(x, g, Bm, C=C, A_log=A_log, state=state, inplace=True)
        want_y, want = one_step(*(v.double() for v in (x, g, Bm, C, A_log)), want)
        assert out is state
        assert rel_err(y, want_y) <= 1e-5, t
        assert rel_err(state, want) <= 1e-5, t
    assert len(full) == 1  # the first token; the others replayed
    assert len(layer._fast_steps) == 1

    # another layout of x (a strided view): its own signature, recorded and replayed alike
    for _ in range(2):
        x = torch.randn(D, B).t()
        g, Bm, C = torch.randn(B, D), torch.randn(B, N), torch.randn(B, N)
        y, _ = layer.step(x, g, Bm, C=C, A_log=A_log, state=state, inplace=True)
        want_y, want = one_step(*(v.double() for v in (x, g, Bm, C, A_log)), want)
        assert rel_err(y, want_y) <= 1e-5 and rel_err(state, want) <= 1e-5
    assert len(full) == 2 and len(layer._fast_steps) == 2


def test_fast_step_outputs_are_new_tensors():
    layer = lrc.compile(s6, backend="triton")
    A_log = torch.randn(D, N) * 0.5
    state = torch.randn(B, D, N)
    args = [torch.randn(B, D), torch.randn(B, D), torch.randn(B, N), torch.randn(B, N)]
    ys = [layer.step(*args, A_log, state=state, inplace=True)[0] for _ in range(3)]
    assert ys[1] is not ys[2] and ys[1].data_ptr() != ys[2].data_ptr()
    assert not torch.equal(ys[1], ys[2])  # the state moved on between the two steps


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


@pytest.mark.gpu
def test_gpu_step_in_a_cuda_graph_reads_params_at_replay():
    """An in-place step captured in a CUDA graph recomputes exp(A_log) on every replay: a
    Param changed in its memory after the capture (no version bump) is seen."""
    layer = lrc.compile(s6, backend="triton")
    b, d, n, dev = 8, 256, 16, "cuda"
    A_log = torch.randn(d, n, device=dev) * 0.5
    state = torch.randn(b, d, n, device=dev)
    x, g = torch.randn(b, d, device=dev), torch.randn(b, d, device=dev)
    Bm, C = torch.randn(b, n, device=dev), torch.randn(b, n, device=dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: compile, tune, record the replay
        for _ in range(3):
            layer.step(x, g, Bm, C, A_log, state=state, inplace=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y, _ = layer.step(x, g, Bm, C, A_log, state=state, inplace=True)
    for i in range(3):
        h = torch.randn(b, d, n, device=dev)
        state.copy_(h)
        for v in (x, g, Bm, C):
            v.copy_(torch.randn_like(v))
        A_log.data.add_(0.2 * (i + 1))
        graph.replay()
        torch.cuda.synchronize()
        want_y, want_h = one_step(*(v.double() for v in (x, g, Bm, C, A_log, h)))
        assert rel_err(y, want_y) <= 1e-5 and rel_err(state, want_h) <= 1e-5, i
