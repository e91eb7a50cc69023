"""Named dims <-> tensors: strides per named dim, canonical layouts, and the small view
helpers every lowering uses to read the user's tensors in place.
"""
from __future__ import annotations

import math

import torch

from .bounded import Bounded
from .ir.dims import Annotation, Role
from .ir.graph import Axes, Graph


def dim_strides(x: torch.Tensor, axes: Axes, sizes: dict[str, int], time: str) -> dict:
    """Stride of each named dim of `x` laid out as `axes` ('#t' for time)."""
    key = (x.stride(), axes, time, tuple(sizes[d] for a in axes if len(a) > 1 for d in a
                                         if d != time))
    hit = _STRIDES.get(key)
    if hit is not None:
        return hit
    out = {}
    for i, axis in enumerate(axes):
        inner = 1
        for d in reversed(axis):
            out["#t" if d == time else d] = x.stride(i) * inner
            inner *= 1 if d == time else sizes[d]
    _STRIDES[key] = out
    return out


# dim_strides per (strides, axes, group sizes): working them out costs host time per call
_STRIDES: dict[tuple, dict] = Bounded(4096)


def part_view(x: torch.Tensor, part: str) -> torch.Tensor:
    """The real or imaginary part of `x` as a strided real view (differentiable)."""
    if not part:
        return x
    if not x.is_complex():
        x = x.to(torch.complex64 if x.dtype != torch.float64 else torch.complex128)
    return torch.view_as_real(x)[..., 0 if part == "re" else 1]


def dims_to_layout(x: torch.Tensor, dims, axes: Axes, sizes: dict[str, int]) -> torch.Tensor:
    """A tensor held as (*dims) -> laid out as `axes` (no time axis)."""
    flat = list(dims)
    x = x.permute([flat.index(d) for a in axes for d in a])
    return x.reshape([math.prod(sizes[d] for d in a) for a in axes])


def batch_dim(g: Graph) -> str | None:
    """The dim cu_seqlens packs sequences along: the first dim of the first Seq argument, if it
    is in every Seq argument and every state."""
    seqs = g.inputs(Role.SEQ)
    first = seqs[0].annotation.axes[0]
    if len(first) != 1 or first[0] == g.time:
        return None
    b = first[0]
    if all(b in s.annotation.dims for s in seqs) and all(b in s.dims for s in g.inputs(Role.STATE)):
        return b
    return None


def axes_of(ann: Annotation, time: str, with_time: bool) -> Axes:
    return ann.axes if with_time else tuple(a for a in ann.axes if a != (time,))


def broadcast_shape(*shapes) -> tuple[int, ...]:
    """PyTorch's broadcast of the shapes (torch.broadcast_shapes, without its symbolic-shape
    checks: a tenth of the host time per call)."""
    out: list[int] = []
    for shape in shapes:
        shape = tuple(shape)
        if len(shape) > len(out):
            out[:0] = [1] * (len(shape) - len(out))
        for i, n in enumerate(shape, len(out) - len(shape)):
            if n != out[i]:
                if out[i] == 1:
                    out[i] = n
                elif n != 1:
                    raise RuntimeError(f"shapes {shapes} do not broadcast")
    return tuple(out)


def reshaped(x: torch.Tensor, shape) -> torch.Tensor:
    """x.reshape(shape), or x itself where it has that shape already (a view op saved: with
    autograd each is a node, and a host-bound call makes dozens)."""
    shape = tuple(shape)
    return x if tuple(x.shape) == shape else x.reshape(shape)


def permuted(x: torch.Tensor, order) -> torch.Tensor:
    """x.permute(order), or x itself for the identity."""
    order = tuple(order)
    return x if order == tuple(range(len(order))) else x.permute(order)


def expanded(x: torch.Tensor, shape) -> torch.Tensor:
    """x.expand(shape), or x itself where nothing broadcasts."""
    shape = tuple(shape)
    return x if tuple(x.shape) == shape else x.expand(shape)


def to_canonical(g: Graph, x: torch.Tensor, ann: Annotation, sizes: dict[str, int],
                 with_time: bool) -> torch.Tensor:
    """A tensor in its annotated layout -> (time, *g.dims) with size 1 for absent dims."""
    key = (g.time, g.dims, ann.axes, with_time, tuple(x.shape), tuple(sizes.items()))
    steps = _CANONICAL.get(key)
    if steps is None:
        steps = _canonical_steps(g, ann, sizes, with_time, tuple(x.shape))
        _CANONICAL[key] = steps
    split, order, shape = steps
    if split is not None:
        x = x.reshape(split)
    if order is not None:
        x = x.permute(order)
    return x.reshape(shape) if tuple(x.shape) != shape else x


_CANONICAL: dict[tuple, tuple] = Bounded(4096)


def _canonical_steps(g: Graph, ann: Annotation, sizes: dict[str, int], with_time: bool,
                     shape: tuple[int, ...]) -> tuple:
    """to_canonical's reshape (None: none needed), permutation (None: the identity) and
    final shape for a tensor of `shape`."""
    axes = axes_of(ann, g.time, with_time)
    flat = [d for a in axes for d in a]
    with_time = g.time in flat
    split = tuple(shape[i] if len(a) == 1 else sizes[d] for i, a in enumerate(axes) for d in a)
    order = tuple(([flat.index(g.time)] if with_time else []) + [flat.index(d) for d in g.dims
                                                                 if d in flat])
    t = split[order[0]] if with_time else 1
    final = (t,) + tuple(sizes[d] if d in flat else 1 for d in g.dims)
    return (None if split == shape else split, None if order == tuple(range(len(order)))
            else order, final)


def from_canonical(g: Graph, x: torch.Tensor, axes: Axes, sizes: dict[str, int],
                   with_time: bool) -> torch.Tensor:
    """(time, *g.dims) canonical -> the layout `axes` (with the time axis iff with_time)."""
    axes = tuple(a for a in axes if with_time or a != (g.time,))
    flat = [d for a in axes for d in a]
    present = [d for d in g.dims if d in flat]
    x = reshaped(x, (x.shape[0],) + tuple(sizes[d] for d in present))
    src = ([g.time] if with_time else []) + present
    if not with_time:
        x = x.squeeze(0)
    x = permuted(x, [src.index(d) for d in flat])
    return reshaped(x, [math.prod(sizes[d] if d != g.time else x.shape[flat.index(g.time)]
                                  for d in a) for a in axes])


def next_pow2(n: int) -> int:
    """The least power of two >= n (1 for n <= 1): block sizes and padded lengths."""
    return 1 << max(0, (int(n) - 1).bit_length())
