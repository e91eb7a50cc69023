"""Launching the scan kernels: arguments from tensors, autograd, pre and post work in PyTorch.

Tensors reach the kernels as they are: every stride is passed per named dim (a grouped axis
gives each of its dims a stride), so no layout is copied. Complex arguments and states travel
as their real and imaginary parts (strided views of `torch.view_as_real`).
"""
from __future__ import annotations

import math
import os
from dataclasses import replace

import torch

from ..codegen import module as modules
from ..codegen.program import ScanProgram
from ..codegen import scan_tune
from ..codegen.scan_tune import ScanConfig
from ..codegen.tiling import block_sizes, grid_size, next_pow2
from ..ir import interpret
from ..ir.dims import Role
from ..ir.graph import Axes, Graph
from ..ir.nodes import Input
from ..passes.analysis import params_tape, time_varying
from .bind import from_canonical, to_canonical
from .call import Call

# launch settings, module-level so a benchmark can sweep them
CHUNK = None          # time steps per scan chunk (the forward's checkpoint interval); None:
                      # 64 for elementwise states, 16 when each element carries a whole dim
                      # (the best of a sweep over chunk lengths)
SEGMENTS = None       # time segments of the two-level scan; None: as many as fill the GPU when
                      # batch x channels alone would not (see `segments`)
BUDGET = 4096         # register elements per value and chunk, for choosing block sizes
NUM_WARPS = 4
NUM_STAGES = 2
CONFIG: ScanConfig | None = None  # forces one config (for sweeps)
TUNE = os.environ.get("LRC_TUNE", "1") != "0"  # on the GPU, time scan_tune's candidates once
                      # per shape (remembered on disk) and take the best; LRC_TUNE=0: defaults


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
    if len(_STRIDES) > 4096:
        _STRIDES.clear()
    _STRIDES[key] = out
    return out


_CONFIGURED: dict[tuple, tuple] = {}  # Launch.configure's results per program and shape
_STRIDES: dict[tuple, dict] = {}  # dim_strides per (strides, axes, group sizes): host time


def part_view(x: torch.Tensor, part: str) -> torch.Tensor:
    """The real or imaginary part of `x` as a strided real view (differentiable)."""
    if not part:
        return x
    if not x.is_complex():
        x = x.to(torch.complex64 if x.dtype != torch.float64 else torch.complex128)
    return torch.view_as_real(x)[..., 0 if part == "re" else 1]


def chunk_of(prog: ScanProgram, sizes: dict[str, int], T: int) -> int:
    """The scan's chunk length for these sizes (see CHUNK): one row of time per program (no
    tile dims) takes up to 1024 steps at once."""
    if CHUNK is not None:
        return CHUNK
    t = prog.tiling
    if not t.tile:
        return min(1024, max(64, next_pow2(T)))
    whole = math.prod(sizes[d] for d in t.tile if d not in t.split)
    return 64 if whole <= 4 else 16


AS_GPU: int | None = None  # set by codegen.aot.recording(as_gpu=...): launches are sized as
                          # for a GPU with this many SMs (and not run), whatever the device


def _sm_count(device: torch.device) -> int:
    if AS_GPU is not None:
        return AS_GPU
    return torch.cuda.get_device_properties(device).multi_processor_count


