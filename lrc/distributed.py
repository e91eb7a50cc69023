"""Context parallelism: one sequence split along time over the ranks of a process group.

Every spec lrc compiles is linear in its state, so the state leaving a rank's slice is an
affine function of the state entering it: h_out = A * h_in + b. For a diagonal spec A is
elementwise (the product of the decays along the slice). Each rank runs its slice from a zero
state (b) and from a state of ones (A = h_out(1) - b), one all_gather exchanges the (A, b)
summaries, each rank folds the summaries of the ranks before it (in scan order) into its true
incoming state, and runs its slice once more from that state for its outputs. The backward
mirrors this: one all_gather of the incoming states' cotangents and a reverse-time fold.

Cost per rank and call, in runs of the local slice through the layer: the first rank in scan
order 1 (it starts from the user's initial state), the last 1 (after the exchange; no summary
is needed from it), every other rank 3 (zeros, ones, the true incoming state). With cu_seqlens
the run after the exchange covers only the first packed sequence of the slice (the one that
continues from the previous rank), and a slice holding several sequences needs no run from
ones (its last sequence starts inside it). The backward of each run is one backward of the
layer; the activations of every run are kept for it. A is found by a subtraction in the state
dtype (float32), so its absolute error is about eps * |b|: the order of the state's own rounding.
"""
from __future__ import annotations

import bisect
import math
from typing import Any

import torch
import torch.distributed as dist

from .errors import CallError, Unsupported
from .ir.dims import Role
from .layout import axes_of, batch_dim
from .runtime import Layer
from .runtime.bind import bind_args
from .runtime.call import make_call

_TAG = 1 << 16  # call tags modulo this: exact in float32 after summing over up to 256 ranks
_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


