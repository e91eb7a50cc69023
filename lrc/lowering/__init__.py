"""The lowerings: one package each, behind one protocol (`base.Program`) and this registry.

A lowering is a function `build(compiled) -> Program` that raises `lrc.errors.Unsupported`,
naming why, when the spec does not fit it. The runtime builds the lowering the cost model
chooses for a call's shapes; only that automatic choice falls back to the scan (and the plan
says so): a lowering the user forces either builds or raises.

    scan      sequential and chunked associative scans in registers, the one-token loop for
              any other linear transition, and the decode step (every spec has it)
    chunked   tensor-core chunks for diagonal decays constant along some state dims
    conv      FFT convolution for time-invariant specs
    torch     the graph in vectorized torch ops, autograd for the backward: what runs on
              CPU tensors (any spec; no Triton)
    dplr      tensor-core chunks for rank-1 DPLR transitions (DeltaNet, Gated DeltaNet, KDA,
              RWKV-7), the UT / WY form of each chunk's product of transitions
"""
from __future__ import annotations

from collections.abc import Callable

from .. import config
from ..errors import Unsupported
from .base import Call, Program
from .chunked.program import Program as ChunkedProgram
from .conv.program import Program as ConvProgram
from .dplr.program import Program as DplrProgram
from .scan.program import ScanProgram
from .torch.program import Program as TorchProgram


def _scan(compiled) -> ScanProgram:
    return ScanProgram(compiled.lowered, config.get("prefer_loop"))


LOWERINGS: dict[str, Callable] = {
    "scan": _scan,
    "chunked": ChunkedProgram,
    "conv": ConvProgram,
    "torch": TorchProgram,
    "dplr": DplrProgram,
}


def build(name: str, compiled) -> Program:
    """The program of lowering `name` for a compiled spec (raises Unsupported: why not)."""
    if name not in LOWERINGS:
        raise ValueError(f"no lowering {name!r}; lowerings: {', '.join(LOWERINGS)}")
    return LOWERINGS[name](compiled)


def refuses(name: str, compiled) -> str:
    """Why lowering `name`'s own check of the spec's form refuses it ('' where it does not,
    or where the lowering checks only when built). dplr's form (which terms are k, beta, the
    decay and u; a != b refused) is cheap to match, so the plan can say so before a call."""
    if name != "dplr":
        return ""
    from .dplr.form import extract

    try:
        extract(compiled)
    except Unsupported as e:
        return str(e)
    return ""


def atomic_grads(name: str, program=None) -> bool:
    """Whether lowering `name`'s backward adds gradients across programs with atomics, so
    their rounding depends on the order the programs run in (not bitwise deterministic on a
    GPU). scan: where its program sums a gradient over a split tile dim; chunked: Param
    gradients always (once per program), and Seq gradients shared by several programs; conv:
    never. `program`: the scan's built program (None: unknown, assumed not)."""
    if name == "scan":
        return program is not None and program.atomic_grads
    return name == "chunked"  # dplr: per-value-block partial sums, added in a fixed order


__all__ = ["LOWERINGS", "Call", "Program", "Unsupported", "atomic_grads", "build",
           "refuses"]
