"""Compile generated kernels for a GPU without one: Triton's own compiler (and its bundled
ptxas) targeting sm_90, fed the arguments of a launch recorded on the CPU.

What it answers without the GPU: does this kernel, with these arguments, constexprs, warps and
stages, compile under the installed Triton (Triton 3.6 rejects some: a failed layout pass,
shared memory over sm_90's limit); how long the compile takes; registers, spills and
shared memory. The specialization (16-divisible integers and pointers, as the JIT sees them)
comes from the JIT's own binder, so the kernel compiled is the one a GPU launch with the same
sizes would compile (pointer alignment aside: CPU tensors are as aligned as CUDA ones).

    from lrc.kernels import aot
    with aot.recording() as launches:     # launches of scan kernels run on the CPU
        layer(**args).sum().backward()
    for rec in launches:
        print(aot.compile_launch(rec))     # -> Compiled(ok, seconds, regs, spills, shared)
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

SHARED_LIMIT = 232448  # bytes of shared memory one sm_90 block may use (Triton's check)


@dataclass
class Compiled:
    name: str
    ok: bool
    seconds: float
    regs: int = 0    # registers per thread
    spills: int = 0  # stack frame per thread, bytes: register spills (ptxas's LOCAL stays 0)
    shared: int = 0
    error: str = ""

    @property
    def fits(self) -> bool:
        """Compiled and within sm_90's shared memory per block (else the launch fails)."""
        return self.ok and self.shared <= SHARED_LIMIT


@dataclass
class Launch:
    """One kernel launch as recorded: the compiled-mode kernel, its arguments, constexprs,
    warps and stages."""

    name: str
    fn: object
    params: list
    consts: dict
    warps: int
    stages: int
    compiled: Compiled | None = None  # recording(compile=True): how it compiled


@contextlib.contextmanager
def recording(as_gpu: int | None = None, compile: bool = False):
    """Record the launches of the scan and chunked kernels made inside. They run
    (interpreted on the CPU), unless `as_gpu` is an SM count (e.g. 132): then their
    blocks, chunks and segments are sized as on such a GPU and nothing runs (outputs are
    left unwritten; the backward still launches what it would). With `compile` each launch
    is also compiled for sm_90 and one that does not compile or fit raises, as it would on
    the GPU: the untimed config choice (LRC_TUNE=0) then moves on to its next candidate, so
    the launches recorded last are the ones a GPU would run."""
    from .. import config
    from . import launch

    out: list[Launch] = []

    def record(name: str, fn, params: list, consts: dict, warps: int, stages: int) -> None:
        rec = Launch(name, fn, params, consts, warps, stages)
        out.append(rec)
        if compile:
            rec.compiled = compile_launch(rec)
            if not rec.compiled.fits:
                raise RuntimeError(f"{rec.name}: {rec.compiled}")

    # sized as a GPU, nothing runs: no timing runs either (the first candidates)
    knobs = {"as_gpu": as_gpu} if as_gpu is None else {"as_gpu": as_gpu, "tune": False}
    with config.override(**knobs), launch.recording(record):
        yield out


def compile_launch(rec: Launch, capability: int = 90) -> Compiled:
    """Compile `rec`'s kernel for sm_`capability` as the JIT would for its arguments."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    fn = rec.fn
    while not isinstance(fn, JITFunction):  # an Autotuner or heuristics wrapper
        fn = fn.fn
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(rec.consts, num_warps=rec.warps, num_stages=rec.stages)
    bound, spec, options = binder(*rec.params, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, options)
    t = time.perf_counter()
    try:
        k = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                           options=options.__dict__)
    except Exception as e:  # noqa: BLE001 (the answer is that it does not compile)
        return Compiled(rec.name, False, time.perf_counter() - t,
                        error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    regs, local = _usage(k.asm.get("cubin"))
    return Compiled(rec.name, True, time.perf_counter() - t, regs, local, k.metadata.shared)


def _usage(cubin: bytes | None) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread: spills) of a cubin, read with the
    cuobjdump Triton ships; (0, 0) where it is missing. Spilled registers live in the stack
    frame (STACK; the SASS's STL/LDL); LOCAL stays 0 for them."""
    import os
    import re
    import subprocess
    import tempfile

    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")
    if not cubin or not os.path.exists(tool):
        return 0, 0
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        out = subprocess.run([tool, "--dump-resource-usage", fh.name], capture_output=True,
                             text=True).stdout
    reg, loc = re.search(r"REG:(\d+)", out), re.search(r"STACK:(\d+)", out)
    return int(reg.group(1)) if reg else 0, int(loc.group(1)) if loc else 0
