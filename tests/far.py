"""Tensors whose element offsets pass 2^31 at almost no memory: views into an anonymous
mapping reserved without backing (MAP_NORESERVE), of which only the pages touched are ever
made real. A kernel that multiplies two int32 values for such an offset wraps to a negative
number; the views sit 2^31 elements into their mapping, so a wrapped offset still lands in
mapped (zero) memory and shows up as a wrong value instead of a crash.

Used by the offset tests of the scan and chunked lowerings (interpreter and GPU).
"""
from __future__ import annotations

import contextlib
import math
import mmap
import sys

import pytest
import torch

WRAP = 2 ** 31  # the first offset an int32 product cannot hold
# mmap's flag (Python >= 3.13 names it; Linux's value on x86-64 and arm64 before that)
NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform == "linux" else 0)


def far_view(shape, strides, dtype: torch.dtype = torch.float32, below: int = WRAP
             ) -> torch.Tensor:
    """A zeroed view of `shape` with element `strides`, `below` elements into a mapping that
    holds its whole extent (a wrapped offset down to -2^31 lands inside it too)."""
    size = torch.empty(0, dtype=dtype).element_size()
    extent = 1 + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    nbytes = (below + extent) * size
    nbytes = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    try:
        m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                      | NORESERVE)
    except (OSError, OverflowError, ValueError) as e:  # strict overcommit, 32-bit host
        pytest.skip(f"cannot reserve {nbytes / 2**30:.0f} GiB of address space: {e}")
    flat = torch.frombuffer(m, dtype=dtype, count=nbytes // size)
    view = flat.as_strided(tuple(shape), tuple(strides), below)
    view._far_mapping = m  # the mapping lives as long as the view
    return view


def far_copy(x: torch.Tensor, big: str | int, stride: int = 2 ** 30) -> torch.Tensor:
    """`x`'s values in a far view: dim `big` (an index) strided by `stride`, the other dims
    packed inside one stride of it (so index 2 of `big` sits at 2^31 at the default)."""
    shape = list(x.shape)
    rest = [i for i in range(len(shape)) if i != big]
    strides = [0] * len(shape)
    inner = 1
    for i in reversed(rest):
        strides[i] = inner
        inner *= shape[i]
    assert inner <= stride, "the other dims must fit inside one stride of the big one"
    strides[big] = stride
    y = far_view(shape, strides, x.dtype)
    with torch.no_grad():
        y.copy_(x)
    return y


@contextlib.contextmanager
def far_allocations(first: int, stride: int = 2 ** 30):
    """Inside: every float32 buffer lrc allocates (torch.empty, zeros, empty_like,
    Tensor.new_empty) with `first` rows along its leading axis (checkpoints, segment
    summaries, per-segment partial sums) and more than one axis is a far view with rows
    `stride` elements apart, the rest packed in each row; row 4 of 5 then sits at 2^32,
    which an int32 product wraps onto row 0."""
    empty, zeros, new_empty = torch.empty, torch.zeros, torch.Tensor.new_empty
    made = []

    def far(shape, dtype):
        shape = list(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) \
            else list(shape)
        if len(shape) < 2 or shape[0] != first or dtype not in (None, torch.float32):
            return None
        inner = math.prod(shape[1:])
        strides = [stride] + [math.prod(shape[i + 1:]) for i in range(1, len(shape))]
        assert inner <= stride
        made.append(tuple(shape))
        return far_view(shape, strides, torch.float32)

    def fake_empty(*shape, dtype=None, device=None, **kw):
        y = far(shape, dtype) if _cpu(device) else None
        return y if y is not None else empty(*shape, dtype=dtype, device=device, **kw)

    def fake_zeros(*shape, dtype=None, device=None, **kw):
        y = far(shape, dtype) if _cpu(device) else None
        return y if y is not None else zeros(*shape, dtype=dtype, device=device, **kw)

    def fake_new_empty(self, *shape, dtype=None, **kw):
        if self.device.type == "cpu":
            y = far(shape, dtype or self.dtype)
            if y is not None:
                return y
        return new_empty(self, *shape, dtype=dtype, **kw)

    def fake_empty_like(x, *, dtype=None, **kw):  # the same strides (lrc may pass x's)
        y = far(tuple(x.shape), dtype or x.dtype) if x.device.type == "cpu" else None
        return y if y is not None else empty_like(x, dtype=dtype, **kw)

    empty_like = torch.empty_like
    torch.empty, torch.zeros, torch.Tensor.new_empty = fake_empty, fake_zeros, fake_new_empty
    torch.empty_like = fake_empty_like
    try:
        yield made
    finally:
        torch.empty, torch.zeros, torch.Tensor.new_empty = empty, zeros, new_empty
        torch.empty_like = empty_like


def _cpu(device) -> bool:
    return device is None or torch.device(device).type == "cpu"
