"""The reference backend: the float64 interpreter behind the compiled-layer calling convention.

Inputs are cast to float64 (complex128 where declared complex) with differentiable casts, so
torch autograd gives every gradient; results are cast back to the call's dtypes.
"""
from __future__ import annotations

import torch

from ..ir import interpret
from ..ir.dims import Role
from .bind import batch_dim, from_canonical, to_canonical
from .call import Call


def _wide(x: torch.Tensor, complex_: bool) -> torch.Tensor:
    return x.to(torch.complex128 if (complex_ or x.is_complex()) else torch.float64)


def _state_dtype(call: Call, complex_: bool) -> torch.dtype:
    if complex_:
        return torch.complex128 if call.state_dtype == torch.float64 else torch.complex64
    return call.state_dtype


def run(call: Call, step: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs and final states, in the user's layouts and the call's dtypes."""
    g, sizes = call.graph, call.sizes
    values = {k: to_canonical(g, _wide(x, g[k].complex), g[k].annotation, sizes, not step)
              for k, x in call.tensors.items()}
    b = batch_dim(g) if call.segments is not None else None
    nseg = len(call.segments) if call.segments is not None else 1
    state_sizes = dict(sizes, **({b: nseg} if b else {}))
    if call.states is not None:
        states = {k: to_canonical(g, _wide(x, g[k].complex), g[k].annotation, state_sizes,
                                  False) for k, x in call.states.items()}
    else:
        states = {s.name: torch.zeros(interpret.canonical_shape(g, s.dims, state_sizes),
                                      dtype=torch.complex128 if s.complex else torch.float64,
                                      device=call.device)
                  for s in g.inputs(Role.STATE)}
    T = 1 if step else call.T
    if call.segments is None:
        outs, finals = interpret.run(g, values, states, sizes, T, call.reverse)
    else:
        outs, finals = _run_segments(call, values, states, b)
    out_t = [from_canonical(g, o, ax, sizes, not step).to(call.out_dtype)
             for o, ax in zip(outs, g.out_axes)]
    fin_t = [from_canonical(g, f, g[s].annotation.axes, state_sizes, False)
             .to(_state_dtype(call, g[s].complex)) for f, s in zip(finals, g.state_names)]
    return out_t, fin_t


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