def segments(prog: ScanProgram, run: "Launch", T: int, backward: bool = False
             ) -> tuple[int, int]:
    """(segments, steps per segment) for the forward scan: one segment, unless the programs over
    batch x channels are fewer than the GPU can run at once and the sequence is long; then
    enough segments of at least four chunks each to fill it (the two-level scan)."""
    tc = run.tc
    whole = -(-T // tc) * tc
    able = prog.bsegmented if backward else prog.segmented
    able = able and run.tiling is prog.tiling  # an unrolled forward has no SUMMARY pass
    if prog.mode != "scan" or not able or T <= tc or run.cu is not None:
        return 1, max(whole, tc)
    if SEGMENTS is not None:
        n = SEGMENTS
    elif run.interpret:
        n = 1
    else:
        have = grid_size(prog.tiling, run.sizes, run.blocks)
        want = 2 * _sm_count(run.device)
        n = 1 if have >= want else min(-(-want // have), T // (4 * tc))
    n = max(1, n)
    seg_len = -(-(-(-T // n)) // tc) * tc
    return -(-T // seg_len), seg_len


class Launch:
    """One kernel launch: fills the signature's parameters from named tensors."""

    def __init__(self, prog: ScanProgram, which: str, sizes: dict[str, int], T: int,
                 device: torch.device, config: ScanConfig | None = None,
                 cu: torch.Tensor | None = None):
        """`cu`: packed sequences' boundaries (cu_seqlens on the device), one program row per
        sequence; then `sizes` holds the number of sequences along the batch dim and `T` the
        longest sequence."""
        self.prog, self.which, self.sizes, self.T = prog, which, sizes, T
        self.tiling = prog.tilings.get(which, prog.tiling)
        self.device, self.cu = device, cu
        self.interpret = device.type != "cuda" and AS_GPU is None
        # programs to fill the GPU with: the decode step is one short wave bound by memory
        # latency, where twice the programs of half the tile hide more of it (Mamba-1's
        # step: tiles of 128 x 16 beat 256 x 16)
        self.programs = 1 if self.interpret else (8 if which == "step" else 4) * _sm_count(
            device)
        self.chunked = which != "step" and prog.mode == "scan"
        self.tensors: dict[str, tuple[torch.Tensor, dict]] = {}
        self.fired: list[tuple[list, dict, tuple]] = []  # (arguments, constexprs, grid)
        self.compiled: list = []  # the kernel each fired launch ran (None interpreted)
        self.configure(config)

    def configure(self, config: ScanConfig | None) -> None:
        """Chunk, blocks, warps and stages: `config`'s, else the defaults of this module."""
        prog, sizes = self.prog, self.sizes
        key = (id(prog), self.which, self.chunked, tuple(sizes.items()), self.T, config,
               self.programs,
               CHUNK, BUDGET, NUM_WARPS, NUM_STAGES)
        hit = _CONFIGURED.get(key)
        self.maxnreg = config.maxnreg if config else None
        self.order = config.order if config else False
        self.loop = config.loop if config else 0
        if hit is not None and hit[0] is prog:
            self.tc, blocks, self.warps, self.stages, self.n_seg, self.seg_len = hit[1:]
            self.blocks = dict(blocks)
            return
        self.tc = (1 if not self.chunked else config.tc if config else
                   chunk_of(prog, sizes, self.T))
        self.blocks = block_sizes(self.tiling, sizes, self.tc, budget=BUDGET,
                                  programs=self.programs)
        if config is not None and config.block is not None:
            for d in self.tiling.split:
                self.blocks[d] = min(next_pow2(sizes[d]), config.block)
        self.warps = config.warps if config else NUM_WARPS
        self.stages = config.stages if config else NUM_STAGES
        self.n_seg, self.seg_len = 1, max(-(-self.T // self.tc) * self.tc, self.tc)
        if len(_CONFIGURED) > 1024:
            _CONFIGURED.clear()
        _CONFIGURED[key] = (prog, self.tc, dict(self.blocks), self.warps, self.stages,
                            self.n_seg, self.seg_len)

    def add(self, key: str, x: torch.Tensor, strides: dict) -> None:
        if self.cu is not None and "#t" in strides:  # packed: one batch row, rebased per program
            strides = {**strides, self.prog.batch: 0}
        self.tensors[key] = (x, strides)

    def summaries(self, s: str, dims, like: torch.Tensor) -> None:
        """Buffers for state `s`'s segment summaries (see codegen.scan.forward_source): its
        value at each segment's end from zero, and the segment's decay (up to two columns);
        with one segment nothing reads them."""
        if self.n_seg == 1:
            self.add(f"sum:{s}", like, {})
            self.add(f"dec:{s}", like, {})
            return
        shape = list(like.shape)
        summ = like.new_empty([self.n_seg] + shape, dtype=torch.float32)
        dec = like.new_empty([self.n_seg, 2] + shape, dtype=torch.float32)
        self.add(f"sum:{s}", summ, _state_strides(summ, dims, True))
        self.add(f"dec:{s}", dec, {"#c": dec.stride(0), "#j": dec.stride(1),
                                   **{d: dec.stride(i + 2) for i, d in enumerate(dims)}})

    def __call__(self, **consts) -> None:
        params, consts, grid = self.arguments(consts)
        self.fired.append((params, consts, grid))
        self.compiled.append(self.fire(params, consts, grid))

    def arguments(self, consts: dict) -> tuple[list, dict, tuple]:
        """The kernel's arguments in signature order, its constexprs and its grid."""
        prog, t, blocks = self.prog, self.tiling, self.blocks
        if self.chunked and "cu" not in self.tensors:
            self.tensors["cu"] = (self.cu if self.cu is not None else _no_cu(self.device), {})
        params = []
        for p in prog.signatures[self.which].params:
            if p[0] == "ptr":
                params.append(self.tensors[p[1]][0])
            elif p[0] == "stride":
                params.append(self.tensors[p[1]][1].get(p[2], 0))
            else:
                extra = {"T": self.T, "N_SEG": self.n_seg, "SEG_LEN": self.seg_len}
                params.append(extra[p[1]] if p[1] in extra else self.sizes[p[1]])
        consts = dict(consts, TC=self.tc, **{f"BLOCK_{d}": b for d, b in blocks.items()})
        if self.which == "step":  # the tuned load order (loop._after_state), inline assembly
            consts["ORDER"] = self.order and not self.interpret
        if t.unroll is not None:  # nothing to mask: whole chunks, the unrolled dim's size
            consts["EVEN"] = (self.cu is None and self.T % self.tc == 0
                              and blocks[t.unroll] == self.sizes[t.unroll]
                              and all(self.sizes[d] % blocks[d] == 0 for d in t.split))
            consts["LOOP_BY"] = self.loop
        if self.chunked:
            consts["STAGES"] = self.stages
            consts["VARLEN"] = self.cu is not None
        return params, consts, (grid_size(t, self.sizes, blocks) * self.n_seg,)

    def fire(self, params: list, consts: dict, grid: tuple):
        """Launch; returns the compiled kernel that ran (None under the interpreter)."""
        fn = self.prog.kernel_fn(self.which, self.interpret)
        if self.interpret:
            with modules.interpreted():
                fn[grid](*params, **consts)
            return None
        cap = {} if self.maxnreg is None else {"maxnreg": self.maxnreg}
        return fn[grid](*params, num_warps=self.warps, num_stages=self.stages, **cap, **consts)


class Direct:
    """A recorded launch fired again straight through its compiled kernel's launcher. Triton's
    `fn[grid](...)` binds and specializes every argument and looks the kernel up on each call:
    with the ~50 arguments of a scan kernel, this costs more host time than an elementwise
    scan's kernel takes on the GPU, so the host, not the kernel, would bound the call.
    A replay's arguments differ from the recorded ones only in their tensors, whose shapes,
    strides and dtypes the replay key fixes; what the kernel was specialized on besides is
    each pointer's 16-byte alignment, checked per call (else the launch takes Triton's path)."""

    def __init__(self, kernel, params: list, consts: dict, holes: list):
        from triton import knobs
        from triton.runtime.driver import driver

        names = kernel.src.fn.arg_names
        self.kernel, self.knobs, self.driver = kernel, knobs.runtime, driver.active
        self.device = self.driver.get_current_device()
        self.tail = [consts[n] for n in names[len(params):]]  # the constexprs, in order
        self.holes = [i for i, _, _ in holes]
        self.aligned = [params[i].data_ptr() % 16 == 0 for i in self.holes]

    def fits(self, params: list) -> bool:
        return (_quiet(self.knobs.launch_enter_hook) and _quiet(self.knobs.launch_exit_hook)
                and self.driver.get_current_device() == self.device
                and all((params[i].data_ptr() % 16 == 0) == a
                        for i, a in zip(self.holes, self.aligned)))

    def __call__(self, params: list, grid: tuple) -> None:
        k = self.kernel
        gx, gy, gz = (*grid, 1, 1)[:3]
        k.run(gx, gy, gz, self.driver.get_current_stream(self.device), k.function,
              k.packed_metadata, None, None, None, *params, *self.tail)


def _quiet(hook) -> bool:
    """No launch hook to call (Triton 3.6 keeps an empty HookChain; a profiler adds to it)."""
    return hook is None or getattr(hook, "calls", None) == []


def _templates(run: "Launch", slots: dict[int, tuple[str, int]]) -> list[tuple]:
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


def _keep(table: dict, key: tuple | None, make) -> None:
    """Remember `make()` (a Replay) under `key`: at most 256 kept, none where the launches
    cannot be replayed (key None, or make raising ValueError)."""
    if key is None:
        return
    if len(table) > 256:
        table.clear()
    try:
        table[key] = make()
    except ValueError:
        pass


def _play(run: "Launch", launches: list[tuple], src: dict[str, list]) -> None:
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
    dtypes, device, knobs; `_replay_key`) and played back on later calls: the same buffers
    allocated, the same arguments with the new call's tensors in their slots, no config
    lookup, block sizing or argument assembly again. Host time per call is what an
    elementwise scan's forward would otherwise lose to hand-written kernels."""

    def __init__(self, run: "Launch", ins, h0s, outs, finals, chks, tc: int):
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


_REPLAYS: dict[tuple, Replay] = {}


def _replay_key(prog: ScanProgram, info: dict, ins, h0s) -> tuple | None:
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
            _unrolling(prog, info, None), _infer_differs(prog, info))


class BackReplay:
    """A backward's launches recorded on its first call with one signature (`_back_key`) and
    played back: its buffers made again (zeroed where the first call zeroed them: atomic
    sums, absent cotangents), the arguments filled from the new call's inputs, checkpoints
    and cotangents. Returns the gradient buffers as the full path does."""

    def __init__(self, run: "Launch", ins, chks, grads, fresh, bufs: dict, dh0s: list):
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


_BACK_REPLAYS: dict[tuple, BackReplay] = {}


def _back_key(prog: ScanProgram, info: dict, ins, chks, grads, tc: int) -> tuple | None:
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
            tuple(info["inputs"]), tc, same, capturing, sig, knobs())


def knobs() -> tuple:
    """This module's launch settings, as a key."""
    return CONFIG, TUNE, CHUNK, SEGMENTS, BUDGET, NUM_WARPS, NUM_STAGES, AS_GPU


_NO_CU: dict[torch.device, torch.Tensor] = {}


def _no_cu(device: torch.device) -> torch.Tensor:
    """The cu_seqlens argument of a launch without packed sequences (never read)."""
    if device not in _NO_CU:
        _NO_CU[device] = torch.zeros(2, dtype=torch.int32, device=device)
    return _NO_CU[device]


def _state_strides(x: torch.Tensor, dims, chunked: bool) -> dict:
    st = {d: x.stride(i + (1 if chunked else 0)) for i, d in enumerate(dims)}
    if chunked:
        st["#c"] = x.stride(0)
    return st


class ScanFunction(torch.autograd.Function):
    """Kernel inputs (real tensors, one per kernel-graph input node) and initial states ->
    kernel outputs and final states, with the generated backward."""

    @staticmethod
    def forward(ctx, prog: ScanProgram, info: dict, *tensors: torch.Tensor):
        k, sizes, T = prog.kernel, info["sizes"], info["T"]
        n_in = len(info["inputs"])
        ins, h0s = tensors[:n_in], tensors[n_in:]
        device = info["device"]
        has_h0 = bool(h0s) and h0s[0].numel() > 0
        cu, ksizes, kT = _varlen(prog, info)
        loop = prog.mode != "scan"  # the one-token loop saves every state, the scan one per chunk

        def launch(config: ScanConfig | None):
            which = "forward_n" if config is not None and config.unroll else "forward"
            run = Launch(prog, which, ksizes, kT, device, config, cu)
            for name, x in zip(info["inputs"], ins):
                run.add(f"in:{name}", x, dim_strides(x, k[name].annotation.axes, sizes, k.time))
            outs = []
            for o, axes, dtype in zip(k.outputs, k.out_axes, info["out_dtypes"]):
                shape = [T if a == (k.time,) else math.prod(sizes[d] for d in a) for a in axes]
                y = torch.empty(shape, dtype=dtype, device=device)
                run.add(f"out:{o}", y, dim_strides(y, axes, sizes, k.time))
                outs.append(y)
            n_saved = T if loop else -(-kT // run.tc)
            finals, chks = [], []
            for s, h0 in zip(k.state_names, h0s):
                dims = k[s].dims
                shape = [ksizes[d] for d in dims]
                hT = torch.empty(shape, dtype=torch.float32, device=device)
                chk = torch.empty([n_saved] + shape, dtype=torch.float32, device=device)
                if h0.numel():
                    run.add(f"h0:{s}", h0, dim_strides(h0, info["state_axes"][s], ksizes,
                                                       k.time))
                else:
                    run.add(f"h0:{s}", hT, {})
                run.add(f"hT:{s}", hT, _state_strides(hT, dims, False))
                st = _state_strides(chk, dims, True)
                if loop:
                    st["#t"] = st.pop("#c")
                run.add(f"all:{s}" if loop else f"chk:{s}", chk, st)
                finals.append(hT)
                chks.append(chk)
            if loop:
                run(HAS_H0=has_h0, REVERSE=info["reverse"])
            else:
                run.n_seg, run.seg_len = segments(prog, run, T)
                for s, hT in zip(k.state_names, finals):
                    run.summaries(s, k[s].dims, hT)
                if run.n_seg > 1:
                    run(HAS_H0=has_h0, SAVE=True, REVERSE=info["reverse"], SUMMARY=True)
                run(HAS_H0=has_h0, SAVE=True, REVERSE=info["reverse"], SUMMARY=False)
            return outs, finals, chks, run

        key = _replay_key(prog, info, ins, h0s)
        replay = _REPLAYS.get(key) if key is not None else None
        if replay is not None and replay.run.prog is prog:
            outs, finals, chks, tc = replay(ins, h0s, device)
        else:
            config = _config(prog, "forward", info, ins, launch)
            outs, finals, chks, run = launch(config)
            # the outputs the backward reads its states from (ScanProgram.saved) are kept
            # with the checkpoints, after them
            chks = chks + [outs[list(k.outputs).index(o)] for o in prog.saved.values()]
            tc = run.tc
            _keep(_REPLAYS, key, lambda: Replay(run, ins, h0s, outs, finals, chks, tc))
        ctx.prog, ctx.info, ctx.has_h0 = prog, info, has_h0
        ctx.set_materialize_grads(False)  # an unused output's or final state's: None, not 0
        ctx.tc = tc
        ctx.save_for_backward(*ins, *chks)
        return (*outs, *finals)

    @staticmethod
    def backward(ctx, *grads):
        prog, info = ctx.prog, ctx.info
        k, bw, sizes, T = prog.kernel, prog.backward, info["sizes"], info["T"]
        saved = ctx.saved_tensors
        n_in = len(info["inputs"])
        ins, chks = saved[:n_in], saved[n_in:]
        device = info["device"]
        loop = prog.mode != "scan"
        n_out = len(k.outputs)
        cots, zeros = [], []  # zeros: the cotangents made here (outputs given no gradient)
        for (o, cot), axes, gy in zip(bw.cotangents, k.out_axes, grads[:n_out]):
            if gy is None:
                shape = [T if a == (k.time,) else math.prod(sizes[d] for d in a) for a in axes]
                gy = torch.zeros(shape, dtype=torch.float32, device=device)
                zeros.append((gy, True))
            cots.append((cot, gy, axes))
        d_finals = grads[n_out:]
        has_dht = any(gh is not None for gh in d_finals)
        names = list(info["inputs"])
        cu, ksizes, kT = _varlen(prog, info)

        def launch(config: ScanConfig | None):
            fresh = list(zeros)  # the buffers this launch makes: (tensor, zeroed)

            def made(t: torch.Tensor, zero: bool = False) -> torch.Tensor:
                fresh.append((t, zero))
                return t

            unrolled = config is not None and config.unroll and "backward_n" in prog.sources
            which = "backward_n" if unrolled else "backward"
            run = Launch(prog, which, ksizes, kT, device, config, cu)
            for name, x in zip(info["inputs"], ins):
                run.add(f"in:{name}", x, dim_strides(x, k[name].annotation.axes, sizes, k.time))
            for cot, gy, axes in cots:
                run.add(f"in:{cot}", gy, dim_strides(gy, axes, sizes, k.time))
            for o, y in zip(prog.saved.values(), chks[len(k.state_names):]):
                axes = k.out_axes[list(k.outputs).index(o)]
                run.add(f"saved:{o}", y, dim_strides(y, axes, sizes, k.time))
            for s, chk in zip(k.state_names, chks):
                st = _state_strides(chk, k[s].dims, True)
                if loop:  # the saved states are the adjoint step's Seq inputs
                    st["#t"] = st.pop("#c")
                    run.add(f"in:{dict(bw.forward_states)[s]}", chk, st)
                else:  # a chunk k times the forward's reads every k-th checkpoint
                    assert run.tc % ctx.tc == 0 and (run.tc == ctx.tc or not info["reverse"])
                    st["#c"] *= run.tc // ctx.tc
                    run.add(f"chk:{s}", chk, st)
            dh0s = []
            for (s, adj), gh in zip(bw.adjoints, d_finals):
                dims = k[s].dims
                dh0 = made(torch.empty([ksizes[d] for d in dims], dtype=torch.float32,
                                       device=device))
                if gh is None and not has_dht:  # not read (HAS_DHT, the loop's HAS_H0)
                    gh = dh0
                elif gh is None:  # another state's is given: this one reads as zeros
                    gh = made(torch.zeros([ksizes[d] for d in dims], dtype=torch.float32,
                                          device=device), True)
                if loop:
                    run.add(f"h0:{adj}", gh, _state_strides(gh, dims, False))
                    run.add(f"hT:{adj}", dh0, _state_strides(dh0, dims, False))
                else:
                    run.add(f"dhT:{adj}", gh, _state_strides(gh, dims, False))
                    run.add(f"dh0:{s}", dh0, _state_strides(dh0, dims, False))
                dh0s.append(dh0)
            if not loop:
                run.n_seg, run.seg_len = segments(prog, run, T, backward=True)
                for (s, adj), dh0 in zip(bw.adjoints, dh0s):
                    run.summaries(adj, k[s].dims, dh0)
            bufs = {}
            for x, out in bw.seq_grads + bw.param_grads:
                parts, atomic = prog.partials[out]
                timed = k[x].role is Role.SEQ
                slots = [] if timed or loop else [run.n_seg]  # a Param's gradient: per segment
                parts_shape = slots + [ksizes[d] for d in parts]  # one slot per program
                shape = parts_shape + ([T] if timed else []) + [sizes[d] for d in k[x].dims]
                # a Seq gradient stored once per element: in its input's dtype (no float32
                # buffer and cast pass); partial sums and atomic adds stay in float32
                # and laid out like it (no copy to the input's strides afterwards)
                if timed and not parts and not slots and (not atomic or which == "backward_n"):
                    # backward_n adds B's gradient along time per index of n (in float32):
                    # laid out as B, time contiguous, the adds are vectors
                    like = ins[names.index(x)]
                    buf = made(torch.zeros_like(like, dtype=torch.float32) if atomic else
                               torch.empty_like(like), atomic)
                    run.add(f"grad:{x}", buf, dim_strides(buf, k[x].annotation.axes, sizes,
                                                          k.time))
                    bufs[x] = (buf, None)
                    continue
                buf = made((torch.zeros if atomic else torch.empty)(
                    shape, dtype=torch.float32, device=device), atomic)
                st = {"#c": buf.stride(0)} if slots else {}
                st.update({f"#p_{d}": buf.stride(len(slots) + i) for i, d in enumerate(parts)})
                parts = slots + list(parts)
                off = len(parts)
                if timed:
                    st["#t"] = buf.stride(off)
                    off += 1
                st.update({d: buf.stride(off + i) for i, d in enumerate(k[x].dims)})
                run.add(f"grad:{x}", buf, st)
                bufs[x] = (buf, len(parts))
            if loop:
                run(HAS_H0=has_dht, REVERSE=not info["reverse"])
            else:
                if run.n_seg > 1:
                    run(HAS_DHT=has_dht, REVERSE=info["reverse"], BACK=not info["reverse"],
                        SUMMARY=True)
                run(HAS_DHT=has_dht, REVERSE=info["reverse"], BACK=not info["reverse"],
                    SUMMARY=False)
            return bufs, dh0s, run, fresh

        key = _back_key(prog, info, ins, chks, grads, ctx.tc)
        replay = _BACK_REPLAYS.get(key) if key is not None else None
        if replay is not None and replay.run.prog is prog:
            bufs, dh0s = replay(ins, chks, grads, device)
        else:
            config = _config(prog, "backward", info, ins, launch, tc=ctx.tc)
            bufs, dh0s, run, fresh = launch(config)
            _keep(_BACK_REPLAYS, key,
                  lambda: BackReplay(run, ins, chks, grads, fresh, bufs, dh0s))
        out_grads = input_grads(prog, info, ins, bufs)
        h0_grads = [dims_to_layout(dh0, k[s].dims, info["state_axes"][s], ksizes)
                    if ctx.has_h0 else None for dh0, s in zip(dh0s, k.state_names)]
        return (None, None, *out_grads, *h0_grads)


def input_grads(prog: ScanProgram, info: dict, ins, bufs: dict) -> list[torch.Tensor]:
    """The gradients of the kernel's inputs from the backward's buffers: as written (a Seq
    gradient in its input's layout and dtype), or partial sums added up and laid out."""
    out = []
    for name, x in zip(info["inputs"], ins):
        buf, n_parts = bufs[name]
        if n_parts is None:
            out.append(buf.to(x.dtype))
            continue
        gsum = buf.sum(tuple(range(n_parts))) if n_parts else buf
        out.append(_to_layout(gsum, prog.kernel, name, info["sizes"]).to(x.dtype))
    return out


def _varlen(prog: ScanProgram, info: dict) -> tuple:
    """(cu, sizes, T) of the kernels' launches: for packed sequences (info['varlen'] = cu on
    the device, the longest length, the number of sequences) the batch dim counts sequences
    and T is the longest; else the call's own."""
    if info.get("varlen") is None:
        return None, info["sizes"], info["T"]
    cu, longest, n = info["varlen"]
    return cu, dict(info["sizes"], **{prog.batch: n}), longest


def _tune_key(prog: ScanProgram, which: str, info: dict, ins, tc: int | None) -> tuple:
    return (prog.source, which, tuple(info["sizes"].items()), info["T"], tc, info["reverse"],
            tuple((x.dtype, x.stride()) for x in ins), info.get("varlen") is not None,
            _unrolling(prog, info, tc), _infer_differs(prog, info))


def _config(prog: ScanProgram, which: str, info: dict, ins, launch, tc: int | None = None
            ) -> ScanConfig | None:
    """The launch settings: CONFIG if set; on the GPU with TUNE the fastest candidate for this
    shape (scan_tune), timed once per process; else the module's defaults (None). A backward
    keeps the forward's chunk `tc`, whose checkpoints it reads."""
    if prog.mode != "scan":
        return None
    if CONFIG is not None:
        return CONFIG if tc is None else replace(CONFIG, tc=tc)
    default = (None if tc is None or tc == chunk_of(prog, info["sizes"], info["T"]) else
               ScanConfig(tc))
    if info["device"].type != "cuda" and AS_GPU is None:
        return default
    if not TUNE:  # the defaults, or the first candidate Triton compiles where they fail
        if info["device"].type == "cuda" and torch.cuda.is_current_stream_capturing():
            return scan_tune.chosen(_tune_key(prog, which, info, ins, tc) + ("untimed",)) \
                or default
        return scan_tune.first_working(_tune_key(prog, which, info, ins, tc), [default] + [
            c for c in _candidates(prog, info, ins, tc) if c != default], launch)
    if torch.cuda.is_current_stream_capturing():  # no timing runs inside a CUDA graph capture
        found = scan_tune.chosen(_tune_key(prog, which, info, ins, tc))
        return found or (None if tc is None or tc == chunk_of(prog, info["sizes"], info["T"])
                         else ScanConfig(tc))
    key = _tune_key(prog, which, info, ins, tc)
    done = scan_tune.chosen(key)
    if done is not None:
        return done
    device = torch.cuda.get_device_name(info["device"])
    done = scan_tune.remembered(key, device)
    if done is not None:
        return done
    best = scan_tune.choose(key, _candidates(prog, info, ins, tc), _kernels_only(launch))
    scan_tune.remember(key, device, best)
    return best


def step_order(run: Launch) -> None:
    """Set the decode step's load order (ORDER, loop._after_state): on the GPU, both orders
    are compiled once per shape (launched on scratch outputs, so the caller's state and
    outputs are left alone) and the states-first order taken where it costs no registers
    over the other and spills none. Triton lays the tiles out by the order of the loads:
    for Mamba-1's step the order costs no registers and saves a little latency; for
    decode_hpn's step (P64 N128) it costs about twice the registers and many more barriers.
    The choice compares registers and spills, not timings: the gain is within do_bench's
    noise.
    Inside a CUDA-graph capture, before any eager step of the shape: the inputs first."""
    if run.interpret or AS_GPU is not None:
        return
    key = (run.prog.source, "step", tuple(run.sizes.items()),
           tuple((k, x.dtype, x.stride()) for k, (x, _) in sorted(run.tensors.items())))
    done = scan_tune.chosen(key)
    if done is None and not torch.cuda.is_current_stream_capturing():
        kept = dict(run.tensors)
        for k, (x, st) in kept.items():
            if k.startswith(("out:", "hT:")):
                run.tensors[k] = (torch.empty_strided(x.shape, x.stride(), dtype=x.dtype,
                                                      device=x.device), st)
        use = {}
        try:
            for order in (False, True):
                run.order = order
                try:
                    kernel = run.fire(*run.arguments({"HAS_H0": True}))
                except Exception:  # noqa: BLE001 (ORDER on does not compile: keep it off)
                    if not order:
                        raise
                    continue
                use[order] = (kernel.n_spills, kernel.n_regs)
        finally:
            run.tensors = kept
        done = ScanConfig(1, order=True in use and use[True][0] == 0
                          and use[True][1] <= use[False][1])
        scan_tune.keep(key, done)
    run.order = done.order if done is not None else False


def _kernels_only(launch):
    """`launch` for the tuner's timing runs: the first call with a config runs it in full
    (compiles), later ones fire its recorded kernel launches again, so the tuner times the
    kernels, not the host work around them (which can take longer than a short elementwise
    scan and would make every candidate look alike)."""
    done: dict = {}

    def run(cfg):
        if cfg in done:
            for params, consts, grid in done[cfg].fired:
                done[cfg].fire(params, consts, grid)
            return
        done[cfg] = next(x for x in launch(cfg) if isinstance(x, Launch))
    return run


def _candidates(prog: ScanProgram, info: dict, ins, tc: int | None) -> list[ScanConfig]:
    """scan_tune's candidates for this kernel and call. A backward of a chunk k times the
    forward's reads every k-th checkpoint, which holds the state entering its chunk only
    left to right (right to left the last chunk is short, and the states entering the
    backward's chunks are not every k-th): reverse scans keep the forward's chunk. Where
    the unrolled kernels apply (`_unrolling`): the no-gradient forward tries forward_n's
    configs first; with a backward_n the forward that saves for it tries only forward_n at
    chunk lengths that divide backward_n's, and the backward tries backward_n's configs
    (reading every k-th checkpoint) and one of the
    usual backward's (Mamba-1's is several times slower than backward_n: timing more of
    them costs seconds of tuning for nothing)."""
    t = prog.tiling
    whole = math.prod(info["sizes"][d] for d in t.tile if d not in t.split)
    out = scan_tune.candidates(_time_inner(prog, info, ins), whole, tc, not t.tile)
    if not t.tile and tc is None and not info.get("infer"):
        out = scan_tune.training_rows(out)
    if _unrolling(prog, info, tc):
        if tc is not None:  # the usual backward's first config as the fallback only
            out = scan_tune.candidates_unrolled_backward(tc, info["reverse"]) + out[:1]
        elif info.get("infer"):
            out = scan_tune.candidates_unrolled() + out
        else:
            out = scan_tune.candidates_unrolled_training(info["reverse"])
    return [c for c in out if tc is None or c.tc == tc or not info["reverse"]]


def _infer_differs(prog: ScanProgram, info: dict) -> bool | None:
    """Whether the call runs without gradients, where that changes the candidates (a
    program with forward_n, or one row of time per program: a training forward tunes and
    records apart); else None."""
    return (bool(info.get("infer")) if "forward_n" in prog.sources or not prog.tiling.tile
            else None)


def _unrolling(prog: ScanProgram, info: dict, tc: int | None) -> bool:
    """Whether this launch may run an unrolled kernel (ScanProgram._unrolled): time is one
    stretch (no packed sequences), and the launch is a forward nothing differentiates
    (`forward_n`), or a program has `backward_n` and the launch is its backward or the
    forward that saves checkpoints for it."""
    if info.get("varlen") is not None or "forward_n" not in prog.sources:
        return False
    if tc is None and info.get("infer"):
        return True
    return "backward_n" in prog.sources


def _time_inner(prog: ScanProgram, info: dict, ins) -> bool:
    """Whether time is the contiguous axis of the first Seq input (scan_tune's layouts)."""
    k = prog.kernel
    seqs = [(n, x) for n, x in zip(info["inputs"], ins) if k[n].role is Role.SEQ]
    return bool(seqs) and dim_strides(seqs[0][1], k[seqs[0][0]].annotation.axes,
                                      info["sizes"], k.time).get("#t") == 1


def dims_to_layout(x: torch.Tensor, dims, axes: Axes, sizes: dict[str, int]) -> torch.Tensor:
    """A tensor held as (*dims) -> laid out as `axes` (no time axis)."""
    flat = list(dims)
    x = x.permute([flat.index(d) for a in axes for d in a])
    return x.reshape([math.prod(sizes[d] for d in a) for a in axes])


def _to_layout(g: torch.Tensor, k: Graph, name: str, sizes: dict[str, int]) -> torch.Tensor:
    """A gradient held as (time?, *node dims) back in the input's annotated layout."""
    node = k[name]
    flat = ([k.time] if node.role is Role.SEQ else []) + list(node.dims)
    axes = node.annotation.axes
    order = [flat.index(d) for a in axes for d in a]
    T = g.shape[0] if node.role is Role.SEQ else 1
    shape = [T if a == (k.time,) else math.prod(sizes[d] for d in a) for a in axes]
    return g.permute(order).reshape(shape)


def evaluate(g: Graph, names, env: dict[str, torch.Tensor], sizes: dict[str, int],
             like: torch.Tensor) -> None:
    """Compute nodes `names` of `g` into `env`, over all time steps at once (PyTorch).

    A node of Params alone is computed in float64 (complex128) and rounded once: it is tiny,
    and its gradient then keeps its digits where a float32 one cancels (tanh's 1 - y^2 where
    tanh saturates)."""
    varying = time_varying(g)
    wide = lambda x: x.to(torch.complex128 if x.is_complex() else torch.float64)
    fixed = params_tape(g, frozenset(names))
    if fixed is not None and not any(n in env for n in fixed[0]):
        out, tape = fixed
        vals = tape.many({a: wide(env[a]) for a in tape.names})
        rank = 1 + len(g.dims)
        for name, v in zip(out, vals):
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(v, device=like.device,
                                    dtype=torch.complex128 if isinstance(v, complex) else
                                    torch.float64)
            v = v.reshape((1,) * (rank - v.dim()) + tuple(v.shape))
            env[name] = v.to(torch.complex64 if v.is_complex() else torch.float32)
    for n in g.nodes:
        index = isinstance(n, Input) and n.role is Role.INDEX
        if (n.name in names or index) and n.name not in env:
            if isinstance(n, Input) or n.name in varying:
                env[n.name] = interpret.eval_node(g, n, env, sizes, like)
                continue
            args = {a: wide(env[a]) for a in n.args}
            v = interpret.eval_node(g, n, {**env, **args}, sizes, like.double())
            env[n.name] = v.to(torch.complex64 if v.is_complex() else torch.float32)


def canonical_inputs(g: Graph, call: Call, dtype: torch.dtype, with_time: bool = True,
                     readers=None) -> dict[str, torch.Tensor]:
    """The graph's Seq/Param inputs as canonical tensors (for pre/post work in PyTorch); with
    `readers` (node names) only those inputs the nodes read: the others go to the kernels
    as given, and a float32 copy of each (Mamba-1's u, delta and z when only exp(A_log) is
    pre work) would be ~1 GB of traffic a call at the reference shape."""
    read = None if readers is None else {a for n in readers for a in g[n].args}
    out = {}
    for node in g.inputs():
        if node.role in (Role.SEQ, Role.PARAM) and (read is None or node.name in read):
            x = part_view(call.tensors[node.arg], node.part)
            ann = node.annotation
            out[node.name] = to_canonical(g, x.to(dtype), ann, call.sizes, with_time)
    return out


def kernel_input(prog: ScanProgram, name: str, call: Call, env, with_time: bool = True
                 ) -> torch.Tensor:
    """The tensor the kernel reads for its input `name`: the user's, or a pre result."""
    g, k = prog.g, prog.kernel
    if name in g and isinstance(g[name], Input):
        return part_view(call.tensors[g[name].arg], g[name].part)
    axes = k[name].annotation.axes
    timed = (g.time,) in axes
    if not with_time:
        axes = tuple(a for a in axes if a != (g.time,))
    x = env[name]
    # a value constant along some of its node's dims (a term that cancelled) is held with
    # size 1 there: broadcast it to the node's dims, which the kernel indexes
    t = x.shape[0] if x.dim() == 1 + len(g.dims) else 1
    x = x.expand(interpret.canonical_shape(g, k[name].dims, call.sizes, t))
    return from_canonical(g, x, axes, call.sizes, timed and with_time).contiguous()
