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


@pytest.mark.parametrize("name", ["gla", "h3"])
def test_call_op_outputs_own_their_memory(name):
    """lrc::call's outputs are contiguous and alias no input and no other output (a custom
    op's contract; they are no longer all copied, only those that would break it) and equal
    the layer's results."""
    entry = ZOO[name]
    layer = lrc.compile(entry.spec, backend="triton")
    args = entry.example(b=2, t=7, dtype=torch.float32)
    tensors = [args[p] for p in layer.graph.params]
    res = torch.ops.lrc.call(layer.op_key, tensors, [], False, None, None)
    ptrs = [x.untyped_storage().data_ptr() for x in res]
    assert len(set(ptrs)) == len(ptrs)
    assert not set(ptrs) & {t.untyped_storage().data_ptr() for t in tensors}
    assert all(x.is_contiguous() and x._base is None for x in res)
    outs, finals = layer.run(tuple(tensors), {})
    for a, b in zip(res, (*outs, *finals)):
        assert rel_err(a, b) == 0
