"""The printer's helper functions (`HELPERS`, defined in every generated module), run under
Triton's interpreter against float64 PyTorch, at the values where their textbook forms fail."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrc.kernels.abi import module_source
from lrc.kernels.module import interpreted, load

KERNEL = '''
@triton.jit
def apply(x_ptr, y_ptr, N: tl.constexpr, WHICH: tl.constexpr):
    o = tl.arange(0, N)
    x = tl.load(x_ptr + o)
    if WHICH == 0:
        y = _expm1(x)
    elif WHICH == 1:
        y = _log1p(x)
    elif WHICH == 2:
        y = _sigmoid(x)
    elif WHICH == 3:
        y = _softplus(x)
    else:
        y = _phi1(x)
    tl.store(y_ptr + o, y)
'''
INF = math.inf
X = [0.0, 1e-9, -1e-9, 1e-4, -1e-4, 0.3, -0.3, 0.99, -0.99, 1.0, -1.0, 5.0, -5.0, 30.0, -30.0,
     -90.0, -200.0, 200.0, INF, -INF]


def _phi1(x: torch.Tensor) -> torch.Tensor:
    """(exp(x) - 1) / x, 1 at 0 and inf at inf (its limits)."""
    safe = torch.where((x == 0) | (x == INF), torch.ones_like(x), x)
    return torch.where(x == 0, 1.0, torch.where(x == INF, INF, torch.expm1(safe) / safe))


EXPECT = {0: torch.expm1, 1: torch.log1p, 2: torch.sigmoid,
          3: torch.nn.functional.softplus, 4: _phi1}


def run(which: int, xs: list[float]) -> torch.Tensor:
    mod = load(module_source([KERNEL], "helper test"), interpret=True)
    n = 1 << max(0, (len(xs) - 1).bit_length())
    x = torch.zeros(n, dtype=torch.float32)
    x[:len(xs)] = torch.tensor(xs)
    y = torch.empty_like(x)
    with interpreted(), np.errstate(divide="raise", invalid="raise"):  # no 0/0 in any lane
        mod.apply[(1,)](x, y, N=n, WHICH=which)
    return y[:len(xs)]


@pytest.mark.parametrize("which", sorted(EXPECT))
def test_helpers_match_float64_torch_quietly(which):
    """Each helper agrees with torch in float64 to float32 rounding (exactly at 0 and the
    infinities, where torch's float32 ops are exact), and computes no 0/0, inf/inf or overflow
    in the lanes it does not select (`run` makes NumPy raise on those)."""
    xs = [x for x in X if not (which == 1 and x <= -1)]   # log1p: -inf at -1, NaN below
    got = run(which, xs).double()
    want = EXPECT[which](torch.tensor(xs, dtype=torch.float64))
    # float32 limits: expm1 and phi1 overflow to inf above ~88.7 in float32
    want32 = want.float().double()
    finite = want32.isfinite()
    assert torch.equal(got[~finite], want32[~finite]), (got, want32)
    rel = ((got - want32).abs() / want32.abs().clamp_min(1e-30))[finite]
    assert rel.max() <= 1e-5, list(zip(xs, got.tolist(), want.tolist(), strict=True))


def test_expm1_of_a_large_negative_argument_is_minus_one():
    """exp(x) underflows to 0 below about -87 in float32 (GPUs flush earlier): the helper
    gives -1 there, not the -0.0 that Kahan's formula gives with log(0) = -inf."""
    assert run(0, [-90.0, -200.0, -INF]).tolist() == [-1.0, -1.0, -1.0]
