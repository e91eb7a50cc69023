"""float64 calls are computed in float64 or refused, never rounded to float32 silently: with
backend='auto' a call with a float64 (complex128) argument or state runs on the float64
reference backend, so torch.autograd.gradcheck passes on every zoo spec; with
backend='triton' it raises CallError naming the argument. The plan says which."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc.errors import CallError
from lrc.zoo import ZOO
from tests.conftest import rel_err
from tests.runtime.test_step_params import B, D, N, one_step, s6

T = 3


def _tiny(name: str) -> dict[str, int]:
    """Every dim of a zoo spec at size 2 (Hyena's filter length at T)."""
    return {d: (T if d == "l" else 2) for d in ZOO[name].sizes}


def _leaves(x):
    return x.detach().clone().requires_grad_(x.is_floating_point() or x.is_complex())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_gradcheck_every_zoo_spec_with_backend_auto(name):
    e = ZOO[name]
    layer = lrc.compile(e.spec)
    assert "float64" in str(layer.plan)
    dims = _tiny(name)
    args = {k: _leaves(v) for k, v in e.example(b=1, t=T, dtype=torch.float64, **dims).items()}
    state = e.initial_state(b=1, dtype=torch.float64, **dims)
    states = tuple(_leaves(s) for s in (state if isinstance(state, tuple) else (state,)))
    names = list(args)

    def f(*xs):
        y, h = layer(**dict(zip(names, xs[:len(names)], strict=True)),
                     initial_state=xs[len(names):],
                     return_final_state=True)
        return (*(y if isinstance(y, tuple) else (y,)), *(h if isinstance(h, tuple) else (h,)))

    outs = f(*args.values(), *states)
    assert all(o.dtype in (torch.float64, torch.complex128) for o in outs)
    assert torch.autograd.gradcheck(f, (*args.values(), *states))


def test_auto_float64_matches_the_reference_exactly_and_steps():
    """A float64 call of an auto layer whose kernels exist equals the reference backend's (the
    same computation), where float32 kernels would differ by ~1e-7; step too."""
    auto, ref = lrc.compile(s6), lrc.compile(s6, backend="reference")
    assert auto.backend == "triton"
    x, g = torch.randn(B, 5, D, dtype=torch.float64), torch.randn(B, 5, D, dtype=torch.float64)
    Bm, C = torch.randn(B, 5, N, dtype=torch.float64), torch.randn(B, 5, N, dtype=torch.float64)
    A_log = torch.randn(D, N, dtype=torch.float64) * 0.5
    y = auto(x, g, Bm, C, A_log)
    assert y.dtype == torch.float64
    assert torch.equal(y, ref(x, g, Bm, C, A_log))
    h = torch.randn(B, D, N, dtype=torch.float64)
    state = h.clone()
    yt, new = auto.step(x[:, 0], g[:, 0], Bm[:, 0], C[:, 0], A_log, state=state, inplace=True)
    want_y, want_h = one_step(x[:, 0], g[:, 0], Bm[:, 0], C[:, 0], A_log, h)
    assert new is state and rel_err(yt, want_y) <= 1e-12 and rel_err(state, want_h) <= 1e-12
    # a float64 state alone with float32 arguments: the reference too
    h32 = [v.float() for v in (x[:, 0], g[:, 0], Bm[:, 0], C[:, 0], A_log)]
    yt, new = auto.step(*h32, state=h.clone())
    want_y, want_h = one_step(*(v.double() for v in h32), h)
    assert new.dtype == torch.float64 and rel_err(new, want_h) <= 1e-12
    # float32 calls still run the kernels
    y32 = auto(*(v.float() for v in (x, g, Bm, C, A_log)))
    assert y32.dtype == torch.float32 and 0 < rel_err(y32, y) <= 1e-5


def test_triton_refuses_float64_naming_the_argument():
    layer = lrc.compile(s6, backend="triton")
    assert "refused" in str(layer.plan)
    x, g = torch.randn(B, 5, D), torch.randn(B, 5, D)
    Bm, C = torch.randn(B, 5, N), torch.randn(B, 5, N)
    A_log = torch.randn(D, N)
    with pytest.raises(CallError, match="argument 'A_log' is torch.float64.*float32.*'auto'"):
        layer(x, g, Bm, C, A_log.double())
    with pytest.raises(CallError, match="argument 'C' is torch.float64"):
        layer(x, g, Bm, C=C.double(), A_log=A_log)
    with pytest.raises(CallError, match="initial_state for state 'h' is torch.float64"):
        layer(x, g, Bm, C, A_log, initial_state=torch.zeros(B, D, N, dtype=torch.float64))
    with pytest.raises(CallError, match="argument 'x' is torch.float64"):
        layer.step(x[:, 0].double(), g[:, 0], Bm[:, 0], C[:, 0], A_log)
    with pytest.raises(CallError, match="state= for state 'h' is torch.float64"):
        layer.step(x[:, 0], g[:, 0], Bm[:, 0], C[:, 0], A_log,
                   state=torch.zeros(B, D, N, dtype=torch.float64), inplace=True)
    assert layer(x, g, Bm, C, A_log).dtype == torch.float32  # float32 still runs


def test_triton_refuses_complex128():
    e = ZOO["lru"]
    layer = lrc.compile(e.spec, backend="triton")
    args = e.example(b=1, t=4, dtype=torch.float32)
    args["B"] = args["B"].to(torch.complex128)
    with pytest.raises(CallError, match="argument 'B' is torch.complex128"):
        layer(**args)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba1", "mamba2", "s4d_zoh"])
def test_gpu_gradcheck_on_cuda_tensors(name):
    """float64 CUDA tensors with backend='auto': the reference backend runs on the GPU and
    gradcheck passes; backend='triton' refuses them."""
    e = ZOO[name]
    dims = _tiny(name)
    args = {k: _leaves(v) for k, v in
            e.example(b=1, t=T, dtype=torch.float64, device="cuda", **dims).items()}
    names = list(args)
    layer = lrc.compile(e.spec)

    def f(*xs):
        return layer(**dict(zip(names, xs, strict=True)))

    y = f(*args.values())
    assert y.is_cuda and y.dtype == torch.float64
    assert torch.autograd.gradcheck(f, tuple(args.values()))
    with pytest.raises(CallError, match="is torch.float64"):
        lrc.compile(e.spec, backend="triton")(**args)
