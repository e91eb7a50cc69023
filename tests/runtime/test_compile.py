"""torch.compile(fullgraph=True) traces a model that uses lrc without graph breaks, and its
outputs and gradients equal the eager layer's."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc.zoo import ZOO
from tests.conftest import rel_err


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_fullgraph_forward_and_backward(backend):
    entry = ZOO["rglru"]
    layer = lrc.compile(entry.spec, backend=backend)
    args = entry.example(b=2, t=11, dtype=torch.float32)
    proj = torch.nn.Linear(entry.sizes["d"], entry.sizes["d"])

    def model(x, gate_r, gate_i, Lambda):
        y = layer(proj(x), gate_r, gate_i, Lambda)
        return torch.tanh(y).sum()

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    leaves = [a.clone().requires_grad_(True) for a in args.values()]
    eager_leaves = [a.clone().requires_grad_(True) for a in args.values()]
    got = compiled(*leaves)
    want = model(*eager_leaves)
    assert rel_err(got, want) <= 1e-5
    got.backward()
    want.backward()
    for a, b in zip(leaves, eager_leaves):
        assert rel_err(a.grad, b.grad) <= 1e-4


def test_fullgraph_final_state():
    entry = ZOO["mamba1"]
    layer = lrc.compile(entry.spec, backend="triton")
    args = entry.example(b=1, t=9, dtype=torch.float32)
    state = entry.initial_state(b=1, dtype=torch.float32)

    def model(**kw):
        y, h = layer(**kw, initial_state=state, return_final_state=True)
        return y, h

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y, h = compiled(**args)
    y2, h2 = model(**args)
    assert rel_err(y, y2) <= 1e-5 and rel_err(h, h2) <= 1e-5