class ContextParallel:
    """A layer whose Seq inputs hold one rank's contiguous slice of the time dim.

    Made by `context_parallel(layer, group)`; called with the layer's calling convention. Every
    rank of `group` calls it with its own slice (lengths may differ; rank order is time order)
    and the same Params, and gets the outputs of its slice, equal to the matching slice of the
    single-process call on the whole sequence.

    Args of a call, where they differ from `Layer.__call__`:
        initial_state: the state before the whole sequence (with cu_seqlens: one entry per
            packed sequence of the whole sequence). Every rank may pass it; each reads only
            the part that starts a sequence inside its slice (without cu_seqlens: the first
            rank in scan order, the last with reverse=True).
        cu_seqlens: the boundaries of the packed sequences of the WHOLE sequence, the same
            tensor on every rank (a sequence may span ranks); the Seq tensors are the slice.
        return_final_state: the state after this rank's slice (with reverse=True: after its
            first step); with cu_seqlens one entry per packed sequence overlapping the slice,
            so a sequence's final state is on the rank where it ends (begins, with reverse).

    Gradients reach this rank's Seq slices, the initial state (on the rank that reads it) and
    the Params. A Param's gradient on one rank is its share from that slice: the gradient of
    the sum of every rank's loss is the sum over the group. `sync_params=True` all-reduces
    (sums) the Params' gradients in the backward; otherwise reduce them yourself (DDP over the
    context group averages them instead: the gradient of the mean of the ranks' losses).

    Every rank must make the same calls, with the same tensors requiring gradients, and run
    the backward (the backward has a collective, as in DDP). Each exchange carries a tag of
    the call, so collectives of different calls that meet raise instead of mixing.
    """

    def __init__(self, layer: Layer, group: Any = None, sync_params: bool = False):
        if not isinstance(layer, Layer):
            raise TypeError("context_parallel takes a Layer made by lrc.compile, got "
                            f"{type(layer).__name__}")
        st = layer.plan.graph.meta("structure")
        for s in st.states:
            if s.transition != "diagonal":
                raise Unsupported(
                    f"context_parallel({layer.spec.name}): state {s.arg!r} is {s.kind}; only "
                    "diagonal (elementwise) transitions are supported: their summary over a "
                    "slice is elementwise and costs one extra run (dense, DPLR and shift "
                    "states would need one run per state column)")
            if s.couples:
                raise Unsupported(
                    f"context_parallel({layer.spec.name}): state {s.arg!r} is driven by state "
                    f"{', '.join(s.couples)}; the summary of coupled states is not elementwise")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("context_parallel needs torch.distributed initialized "
                               "(torch.distributed.init_process_group)")
        self.layer, self.group, self.sync_params = layer, group, sync_params
        g = layer.graph
        self._seq = {p: g.annotation(p).axes.index((g.time,)) for p in g.params
                     if g.annotation(p).role is Role.SEQ}
        self._params = tuple(p for p in g.params if g.annotation(p).role is Role.PARAM)
        self._out_time = tuple(ax.index((g.time,)) for ax in g.out_axes)

    def __repr__(self) -> str:
        return f"<lrc.distributed.ContextParallel {self.layer.spec.name}>"

    def __call__(self, *args: torch.Tensor, initial_state: Any = None,
                 return_final_state: bool = False, reverse: bool = False,
                 cu_seqlens: torch.Tensor | None = None, **kwargs: torch.Tensor) -> Any:
        """This rank's outputs (and final states) for its slice; see the class docstring."""
        layer, g = self.layer, self.layer.graph
        named = bind_args(g, args, kwargs, "context_parallel(layer)")
        P, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        if P == 1:
            return layer(**named, initial_state=initial_state,
                         return_final_state=return_final_state, reverse=reverse,
                         cu_seqlens=cu_seqlens)
        inits = _as_list(initial_state)
        if inits and len(inits) != len(g.state_args):
            raise CallError(f"initial_state must hold {len(g.state_args)} tensors "
                            f"({', '.join(g.state_args)}), got {len(inits)}")
        first = next(iter(self._seq))
        T = named[first].shape[self._seq[first]]
        if T < 1:
            raise CallError(f"context_parallel: rank {rank}'s slice of {first!r} is empty")
        grad = torch.is_grad_enabled() and any(
            x.requires_grad for x in [*named.values(), *inits])
        tag = _next_tag(self.group)
        if self.sync_params and grad:
            ps = [p for p in self._params if named[p].requires_grad]
            if ps:
                synced = _SyncGrads.apply((self.group, P, tag), *(named[p] for p in ps))
                named.update(zip(ps, synced, strict=True))
        pos = rank if not reverse else P - 1 - rank
        cut = _Cut(self, named, T, pos, P, reverse, cu_seqlens, inits)
        layout = self._layout(named, inits, packed=cu_seqlens is not None)
        real = layout[0][2]
        n_real = sum(2 * math.prod(s) if c else math.prod(s) for s, c, _ in layout)
        device = named[first].device

        outs = finals = None
        if cut.needs_first_run:
            outs, finals = self._run(named, cut.init_local, reverse, cut.local_cu)
        zeros = torch.zeros(n_real, dtype=real, device=device)
        A = b = zeros
        if cut.cont_out:
            b = _pack([f.narrow(ax, cut.out_idx, 1) if ax is not None else f
                       for f, ax in zip(finals, cut.batch_axes, strict=True)])
            if cut.cont_in and cut.n == 1:  # the slice is one sequence: its transition
                ones = [torch.ones(s, dtype=_COMPLEX[real] if c else real, device=device)
                        for s, c, _ in layout]
                _, f1 = self._run(named, ones, reverse, None)
                A = _pack(f1) - b
        # a leaf that needs a gradient: every rank's exchange joins the backward, even where
        # nothing before it does (the last rank in scan order runs nothing before it)
        dummy = torch.zeros((), device=device, requires_grad=True) if grad else None
        passed = () if cut.cont_in else (*outs, *finals)
        info = _Info(self.group, P, pos, reverse, tag, layout)
        h_in, *passed = _Exchange.apply(info, A, b, dummy, *passed)
        if not cut.cont_in:
            outs, finals = passed[:len(outs)], passed[len(outs):]
        else:
            h = _unpack(h_in, layout)
            if cut.n == 1:
                outs, finals = self._run(named, h, reverse, None)
            else:
                outs, finals = self._patch(named, h, cut, outs, finals, reverse)
        out = outs[0] if len(outs) == 1 else tuple(outs)
        if not return_final_state:
            return out
        return out, (finals[0] if len(finals) == 1 else tuple(finals))

    def _run(self, named: dict, init: Any, reverse: bool, cu: torch.Tensor | None
             ) -> tuple[list, list]:
        """One call of the layer on (part of) the slice: (outputs, final states) as lists."""
        out, fin = self.layer(**named, initial_state=init, return_final_state=True,
                              reverse=reverse, cu_seqlens=cu)
        return _as_list(out), _as_list(fin)

    def _patch(self, named: dict, h: list, cut: _Cut, outs: list, finals: list,
               reverse: bool) -> tuple[list, list]:
        """Run the slice's first sequence in scan order again from the incoming state `h` and
        put its outputs and final state in place of the ones from a zero state."""
        lo, hi = cut.in_range
        part = {k: (v.narrow(self._seq[k], lo, hi - lo) if k in self._seq else v)
                for k, v in named.items()}
        po, pf = self._run(part, h, reverse, None)
        new_outs = []
        for y, yp, ax in zip(outs, po, self._out_time, strict=True):
            rest = y.narrow(ax, hi, y.shape[ax] - hi) if lo == 0 else y.narrow(ax, 0, lo)
            new_outs.append(torch.cat([yp, rest] if lo == 0 else [rest, yp], dim=ax))
        new_fin = []
        for f, fp, ax in zip(finals, pf, cut.batch_axes, strict=True):
            i = cut.in_idx
            parts = [f.narrow(ax, 0, i), fp.to(f.dtype), f.narrow(ax, i + 1, f.shape[ax] - i - 1)]
            new_fin.append(torch.cat(parts, dim=ax))
        return new_outs, new_fin

    def _layout(self, named: dict, inits: list, packed: bool) -> tuple:
        """(shape, complex, real dtype) of each state of one sequence in this call (batch 1
        with cu_seqlens): what the summaries hold."""
        g = self.layer.graph
        # the initial states may size a dim no input has; packed ones have another batch
        call = make_call(g, (), named, initial_state=None if packed else (inits or None))
        wide = call.state_dtype == torch.float64 or any(
            x.dtype in (torch.float64, torch.complex128) for x in inits)
        real = torch.float64 if wide else torch.float32
        out = []
        for arg in g.state_args:
            ann = g.annotation(arg)
            shape = tuple(math.prod(call.sizes[d] for d in axis)
                          for axis in axes_of(ann, g.time, False))
            out.append((shape, ann.complex, real))
        return tuple(out)


