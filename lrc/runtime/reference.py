"""The reference backend: the float64 interpreter behind the compiled-layer calling convention.

Inputs are cast to float64 (complex128 where declared complex) with differentiable casts, so
torch autograd gives every gradient; results are cast back to the call's dtypes. It runs any
graph of the pipeline, also after a pass split complex arguments into real and imaginary parts.
"""
from __future__ import annotations

import torch

from ..ir import interpret
from ..ir.dims import Role
from ..ir.graph import Graph
from ..layout import batch_dim, from_canonical, to_canonical
from ..lowering.base import Call


def _wide(x: torch.Tensor, complex_: bool) -> torch.Tensor:
    return x.to(torch.complex128 if (complex_ or x.is_complex()) else torch.float64)


def _part(x: torch.Tensor, part: str) -> torch.Tensor:
    if part == "re":
        return x.real
    if part == "im":
        return x.imag if x.is_complex() else torch.zeros_like(x)
    return x


def _inputs(g: Graph, tensors: dict[str, torch.Tensor], roles, sizes, with_time: bool,
            device) -> dict[str, torch.Tensor]:
    """Canonical float64 values of the input nodes of `roles`, by node name."""
    wide: dict[str, torch.Tensor] = {}
    out = {}
    for node in g.inputs():
        if node.role not in roles:
            continue
        ann = node.annotation
        if node.arg not in wide:
            if node.arg in tensors:
                wide[node.arg] = to_canonical(g, _wide(tensors[node.arg], ann.complex), ann,
                                              sizes, with_time)
            else:  # a state given as None starts at zero
                dims = [d for d in ann.dims if d != g.time]
                wide[node.arg] = torch.zeros(
                    interpret.canonical_shape(g, dims, sizes),
                    dtype=torch.complex128 if ann.complex else torch.float64, device=device)
        out[node.name] = _part(wide[node.arg], node.part)
    return out


def _state_dtype(call: Call, complex_: bool) -> torch.dtype:
    if complex_:
        return torch.complex128 if call.state_dtype == torch.float64 else torch.complex64
    return call.state_dtype


