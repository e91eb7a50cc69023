"""The whole pipeline as one readable function, and `lrc.explain`."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..ir.graph import Graph
from ..ir.linearity import check_linear
from ..ir.verify import verify
from .cleanup import merge_duplicates
from .complex import lower_complex
from .derivatives import derive_backward
from .expand import expand_discretizations
from .lowering import choose_lowering
from .stability import log_space_decays, max_trick
from .structure import classify

Pass = Callable[[Graph], Graph]


# The passes in order. Structure and lowering are read before the running-max rescaling
# (which makes RWKV-4's update non-affine) and before complex numbers are split (a complex
# diagonal is a diagonal); the backward is derived from the real graph.
PIPELINE: tuple[Pass, ...] = (
    check_linear,            # refuse a state that enters non-affinely
    expand_discretizations,  # zoh/bilinear/... helpers -> ordinary expressions
    merge_duplicates,        # one node per distinct expression
    log_space_decays,        # decays kept as exp(log a)
    classify,                # the structure: diagonal, DPLR, time-invariant, ...
    choose_lowering,         # the lowerings that can run it (the forced one checked)
    max_trick,               # RWKV-4's running-max rescaling
    lower_complex,           # complex values -> real and imaginary parts
    derive_backward,         # the adjoint step, a linear recurrence in reverse time
)


def stages(lowering: str | None = None) -> list[tuple[str, Pass]]:
    """PIPELINE as (name, pass), the forced lowering bound into choose_lowering."""
    return [(p.__name__, (lambda g, p=p: p(g, lowering)) if p is choose_lowering else p)
            for p in PIPELINE]


@dataclass(frozen=True)
class Compiled:
    """What the pipeline made of a spec: the structure-annotated graph (complex numbers
    intact; the plan reads it) and the real graph the code generators take."""

    planned: Graph
    lowered: Graph


def run(g: Graph, lowering: str | None = None, check: bool = False,
        trace: list | None = None) -> Compiled:
    """Run every stage; verify after each when `check`; record (name, graph) into `trace`."""
    planned = None
    for name, fn in stages(lowering):
        g = fn(g)
        if check:
            verify(g)
        if trace is not None:
            trace.append((name, g))
        if name == "choose_lowering":
            planned = g
    return Compiled(planned, g)


def explain(spec_or_graph, lowering: str | None = None) -> str:
    """The graph after every pass, as text (also printed)."""
    g = getattr(spec_or_graph, "graph", spec_or_graph)
    trace: list = []
    run(g, lowering, check=True, trace=trace)
    parts = [f"== traced ==\n{g}"]
    for name, out in trace:
        extra = ""
        if name == "classify":
            from .structure import format_structure

            extra = "\n" + format_structure(out)
        elif name == "choose_lowering":
            lw = out.meta("lowering")
            extra = "\neligible: " + ", ".join(lw.eligible) + "".join(
                f"\nnot {k}: {v}" for k, v in lw.reasons)
        elif name == "derive_backward":
            extra = "\n-- backward step --\n" + str(out.meta("backward").graph)
        parts.append(f"== after {name} ==\n{out}{extra}")
    text = "\n\n".join(parts)
    print(text)
    return text
