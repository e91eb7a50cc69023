"""Call-time binding: arguments to names, sizes to dims, layouts to and from canonical form.

Every check here names the argument, and where it applies the dim and both sizes.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ..errors import CallError
from ..ir.dims import Annotation, Role
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


class _MismatchError(CallError):
    """Two arguments disagree on a dim's size (bind_sizes adds which one is likely wrong)."""


@dataclass
class _Sizes:
    g: Graph
    known: dict[str, tuple[int, str]]

    def set(self, dim: str, n: int, who: str) -> None:
        if dim in self.known and self.known[dim][0] != n:
            m, other = self.known[dim]
            raise _MismatchError(f"{who} gives dim {dim!r} size {n}, but {other} gives it "
                                 f"size {m}")
        self.known.setdefault(dim, (n, who))


def bind_sizes(g: Graph, tensors: dict[str, tuple[torch.Tensor, Annotation]], with_time: bool,
               fixed: dict[str, int] | None = None) -> tuple[dict[str, int], int | None]:
    """Sizes of every dim and the length T, from the tensors' shapes; raise on any mismatch
    (naming, where one argument's shape fits the others once permuted, that argument and the
    annotation that would fit it)."""
    try:
        return _bind_sizes(g, tensors, with_time, fixed)
    except _MismatchError as e:
        raise CallError(str(e) + _culprits(g, tensors, with_time, fixed)) from None


def _culprits(g: Graph, tensors: dict, with_time: bool, fixed: dict | None) -> str:
    """Arguments whose shape, permuted, agrees with every other argument, with the annotation
    that would fit each ("" if there is none)."""
    found = []
    for name, (x, ann) in tensors.items():
        others = {k: v for k, v in tensors.items() if k != name}
        try:
            sizes, T = _bind_sizes(g, others, with_time, fixed, complete=False)
        except CallError:
            continue
        axes = axes_of(ann, g.time, with_time)
        if x.dim() != len(axes) or len(axes) > 6:
            continue
        want = [T if a == (g.time,) else
                math.prod(sizes[d] for d in a) if all(d in sizes for d in a) else None
                for a in axes]
        for perm in itertools.permutations(range(len(axes))):
            if perm == tuple(range(len(axes))):
                continue
            # memory axis i of x holds annotation axis perm[i]
            if all(want[perm[i]] in (None, n) for i, n in enumerate(x.shape)):
                order = [axes[perm[i]] for i in range(len(axes))]
                full = order if with_time or ann.role is not Role.SEQ else _with_time(
                    ann, order, g.time)  # a per-token slice: the annotation keeps its time dim
                text = " ".join(a[0] if len(a) == 1 else "(" + " ".join(a) + ")" for a in full)
                fit = Annotation(ann.role, tuple(full), ann.complex, text)
                inv = [perm.index(j) for j in range(len(axes))]
                found.append(f"{name!r} (shape {tuple(x.shape)}) fits every other argument if "
                             f"it is laid out ({', '.join(' '.join(a) for a in order)}): "
                             f"annotate it {fit!r}, or pass {name}.permute"
                             f"({', '.join(map(str, inv))}) to keep {ann!r}")
                break
    if not found:
        return ""
    if len(found) == 1:
        return ". Likely culprit: " + found[0]
    return ". One of these is likely laid out differently: " + "; ".join(found)


def _with_time(ann: Annotation, order: list, time: str) -> list:
    """`order` (axes without the time dim) with the time axis put back where `ann` has it."""
    i = ann.axes.index((time,))
    return order[:i] + [(time,)] + order[i:]


def _bind_sizes(g: Graph, tensors: dict[str, tuple[torch.Tensor, Annotation]], with_time: bool,
                fixed: dict[str, int] | None = None, complete: bool = True):
    sizes = _Sizes(g, {})
    for d, n in (fixed or {}).items():
        sizes.set(d, n, "cu_seqlens")
    T: tuple[int, str] | None = None
    groups = []
    for name, (x, ann) in tensors.items():
        axes = axes_of(ann, g.time, with_time)
        who = f"{'state' if ann.role is Role.STATE else 'argument'} {name!r} ({ann!r})"
        if x.dim() != len(axes):
            want = " ".join(a[0] if len(a) == 1 else "(" + " ".join(a) + ")" for a in axes)
            raise CallError(f"{who}: expected {len(axes)} dims ({want}), got shape "
                            f"{tuple(x.shape)}")
        shaped = f"{who}, shape {tuple(x.shape)},"
        for axis, n in zip(axes, x.shape):
            if axis == (g.time,):
                if T is not None and T[0] != n:
                    raise _MismatchError(f"{shaped} makes the time dim {g.time!r} {n} long, "
                                         f"but {T[1]} makes it {T[0]}")
                T = T or (n, shaped)
            elif len(axis) == 1:
                sizes.set(axis[0], n, shaped)
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
    if missing and complete:
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
                    raise _MismatchError(f"{who}: axis ({' '.join(axis)}) has size {n}, but its "
                                         f"dims multiply to {prod}")
            elif prod == 0 or n % prod:
                raise _MismatchError(f"{who}: axis ({' '.join(axis)}) has size {n}, not a "
                                     f"multiple of {prod}")
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


