"""Launching generated kernels: under Triton's interpreter on CPU tensors, compiled on the
GPU, and straight through the compiled kernel's launcher after the first call with an
argument signature (`Direct`: the one place that reaches into Triton's internals).
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator

from .. import config
from ..bounded import Bounded
from .module import interpreted, load

_LOCK = threading.RLock()
_RECORDER: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "lrc_launch_recorder", default=None)


def deterministic() -> bool:
    """Whether cross-program sums must run in a fixed order (no atomic adds): config
    `deterministic` ($LRC_DETERMINISTIC), or torch.use_deterministic_algorithms(True)."""
    import torch

    return bool(config.get("deterministic")) or torch.are_deterministic_algorithms_enabled()


def recorder() -> Callable | None:
    """The callback `recording` installed, if any: every lowering's launch reports to it
    (name, the compiled-mode kernel, arguments, constexprs, warps, stages) before it fires
    (kernels.aot compiles what it reports for a GPU)."""
    return _RECORDER.get()


@contextlib.contextmanager
def recording(callback: Callable) -> Iterator[None]:
    """Report every launch made inside to `callback` (see `recorder`)."""
    token = _RECORDER.set(callback)
    try:
        yield
    finally:
        _RECORDER.reset(token)


def launch(table: dict, name: str, fn, grid: tuple, args: list, consts: dict) -> None:
    """`fn[grid](*args, **consts)` on the GPU the first time for an argument signature
    (tensors' dtypes and 16-byte alignment, the other arguments themselves, the constexprs
    and options, the grid), then straight through the compiled kernel's launcher
    (`Direct`), kept in `table`: Triton's dispatch binds and specializes every
    argument on each call, which costs more host time than a short kernel takes (a Param
    expression's) and bounds calls that are host-bound already (S4D's convolution, Mamba-2's
    chunked forward)."""
    import torch

    if any(a is None for a in args):  # a None is specialized away: Triton's own path
        fn[grid](*args, **consts)
        return
    key = (name, grid, tuple(sorted(consts.items())),
           tuple((a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor) else a
                 for a in args))
    direct = table.get(key)
    if direct is not None and direct.fits(args):
        direct(args, grid)
        return
    kernel = fn[grid](*args, **consts)
    holes = [(i, None, None) for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    with _LOCK:
        table[key] = Direct(kernel, args, consts, holes)


class Launcher:
    """Launches of the kernels of one generated module: under the interpreter on CPU tensors,
    on the GPU through `launch` (direct after the first call with a signature)."""

    def __init__(self, source: str):
        self.source = source
        self._direct: dict[tuple, object] = Bounded(256)

    def __call__(self, name: str, grid: tuple, device, args: list, **consts) -> None:
        interpret = device.type != "cuda"
        fn = getattr(load(self.source, interpret), name)
        if interpret:
            with interpreted():
                fn[grid](*args, **consts)
            return
        launch(self._direct, name, fn, tuple(grid), args, consts)


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
