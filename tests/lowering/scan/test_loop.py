"""The one-token loop kernels (transitions a scan cannot take: DPLR, shift registers, a running
max) against the float64 reference: forward, every gradient, initial and final states, decode."""
from __future__ import annotations

import pytest
import torch

from tests.lowering.scan.test_scan import FWD, check

LOOP_ZOO = ["s4", "h3", "hyena", "rwkv4"]


@pytest.mark.parametrize("name", LOOP_ZOO)
def test_forward_and_gradients(name):
    check(name, b=2, t=13)


def test_reverse():
    check("s4", b=1, t=11, reverse=True)


@pytest.mark.parametrize("name", ["s4", "rwkv4"])
def test_decode_matches_forward(name):
    import lrc
    from lrc.zoo import ZOO
    from tests.conftest import rel_err
    from tests.lowering.scan.test_scan import as_tuple, layers

    entry = ZOO[name]
    kern, _ = layers(name)
    args = entry.example(b=2, t=9, dtype=torch.float32)
    time = entry.spec.graph.time
    seq = {n.arg: [a for a in n.annotation.axes].index((time,))
           for n in entry.spec.graph.inputs(lrc.ir.Role.SEQ)}
    y_all = as_tuple(kern(**args))[0]
    oax = list(entry.spec.graph.out_axes[0]).index((time,))
    state = None
    for i in range(9):
        tok = {k: (v.select(seq[k], i) if k in seq else v) for k, v in args.items()}
        y_i, state = kern.step(**tok, state=state)
        assert rel_err(as_tuple(y_i)[0], y_all.select(oax, i)) <= FWD


@pytest.mark.gpu
@pytest.mark.parametrize("name", LOOP_ZOO)
def test_gpu_forward_and_gradients(name):
    check(name, b=2, t=1031, device="cuda")
