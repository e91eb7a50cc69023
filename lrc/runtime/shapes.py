"""Output shapes and dtypes of a call from the annotations alone: what the custom ops' fake
(and meta) implementations return. Sizes stay whatever the shapes hold (symbolic under
torch.compile's dynamic shapes): nothing is hashed, compared or read into a Python int."""
from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import CallError
from ..ir.dims import Role
from ..ir.graph import Graph
from ..layout import axes_of, batch_dim

Spec = list[tuple[list[Any], torch.dtype]]


def _sizes(g: Graph, named: list[tuple[str, torch.Tensor, bool]]) -> dict[str, Any]:
    """Every dim's size from (argument, tensor, has time) triples; grouped axes divided by the
    sizes known from other arguments."""
    sizes: dict[str, Any] = {}
    groups = []
    for name, x, with_time in named:
        axes = axes_of(g.annotation(name), g.time, with_time)
        if x.dim() != len(axes):
            raise CallError(f"argument {name!r} ({g.annotation(name)!r}): expected "
                            f"{len(axes)} dims, got shape {tuple(x.shape)}")
        for axis, n in zip(axes, x.shape, strict=False):
            if axis == (g.time,):
                continue
            if len(axis) == 1:
                sizes.setdefault(axis[0], n)
            else:
                groups.append((axis, n))
    for _ in range(2):
        for new, old in g.aliases:
            if new in sizes:
                sizes.setdefault(old, sizes[new])
            if old in sizes:
                sizes.setdefault(new, sizes[old])
        for axis, n in groups:
            unknown = [d for d in axis if d not in sizes]
            if len(unknown) == 1:
                sizes[unknown[0]] = n // math.prod(sizes[d] for d in axis if d in sizes)
    missing = [d for d in g.dims if d not in sizes]
    if missing:
        raise CallError(f"cannot tell the size of dim {missing[0]!r} from the arguments "
                        "(pass initial_state, or name it in a Seq/Param annotation)")
    return sizes


def _dtypes(g: Graph, tensors, states) -> tuple[torch.dtype, torch.dtype]:
    """(out dtype, state dtype) by the rules of runtime.call.make_call."""
    seq = [x.dtype for p, x in zip(g.params, tensors, strict=False)
           if g.annotation(p).role is Role.SEQ]
    out = seq[0]
    for d in seq[1:]:
        out = torch.promote_types(out, d)
    out = {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(out, out)
    wide = any(x.dtype in (torch.float64, torch.complex128) for x in (*tensors, *states))
    return out, torch.float64 if wide else torch.float32


def _state_specs(g: Graph, sizes: dict[str, Any], state_dtype: torch.dtype) -> Spec:
    out = []
    for arg in g.state_args:
        ann = g.annotation(arg)
        dtype = state_dtype
        if ann.complex:
            dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        out.append(([math.prod(sizes[d] for d in a) for a in ann.axes], dtype))
    return out


def out_specs(g: Graph, tensors: list, states: list, n_seqs: Any = None) -> Spec:
    """(shape, dtype) of every output then every final state of a whole-sequence call;
    `n_seqs`: the number of packed sequences (cu_seqlens), the states' batch size."""
    named = [(p, x, True) for p, x in zip(g.params, tensors, strict=False)]
    if n_seqs is None:
        named += [(s, x, False) for s, x in zip(g.state_args, states, strict=False)]
    sizes = _sizes(g, named)
    T = next(x.shape[g.annotation(p).axes.index((g.time,))]
             for p, x in zip(g.params, tensors, strict=False)
             if g.annotation(p).role is Role.SEQ)
    out_dtype, state_dtype = _dtypes(g, tensors, states)
    outs = [([T if a == (g.time,) else math.prod(sizes[d] for d in a) for a in axes], out_dtype)
            for axes in g.out_axes]
    if n_seqs is not None:
        sizes = dict(sizes, **{batch_dim(g): n_seqs})
    return outs + _state_specs(g, sizes, state_dtype)


def step_specs(g: Graph, tensors: list, states: list) -> Spec:
    """(shape, dtype) of every output then every new state of one decode step."""
    named = [(p, x, False) for p, x in zip(g.params, tensors, strict=False)]
    named += [(s, x, False) for s, x in zip(g.state_args, states, strict=False)]
    sizes = _sizes(g, named)
    out_dtype, state_dtype = _dtypes(g, tensors, states)
    outs = [([math.prod(sizes[d] for d in a) for a in axes if a != (g.time,)], out_dtype)
            for axes in g.out_axes]
    return outs + _state_specs(g, sizes, state_dtype)
