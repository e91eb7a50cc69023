"""Choosing the scan's launch configs: forced, the interpreter's, inside a CUDA-graph
capture, remembered on disk, or timed (the policy of lrc.kernels.tune over configs.py's
candidates); and the decode step's load order.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from ... import config
from ...ir.dims import Role
from ...kernels import tune as policy
from ...layout import dim_strides
from . import configs as scan_tune
from .configs import ScanConfig
from .launch import Launch, chunk_of
from .program import ScanProgram


def _tune_key(prog: ScanProgram, which: str, info: dict, ins, tc: int | None) -> tuple:
    return (prog.source, which, tuple(info["sizes"].items()), info["T"], tc, info["reverse"],
            tuple((x.dtype, x.stride()) for x in ins), info.get("varlen") is not None,
            unrolling(prog, info, tc), infer_differs(prog, info))


def config_for(prog: ScanProgram, which: str, info: dict, ins, launch, tc: int | None = None
            ) -> ScanConfig | None:
    """The launch settings by kernels.tune's policy: config `scan_config` if set, else the
    untuned default (None) on the CPU, else the fastest candidate for this shape, timed once
    (remembered on disk). A backward keeps the forward's chunk `tc`, whose checkpoints it
    reads."""
    if prog.mode != "scan":
        return None
    forced = config.get("scan_config")
    if forced is not None and tc is not None:
        forced = replace(forced, tc=tc)
    default = (None if tc is None or tc == chunk_of(prog, info["sizes"], info["T"]) else
               ScanConfig(tc))
    key = _tune_key(prog, which, info, ins, tc)
    return policy.pick(
        key, device=info["device"], forced=forced, default=default,
        candidates=lambda: _candidates(prog, info, ins, tc),
        untimed=lambda: [default] + [c for c in _candidates(prog, info, ins, tc)
                                     if c != default],
        run=_kernels_only(launch) if config.get("tune") else launch,
        table="scan_tuned.json", make=ScanConfig)


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
    if run.interpret or config.get("as_gpu") is not None:
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
    the unrolled kernels apply (`unrolling`): the no-gradient forward tries forward_n's
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
    if unrolling(prog, info, tc):
        if tc is not None:  # the usual backward's first config as the fallback only
            out = scan_tune.candidates_unrolled_backward(tc, info["reverse"]) + out[:1]
        elif info.get("infer"):
            out = scan_tune.candidates_unrolled() + out
        else:
            out = scan_tune.candidates_unrolled_training(info["reverse"])
    return [c for c in out if tc is None or c.tc == tc or not info["reverse"]]


def infer_differs(prog: ScanProgram, info: dict) -> bool | None:
    """Whether the call runs without gradients, where that changes the candidates (a
    program with forward_n, or one row of time per program: a training forward tunes and
    records apart); else None."""
    return (bool(info.get("infer")) if "forward_n" in prog.sources or not prog.tiling.tile
            else None)


def unrolling(prog: ScanProgram, info: dict, tc: int | None) -> bool:
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
