"""Expressions of Params alone as generated kernels (codegen/param_kernel): the value and every
gradient against the same expression evaluated op by op in float64 by PyTorch (`Tape`, the
reference interpreter's rules, and its autograd), and S4D's terms against plain PyTorch
formulas written here. Real and complex inputs, broadcast dims, phi1 at 0, float32 outputs.
Under Triton's interpreter here; the `gpu` test repeats them compiled at S4D's real size.
"""
from __future__ import annotations

import pytest
import sympy as sp
import torch
from sympy.codegen.cfunctions import expm1, log1p

from lrc.ir.functions import Tape, cabs, phi1, sigmoid, softplus
from lrc.lowering.conv.params import ParamKernel
from tests.conftest import rel_err

R = lambda n: sp.Symbol(n, real=True)  # noqa: E731
C = sp.Symbol  # complex symbols carry no assumption

a, b, d = R("a"), R("b"), R("d")
z, w = C("z"), C("w")

# (expression, {symbol name: (shape, complex)}); shapes of rank 3 (time axis, h, n)
CASES = [
    (sp.exp(d) * (-sp.exp(a) + sp.I * b), {"a": ((1, 7, 5), False), "b": ((1, 7, 5), False),
                                           "d": ((1, 7, 1), False)}),
    (z * w * sp.exp(d) * phi1(sp.exp(d) * (-sp.exp(a) + sp.I * b)),
     {"a": ((1, 7, 5), False), "b": ((1, 7, 5), False), "d": ((1, 7, 1), False),
      "z": ((1, 7, 5), True), "w": ((1, 1, 5), True)}),
    (sp.tanh(a) * softplus(b) + sigmoid(d) * log1p(sp.exp(-a**2)),
     {"a": ((1, 3, 4), False), "b": ((1, 1, 4), False), "d": ((1, 3, 1), False)}),
    (sp.Max(a, b) + sp.Abs(d) * expm1(a / 3) + a**5 - 1 / b**2,
     {"a": ((1, 4, 6), False), "b": ((1, 4, 6), False), "d": ((1, 1, 1), False)}),
    (sp.Piecewise((a * b, a > 0.3), (sp.cos(b) * sp.sin(a), True)) + cabs(a, b),
     {"a": ((1, 9, 2), False), "b": ((1, 9, 2), False)}),
    (sp.conjugate(z) * w + sp.re(z * w) + sp.Abs(w) + sp.exp(z) / (1 + sp.Abs(z)**2),
     {"z": ((1, 6, 3), True), "w": ((1, 6, 1), True)}),
    (phi1(a) + phi1(b * sp.I + a), {"a": ((1, 8, 1), False), "b": ((1, 8, 1), False)}),
]


def _inputs(spec: dict, dtype=torch.float64) -> list[torch.Tensor]:
    out = []
    for name in sorted(spec):
        shape, cplx = spec[name]
        x = torch.randn(shape, dtype=torch.complex128 if cplx else torch.float64)
        out.append(x.to(dtype.to_complex() if cplx else dtype))
    return out


def _reference(e: sp.Basic, xs: list[torch.Tensor], names) -> tuple:
    """Value and gradients (of sum(value * g), g given) by Tape and PyTorch's autograd."""
    ws = [x.detach().to(torch.complex128 if x.is_complex() else torch.float64)
          .requires_grad_(True) for x in xs]
    v = Tape(e)(dict(zip(names, ws, strict=True)))
    return v, ws


