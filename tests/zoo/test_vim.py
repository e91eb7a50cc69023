"""Vision Mamba's bidirectional scan against two plain loops, one over the flipped sequence."""
import torch

import lrc
from lrc.zoo import vim
from lrc.zoo.mamba1 import mamba1
from tests.conftest import rel_err
from tests.zoo.test_mamba1 import loop


def reference(fwd, bwd):
    """Vim's Algorithm 1: y = scan_f(x) + flip(scan_b(flip(x))), each a Mamba-1 scan."""
    (y_f,), _ = loop(fwd, None)
    flipped = {k: (v.flip(-1) if k in ("u", "dt", "B", "C") else v) for k, v in bwd.items()}
    (y_b,), _ = loop(flipped, None)
    return y_f + y_b.flip(-1)


def test_matches_flipped_loops():
    fwd, bwd = vim.example()
    assert torch.equal(fwd["u"], bwd["u"]) and not torch.equal(fwd["dt"], bwd["dt"])
    assert rel_err(vim.bidirectional(fwd, bwd, backend="reference"), reference(fwd, bwd)) <= 1e-10


def test_float32_and_given_layer():
    fwd, bwd = vim.example(t=23, dtype=torch.float32, d=3, n=5)
    layer = lrc.compile(mamba1, backend="reference")
    y = vim.bidirectional(fwd, bwd, layer)
    assert y.dtype == torch.float32
    wide = {k: v.double() for k, v in fwd.items()}, {k: v.double() for k, v in bwd.items()}
    assert rel_err(y, reference(*wide)) <= 1e-5


def test_each_direction_sees_its_side():
    """Changing the last token changes the forward scan only at the end, the backward scan
    everywhere (it starts there)."""
    fwd, bwd = vim.example(t=15)
    y = vim.bidirectional(fwd, bwd, backend="reference")
    fwd2 = dict(fwd, u=fwd["u"].clone())
    fwd2["u"][..., -1] += 1.0
    bwd2 = dict(bwd, u=fwd2["u"])
    only_fwd = vim.bidirectional(fwd2, dict(bwd, u=fwd["u"]), backend="reference")
    assert torch.equal(only_fwd[..., :-1], y[..., :-1])
    both = vim.bidirectional(fwd2, bwd2, backend="reference")
    assert (both[..., 0] - y[..., 0]).abs().max() > 0
