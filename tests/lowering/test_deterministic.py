"""Deterministic mode: with config `deterministic` (or torch.use_deterministic_algorithms) no
launched kernel adds atomically, and the gradients still match the float64 reference; on the
GPU, repeated runs are bitwise equal."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc.kernels.launch import recording
from lrc.lowering.scan.configs import ScanConfig
from lrc.zoo import ZOO
from tests.conftest import rel_err


def _weights(y: torch.Tensor) -> torch.Tensor:
    """A fixed cotangent (not all ones: every output element weighs differently)."""
    return torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)


def _run(layer, args: dict) -> tuple[torch.Tensor, dict]:
    """Output and the gradient of every argument for the fixed cotangent."""
    a = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()}
    y = layer(**a)
    y = y[0] if isinstance(y, tuple) else y
    (y * _weights(y).to(device=y.device, dtype=y.dtype)).sum().backward()
    return y.detach(), {k: v.grad for k, v in a.items()}


def _launched(layer, args: dict, **knobs) -> tuple[list, torch.Tensor, dict]:
    """(kernel name, whether its source has an atomic add) of every launch, output, grads."""
    seen = []

    def spy(name, fn, *rest):
        seen.append((name, "atomic_add" in fn.src))
    with lrc.config.override(**knobs), recording(spy):
        y, g = _run(layer, args)
    return seen, y, g


CASES = [("mamba1", "scan"), ("s4", "scan"), ("mamba2", "scan"), ("mamba2", "chunked"),
         ("gla", "chunked")]


@pytest.mark.parametrize("name,lowering", CASES)
def test_no_atomics_and_right_gradients(name, lowering):
    e = ZOO[name]
    args = e.example(2, 21)
    want_y, want_g = _run(lrc.compile(e.spec, backend="reference"), args)
    layer = lrc.compile(e.spec, backend="triton", lowering=lowering)
    a32 = {k: v.to(torch.complex64 if v.is_complex() else torch.float32)
           for k, v in args.items()}
    # the usual backward adds atomically (else this test shows nothing)
    plain, _, _ = _launched(layer, a32)
    assert any(atomic for _, atomic in plain), plain
    seen, y, g = _launched(layer, a32, deterministic=True)
    assert [n for n, _ in seen if "backward" in n], seen
    assert not any(atomic for _, atomic in seen), seen
    assert rel_err(y, want_y) <= 1e-4
    for k in want_g:
        assert rel_err(g[k], want_g[k]) <= 1e-3, k


def test_unrolled_backward_fixed_order():
    """Mamba-1's backward with n unrolled (backward_n) has its own fixed-order variant."""
    e = ZOO["mamba1"]
    args = e.example(2, 40)
    want_y, want_g = _run(lrc.compile(e.spec, backend="reference"), args)
    layer = lrc.compile(e.spec, backend="triton")
    forced = ScanConfig(16, 2, 1, 1, unroll=True)
    seen, y, g = _launched(layer, {k: v.float() for k, v in args.items()},
                           deterministic=True, scan_config=forced)
    assert [n for n, _ in seen] == ["mamba1_kernel.forward_n", "mamba1_kernel.backward_n_det"]
    assert not any(atomic for _, atomic in seen)
    for k in want_g:
        assert rel_err(g[k], want_g[k]) <= 1e-3, k


def test_torch_switch_turns_it_on():
    """torch.use_deterministic_algorithms(True) alone selects the fixed-order kernels, and the
    plan says which mode runs."""
    e = ZOO["mamba1"]
    layer = lrc.compile(e.spec, backend="triton")
    args = {k: v.float() for k, v in e.example(1, 9).items()}
    assert "summed with atomics across programs" in str(layer.plan)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        seen, _, _ = _launched(layer, args)
        assert "in a fixed order (deterministic mode)" in str(layer.plan)
    finally:
        torch.use_deterministic_algorithms(was)
    assert [n for n, _ in seen][-1] == "mamba1_kernel.backward_det"
    assert not any(atomic for _, atomic in seen)


@pytest.mark.parametrize("name,lowering,kernel", [
    ("gla", "chunked", "gla.chunked_backward"), ("mamba1", None, "mamba1_kernel.backward")])
def test_both_modes_in_one_process(name, lowering, kernel):
    """The mode is part of the launch choice (tuning and replay keys): the same layer and
    shape switch back and forth, repeated calls replayed, each mode running its own backward
    and the gradients agreeing."""
    e = ZOO[name]
    layer = lrc.compile(e.spec, backend="triton", lowering=lowering)
    args = {k: v.float() for k, v in e.example(1, 17).items()}
    names = []
    grads = []
    modes = (False, True, False, True, True, False, False)
    for det in modes:
        seen, _, g = _launched(layer, args, deterministic=det)
        names.append(seen[-1][0])
        grads.append(g)
    assert names == [kernel + ("_det" if det else "") for det in modes]
    for g in grads[1:]:
        for k in grads[0]:
            assert rel_err(g[k], grads[0][k]) <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(ZOO))
def test_bitwise_repeatable_gpu(name):
    """Five runs with the mode on give bitwise-equal outputs and gradients; the time with and
    without the mode is printed (-s to see it), not asserted."""
    import triton.testing

    e = ZOO[name]
    torch.manual_seed(0)
    args = e.example(4, 2048, dtype=torch.float32, device="cuda")
    layer = lrc.compile(e.spec)
    with lrc.config.override(deterministic=True):
        runs = [_run(layer, args) for _ in range(5)]
    y0, g0 = runs[0]
    for y, g in runs[1:]:
        assert torch.equal(y, y0)
        for k in g0:
            assert torch.equal(g[k], g0[k]), k
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()}

    def step():
        y = layer(**leaves)
        y = y[0] if isinstance(y, tuple) else y
        y.sum().backward()
    times = {}
    for det in (False, True):
        with lrc.config.override(deterministic=det):
            step()  # tuned and compiled outside the timing
            times[det] = triton.testing.do_bench(step)
    print(f"{name}: forward+backward {times[False]:.3f} ms with atomics, {times[True]:.3f} ms "
          f"deterministic ({times[True] / times[False]:.2f}x)")