class _Cut:
    """Where this rank's slice sits: its packed sequences, which of them continue across its
    edges (in scan order), and the initial states of the ones that start in it."""

    def __init__(self, cp: ContextParallel, named: dict, T: int, pos: int, P: int,
                 reverse: bool, cu_seqlens: torch.Tensor | None, inits: list):
        g = cp.layer.graph
        if cu_seqlens is None:
            self.n, self.local_cu, self.batch_axes = 1, None, [None] * len(g.state_args)
            self.cont_in, self.cont_out = pos > 0, pos < P - 1
            self.init_local = (inits or None) if pos == 0 else None
            self.in_idx = self.out_idx = 0
        else:
            self._packed(cp, named, T, reverse, cu_seqlens, inits)
        # the last rank of a lone sequence needs no run from zero: the run after the exchange
        # gives its outputs and final state
        self.needs_first_run = not (self.cont_in and self.n == 1 and not self.cont_out)

    def _packed(self, cp: ContextParallel, named: dict, T: int, reverse: bool,
                cu_seqlens: torch.Tensor, inits: list) -> None:
        g = cp.layer.graph
        b = batch_dim(g)
        if b is None:
            raise CallError("cu_seqlens needs a batch dim: the first dim of the first Seq "
                            "argument, present in every Seq argument and state")
        self.batch_axes = []
        for arg in g.state_args:
            axes = axes_of(g.annotation(arg), g.time, False)
            if (b,) not in axes:
                raise Unsupported(f"context_parallel with cu_seqlens: state {arg!r} holds the "
                                  f"batch dim {b!r} inside a grouped axis")
            self.batch_axes.append(axes.index((b,)))
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1:
            raise CallError("cu_seqlens must be a 1-D int32/int64 tensor [0, l1, ..., T]")
        device = named[next(iter(cp._seq))].device
        mine = torch.tensor([T], dtype=torch.int64, device=device)
        lens = [torch.empty_like(mine) for _ in range(dist.get_world_size(cp.group))]
        dist.all_gather(lens, mine, group=cp.group)
        lens = [int(x.item()) for x in lens]
        rank = dist.get_rank(cp.group)
        s = sum(lens[:rank])
        e = s + T
        cu = cu_seqlens.tolist()
        falls = any(y < x for x, y in zip(cu, cu[1:], strict=False))
        if not cu or cu[0] != 0 or cu[-1] != sum(lens) or falls:
            raise CallError(f"cu_seqlens must run from 0 to the whole length {sum(lens)} (the "
                            f"slices' lengths {lens} summed) without decreasing, got {cu}")
        edges = set(cu)
        local = [0] + [c - s for c in cu if s < c < e] + [T]
        self.n = len(local) - 1
        self.local_cu = cu_seqlens.new_tensor(local)
        first = bisect.bisect_right(cu, s) - 1  # the whole sequence's index of piece 0
        self.cont_in = (e not in edges) if reverse else (s not in edges)
        self.cont_out = (s not in edges) if reverse else (e not in edges)
        self.in_idx = self.n - 1 if reverse else 0
        self.out_idx = 0 if reverse else self.n - 1
        self.in_range = ((local[-2], T) if reverse else (0, local[1]))
        self.init_local = None
        if inits:
            self.init_local = []
            for x, ax, arg in zip(inits, self.batch_axes, g.state_args, strict=True):
                if x.shape[ax] != len(cu) - 1:
                    raise CallError(f"initial_state for state {arg!r}: with cu_seqlens it "
                                    f"holds one entry per sequence ({len(cu) - 1}) along dim "
                                    f"{ax}, got shape {tuple(x.shape)}")
                x = x.narrow(ax, first, self.n)
                if self.cont_in:  # that sequence's state comes from the previous rank
                    i = self.in_idx
                    keep = x.narrow(ax, 1, self.n - 1) if i == 0 else x.narrow(ax, 0, i)
                    z = torch.zeros_like(x.narrow(ax, i, 1))
                    x = torch.cat([z, keep] if i == 0 else [keep, z], dim=ax)
                self.init_local.append(x)


