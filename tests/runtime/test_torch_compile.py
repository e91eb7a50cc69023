"""torch.compile of the loops people write around an lrc layer: batch and length that change
(automatic dynamic and dynamic=True), packed sequences (cu_seqlens with max_seqlen), a decode
loop of step(inplace=True), and a training step whose backward runs the generated backward
kernels on the forward's checkpoints instead of running the forward again. The expected values
come from a float64 loop written here. Few compiled tests: torch.compile is slow on the CPU."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc import Param, Seq, State, sigmoid
from lrc.errors import CallError
from lrc.lowering.scan.autograd import ScanFunction
from lrc.runtime.layer import Layer
from tests.conftest import rel_err


@lrc.recurrence
def ema2(x: Seq("b t d"), a: Param("d"), h: State("b d")):
    h = sigmoid(a) * h + x
    return 2 * h, h


def loop(x, a, h=None):
    """ema2 by hand in float64: (outputs, final state)."""
    x, a = x.double(), a.double()
    h = torch.zeros(x.shape[0], x.shape[2], dtype=torch.float64) if h is None else h.double()
    ys = []
    for t in range(x.shape[1]):
        h = torch.sigmoid(a) * h + x[:, t]
        ys.append(2 * h)
    return torch.stack(ys, 1), h


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_changing_batch_and_length_recompiles_dynamic():
    """Inductor, fullgraph: the second shape makes PyTorch recompile with dynamic sizes (the
    fake used to hash them: 'unhashable type: non-nested SymInt'); a third shape reuses it."""
    layer = lrc.compile(ema2)
    a = torch.randn(4)
    f = torch.compile(lambda x, a: layer(x, a, return_final_state=True), fullgraph=True)
    for b, t in [(2, 8), (3, 6), (1, 5)]:
        x = torch.randn(b, t, 4)
        y, h = f(x, a)
        want_y, want_h = loop(x, a)
        assert y.shape == (b, t, 4) and h.shape == (b, 4)
        assert rel_err(y, want_y) <= 1e-4 and rel_err(h, want_h) <= 1e-4


def test_training_step_dynamic_backward_reads_checkpoints(monkeypatch):
    """dynamic=True, fullgraph: every training step runs the layer forward once (the backward
    op runs the generated backward kernels on the forward's tape, not the forward again), at
    two shapes; the gradients match the float64 loop's."""
    layer = lrc.compile(ema2, backend="triton")
    counts = {"run": 0, "backward": 0}
    run, backward = Layer.run, ScanFunction.backward

    def spy_run(self, *args, **kwargs):
        counts["run"] += 1
        return run(self, *args, **kwargs)

    def spy_backward(ctx, *grads):
        counts["backward"] += 1
        return backward(ctx, *grads)

    monkeypatch.setattr(Layer, "run", spy_run)
    monkeypatch.setattr(ScanFunction, "backward", staticmethod(spy_backward))
    proj = torch.nn.Linear(4, 4)

    def step(x, a):
        return layer(proj(x), a).square().sum()

    f = torch.compile(step, fullgraph=True, dynamic=True, backend="aot_eager")
    for b, t in [(2, 8), (3, 5)]:
        x = torch.randn(b, t, 4, requires_grad=True)
        a = torch.randn(4, requires_grad=True)
        counts.update(run=0, backward=0)
        f(x, a).backward()
        assert counts == {"run": 1, "backward": 1}
        x64, a64 = x.detach().double().requires_grad_(), a.detach().double().requires_grad_()
        w64, b64 = proj.weight.detach().double(), proj.bias.detach().double()
        loop(x64 @ w64.T + b64, a64)[0].square().sum().backward()
        assert rel_err(x.grad, x64.grad) <= 1e-3 and rel_err(a.grad, a64.grad) <= 1e-3


def test_cu_seqlens_with_max_seqlen_fullgraph():
    """cu_seqlens a tensor input and max_seqlen an int: one opaque op (the offsets used to be
    read on the host while tracing: 'Could not guard on data-dependent expression')."""
    layer = lrc.compile(ema2)
    a = torch.randn(4)
    f = torch.compile(lambda x, a, cu, h0: layer(x, a, cu_seqlens=cu, max_seqlen=6,
                                                 initial_state=h0, return_final_state=True),
                      fullgraph=True, backend="aot_eager")
    x = torch.randn(1, 9, 4)
    for bounds in ([0, 3, 9], [0, 2, 4, 9]):
        cu = torch.tensor(bounds, dtype=torch.int32)
        h0 = torch.randn(len(bounds) - 1, 4)
        y, h = f(x, a, cu, h0)
        for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:], strict=False)):
            want_y, want_h = loop(x[:, s:e], a, h0[i:i + 1])
            assert rel_err(y[:, s:e], want_y) <= 1e-4 and rel_err(h[i:i + 1], want_h) <= 1e-4


