"""The compiled layer as PyTorch custom ops, so `torch.compile(fullgraph=True)` traces a model
using lrc without graph breaks: dynamo sees one opaque `lrc::call` (and `lrc::call_backward`
for its gradient), with fake implementations that give the outputs' shapes and dtypes.

The backward op recomputes the forward under autograd and differentiates it (the eager path's
generated backward kernels, reached through torch.autograd.grad): one extra forward per
training step under torch.compile.
"""
from __future__ import annotations

import math
import weakref
from typing import Any

import torch

from .call import make_call

_LAYERS: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()


def register(layer) -> str:
    """The id `lrc::call` knows the layer by (registered when the layer is made, outside any
    torch.compile trace)."""
    key = f"layer{id(layer)}"  # a string: torch.compile keeps it a constant
    _LAYERS[key] = layer
    return key


def _split(layer, states: list[torch.Tensor]):
    return tuple(states) if states else None


@torch.library.custom_op("lrc::call", mutates_args=())
def call_op(layer_id: str, tensors: list[torch.Tensor], states: list[torch.Tensor],
            reverse: bool) -> list[torch.Tensor]:
    """Outputs then final states of the layer `layer_id` (eager implementation)."""
    layer = _LAYERS[layer_id]
    with torch.no_grad():
        outs, finals = layer.run(tuple(tensors), {}, _split(layer, states), reverse)
    # contiguous, as the fake implementation promises, and aliasing no input and no other
    # output (a custom op's outputs may not): copied only where that does not hold already
    seen = {t.untyped_storage().data_ptr() for t in (*tensors, *states)}
    res = []
    for x in (*outs, *finals):
        y = x.contiguous()
        ptr = y.untyped_storage().data_ptr()
        if y._base is not None or ptr in seen:
            y = y.clone()
            ptr = y.untyped_storage().data_ptr()
        seen.add(ptr)
        res.append(y)
    return res


@call_op.register_fake
def _call_fake(layer_id, tensors, states, reverse):
    layer = _LAYERS[layer_id]
    g = layer.graph
    call = make_call(g, tuple(tensors), {}, initial_state=_split(layer, states), reverse=reverse)
    like = tensors[0]
    out = []
    for axes in g.out_axes:
        shape = [call.T if a == (g.time,) else math.prod(call.sizes[d] for d in a) for a in axes]
        out.append(like.new_empty(shape, dtype=call.out_dtype))
    for arg in g.state_args:
        ann = g.annotation(arg)
        shape = [math.prod(call.sizes[d] for d in a) for a in ann.axes]
        dtype = call.state_dtype
        if ann.complex:
            dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        out.append(like.new_empty(shape, dtype=dtype))
    return out


@torch.library.custom_op("lrc::call_backward", mutates_args=())
def call_backward_op(layer_id: str, tensors: list[torch.Tensor], states: list[torch.Tensor],
                     grads: list[torch.Tensor], reverse: bool) -> list[torch.Tensor]:
    """Gradients of every input and initial state (zeros where none flows)."""
    layer = _LAYERS[layer_id]
    leaves = [x.detach().requires_grad_(x.is_floating_point() or x.is_complex())
              for x in (*tensors, *states)]
    n = len(tensors)
    with _autograd_on(), torch.enable_grad():
        outs, finals = layer.run(tuple(leaves[:n]), {}, _split(layer, leaves[n:]), reverse)
        results = [r for r in (*outs, *finals)]
        pairs = [(r, gr) for r, gr in zip(results, grads) if r.requires_grad]
        got = torch.autograd.grad([r for r, _ in pairs], leaves,
                                  [gr.to(r.dtype) for r, gr in pairs], allow_unused=True) \
            if pairs else [None] * len(leaves)
    # laid out like the inputs, as the fake implementation promises
    return [torch.zeros_like(x) if gx is None else torch.empty_like(x).copy_(gx)
            for x, gx in zip(leaves, got)]


def _autograd_on():
    """Autograd back on inside an op's implementation (PyTorch runs it below autograd): the
    backward op differentiates the eager forward."""
    inc = torch._C._dispatch_tls_local_include_set()
    exc = torch._C._dispatch_tls_local_exclude_set()
    for key in (torch._C.DispatchKey.AutogradCPU, torch._C.DispatchKey.AutogradCUDA,
                torch._C.DispatchKey.AutogradOther, torch._C.DispatchKey.ADInplaceOrView):
        exc = exc.remove(key)
    return torch._C._ForceDispatchKeyGuard(inc, exc)


@call_backward_op.register_fake
def _call_backward_fake(layer_id, tensors, states, grads, reverse):
    return [torch.empty_like(x) for x in (*tensors, *states)]


def _setup(ctx, inputs, output):
    layer_id, tensors, states, reverse = inputs
    ctx.layer_id, ctx.reverse, ctx.n = layer_id, reverse, len(tensors)
    ctx.save_for_backward(*tensors, *states)


def _backward(ctx, grads):
    saved = ctx.saved_tensors
    tensors, states = list(saved[:ctx.n]), list(saved[ctx.n:])
    grads = [torch.zeros_like(o) if gr is None else gr for o, gr in zip(grads, grads)]
    got = torch.ops.lrc.call_backward(ctx.layer_id, tensors, states, list(grads), ctx.reverse)
    return None, got[:ctx.n], got[ctx.n:], None


call_op.register_autograd(_backward, setup_context=_setup)


def compiled_call(layer, args: tuple, kwargs: dict, initial_state: Any, reverse: bool):
    """The layer's call through `lrc::call` (what torch.compile traces)."""
    g = layer.graph
    tensors = list(args) + [kwargs[p] for p in g.params[len(args):]]
    states = [] if initial_state is None else list(
        initial_state if isinstance(initial_state, (tuple, list)) else (initial_state,))
    res = torch.ops.lrc.call(layer.op_id, tensors, states, reverse)
    n_out = len(g.outputs)
    return list(res[:n_out]), list(res[n_out:])


__all__ = ["call_op", "compiled_call", "register"]