class _Info:
    """What the exchange needs besides tensors."""

    def __init__(self, group: Any, P: int, pos: int, reverse: bool, tag: float, layout: tuple):
        self.group, self.P, self.pos, self.reverse = group, P, pos, reverse
        self.tag, self.layout = tag, layout

    def rank_at(self, q: int) -> int:
        """The group rank at position q of the scan order."""
        return self.P - 1 - q if self.reverse else q


def _gather(info: _Info, flat: torch.Tensor, what: str) -> list[torch.Tensor]:
    """all_gather of `flat` with the call's tag appended; checks every rank sent this call's."""
    tag = torch.full((1,), info.tag, dtype=flat.dtype, device=flat.device)
    buf = torch.cat([flat.reshape(-1), tag]).contiguous()
    bufs = [torch.empty_like(buf) for _ in range(info.P)]
    dist.all_gather(bufs, buf, group=info.group)
    tags = torch.stack([x[-1] for x in bufs]).tolist()  # one host sync
    if any(t != info.tag for t in tags):
        raise RuntimeError(f"context_parallel: the {what} of different calls met (call tags "
                           f"{tags} per rank): every rank must make the same calls and run "
                           "their backward in the same order")
    return [x[:-1] for x in bufs]


class _Exchange(torch.autograd.Function):
    """(A, b) of this rank's slice in; the state entering the slice out (zeros for the first
    in scan order). `passed` tensors go through unchanged, so that every rank's outputs reach
    this node and every rank joins the collective in the backward."""

    @staticmethod
    def forward(ctx, info: _Info, A, b, dummy, *passed):
        n = A.numel()
        bufs = _gather(info, torch.cat([A, b]), "summaries")
        sums = [bufs[info.rank_at(q)] for q in range(info.P)]
        h = [torch.zeros_like(x) for x in _unpack(A, info.layout)]
        for q in range(info.pos):  # the fold, in scan order
            As, bs = _unpack(sums[q][:n], info.layout), _unpack(sums[q][n:], info.layout)
            h = [a * x + c for a, x, c in zip(As, h, bs, strict=True)]
        ctx.info = info
        ctx.save_for_backward(*[s[:n] for s in sums[info.pos + 1:]], _pack(h))
        return (_pack(h), *passed)

    @staticmethod
    def backward(ctx, g_h, *g_passed):
        info = ctx.info
        *As, h = ctx.saved_tensors
        if g_h is None:
            g_h = torch.zeros_like(h)
        gs = _gather(info, g_h, "state cotangents")
        gs = [gs[info.rank_at(q)] for q in range(info.P)]
        L = info.layout
        # G_q = d loss / d h_in(q) through every later rank: G_q = g_q + conj(A_q) G_{q+1}
        G = [torch.zeros_like(x) for x in _unpack(h, L)]
        for q in range(info.P - 1, info.pos, -1):
            a = _unpack(As[q - info.pos - 1], L)
            G = [gq + ai.conj() * Gi for gq, ai, Gi in zip(_unpack(gs[q], L), a, G, strict=True)]
        dA = _pack([Gi * hi.conj() for Gi, hi in zip(G, _unpack(h, L), strict=True)])
        return (None, dA, _pack(G), None, *g_passed)


