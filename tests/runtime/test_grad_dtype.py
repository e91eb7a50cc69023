"""Gradients (torch autograd through the layer) and dtypes of the compiled layer."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc import Param, Seq, State
from tests.conftest import rel_err
from tests.runtime.test_call import compiled, diag, diag_inputs, diag_loop, rn, two, two_loop

f64 = torch.float64


def _tiny(*shape, dtype=f64):
    return torch.randn(*shape, dtype=dtype, requires_grad=True)


def test_gradcheck_every_seq_param_and_initial_state():
    layer = compiled(diag)
    b, t, d, n = 2, 4, 2, 3
    x, g, Bm, C = _tiny(b, t, d), _tiny(b, t, d), _tiny(b, t, n), _tiny(b, t, n)
    A = (-torch.rand(d, n, dtype=f64) - 0.2).requires_grad_()
    h0 = _tiny(b, d, n)

    def f(x, g, Bm, C, A, h0):
        y, hT = layer(x, g, Bm, C, A, initial_state=h0, return_final_state=True)
        return y, hT

    assert torch.autograd.gradcheck(f, (x, g, Bm, C, A, h0))
    rev = lambda *a: layer(*a[:5], initial_state=a[5], reverse=True)  # noqa: E731
    assert torch.autograd.gradcheck(rev, (x, g, Bm, C, A, h0))


def test_gradcheck_several_states_and_cu_seqlens():
    layer = compiled(two)
    x, w = _tiny(1, 6, 2) * 0.5, _tiny(2)
    num0, den0 = _tiny(2, 2), (torch.rand(2, 2, dtype=f64) + 1).requires_grad_()
    cu = torch.tensor([0, 2, 6])

    def f(x, w, num0, den0):
        ys, fin = layer(x, w, initial_state=(num0, den0), cu_seqlens=cu, return_final_state=True)
        return ys + fin

    assert torch.autograd.gradcheck(f, (x, w, num0, den0))


@lrc.recurrence
def lru(x: Seq("b t d"), lam: Param("d", complex=True), Bc: Param("d", complex=True),
        C: Param("d", complex=True), h: State("b d", complex=True)):
    h = lam * h + Bc * x
    return (C * h).real, h


def test_gradcheck_complex_params_and_state():
    layer = compiled(lru)
    x = _tiny(2, 4, 3)
    lam = (torch.rand(3, dtype=f64) * 0.5 * torch.exp(1j * torch.rand(3, dtype=f64) * 3)
           ).requires_grad_()
    Bc, C, h0 = _tiny(3, dtype=torch.complex128), _tiny(3, dtype=torch.complex128), \
        _tiny(2, 3, dtype=torch.complex128)
    f = lambda *a: layer(*a[:4], initial_state=a[4], return_final_state=True)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, lam, Bc, C, h0))


def test_gradients_match_autograd_through_the_loop():
    layer = compiled(diag)
    args = [a.requires_grad_() for a in diag_inputs()]
    h0 = rn(3, 5, 4).requires_grad_()
    w = rn(3, 37, 5)
    y = layer(*args, initial_state=h0)
    got = torch.autograd.grad((y * w).sum(), args + [h0])
    y2, _ = diag_loop(*args, h0)
    want = torch.autograd.grad((y2 * w).sum(), args + [h0])
    for i, (a, e) in enumerate(zip(got, want, strict=True)):
        assert rel_err(a, e) <= 1e-10, f"gradient {i}"


# ---- dtypes


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2),
                                       (torch.float16, 2e-3)])
def test_low_precision_inputs(dtype, tol):
    layer = compiled(diag)
    args = [a.to(dtype) for a in diag_inputs()]
    y, hT = layer(*args, return_final_state=True)
    assert y.dtype == dtype and hT.dtype == torch.float32
    want_y, want_h = diag_loop(*(a.double() for a in args), torch.zeros(3, 5, 4, dtype=f64))
    assert rel_err(y, want_y) <= tol and rel_err(hT, want_h) <= 1e-5
    # a step: output in the input dtype, state fp32, also from a low-precision state
    tok = [a[:, 0] if a.dim() == 3 else a for a in args]
    y1, h1 = layer.step(*tok, state=hT.to(dtype))
    assert y1.dtype == dtype and h1.dtype == torch.float32
    y = layer(*args)
    assert y.dtype == dtype


def test_float64_inputs_give_float64_states():
    y, hT = compiled(diag)(*diag_inputs(), return_final_state=True)
    assert y.dtype == f64 and hT.dtype == f64


def test_mixed_fp32_inputs_and_fp64_param_give_fp32_outputs_fp64_state():
    args = diag_inputs()
    args = [a.float() for a in args[:4]] + [args[4]]
    y, hT = compiled(diag)(*args, return_final_state=True)
    assert y.dtype == torch.float32 and hT.dtype == f64


@pytest.mark.parametrize("dtype,cdtype", [(torch.float32, torch.complex64),
                                          (f64, torch.complex128)])
def test_complex_params_given_as_complex_tensors(dtype, cdtype):
    layer = compiled(lru)
    x = rn(2, 37, 3).to(dtype)
    lam = (torch.rand(3) * 0.9 * torch.exp(1j * torch.rand(3) * 3)).to(cdtype)
    Bc, C = torch.randn(3, dtype=cdtype), torch.randn(3, dtype=cdtype)
    y, hT = layer(x, lam, Bc, C, return_final_state=True)
    assert y.dtype == dtype and hT.dtype == cdtype
    h, ys = torch.zeros(2, 3, dtype=torch.complex128), []
    for t in range(37):
        h = lam.to(torch.complex128) * h + Bc.to(torch.complex128) * x[:, t].double()
        ys.append((C.to(torch.complex128) * h).real)
    tol = 1e-10 if dtype == f64 else 1e-5
    assert rel_err(y, torch.stack(ys, 1)) <= tol and rel_err(hT, h) <= tol
    # a real tensor for a complex param is accepted (imaginary part zero)
    y_real_lam = layer(x, lam.real.contiguous(), Bc, C)
    assert y_real_lam.dtype == dtype


def test_several_states_dtypes():
    x, w = rn(2, 9, 5).half(), rn(5).half()
    (y0, y1), (num, den) = compiled(two)(x, w, return_final_state=True)
    assert y0.dtype == y1.dtype == torch.float16
    assert num.dtype == den.dtype == torch.float32
    (w0, _), (wn, _) = two_loop(x.double(), w.double(), torch.zeros(2, 5, dtype=f64),
                                torch.zeros(2, 5, dtype=f64))
    assert rel_err(y0, w0) <= 2e-3 and rel_err(num, wn) <= 1e-5
