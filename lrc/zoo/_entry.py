"""`ZooEntry`: a zoo system's spec with its standard initialization and example arguments.

Each zoo module builds its Params and Seq inputs in float64 on the CPU from the global torch RNG,
so `example(dtype=...)` gives the same draw in every dtype (only rounded), and tests seeded once
see one distribution whatever the dtype.
"""
from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..ir.dims import Annotation
from ..ir.trace import Spec

Sizes = Mapping[str, int]
Maker = Callable[[Sizes], dict[str, torch.Tensor]]

_COMPLEX_OF = {torch.float64: torch.complex128, torch.float32: torch.complex64,
               torch.float16: torch.complex64, torch.bfloat16: torch.complex64}


def _cast(x: torch.Tensor, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """x in `dtype` (its complex counterpart for complex x) on `device`."""
    if x.is_complex():
        return x.to(device=device, dtype=_COMPLEX_OF.get(dtype, torch.complex128))
    return x.to(device=device, dtype=dtype)


def shape_of(ann: Annotation, sizes: Sizes, time: str | None = None) -> tuple[int, ...]:
    """The tensor shape of an annotated argument: grouped axes multiply, `time` is sizes['t']."""
    return tuple(math.prod(sizes["t"] if d == time else sizes[d] for d in axis)
                 for axis in ann.axes)


def random_state(spec: Spec, sizes: Sizes, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """Gaussian initial states for every State argument (complex where declared)."""
    g = spec.graph
    out = {}
    for arg in g.state_args:
        ann = g.annotation(arg)
        shape = shape_of(ann, sizes)
        x = torch.randn(shape, dtype=torch.float64) * scale
        if ann.complex:
            x = torch.complex(x, torch.randn(shape, dtype=torch.float64) * scale)
        out[arg] = x
    return out


@dataclass(frozen=True)
class ZooEntry:
    """A zoo system: `spec`, default dim sizes, and makers of standard-init Params and inputs.

    sizes    default sizes of the spec's dims other than b and t (small, odd)
    params   sizes -> {Param name: float64 tensor} with the system's standard initialization
    inputs   sizes (with 'b' and 't') -> {Seq name: float64 tensor}, well scaled
    state    sizes (with 'b') -> {State name: tensor}; default: Gaussians of std 0.5
    doc      one line: the system and its paper
    """

    spec: Spec
    sizes: Mapping[str, int]
    params: Maker
    inputs: Maker
    state: Maker | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", types.MappingProxyType(dict(self.sizes)))

    @property
    def name(self) -> str:
        return self.spec.name

    def resolve(self, b: int = 2, t: int = 37, **dim_sizes: int) -> dict[str, int]:
        """Every dim's size: the defaults, overridden by `dim_sizes`, plus b and t."""
        unknown = sorted(set(dim_sizes) - set(self.sizes))
        if unknown:
            raise TypeError(f"{self.name}: unknown dim {unknown[0]!r}; its dims are "
                            f"{sorted(self.sizes)} (and b, t)")
        return {**self.sizes, **dim_sizes, "b": b, "t": t}

    def example(self, b: int = 2, t: int = 37, dtype: torch.dtype = torch.float64,
                device: Any = "cpu", **dim_sizes: int) -> dict[str, torch.Tensor]:
        """Random Seq inputs and standard-init Params for every argument, by name."""
        sizes = self.resolve(b, t, **dim_sizes)
        made = {**self.inputs(sizes), **self.params(sizes)}
        want = self.spec.graph.params
        if set(made) != set(want):
            raise AssertionError(f"{self.name}: example made {sorted(made)}, spec takes "
                                 f"{sorted(want)}")
        return {k: _cast(made[k], dtype, device) for k in want}

    def init_params(self, dtype: torch.dtype = torch.float64, device: Any = "cpu",
                    **dim_sizes: int) -> dict[str, torch.Tensor]:
        """Only the Params, with the standard initialization."""
        sizes = self.resolve(**dim_sizes)
        return {k: _cast(v, dtype, device) for k, v in self.params(sizes).items()}

    def initial_state(self, b: int = 2, dtype: torch.dtype = torch.float64,
                      device: Any = "cpu", **dim_sizes: int) -> Any:
        """A nonzero initial state (a tuple with several states), as `initial_state=` takes it."""
        sizes = self.resolve(b, 1, **dim_sizes)
        made = (self.state or (lambda s: random_state(self.spec, s)))(sizes)
        states = tuple(_cast(made[k], dtype, device) for k in self.spec.graph.state_args)
        return states[0] if len(states) == 1 else states
