"""A checked call of a compiled layer: what every backend receives."""
from __future__ import annotations

import torch

from ..bounded import Bounded
from ..errors import CallError
from ..ir.dims import Role
from ..ir.graph import Graph
from ..layout import batch_dim
from ..lowering.base import Call
from .bind import bind_args, bind_sizes, check_tensors


def _state_tuple(g: Graph, value, what: str) -> dict[str, torch.Tensor] | None:
    if value is None:
        return None
    names = g.state_args
    vals = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(vals) != len(names):
        raise CallError(f"{what} must hold {len(names)} tensors ({', '.join(names)}), "
                        f"got {len(vals)}")
    for n, v in zip(names, vals):
        if not isinstance(v, torch.Tensor):
            raise CallError(f"{what} for state {n!r} must be a tensor, got {type(v).__name__}")
    return dict(zip(names, vals))


def make_call(g: Graph, args: tuple, kwargs: dict, *, initial_state=None, reverse=False,
              cu_seqlens=None, step: bool = False, max_seqlen: int | None = None) -> Call:
    """Bind and check a call (step=True: per-token slices without the time dim; max_seqlen:
    the longest packed sequence, so the offsets are not read on the host)."""
    what = "layer.step" if step else "layer"
    tensors = bind_args(g, args, kwargs, what)
    states = _state_tuple(g, initial_state, "state=" if step else "initial_state")
    key = None
    if cu_seqlens is None:  # the checks and sizes depend on shapes, dtypes and devices alone
        key = (id(g), step, tuple((x.shape, x.dtype, x.device) for x in tensors.values()),
               None if states is None else tuple((x.shape, x.dtype, x.device)
                                                 for x in states.values()))
        hit = _CHECKED.get(key)
        if hit is not None and hit[0] is g:
            return Call(g, tensors, states, dict(hit[1]), hit[2], reverse, None, *hit[3:])
    anns = {k: (v, g.annotation(k)) for k, v in tensors.items()}
    device = check_tensors(anns)
    if states is not None:
        sanns = {k: (v, g.annotation(k)) for k, v in states.items()}
        sdev = check_tensors(sanns)
        if sdev != device:
            raise CallError(f"the initial state is on {sdev} but the inputs are on {device}")
    segments, fixed = None, None
    if cu_seqlens is not None:
        if step:
            raise CallError("layer.step takes no cu_seqlens")
        b = batch_dim(g)
        if b is None:
            raise CallError("cu_seqlens needs a batch dim: the first dim of the first Seq "
                            "argument, present in every Seq argument and state")
        segments = Segments(cu_seqlens, max_seqlen)
        fixed = {b: 1}
    sizes, T = bind_sizes(g, {**anns, **({} if states is None or segments is not None else
                                          {k: (v, g.annotation(k)) for k, v in states.items()})},
                          with_time=not step, fixed=fixed)
    if segments is not None and max_seqlen is not None:
        segments.check_on_device(T)
    elif segments is not None:
        if segments[-1][1] != T:
            raise CallError(f"cu_seqlens ends at {segments[-1][1]} but the inputs have "
                            f"length {T}")
        if states is not None:
            per = dict(sizes, **{batch_dim(g): len(segments)})
            bind_sizes(g, {k: (v, g.annotation(k)) for k, v in states.items()}, with_time=False,
                       fixed=per)
    seq_dtypes = [tensors[n.arg].dtype for n in g.inputs(Role.SEQ)]  # arg: a pass may split it
    out_dtype = seq_dtypes[0]
    for d in seq_dtypes[1:]:
        out_dtype = torch.promote_types(out_dtype, d)
    out_dtype = {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(
        out_dtype, out_dtype)
    every = [x.dtype for x in tensors.values()] + (
        [x.dtype for x in states.values()] if states else [])
    wide = any(d in (torch.float64, torch.complex128) for d in every)
    state_dtype = torch.float64 if wide else torch.float32
    if key is not None:
        _CHECKED[key] = (g, sizes, T, out_dtype, state_dtype, device)
    return Call(g, tensors, states, dict(sizes), T, reverse, segments, out_dtype, state_dtype,
                device)


# calls already checked: (graph id, step, shapes/dtypes/devices) -> (graph, sizes, T,
# out dtype, state dtype, device); a repeated call skips binding sizes (host time per call)
_CHECKED: dict[tuple, tuple] = Bounded(512)


class Segments:
    """The packed sequences of cu_seqlens, (start, end) pairs as a sequence. Without max_seqlen
    the offsets are read on the host and checked at once; with it they stay on the device
    (`offsets`, `longest`, `len`) until a lowering that loops over them on the host asks."""

    def __init__(self, cu: torch.Tensor, max_seqlen: int | None):
        if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.dtype not in (
                torch.int32, torch.int64) or cu.numel() < 2:
            raise CallError("cu_seqlens must be a 1-D int32/int64 tensor [0, l1, l1+l2, ..., T]")
        if max_seqlen is not None and (not isinstance(max_seqlen, int) or max_seqlen < 1):
            raise CallError(f"max_seqlen must be a positive int, got {max_seqlen!r}")
        self.cu, self.max_seqlen = cu, max_seqlen
        self._pairs = None if max_seqlen is not None else self._read()

    def _read(self) -> list[tuple[int, int]]:
        if self.cu.device.type == "meta":  # its values split the sequences: they must exist
            raise CallError("cu_seqlens is on the meta device, which holds no values; the "
                            "sequence boundaries are needed to run: pass it on the CPU or the "
                            "inputs' device, or give max_seqlen")
        vals = self.cu.tolist()
        if vals[0] != 0 or any(b < a for a, b in zip(vals, vals[1:], strict=False)):
            raise CallError(f"cu_seqlens must start at 0 and never decrease, got {vals}")
        return list(zip(vals[:-1], vals[1:], strict=True))

    @property
    def pairs(self) -> list[tuple[int, int]]:
        if self._pairs is None:
            self._pairs = self._read()
        return self._pairs

    def __len__(self) -> int:
        return self.cu.numel() - 1

    def __iter__(self):
        return iter(self.pairs)

    def __getitem__(self, i):
        return self.pairs[i]

    @property
    def longest(self) -> int:
        """The longest sequence's length (max_seqlen where given: no host read)."""
        if self.max_seqlen is not None:
            return self.max_seqlen
        return max(b - a for a, b in self.pairs)

    def offsets(self, device: torch.device) -> torch.Tensor:
        """The offsets as int32 on `device` (no host read)."""
        return self.cu.to(device=device, dtype=torch.int32, non_blocking=True)

    def check_on_device(self, T: int) -> None:
        """Start at 0, never decrease, end at T, no sequence longer than max_seqlen: checked
        where the offsets live (on the host when they are there; a device assert otherwise)."""
        cu = self.cu
        if cu.device.type in ("cpu", "meta"):
            if cu.device.type == "cpu":
                pairs = self.pairs
                longest = max(b - a for a, b in pairs)
                if pairs[-1][1] != T or longest > self.max_seqlen:
                    raise CallError(f"cu_seqlens ends at {pairs[-1][1]} (inputs: length {T}) "
                                    f"with a longest sequence of {longest} (max_seqlen "
                                    f"{self.max_seqlen})")
            return
        lens = cu[1:] - cu[:-1]
        ok = (cu[0] == 0) & (cu[-1] == T) & (lens >= 0).all() & (lens <= self.max_seqlen).all()
        torch._assert_async(ok, "lrc: cu_seqlens must run from 0 to T, never decreasing, "
                                "no sequence longer than max_seqlen")
