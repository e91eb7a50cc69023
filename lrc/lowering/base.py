"""The protocol between the runtime and a lowering: a bound, checked `Call` goes in, and a
lowering's `Program` runs it (see lrc.lowering for the registry)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..ir.graph import Graph


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