@pytest.mark.parametrize("case", range(len(CASES)))
def test_value_and_gradients_match_pytorch(case):
    e, spec = CASES[case]
    names = tuple(sorted(spec))
    xs = [x.requires_grad_(True) for x in _inputs(spec)]
    if case == len(CASES) - 1:  # phi1 at 0 and near it: the series branch, value and slope
        with torch.no_grad():
            xs[0][0, :4, 0] = torch.tensor([0.0, 1e-9, -3e-4, 2e-3], dtype=torch.float64)
            xs[1][0, :2, 0] = 0.0
    pk = ParamKernel(e, names, tuple(x.is_complex() for x in xs), 3)
    v = pk(xs, torch.float64)
    ref, ws = _reference(e, xs, names)
    ref = ref.expand(v.shape)
    assert v.dtype == ref.dtype and v.shape == ref.shape
    assert rel_err(v, ref) <= 1e-12
    g = torch.randn(v.shape, dtype=v.dtype)
    grads = torch.autograd.grad((v * g.conj()).real.sum(), xs)
    want = torch.autograd.grad((ref * g.conj()).real.sum(), ws)
    # near 0 PyTorch's expm1(z) / z loses digits in its slope (eps / |z|); ours is the series
    gtol = 1e-7 if case == len(CASES) - 1 else 1e-10
    for name, x, got, exp in zip(names, xs, grads, want, strict=True):
        assert got.shape == x.shape and got.dtype == x.dtype, name
        assert rel_err(got, exp) <= gtol, f"grad of {name}: {rel_err(got, exp):.2e}"


def test_phi1_slope_at_zero_is_one_half():
    x = torch.tensor([0.0, 1e-12, -1e-7, 5e-4, 0.1], dtype=torch.float64).reshape(1, 5)
    x.requires_grad_(True)
    v = ParamKernel(phi1(a), ("a",), (False,), 2)([x], torch.float64)
    (g,) = torch.autograd.grad(v.sum(), x)
    xd = x.detach()
    want_v = torch.where(xd == 0, torch.ones_like(xd), torch.expm1(xd) / xd)
    # d/dx (e^x - 1)/x = sum_k x^k (k + 1) / (k + 2)!: 1/2 + x/3 + x^2/8 + ...
    want_g = sum(xd**k * (k + 1) / torch.exp(torch.lgamma(torch.tensor(k + 3.0))).item()
                 for k in range(12))
    assert rel_err(v, want_v) <= 1e-14
    assert rel_err(g, want_g) <= 1e-10
    assert torch.isfinite(g).all()


def test_s4d_terms_against_plain_pytorch():
    """dt A and C B (exp(dt A) - 1) / A of S4D in float32 Params, float32 and float64 out."""
    h, n = 11, 6
    la = R("log_A_real")
    expr = sp.exp(R("log_dt")) * (-sp.exp(la) + sp.I * R("A_imag"))
    bbar = C("C") * C("B") * sp.exp(R("log_dt")) * phi1(expr)
    p = {"A_imag": torch.randn(1, h, n), "B": torch.randn(1, h, n, dtype=torch.complex64),
         "C": torch.randn(1, h, n, dtype=torch.complex64), "log_A_real": torch.randn(1, h, n),
         "log_dt": torch.randn(1, h, 1) - 3}
    names = tuple(sorted(p))
    xs = [p[k].requires_grad_(True) for k in names]
    ws = {k: v.detach().to(torch.complex128 if v.is_complex() else torch.float64)
          .requires_grad_(True) for k, v in p.items()}
    A = -torch.exp(ws["log_A_real"]) + 1j * ws["A_imag"]
    dtA = torch.exp(ws["log_dt"]) * A
    want = ws["C"] * ws["B"] * torch.expm1(dtA) / A
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        pk = ParamKernel(bbar, names, tuple(x.is_complex() for x in xs), 3)
        v = pk(xs, dtype)
        assert v.dtype == (torch.complex128 if dtype == torch.float64 else torch.complex64)
        assert rel_err(v, want) <= tol
    g = torch.randn(want.shape, dtype=torch.complex128)
    got = torch.autograd.grad((v * g.conj()).real.sum(), xs)
    exp = torch.autograd.grad((want * g.conj()).real.sum(), [ws[k] for k in names])
    for name, x, gx, ge in zip(names, xs, got, exp, strict=True):
        assert gx.dtype == x.dtype and gx.shape == x.shape
        assert rel_err(gx, ge) <= 1e-5, f"grad of {name}: {rel_err(gx, ge):.2e}"


