"""The protocol between the runtime and a lowering: a bound, checked `Call` goes in, and a
lowering's `Program` runs it (see lrc.lowering for the registry)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..ir.dims import Role
from ..ir.graph import Graph
from ..layout import batch_dim


@dataclass
class Call:
    """Arguments bound to names and checked against the spec.

    tensors     the Seq/Param tensors by name, as the user passed them
    states      the initial states by state name (user layout), or None for zeros
    sizes       every dim's size; T the length (None for a single step)
    segments    (start, end) of each packed sequence when cu_seqlens is given
    out_dtype   the outputs' dtype (the Seq inputs' promoted dtype)
    state_dtype the states' real dtype (float32, or float64 when inputs are float64)
    """

    graph: Graph
    tensors: dict[str, torch.Tensor]
    states: dict[str, torch.Tensor] | None
    sizes: dict[str, int]
    T: int | None
    reverse: bool
    segments: list[tuple[int, int]] | None
    out_dtype: torch.dtype
    state_dtype: torch.dtype
    device: torch.device


class Program(Protocol):
    """What a lowering builds for one compiled spec.

    sources   each generated kernel's own source, by name ('forward', 'backward', ...)
    source    the whole generated module (helpers included), as it is imported
    run       outputs and final states of a whole-sequence call, differentiable; with
              finals=False the final states may be skipped ([] then)
    """

    sources: dict[str, str]
    source: str

    def run(self, call: Call, finals: bool = True
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]: ...


def per_sequence(g: Graph, call: Call, run_one: Callable) -> tuple[list, list]:
    """Packed sequences (`call.segments`) run one at a time, for a lowering whose kernels do
    not take cu_seqlens: `run_one(tensors, states, T)` gets each sequence's slice of the Seq
    inputs and its row of the initial states; the outputs are concatenated along time, the
    final states along the batch dim, as one packed call returns them."""
    b = batch_dim(g)
    seq = {n.arg for n in g.inputs(Role.SEQ)}
    outs, fins = [], []
    for i, (start, end) in enumerate(call.segments):
        tensors = {k: (x.narrow(g.annotation(k).axes.index((g.time,)), start, end - start)
                       if k in seq else x) for k, x in call.tensors.items()}
        states = None if call.states is None else {
            k: x.narrow(g.annotation(k).axes.index((b,)), i, 1)
            for k, x in call.states.items()}
        o, f = run_one(tensors, states, end - start)
        outs.append(o)
        fins.append(list(f))
    cat_out = [torch.cat([o[j] for o in outs], axes.index((g.time,)))
               for j, axes in enumerate(g.out_axes)]
    cat_fin = [torch.cat([f[j] for f in fins], g.annotation(a).axes.index((b,)))
               for j, a in enumerate(g.state_args)]
    return cat_out, cat_fin
