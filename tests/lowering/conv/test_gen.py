"""conv/gen.py's autograd functions with real arguments: a real log-decay and real weights get
the real part of the complex gradient sum, quietly (no complex-to-real cast warning)."""
from __future__ import annotations

import warnings

import torch

import lrc
from lrc import Param, Seq, State, exp
from tests.conftest import rel_err


@lrc.recurrence
def real_ssm(u: Seq("b t d"), A: Param("d n"), B: Param("d n"), C: Param("d n"),
             h: State("b d n")):
    h = exp(A) * h + B * u
    return (C * h).sum("n"), h


def test_real_decay_convolution_gradients_are_real_and_quiet():
    torch.manual_seed(0)
    b, t, d, n = 2, 16, 3, 4
    args = [torch.randn(b, t, d), -torch.rand(d, n) - 0.1, torch.randn(d, n), torch.randn(d, n)]
    wide = [x.double().requires_grad_() for x in args]
    args = [x.requires_grad_() for x in args]
    layer = lrc.compile(real_ssm, lowering="conv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = layer(*args)
        y.square().sum().backward()
    ref = lrc.compile(real_ssm, backend="reference")(*wide)
    ref.square().sum().backward()
    assert rel_err(y, ref) <= 1e-4
    for x, w in zip(args, wide, strict=True):
        assert x.grad.dtype == torch.float32
        assert rel_err(x.grad, w.grad) <= 1e-3
