"""Call-time binding: arguments to names, sizes to dims, layouts to and from canonical form.

Every check here names the argument, and where it applies the dim and both sizes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import CallError
from ..ir.dims import Annotation
from ..ir.graph import Graph
from ..layout import axes_of

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_COMPLEX = (torch.complex64, torch.complex128)


def bind_args(g: Graph, args: tuple, kwargs: dict, what: str) -> dict[str, torch.Tensor]:
    """Positional and keyword arguments -> {param name: tensor}, in g.params order."""
    if len(args) > len(g.params):
        raise CallError(f"{what} takes {len(g.params)} arguments ({', '.join(g.params)}), "
                        f"got {len(args)}")
    out = dict(zip(g.params, args))
    for k, v in kwargs.items():
        if k not in g.params:
            hint = " (states go in initial_state= or state=)" if k in g.state_args else ""
            raise CallError(f"{what} got an unexpected argument {k!r}{hint}")
        if k in out:
            raise CallError(f"{what} got argument {k!r} twice")
        out[k] = v
    missing = [p for p in g.params if p not in out]
    if missing:
        raise CallError(f"{what} is missing argument {missing[0]!r}")
    for k, v in out.items():
        if not isinstance(v, torch.Tensor):
            raise CallError(f"argument {k!r} must be a torch.Tensor, got {type(v).__name__}")
    return {p: out[p] for p in g.params}


@dataclass
class _Sizes:
    g: Graph
    known: dict[str, tuple[int, str]]

    def set(self, dim: str, n: int, who: str) -> None:
        if dim in self.known and self.known[dim][0] != n:
            m, other = self.known[dim]
            raise CallError(f"{who}: dim {dim!r} has size {n}, but {other} gave it size {m}")
        self.known.setdefault(dim, (n, who))


def bind_sizes(g: Graph, tensors: dict[str, tuple[torch.Tensor, Annotation]], with_time: bool,
               fixed: dict[str, int] | None = None) -> tuple[dict[str, int], int | None]:
    """Sizes of every dim and the length T, from the tensors' shapes; raise on any mismatch."""
    sizes = _Sizes(g, {})
    for d, n in (fixed or {}).items():
        sizes.set(d, n, "cu_seqlens")
    T: tuple[int, str] | None = None
    groups = []
    for name, (x, ann) in tensors.items():
        axes = axes_of(ann, g.time, with_time)
        who = f"argument {name!r} ({ann!r})"
        if x.dim() != len(axes):
            want = " ".join(a[0] if len(a) == 1 else "(" + " ".join(a) + ")" for a in axes)
            raise CallError(f"{who}: expected {len(axes)} dims ({want}), got shape "
                            f"{tuple(x.shape)}")
        for axis, n in zip(axes, x.shape):
            if axis == (g.time,):
                if T is not None and T[0] != n:
                    raise CallError(f"{who}: time dim {g.time!r} has length {n}, but {T[1]} has "
                                    f"length {T[0]}")
                T = T or (n, who)
            elif len(axis) == 1:
                sizes.set(axis[0], n, who)
            else:
                groups.append((axis, n, who))
    for new, old in g.aliases:
        if new in sizes.known:
            sizes.set(old, sizes.known[new][0], f"renamed dim {new!r}")
    _resolve_groups(sizes, groups, g)
    for new, old in g.aliases:
        if old in sizes.known:
            sizes.set(new, sizes.known[old][0], f"{old!r} (renamed to {new!r})")
    missing = [d for d in g.dims if d not in sizes.known]
    if missing:
        raise CallError(f"cannot tell the size of dim {missing[0]!r} from the arguments "
                        "(pass initial_state, or name it in a Seq/Param annotation)")
    return {d: n for d, (n, _) in sizes.known.items()}, (T[0] if T else None)


def _resolve_groups(sizes: _Sizes, groups: list, g: Graph) -> None:
    todo = list(groups)
    while todo:
        progress = False
        for item in list(todo):
            axis, n, who = item
            unknown = [d for d in axis if d not in sizes.known]
            prod = math.prod(sizes.known[d][0] for d in axis if d in sizes.known)
            if len(unknown) > 1:
                continue
            todo.remove(item)
            progress = True
            if not unknown:
                if prod != n:
                    raise CallError(f"{who}: axis ({' '.join(axis)}) has size {n}, but its dims "
                                    f"multiply to {prod}")
            elif prod == 0 or n % prod:
                raise CallError(f"{who}: axis ({' '.join(axis)}) has size {n}, not a multiple "
                                f"of {prod}")
            else:
                sizes.set(unknown[0], n // prod, who)
        if not progress:
            axis, n, who = todo[0]
            raise CallError(f"{who}: cannot split axis ({' '.join(axis)}) of size {n}: give the "
                            "size of all but one of its dims through another argument")


def check_tensors(tensors: dict[str, tuple[torch.Tensor, Annotation]]) -> torch.device:
    """Dtypes (floating; complex only where declared) and one device for all; returns it."""
    device, first = None, None
    for name, (x, ann) in tensors.items():
        if x.dtype in _COMPLEX and not ann.complex:
            raise CallError(f"argument {name!r} ({ann!r}) is complex ({x.dtype}) but declared "
                            "real; declare it complex=True or pass x.real")
        if x.dtype not in _FLOATS + _COMPLEX:
            raise CallError(f"argument {name!r} has dtype {x.dtype}; expected a floating dtype "
                            "(float32, bfloat16, float16, float64)")
        if device is None:
            device, first = x.device, name
        elif x.device != device:
            raise CallError(f"argument {name!r} is on {x.device} but {first!r} is on {device}")
    return device


