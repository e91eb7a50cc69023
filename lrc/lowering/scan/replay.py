"""Replays of the scan's launches: a call whose signature was seen fires the recorded
launches again with its own tensors, without the host work of building them.
"""
from __future__ import annotations

import torch

from ...bounded import Bounded
from ...kernels.launch import Direct, deterministic
from .launch import _NO_CU, Launch, knobs
from .program import ScanProgram
from .tune import infer_differs, unrolling


def _templates(run: Launch, slots: dict[int, tuple[str, int]]) -> list[tuple]:
    """`run`'s fired launches as (arguments, holes, constexprs, grid): each tensor argument
    a hole filled from its slot of `slots` (by identity) at replay. The first call's buffers
    are dropped from `run`, not kept alive."""
    kept = _NO_CU.get(run.device)  # the one tensor argument that is not the call's
    launches = []
    compiled = run.compiled + [None] * (len(run.fired) - len(run.compiled))
    for (params, consts, grid), kernel in zip(run.fired, compiled):
        template = [slots.get(id(p), ("const", p)) if isinstance(p, torch.Tensor)
                    else ("const", p) for p in params]
        if any(k == "const" and isinstance(v, torch.Tensor) and v is not kept
               for k, v in template):
            raise ValueError("a launch argument of unknown origin: not replayable")
        base = [v if k == "const" else None for k, v in template]
        holes = [(i, k, v) for i, (k, v) in enumerate(template) if k != "const"]
        direct = None if kernel is None or len(grid) != 1 else Direct(kernel, params, consts,
                                                                       holes)
        launches.append((base, holes, consts, grid, direct))
    run.tensors, run.fired, run.compiled = {}, [], []
    return launches


def keep_replay(table: dict, key: tuple | None, make) -> None:
    """Remember `make()` (a Replay) under `key`: at most 256 kept (a Bounded table), none where
    the launches cannot be replayed (key None, or make raising ValueError)."""
    if key is None:
        return
    try:
        table[key] = make()
    except ValueError:
        pass


def _play(run: Launch, launches: list[tuple], src: dict[str, list]) -> None:
    """Fire `launches` (from _templates) with their holes filled from `src`."""
    for base, holes, consts, grid, direct in launches:
        params = base.copy()
        for i, k, v in holes:
            params[i] = src[k][v]
        if direct is not None and direct.fits(params):
            direct(params, grid)
        else:
            run.fire(params, consts, grid)


class Replay:
    """A forward's launches recorded on its first call with one signature (shapes, strides,
    dtypes, device, knobs; `replay_key`) and played back on later calls: the same buffers
    allocated, the same arguments with the new call's tensors in their slots, no config
    lookup, block sizing or argument assembly again. Host time per call is what an
    elementwise scan's forward would otherwise lose to hand-written kernels."""

    def __init__(self, run: Launch, ins, h0s, outs, finals, chks, tc: int):
        slots: dict[int, tuple[str, int]] = {}
        for i, x in enumerate(ins):
            slots.setdefault(id(x), ("in", i))
        for j, x in enumerate(h0s):
            if x.numel():
                slots.setdefault(id(x), ("h0", j))
        self.new: list[tuple[tuple[int, ...], torch.dtype]] = []

        def new(x: torch.Tensor) -> tuple[str, int]:
            if id(x) not in slots:  # a buffer of this call (all made contiguous)
                assert x.is_contiguous()
                slots[id(x)] = ("new", len(self.new))
                self.new.append((tuple(x.shape), x.dtype))
            return slots[id(x)]

        self.outs = [new(x)[1] for x in outs]
        self.finals = [new(x)[1] for x in finals]
        self.chks = [new(x)[1] for x in chks]
        for name, (x, _) in run.tensors.items():
            if name.startswith(("sum:", "dec:")):
                new(x)
        self.launches = _templates(run, slots)
        self.run, self.tc = run, tc

    def __call__(self, ins, h0s, device: torch.device, plan: tuple | None = None):
        """The launches on new buffers; with a `plan` (see `planned`) some are kept ones."""
        if plan is None:
            new = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in self.new]
        else:
            new = plan[0].copy()
            for i, shape, dtype in plan[1]:
                new[i] = torch.empty(shape, dtype=dtype, device=device)
        _play(self.run, self.launches, {"in": ins, "h0": h0s, "new": new})
        return ([new[i] for i in self.outs], [new[i] for i in self.finals],
                [new[i] for i in self.chks], self.tc)

    def planned(self, checkpoints: bool, device: torch.device) -> tuple[list, list]:
        """A plan for `__call__`: the buffers the kernels only write, made once and kept
        (`scratch`), and the rest to make on each call."""
        keep = self.scratch(checkpoints, device)
        return ([keep.get(i) for i in range(len(self.new))],
                [(i, shape, dtype) for i, (shape, dtype) in enumerate(self.new) if i not in keep])


    def scratch(self, checkpoints: bool, device: torch.device) -> dict[int, torch.Tensor]:
        """Buffers a caller that reads neither the final states (nor, with `checkpoints`,
        the checkpoints) can keep and pass to every call: the kernels only write them, so
        reusing one, even by calls running at once, changes nothing anyone reads, and the
        call makes fewer allocations (host time)."""
        keep = set(self.finals) | (set(self.chks) if checkpoints else set())
        return {i: torch.empty(self.new[i][0], dtype=self.new[i][1], device=device)
                for i in sorted(keep - set(self.outs))}