def run(call: Call, step: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs and final states, in the user's layouts and the call's dtypes."""
    g, sizes = call.graph, call.sizes
    values = _inputs(g, call.tensors, (Role.SEQ, Role.PARAM), sizes, not step, call.device)
    b = batch_dim(g) if call.segments is not None else None
    state_sizes = dict(sizes, **({b: len(call.segments)} if b else {}))
    states = _inputs(g, call.states or {}, (Role.STATE,), state_sizes, False, call.device)
    if call.segments is None:
        outs, finals = interpret.run(g, values, states, sizes, 1 if step else call.T,
                                     call.reverse)
    else:
        outs, finals = _run_segments(call, values, states, b)
    out_t = [from_canonical(g, o, ax, sizes, not step).to(call.out_dtype)
             for o, ax in zip(outs, g.out_axes)]
    by_node = dict(zip(g.state_names, finals))
    fin_t = []
    for arg in g.state_args:
        parts = {g[s].part: by_node[s] for s in g.state_names if g[s].arg == arg}
        value = parts[""] if "" in parts else torch.complex(parts["re"], parts["im"])
        ann = g.annotation(arg)
        fin_t.append(from_canonical(g, value, ann.axes, state_sizes, False)
                     .to(_state_dtype(call, ann.complex)))
    if not step and call.T == 0:
        tie = _empty_tie(call)
        if tie is not None:
            out_t = [o + tie for o in out_t]
            fin_t = [f + tie for f in fin_t]
    return out_t, fin_t


def _empty_tie(call: Call) -> torch.Tensor | None:
    """An exact 0 that depends on every argument and initial state requiring a gradient, or
    None: added to the results of a call with no time steps, which the interpreter makes from
    nothing, so that they still have a grad_fn (and every gradient comes back as zeros, as the
    kernels' backend gives them). Built from empty slices, so an inf in a Param stays out."""
    xs = [x for x in (*call.tensors.values(), *(call.states or {}).values())
          if x.requires_grad]
    if not xs or not torch.is_grad_enabled():
        return None
    parts = [x.reshape(-1)[:0] for x in xs]
    return sum((p.real if p.is_complex() else p).sum().to(torch.float32) for p in parts)


def _run_segments(call: Call, values, states, b: str):
    """cu_seqlens: each packed sequence runs from its own initial state."""
    g, sizes = call.graph, call.sizes
    ax = 1 + g.dims.index(b)
    seq = {n.name for n in g.inputs(Role.SEQ)}
    outs_all: list[list[torch.Tensor]] = [[] for _ in g.outputs]
    finals_all: list[list[torch.Tensor]] = [[] for _ in g.state_names]
    for i, (start, end) in enumerate(call.segments):
        vals = {k: (v[start:end] if k in seq else v) for k, v in values.items()}
        st = {k: v.narrow(ax, i, 1) for k, v in states.items()}
        outs, finals = interpret.run(g, vals, st, sizes, end - start, call.reverse)
        for j, o in enumerate(outs):
            outs_all[j].append(o)
        for j, f in enumerate(finals):
            finals_all[j].append(f)
    return ([torch.cat(o, 0) for o in outs_all], [torch.cat(f, ax) for f in finals_all])


def call_graph(g: Graph, /, *args: torch.Tensor, initial_state=None, reverse: bool = False,
               cu_seqlens=None, step: bool = False, **kwargs: torch.Tensor):
    """Run any graph (a traced one or one a pass made) on user-layout tensors: (outs, finals)."""
    from .call import make_call

    call = make_call(g, args, kwargs, initial_state=initial_state, reverse=reverse,
                     cu_seqlens=cu_seqlens, step=step)
    return run(call, step=step)


def vjp_grads(call: Call, backward, dys: list[torch.Tensor], dfinals: list | None = None
              ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Gradients by the derived backward (`lrc.passes.derivatives.Backward`), run here in float64.

    `call` binds the forward graph's inputs (the graph the backward was derived from), `dys` are
    the outputs' cotangents and `dfinals` the final states' (None: zero), in user layouts.
    Returns ({argument: gradient}, [gradient of each initial state]), like torch autograd would.
    """
    g, bg, sizes = call.graph, backward.graph, call.sizes
    values = _inputs(g, call.tensors, (Role.SEQ, Role.PARAM), sizes, True, call.device)
    states = _inputs(g, call.states or {}, (Role.STATE,), sizes, False, call.device)
    traj: dict = {}
    interpret.run(g, values, states, sizes, call.T, call.reverse, record=traj)
    bvals = dict(values)
    for s, name in backward.forward_states:
        bvals[name] = traj[s]
    for (_o, name), dy in zip(backward.cotangents, dys):
        bvals[name] = to_canonical(bg, dy.to(torch.float64), bg[name].annotation, sizes, True)
    finals = dict(zip(g.state_args, dfinals or [None] * len(g.state_args)))
    adj0 = {}
    for s, name in backward.adjoints:
        node = g[s]
        d = finals.get(node.arg)
        if d is None:
            adj0[name] = torch.zeros_like(states[s])
        else:
            wide = to_canonical(g, _wide(d, node.annotation.complex), node.annotation, sizes,
                                False)
            adj0[name] = _part(wide, node.part)
    outs, adj = interpret.run(bg, bvals, adj0, sizes, call.T, not call.reverse)
    per_node: dict[str, torch.Tensor] = {}
    for (x, _name), o in zip(backward.seq_grads + backward.param_grads, outs):
        if g[x].role is Role.PARAM:
            o = o.sum(0, keepdim=True)
        per_node[x] = o
    grads = {}
    for arg in dict.fromkeys(g[x].arg for x in per_node):
        parts = {g[x].part: per_node[x] for x in per_node if g[x].arg == arg}
        value = parts[""] if "" in parts else torch.complex(parts["re"], parts["im"])
        ann = g.annotation(arg)
        grads[arg] = from_canonical(g, value, ann.axes, sizes, ann.role is Role.SEQ)
    by_state = {s: a for (s, _), a in zip(backward.adjoints, adj)}
    init = []
    for arg in g.state_args:
        parts = {g[s].part: by_state[s] for s in g.state_names if g[s].arg == arg}
        value = parts[""] if "" in parts else torch.complex(parts["re"], parts["im"])
        init.append(from_canonical(g, value, g.annotation(arg).axes, sizes, False))
    return grads, init
