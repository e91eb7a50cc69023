"""The kernel-parameter ABI: a generated kernel's parameters (pointers, one stride per
named dim, sizes) in order, and the module text around generated kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Signature:
    """The kernel's parameters in order: ('ptr', tensor key) / ('stride', key, dim) /
    ('size', dim) / ('const', name). The launcher fills them in the same order."""

    params: list[tuple] = field(default_factory=list)

    def ptr(self, key: str, var: str) -> None:
        self.params.append(("ptr", key, f"{var}_ptr"))

    def strides(self, key: str, var: str, dims) -> None:
        """Strides by dim; '#t' is the time axis, '#c' a checkpoint's chunk (or a segment
        summary's segment) axis, '#j' a decay's column in its block."""
        for d in dims:
            name = {"#t": f"{var}_st", "#c": f"{var}_sc", "#j": f"{var}_sj"}.get(
                d, f"{var}_s_{d}")
            if d.startswith("#p_"):  # a partial sum's axis: one slot per program along d
                name = f"{var}_s__p_{d[3:]}"
            self.params.append(("stride", key, d, name))

    def names(self) -> list[str]:
        return [p[-1] for p in self.params]