class _SyncGrads(torch.autograd.Function):
    """The Params unchanged; their gradients summed over the group in the backward (one
    all_reduce for all of them, tagged like the exchange)."""

    @staticmethod
    def forward(ctx, info: tuple, *params):
        ctx.info = info
        ctx.metas = [(p.shape, p.dtype, p.device) for p in params]
        return tuple(p.view_as(p) for p in params)

    @staticmethod
    def backward(ctx, *grads):
        group, P, tag = ctx.info
        wide = any(d in (torch.float64, torch.complex128) for _, d, _ in ctx.metas)
        real = torch.float64 if wide else torch.float32
        flat = []
        for gr, (shape, dtype, device) in zip(grads, ctx.metas, strict=True):
            if gr is None:
                gr = torch.zeros(shape, dtype=dtype, device=device)
            gr = torch.view_as_real(gr) if gr.is_complex() else gr
            flat.append(gr.reshape(-1).to(real))
        device = ctx.metas[0][2]
        flat.append(torch.full((1,), tag, dtype=real, device=device))
        buf = torch.cat(flat)
        dist.all_reduce(buf, group=group)
        if buf[-1].item() != tag * P:
            raise RuntimeError("context_parallel(sync_params=True): the Param gradients of "
                               "different calls met: every rank must make the same calls and "
                               "run their backward in the same order")
        out, i = [], 0
        for shape, dtype, _ in ctx.metas:
            k = math.prod(shape) * (2 if dtype.is_complex else 1)
            x = buf[i:i + k]
            i += k
            if dtype.is_complex:
                x = _complex(x.reshape(*shape, 2).to(dtype.to_real()))
            out.append(x.reshape(shape).to(dtype))
        return (None, *out)


_CALLS: dict[tuple, int] = {}  # context group (its ranks) -> calls made on it


def _next_tag(group: Any) -> float:
    """This call's tag: the number of calls on the group so far; every rank of the group makes
    the same calls, so the same number."""
    key = tuple(dist.get_process_group_ranks(group or dist.group.WORLD))
    _CALLS[key] = _CALLS.get(key, 0) + 1
    return float(_CALLS[key] % _TAG)


def _as_list(x: Any) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (tuple, list)) else [x]


def _pack(states: list[torch.Tensor]) -> torch.Tensor:
    """States (complex ones as real pairs) flattened into one real vector (differentiable)."""
    return torch.cat([(torch.view_as_real(s) if s.is_complex() else s).reshape(-1)
                      for s in states])


def _unpack(flat: torch.Tensor, layout: tuple) -> list[torch.Tensor]:
    """The inverse of `_pack` for states of `layout` (differentiable)."""
    out, i = [], 0
    for shape, cplx, _ in layout:
        k = math.prod(shape) * (2 if cplx else 1)
        x = flat[i:i + k]
        i += k
        out.append(_complex(x.reshape(*shape, 2)) if cplx else x.reshape(shape))
    return out


def _complex(pairs: torch.Tensor) -> torch.Tensor:
    """(..., 2) real pairs as a complex tensor (copied when their offset is odd, which
    view_as_complex cannot view)."""
    return torch.view_as_complex(pairs if pairs.storage_offset() % 2 == 0 else pairs.clone())


def context_parallel(layer: Layer, group: Any = None, *,
                     sync_params: bool = False) -> ContextParallel:
    """Split `layer`'s sequences along time over the ranks of a torch.distributed group.

    Args:
        layer (Layer): made by `lrc.compile`; every state must have a diagonal transition
            (Mamba-1/2, GLA, RetNet, RWKV-4/6, S4D, LRU, RG-LRU; any lowering).
        group (ProcessGroup, optional): the context group (None: the default group). In a
            data x context mesh pass the context group; the data dim is the batch and needs
            nothing from lrc.
        sync_params (bool): sum the Params' gradients over the group in the backward.

    Returns:
        ContextParallel: called like the layer, each rank with its slice of time.

    Raises:
        Unsupported: a state whose transition is not diagonal, or one driven by another state.
        RuntimeError: torch.distributed is not initialized.

    Example::

        >>> cp = lrc.distributed.context_parallel(layer, group)   # doctest: +SKIP
        >>> y_mine = cp(x[:, lo:hi], A)                            # doctest: +SKIP
    """
    return ContextParallel(layer, group, sync_params)