REPLAYS: dict[tuple, Replay] = Bounded(256)


def replay_key(prog: ScanProgram, info: dict, ins, h0s) -> tuple | None:
    """What a forward's launches depend on besides the data (None: not replayed)."""
    if info.get("varlen") is not None:
        return None
    device = info["device"]
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    # which arguments are the same tensor (a slot is filled by the first one's position)
    args = (*ins, *h0s)
    same = tuple(next(j for j, y in enumerate(args) if y is x) for x in args)
    return (id(prog), info["T"], info["reverse"], tuple(info["sizes"].items()),
            tuple(info["out_dtypes"]), device, tuple(info["inputs"]), same, capturing,
            tuple((x.shape, x.stride(), x.dtype, x.device) for x in ins),
            tuple((x.shape, x.stride(), x.dtype, x.device) for x in h0s), knobs(),
            unrolling(prog, info, None), infer_differs(prog, info))


class BackReplay:
    """A backward's launches recorded on its first call with one signature (`back_key`) and
    played back: its buffers made again (zeroed where the first call zeroed them: atomic
    sums, absent cotangents), the arguments filled from the new call's inputs, checkpoints
    and cotangents. Returns the gradient buffers as the full path does."""

    def __init__(self, run: Launch, ins, chks, grads, fresh, bufs: dict, dh0s: list):
        slots: dict[int, tuple[str, int]] = {}
        for kind, xs in (("in", ins), ("chk", chks), ("grad", grads)):
            for i, x in enumerate(xs):
                if x is not None:
                    slots.setdefault(id(x), (kind, i))
        self.new: list[tuple] = []  # (shape, strides, dtype, zeroed)

        def new(x: torch.Tensor, zero: bool = False) -> int:
            if id(x) not in slots:
                slots[id(x)] = ("new", len(self.new))
                self.new.append((tuple(x.shape), x.stride(), x.dtype, zero))
            return slots[id(x)][1]

        for x, zero in fresh:
            new(x, zero)
        for name, (x, _) in run.tensors.items():
            if name.startswith(("sum:", "dec:")):
                new(x)
        self.bufs = {n: (new(b), parts) for n, (b, parts) in bufs.items()}
        self.dh0s = [new(x) for x in dh0s]
        self.launches = _templates(run, slots)
        self.run = run

    def __call__(self, ins, chks, grads, device: torch.device, scratch: dict | None = None):
        new = []
        for i, (shape, strides, dtype, zero) in enumerate(self.new):
            if scratch is not None and i in scratch:
                new.append(scratch[i])
                continue
            x = torch.empty_strided(shape, strides, dtype=dtype, device=device)
            new.append(x.zero_() if zero else x)
        _play(self.run, self.launches, {"in": ins, "chk": chks, "grad": grads, "new": new})
        return ({n: (new[i], parts) for n, (i, parts) in self.bufs.items()},
                [new[i] for i in self.dh0s])


    def scratch(self, device: torch.device) -> dict[int, torch.Tensor]:
        """The initial states' gradient buffers, for a caller without initial states (the
        kernel writes them, nobody reads them): kept and passed to every call (see
        Replay.scratch)."""
        out = {}
        for i in self.dh0s:
            shape, strides, dtype, zero = self.new[i]
            if not zero and i not in {j for j, _ in self.bufs.values()}:
                out[i] = torch.empty_strided(shape, strides, dtype=dtype, device=device)
        return out


BACK_REPLAYS: dict[tuple, BackReplay] = Bounded(256)


def back_key(prog: ScanProgram, info: dict, ins, chks, grads, tc: int) -> tuple | None:
    """What a backward's launches depend on besides the data (None: not replayed)."""
    if info.get("varlen") is not None:
        return None
    device = info["device"]
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    args = [x for x in (*ins, *chks, *grads) if x is not None]
    same = tuple(next(j for j, y in enumerate(args) if y is x) for x in args)
    sig = tuple(None if x is None else (x.shape, x.stride(), x.dtype, x.device)
                for x in (*ins, *chks, *grads))
    return (id(prog), info["T"], info["reverse"], tuple(info["sizes"].items()), device,
            tuple(info["inputs"]), tc, same, capturing, sig, knobs(), deterministic())