def test_strided_and_bf16_inputs():
    base = torch.randn(1, 6, 10, dtype=torch.float64)
    x = base[:, :, ::2]                                   # strided view
    y = torch.randn(1, 1, 5).to(torch.bfloat16).requires_grad_(True)
    x.requires_grad_(True)
    e = sp.exp(a) * b + b**2
    v = ParamKernel(e, ("a", "b"), (False, False), 3)([x, y], torch.float64)
    yd = y.detach().double()
    assert rel_err(v, torch.exp(x.detach()) * yd + yd**2) <= 1e-14
    gx, gy = torch.autograd.grad(v.sum(), [x, y])
    assert gy.dtype == torch.bfloat16 and gy.shape == y.shape
    assert rel_err(gx, torch.exp(x.detach()) * yd) <= 1e-14
    assert rel_err(gy, (torch.exp(x.detach()) + 2 * yd).sum(1, keepdim=True)) <= 1e-2


def test_unsupported_term_is_refused():
    with pytest.raises(NotImplementedError):
        ParamKernel(sp.atan2(a, b), ("a", "b"), (False, False), 2)


@pytest.mark.gpu
def test_gpu_s4d_size():
    e, spec = CASES[1]
    spec = {k: ((1, 2048, 32 if s[2] > 1 else 1), c) for k, (s, c) in spec.items()}
    spec["w"] = ((1, 1, 32), True)
    names = tuple(sorted(spec))
    xs = [x.cuda().requires_grad_(True) for x in _inputs(spec)]
    pk = ParamKernel(e, names, tuple(x.is_complex() for x in xs), 3)
    for _ in range(2):  # the second call goes through the direct launch
        v = pk(xs, torch.float64)
        ref, ws = _reference(e, xs, names)
        assert rel_err(v, ref) <= 1e-12
        g = torch.randn(v.shape, dtype=v.dtype, device="cuda")
        grads = torch.autograd.grad((v * g.conj()).real.sum(), xs)
        want = torch.autograd.grad((ref * g.conj()).real.sum(), ws)
        for name, got, exp in zip(names, grads, want, strict=True):
            assert rel_err(got, exp) <= 1e-10, f"grad of {name}: {rel_err(got, exp):.2e}"


@pytest.mark.parametrize("use", ["both", "first"])
def test_expressions_together(use):
    """A tuple of expressions through one forward and one backward kernel (the convolution's
    log a and its readout weight, S4D's pair): each value and every input's gradient as for
    the expressions alone; an output whose gradient is not needed counts as zero."""
    e1 = sp.exp(d) * (-sp.exp(a) + sp.I * b)
    e2 = z * sp.exp(d) * phi1(e1) + a * b
    spec = {"a": ((1, 7, 5), False), "b": ((1, 7, 5), False), "d": ((1, 7, 1), False),
            "z": ((1, 7, 5), True)}
    names = tuple(sorted(spec))
    xs = [x.requires_grad_(True) for x in _inputs(spec)]
    pk = ParamKernel((e1, e2), names, tuple(x.is_complex() for x in xs), 3)
    v1, v2 = pk(xs, torch.float64)
    r1, ws = _reference(e1, xs, names)
    env = dict(zip(names, ws, strict=True))
    r2 = Tape(e2)(env)
    assert rel_err(v1, r1.expand(v1.shape)) <= 1e-12 and rel_err(v2, r2.expand(v2.shape)) <= 1e-12
    g1, g2 = (torch.randn(v.shape, dtype=v.dtype) for v in (v1, v2))
    loss = (v1 * g1.conj()).real.sum() + ((v2 * g2.conj()).real.sum() if use == "both" else 0)
    want = (r1 * g1.conj()).real.sum() + ((r2 * g2.conj()).real.sum() if use == "both" else 0)
    got = torch.autograd.grad(loss, xs, allow_unused=True)
    exp = torch.autograd.grad(want, ws, allow_unused=True)
    for name, _x, gg, ee in zip(names, xs, got, exp, strict=True):
        ee = torch.zeros_like(ws[names.index(name)]) if ee is None else ee
        assert rel_err(gg, ee) <= 1e-10, name
