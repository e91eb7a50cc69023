"""Launching the scan kernels: one Launch fills a kernel's parameters from named tensors.

Launch settings come from lrc.config (scan_chunk, scan_segments, scan_budget, scan_warps,
scan_stages) unless a tuned config is given.

Tensors reach the kernels as they are: every stride is passed per named dim (a grouped axis
gives each of its dims a stride), so no layout is copied. Complex arguments and states travel
as their real and imaginary parts (strided views of `torch.view_as_real`).
"""
from __future__ import annotations

import math

import torch

from ... import config
from ...bounded import Bounded
from ...kernels import abi
from ...kernels import launch as kernel_launch
from ...kernels import module as modules
from ...layout import next_pow2
from .configs import ScanConfig
from .program import ScanProgram
from .tiling import block_sizes, grid_size

_CONFIGURED: dict[tuple, tuple] = Bounded(1024)  # Launch.configure's results per program and shape


def chunk_of(prog: ScanProgram, sizes: dict[str, int], T: int) -> int:
    """The scan's chunk length for these sizes (config `scan_chunk` if set): one row of time
    per program (no tile dims) takes up to 1024 steps at once; else 64 steps for elementwise
    states, 16 when each element carries a whole dim."""
    chunk = config.get("scan_chunk")
    if chunk is not None:
        return chunk
    t = prog.tiling
    if not t.tile:
        return min(1024, max(64, next_pow2(T)))
    whole = math.prod(sizes[d] for d in t.tile if d not in t.split)
    return 64 if whole <= 4 else 16


def _sm_count(device: torch.device) -> int:
    """The GPU's SMs (config `as_gpu` when kernels.aot sizes launches for a GPU)."""
    as_gpu = config.get("as_gpu")
    if as_gpu is not None:
        return as_gpu
    return torch.cuda.get_device_properties(device).multi_processor_count