def test_decode_loop_of_inplace_steps():
    """A decode loop of step(inplace=True) compiles (fullgraph; 'Dynamo does not know how to
    enter a RLock' before): the states are updated in place, the outputs are the loop's."""
    layer = lrc.compile(ema2)
    a = torch.randn(4)

    def decode(xs, a, h):
        return torch.stack([layer.step(xs[:, t], a, state=h, inplace=True)[0]
                            for t in range(xs.shape[1])], 1)

    f = torch.compile(decode, fullgraph=True, backend="aot_eager")
    xs, h0 = torch.randn(2, 5, 4), torch.randn(2, 4)
    h = h0.clone()
    ys = f(xs, a, h)
    want_y, want_h = loop(xs, a, h0)
    assert rel_err(ys, want_y) <= 1e-4 and rel_err(h, want_h) <= 1e-4
    g = torch.compile(lambda x, a, h: layer.step(x, a, state=h), fullgraph=True,
                      backend="aot_eager")
    y1, h1 = g(xs[:, 0], a, h0)
    assert rel_err(y1, want_y[:, 0]) <= 1e-4 and rel_err(h1, loop(xs[:, :1], a, h0)[1]) <= 1e-4


def test_max_seqlen_eager_checks():
    """Eagerly, max_seqlen gives the same answer and is checked against the offsets."""
    layer = lrc.compile(ema2)
    x, a = torch.randn(1, 7, 4), torch.randn(4)
    cu = torch.tensor([0, 2, 7])
    y = layer(x, a, cu_seqlens=cu, max_seqlen=5)
    assert rel_err(y[:, 2:], loop(x[:, 2:], a)[0]) <= 1e-4
    with pytest.raises(CallError, match="max_seqlen"):
        layer(x, a, cu_seqlens=cu, max_seqlen=4)
    with pytest.raises(CallError, match="max_seqlen"):
        layer(x, a, cu_seqlens=cu, max_seqlen=0)


@pytest.mark.gpu
def test_gpu_max_seqlen_reads_nothing_on_the_host():
    """With max_seqlen, a packed call on CUDA makes no host sync once its shape has run."""
    layer = lrc.compile(ema2, backend="triton")
    x, a = torch.randn(1, 300, 64, device="cuda"), torch.randn(64, device="cuda")
    cu = torch.tensor([0, 100, 130, 300], device="cuda", dtype=torch.int32)
    want = torch.cat([loop(x[:, s:e].cpu(), a.cpu())[0]
                      for s, e in [(0, 100), (100, 130), (130, 300)]], 1)
    layer(x, a, cu_seqlens=cu, max_seqlen=170)  # tunes and builds
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = layer(x, a, cu_seqlens=cu, max_seqlen=170)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert rel_err(y, want) <= 1e-4


@pytest.mark.gpu
def test_gpu_inductor_training_and_cudagraph_decode():
    """Inductor on CUDA: a training step's gradients (the tape must survive Inductor's buffer
    reuse) and a decode loop under mode='reduce-overhead' (CUDA graphs)."""
    layer = lrc.compile(ema2, backend="triton")
    proj = torch.nn.Linear(64, 64, device="cuda")
    f = torch.compile(lambda x, a: torch.tanh(layer(proj(x).relu(), a)).sum(), fullgraph=True)
    for b, t in [(2, 128), (3, 100)]:
        x = torch.randn(b, t, 64, device="cuda", requires_grad=True)
        a = torch.randn(64, device="cuda", requires_grad=True)
        f(x, a).backward()
        x64 = x.detach().cpu().double().requires_grad_()
        a64 = a.detach().cpu().double().requires_grad_()
        w, bias = proj.weight.detach().cpu().double(), proj.bias.detach().cpu().double()
        torch.tanh(loop((x64 @ w.T + bias).relu(), a64)[0]).sum().backward()
        assert rel_err(x.grad, x64.grad) <= 1e-3 and rel_err(a.grad, a64.grad) <= 1e-3

    def decode(xs, a, h):
        return torch.stack([layer.step(xs[:, i], a, state=h, inplace=True)[0]
                            for i in range(xs.shape[1])], 1)

    g = torch.compile(decode, mode="reduce-overhead", fullgraph=True)
    xs, a = torch.randn(4, 8, 64, device="cuda"), torch.randn(64, device="cuda")
    for _ in range(3):
        h = torch.zeros(4, 64, device="cuda")
        ys = g(xs, a, h).clone()
    want_y, want_h = loop(xs.cpu(), a.cpu())
    assert rel_err(ys, want_y) <= 1e-4 and rel_err(h, want_h) <= 1e-4
