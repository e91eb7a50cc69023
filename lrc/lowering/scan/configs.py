"""Launch settings of the scan kernels: a small config set, timed once per shape on the GPU.

A config is the chunk length TC (the forward's checkpoint interval: the backward keeps it or,
left to right, takes a multiple and reads every k-th checkpoint), the block along the split
(coalesced) dim, and the compiler's warps and pipeline stages of the loop over chunks; for the
kernels with a whole dim unrolled (forward_n, backward_n) also a register cap and how the loop
over that dim is unrolled. Which configs are worth trying depends on the layout: where time
is the contiguous axis of the inputs a thread holds consecutive steps, so long chunks over few
channels (the shape of accelerated-scan's kernel); where channels are contiguous, short chunks
over a wide block of channels. Each set is the best few configs of a sweep over these
settings at a reference shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...kernels import tune as policy
from ...kernels.tune import _CACHE, choose, chosen, first_working, keep  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class ScanConfig:
    """TC steps per chunk; BLOCK per program along the split dims (None: as large as the
    register budget allows); num_warps / num_stages for the compiler."""

    tc: int
    block: int | None = None
    warps: int = 4
    stages: int = 2
    unroll: bool = False  # the forward with the whole dim unrolled (ScanProgram.tilings)
    maxnreg: int | None = None  # ptxas's register cap per thread (None: its own choice)
    # the unrolled dim's loop (scan.py's _unrolled): 0 unrolled whole at compile time
    # (tl.static_range); k > 0 a loop unrolled k times (tl.range): fewer values live at once
    loop: int = 0
    # the decode step's load order (loop.py's ORDER): the states first, the inputs
    # held back until they arrive
    order: bool = False


# (TC, BLOCK, warps, stages), the best few of a sweep at B8 T4096 D2048 bf16 (forward and
# forward+backward); the first is tried first
TIME_INNER = [(256, 8, 4, 2), (512, 4, 4, 2), (1024, 1, 4, 2), (128, 16, 4, 3), (1024, 2, 4, 2)]
CHANNELS_INNER = [(32, 32, 1, 3), (64, 32, 2, 3), (64, 16, 1, 3), (128, 32, 4, 3),
                  (64, 16, 2, 3)]
WHOLE_DIM = [(64, 2, 2, 3), (16, 8, 1, 3), (64, 4, 4, 2), (128, 2, 4, 2), (16, 16, 4, 2)]
# the backward of a whole-dim state also tries wide blocks: a gradient summed over the split
# dim (Mamba's dB, dC over d) is added atomically once per program, so a block of 2 channels
# issues 16x the atomics of one of 32 (the Mamba-1 reference shape: ~1e9 at block 2)
WHOLE_DIM_BACKWARD = [(16, 32, 4, 2), (16, 64, 8, 2)]


# one row of time per program (a 1-D block: time contiguous, an elementwise state), best
# first at B8 D2048 T4096 bf16: the forward at (1024, 4 warps, 3 stages), then (2048, 4, 1);
# the backward at (2048, 4, 1), then (1024, 2, 3). A backward may take a multiple of the
# forward's chunk: it reads every k-th checkpoint.
ROW = [(1024, None, 4, 3), (2048, None, 4, 1), (2048, None, 4, 2), (1024, None, 2, 3),
       (512, None, 4, 2)]
ROW_BACKWARD = [(2048, None, 4, 1), (1024, None, 2, 3), (2048, None, 4, 2), (1024, None, 4, 2)]


# the forward with Mamba-1's n unrolled (tiling.unrolled), (TC, BLOCK, warps, stages, register
# cap), best first at B8 D2048 L4096 N16 bf16: capped at 128 registers first (uncapped,
# ptxas takes up to 255, one 8-warp program per SM). Then the same as loops (ScanConfig.loop
# 1), which need far fewer registers but run slower: last
UNROLLED = [(32, 64, 8, 2, 128), (64, 32, 8, 2, 128), (128, 16, 8, 2, 128), (32, 64, 8, 2, None),
            (128, 16, 8, 2, None), (32, 64, 8, 2, None, 1), (128, 16, 8, 2, None, 1)]


# the forward that saves checkpoints for backward_n, at a chunk length that divides
# backward_n's (which reads every k-th checkpoint): (TC, BLOCK, warps, stages, register cap,
# loop) as UNROLLED, best first: 32-step chunks, then 128 capped, then 128 looped (wider
# blocks and 4 warps are far slower)
UNROLLED_TRAINING = [(32, 64, 8, 2, 128, 0), (64, 32, 8, 2, 128, 0), (128, 16, 8, 2, 128, 0),
                     (128, 16, 8, 2, None, 1)]
BACKWARD_TC = 128  # backward_n's chunk, where the forward's divides it (else the forward's)
# backward_n at BACKWARD_TC or the forward's chunk: (BLOCK, warps, stages, register cap, loop),
# best first at B8 D2048 L4096 N16 bf16: 2 channels, one warp, one stage, capped at 128
# registers, the loop over n unrolled twice; other stages, caps and unrollings come close;
# one channel, 2 warps or no cap are slower, 4 channels or 256-step chunks much slower
UNROLLED_BACKWARD = [(2, 1, 1, 128, 2), (2, 1, 1, 128, 1), (2, 1, 1, 168, 2), (2, 1, 1, 128, 4),
                     (2, 1, 2, 128, 1), (1, 1, 1, 128, 1), (2, 1, 1, None, 1)]


def _unrolled_configs(rows) -> list[ScanConfig]:
    return [ScanConfig(*r[:4], unroll=True, maxnreg=r[4], loop=r[5] if len(r) > 5 else 0)
            for r in rows]


def candidates_unrolled() -> list[ScanConfig]:
    return _unrolled_configs(UNROLLED)


def candidates_unrolled_training(reverse: bool = False) -> list[ScanConfig]:
    """A right-to-left scan's backward keeps the forward's chunk: then BACKWARD_TC only."""
    return _unrolled_configs([r for r in UNROLLED_TRAINING
                              if not reverse or r[0] == BACKWARD_TC])


def candidates_unrolled_backward(tc: int, reverse: bool = False) -> list[ScanConfig]:
    tb = BACKWARD_TC if BACKWARD_TC % tc == 0 and not reverse else tc
    return _unrolled_configs([(tb,) + r for r in UNROLLED_BACKWARD])


def candidates(time_inner: bool, whole: int, tc: int | None = None,
               row: bool = False) -> list[ScanConfig]:
    """The configs tried for a kernel. `time_inner`: time is the contiguous axis of the first
    Seq input; `whole`: elements per step a program holds whole (1 for an elementwise state,
    N for Mamba's state n); `tc`: the chunk already fixed (the backward reads the forward's
    checkpoints); `row`: one row of time per program (no tile dims), whose backward may
    take a multiple of `tc`."""
    if row:
        if tc is None:
            return [ScanConfig(*r) for r in ROW]
        out = [ScanConfig(*r) for r in ROW_BACKWARD if r[0] % tc == 0]
        return out + [ScanConfig(tc, None, w, st) for _, _, w, st in ROW_BACKWARD]
    rows = WHOLE_DIM if whole > 4 else TIME_INNER if time_inner else CHANNELS_INNER
    if whole > 4 and tc is not None:
        rows = rows + WHOLE_DIM_BACKWARD
    out = [ScanConfig(c if tc is None else tc, b, w, st) for c, b, w, st in rows]
    return list(dict.fromkeys(out))


def training_rows(forward: list[ScanConfig]) -> list[ScanConfig]:
    """A training forward's configs of one row of time per program: the chunks that divide
    every ROW_BACKWARD chunk. Its chunk bounds the backward's (a multiple of it): a forward
    tuned alone may take 2048-step chunks for a marginal gain and hold the backward to them,
    where the backward is clearly faster at 1024-step ones."""
    out = [c for c in forward if all(r[0] % c.tc == 0 for r in ROW_BACKWARD)]
    return out or forward


def remembered(key: tuple, device: str) -> ScanConfig | None:
    """A config tuned for `key` on this kind of device by an earlier process (on disk, in the
    kernel cache directory), now remembered for this one too."""
    return policy.remembered(key, device, "scan_tuned.json", ScanConfig)


def remember(key: tuple, device: str, cfg: ScanConfig) -> None:
    policy.remember(key, device, cfg, "scan_tuned.json")


# the tables shipped with lrc (tuned/<device slug>.json, made by `python -m lrc tune-tables`)
policy.ship("scan_tuned.json", Path(__file__).parent / "tuned")