def segments(prog: ScanProgram, run: Launch, T: int, backward: bool = False
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
    if config.get("scan_segments") is not None:
        n = config.get("scan_segments")
    elif run.interpret:
        n = 1
    else:
        have = grid_size(prog.tiling, run.sizes, run.blocks)
        want = 2 * _sm_count(run.device)
        n = 1 if have >= want else min(-(-want // have), T // (4 * tc))
    n = max(1, n)
    per = -(-T // n)                     # steps per segment, rounded up to whole chunks
    seg_len = -(-per // tc) * tc
    return -(-T // seg_len), seg_len


class Launch:
    """One kernel launch: fills the signature's parameters from named tensors."""

    def __init__(self, prog: ScanProgram, which: str, sizes: dict[str, int], T: int,
                 device: torch.device, cfg: ScanConfig | None = None,
                 cu: torch.Tensor | None = None):
        """`cu`: packed sequences' boundaries (cu_seqlens on the device), one program row per
        sequence; then `sizes` holds the number of sequences along the batch dim and `T` the
        longest sequence."""
        self.prog, self.which, self.sizes, self.T = prog, which, sizes, T
        self.tiling = prog.tilings.get(which, prog.tiling)
        self.device, self.cu = device, cu
        self.interpret = device.type != "cuda" and config.get("as_gpu") is None
        # programs to fill the GPU with: the decode step is one short wave bound by memory
        # latency, where twice the programs of half the tile hide more of it (Mamba-1's
        # step: tiles of 128 x 16 beat 256 x 16)
        self.programs = 1 if self.interpret else (8 if which == "step" else 4) * _sm_count(
            device)
        self.chunked = which != "step" and prog.mode == "scan"
        self.tensors: dict[str, tuple[torch.Tensor, dict]] = {}
        self.fired: list[tuple[list, dict, tuple]] = []  # (arguments, constexprs, grid)
        self.compiled: list = []  # the kernel each fired launch ran (None interpreted)
        self.configure(cfg)

    def configure(self, cfg: ScanConfig | None) -> None:
        """Chunk, blocks, warps and stages: `cfg`'s, else lrc.config's defaults."""
        prog, sizes = self.prog, self.sizes
        key = (id(prog), self.which, self.chunked, tuple(sizes.items()), self.T, cfg,
               self.programs,
               config.get("scan_chunk"), config.get("scan_budget"), config.get("scan_warps"),
               config.get("scan_stages"))
        hit = _CONFIGURED.get(key)
        self.maxnreg = cfg.maxnreg if cfg else None
        self.order = cfg.order if cfg else False
        self.loop = cfg.loop if cfg else 0
        if hit is not None and hit[0] is prog:
            self.tc, blocks, self.warps, self.stages, self.n_seg, self.seg_len = hit[1:]
            self.blocks = dict(blocks)
            return
        self.tc = (1 if not self.chunked else cfg.tc if cfg else
                   chunk_of(prog, sizes, self.T))
        self.blocks = block_sizes(self.tiling, sizes, self.tc, budget=config.get("scan_budget"),
                                  programs=self.programs)
        if cfg is not None and cfg.block is not None:
            for d in self.tiling.split:
                self.blocks[d] = min(next_pow2(sizes[d]), cfg.block)
        self.warps = cfg.warps if cfg else config.get("scan_warps")
        self.stages = cfg.stages if cfg else config.get("scan_stages")
        self.n_seg, self.seg_len = 1, max(-(-self.T // self.tc) * self.tc, self.tc)
        _CONFIGURED[key] = (prog, self.tc, dict(self.blocks), self.warps, self.stages,
                            self.n_seg, self.seg_len)

    def add(self, key: str, x: torch.Tensor, strides: dict) -> None:
        if self.cu is not None and "#t" in strides:  # packed: one batch row, rebased per program
            strides = {**strides, self.prog.batch: 0}
        self.tensors[key] = (x, strides)

    def summaries(self, s: str, dims, like: torch.Tensor) -> None:
        """Buffers for state `s`'s segment summaries (see forward.forward_source): its
        value at each segment's end from zero, and the segment's decay (up to two columns);
        with one segment nothing reads them."""
        if self.n_seg == 1:
            self.add(f"sum:{s}", like, {})
            self.add(f"dec:{s}", like, {})
            return
        shape = list(like.shape)
        summ = like.new_empty([self.n_seg] + shape, dtype=torch.float32)
        dec = like.new_empty([self.n_seg, 2] + shape, dtype=torch.float32)
        self.add(f"sum:{s}", summ, state_strides(summ, dims, True))
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
        params = abi.arguments(prog.signatures[self.which].params, self.tensors, self.sizes,
                               {"T": self.T, "N_SEG": self.n_seg, "SEG_LEN": self.seg_len})
        consts = dict(consts, TC=self.tc, **{f"BLOCK_{d}": b for d, b in blocks.items()})
        consts["I64"] = abi.needs_int64(params)  # offsets past 2^31: index products in int64
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
        """Launch; returns the compiled kernel that ran (None under the interpreter, or
        when kernels.aot records launches sized for a GPU and runs nothing)."""
        rec = kernel_launch.recorder()
        if rec is not None:
            rec(f"{self.prog.kernel.name}.{self.which}", self.prog.kernel_fn(self.which, False),
                list(params), dict(consts), self.warps, self.stages)
            if config.get("as_gpu") is not None:
                return None
        fn = self.prog.kernel_fn(self.which, self.interpret)
        if self.interpret:
            with modules.interpreted():
                fn[grid](*params, **consts)
            return None
        cap = {} if self.maxnreg is None else {"maxnreg": self.maxnreg}
        return fn[grid](*params, num_warps=self.warps, num_stages=self.stages, **cap, **consts)


def knobs() -> tuple:
    """The launch settings in force, as a key (replays depend on them)."""
    return config.snapshot()


_NO_CU: dict[torch.device, torch.Tensor] = {}


def _no_cu(device: torch.device) -> torch.Tensor:
    """The cu_seqlens argument of a launch without packed sequences (never read)."""
    if device not in _NO_CU:
        _NO_CU[device] = torch.zeros(2, dtype=torch.int32, device=device)
    return _NO_CU[device]


def state_strides(x: torch.Tensor, dims, chunked: bool) -> dict:
    st = {d: x.stride(i + (1 if chunked else 0)) for i, d in enumerate(dims)}
    if chunked:
        st["#c"] = x.stride(0)
    return st


