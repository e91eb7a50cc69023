"""`layer.plan`: the structure found, the lowerings that can run it, the one chosen, and why."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph
from ..kernels.launch import deterministic
from ..log import logger
from ..passes.lowering import Lowering, format_choice
from ..passes.structure import format_structure


@dataclass
class Plan:
    """What the pipeline decided for one spec; `choose` picks the lowering for a call's shapes."""

    graph: Graph                    # the structure-annotated graph (user-level: complex kept)
    shapes: tuple | None = field(default=None)  # (sizes, T, itemsize) of the last call
    note: str = ""                  # what runs, when it is not the chosen lowering

    @property
    def lowering(self) -> Lowering:
        return self.graph.meta("lowering")

    chosen: dict = field(default_factory=dict, repr=False)  # shapes -> lowering, per call

    def choose(self, sizes: dict[str, int], T: int, itemsize: int) -> str:
        """The lowering for these shapes (remembered for printing; the cost model runs once
        per shape, not on every call)."""
        key = (tuple(sizes.items()), T, itemsize)
        if key not in self.chosen:
            self.chosen[key] = self.lowering.choose(self.graph, sizes, T, itemsize)[0]
            logger.info("plan %s: %s at sizes %s, T=%d, %d-byte elements", self.graph.name,
                        self.chosen[key], sizes, T, itemsize)
        self.shapes = (sizes, T, itemsize)
        return self.chosen[key]

    def __str__(self) -> str:
        g, lw = self.graph, self.lowering
        lines = [f"plan for {g.name}:"]
        lines += ["  " + ln for ln in format_structure(g).splitlines()]
        lines.append("  lowerings:")
        for name in ("scan", "chunked", "conv"):
            if name in lw.eligible:
                lines.append(f"    {name}: eligible")
            else:
                lines.append(f"    {name}: no, {lw.why_not(name)}")
        lines.append("    step (decode): the recurrence, one token")
        lines.append("  gradient sums across programs: " + (
            "fixed order (deterministic mode)" if deterministic() else
            "atomic adds (deterministic mode: torch.use_deterministic_algorithms(True) "
            "or LRC_DETERMINISTIC=1)"))
        if self.note:
            lines.append(f"  note: {self.note}")
        if self.shapes is not None:
            sizes, T, itemsize = self.shapes
            lines += ["  " + ln for ln in format_choice(g, sizes, T, itemsize).splitlines()]
        else:
            sizes = {d: 64 for d in g.dims}
            sizes.update({d: 8 for d in g.meta("structure").batch})
            lines.append("  chosen per call by the cost model; for example, with every dim 64 "
                         "and batch 8:")
            lines += ["    " + ln for ln in format_choice(g, sizes, 4096, 2).splitlines()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)
