"""`layer.plan`: the structure found, the lowerings that can run it, the one chosen, and why."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..ir.graph import Graph
from ..kernels.launch import deterministic
from ..logs import logger
from ..passes.lowering import LOWERINGS, Lowering, format_choice
from ..passes.structure import format_structure


@dataclass
class Plan:
    """What the pipeline decided for one spec; `choose` picks the lowering for a call's shapes."""

    graph: Graph                    # the structure-annotated graph (user-level: complex kept)
    shapes: tuple | None = field(default=None)  # (sizes, T, itemsize) of the last call
    note: str = ""                  # what runs, when it is not the chosen lowering
    float64: str = ""               # what a float64 call does (set by the Layer)
    # lowering -> whether its backward adds gradients with atomics (set by a Layer that runs
    # kernels; lrc.lowering.atomic_grads)
    atomics: Callable[[str], bool] | None = field(default=None, repr=False)
    scan_mode: str = ""             # the scan program's mode: "scan" or "loop (why)"
    device: str = ""                # the last call's device: "cpu" or the GPU's name

    @property
    def lowering(self) -> Lowering:
        return self.graph.meta("lowering")

    chosen: dict = field(default_factory=dict, repr=False)  # shapes -> lowering, per call
    _device: object = field(default=None, repr=False)          # the torch.device of `device`

    def choose(self, sizes: dict[str, int], T: int, itemsize: int, device=None) -> str:
        """The lowering for these shapes (remembered for printing, with the call's `device`;
        the cost model runs once per shape, not on every call)."""
        key = (tuple(sizes.items()), T, itemsize)
        if key not in self.chosen:
            self.chosen[key] = self.lowering.choose(self.graph, sizes, T, itemsize)[0]
            logger.info("plan %s: %s at sizes %s, T=%d, %d-byte elements", self.graph.name,
                        self.chosen[key], sizes, T, itemsize)
        self.shapes = (sizes, T, itemsize)
        if device is not None and device != self._device:
            self._device = device
            self.device = (torch.cuda.get_device_name(device) if device.type == "cuda"
                           else device.type)
        return self.chosen[key]

    def __str__(self) -> str:
        g, lw = self.graph, self.lowering
        lines = [f"plan for {g.name}:"]
        lines += ["  " + ln for ln in format_structure(g).splitlines()]
        lines.append("  lowerings (how a call computes the whole sequence):")
        for name in LOWERINGS:
            if name in lw.eligible:
                lines.append(f"    {name}: yes: {self._shape(name)}")
            else:
                lines.append(f"    {name}: no: {lw.why_not(name)}")
        lines.append("    step (decode): one token at a time, the recurrence itself")
        if self.note:
            lines.append(f"  note: {self.note}")
        made_for = f"estimates are for {lw.device.name}, see docs/cost-model.md"
        if self.shapes is not None:
            sizes, T, itemsize = self.shapes
            gpu = self.device not in ("", "cpu")
            if gpu:
                ran = "" if self.device in lw.device.name else f"; this call ran on {self.device}"
                lines.append(f"  the last call ({made_for}{ran}):")
            else:
                lines.append("  the last call (on the CPU, where the torch lowering runs "
                             "(backend='triton': the kernels under Triton's interpreter), so no "
                             f"times are estimated; the choice is the one for {lw.device.name}):")
            lines += ["    " + ln
                      for ln in format_choice(g, sizes, T, itemsize, gpu).splitlines()]
        else:
            sizes = {d: 64 for d in g.dims}
            sizes.update({d: 8 for d in g.meta("structure").batch})
            lines.append(f"  chosen per call by the cost model ({made_for}); for example, "
                         "with every dim 64 and batch 8:")
            lines += ["    " + ln for ln in format_choice(g, sizes, 4096, 2).splitlines()]
        if self.float64:
            lines.append(f"  float64: {self.float64}")
        chosen = (self.choose(*self.shapes) if self.shapes is not None
                  else lw.choose(g, sizes, 4096, 2)[0])
        if deterministic():
            lines.append("  gradients: sums across programs in a fixed order (deterministic "
                         "mode)")
        elif self.atomics is not None and self.atomics(chosen):
            lines.append("  gradients: summed with atomics across programs (not bitwise "
                         "deterministic on the GPU; deterministic mode: "
                         "torch.use_deterministic_algorithms(True) or LRC_DETERMINISTIC=1)")
        return "\n".join(lines)

    def _shape(self, lowering: str) -> str:
        """The kernel's shape in plain words: what runs in parallel and what in sequence."""
        if lowering == "chunked":
            return "chunks of time steps as matrix products on tensor cores"
        if lowering == "conv":
            return "an FFT convolution with a kernel computed from the Params"
        if lowering == "dplr":
            return ("chunks of the delta rule's rank-1 transitions in UT form, matrix products "
                    "on tensor cores (runs where forced: lowering='dplr')")
        if self.scan_mode.startswith("loop"):
            why = self.scan_mode[len("loop ("):-1]
            return (f"one token at a time: sequential in {self.graph.time}, parallel over the "
                    f"other dims only ({why})")
        return (f"chunks of time steps combined by an associative scan (parallel in "
                f"{self.graph.time} within a chunk)")

    def __repr__(self) -> str:
        return str(self)
