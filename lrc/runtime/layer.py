"""`lrc.compile`: a spec becomes a differentiable PyTorch callable with a decode `step`."""
from __future__ import annotations

from typing import Any

import torch

from .. import config
from .. import lowering as _lowerings
from ..errors import CallError, LoweringError, Unsupported
from ..ir.trace import Spec
from ..passes import pipeline
from ..passes.stability import running_maxes, scaled_initial_state, unscaled_states
from . import reference
from .cache import cached, canonical_key
from .call import make_call
from .plan import Plan

BACKENDS = ("auto", "reference", "triton")


_UNSEEN = object()


def _fast_key(args: tuple, kwargs: dict, reverse: bool) -> tuple | None:
    """What a call's Fast replay depends on: each argument's shape, strides, dtype, device and
    whether it needs a gradient (positional or by name), reverse and the launch knobs; None
    when it cannot apply: some argument is not a tensor or is passed twice (the replay fills
    one slot per argument)."""
    grad = torch.is_grad_enabled()
    sig = []
    for x in (*args, *kwargs.values()):
        if not isinstance(x, torch.Tensor):
            return None
        sig.append((x.shape, x.stride(), x.dtype, x.device, grad and x.requires_grad))
    if len({id(x) for x in (*args, *kwargs.values())}) != len(sig):
        return None
    return len(args), tuple(kwargs), tuple(sig), reverse, config.snapshot()


class Layer:
    """A compiled recurrence. Call it on whole sequences; `step` it one token at a time.

    backend 'triton' runs generated Triton kernels (compiled on CUDA tensors, under Triton's
    interpreter on CPU tensors); 'reference' the float64 interpreter with torch autograd.
    """

    def __init__(self, spec: Spec, backend: str, lowering: str | None = None):
        self.spec = spec
        self.graph = spec.graph
        self.lowering = lowering
        self.programs: dict[str, Any] = {}  # chunked / conv programs, built on first use
        self._fast: dict[tuple, Any] = {}  # call signature -> triton_call.Fast
        self._fast_steps: dict[tuple, Any] = {}  # step signature -> triton_call.FastStep
        self._built = None
        self.backend = backend
        from .ops import register

        self.op_id = register(self)
        if backend == "reference":  # the interpreter needs nothing from the pipeline
            if lowering is not None:
                self._build()  # still say when a forced lowering cannot run this spec
            return
        compiled, program, why = self._build()
        if program is None:
            if backend == "triton":
                raise Unsupported(why)
            self.backend = "reference"  # "auto": the kernels where they exist
            self.plan.note = f"runs on the reference backend; no generated kernels: {why}"
        else:
            self.backend = "triton"

    def _build(self):
        """Pipeline and kernels (from the disk cache when an earlier process made them)."""
        if self._built is None:
            g, forced = self.spec.graph, self.lowering
            loop = config.get("prefer_loop")
            key = canonical_key(g, lowering=forced, loop=loop)
            compiled, program, why = cached(key, lambda: _build(g, forced))
            self._built = (compiled, program, why)
            self.compiled, self.lowered, self.program = compiled, compiled.lowered, program
            self.plan = Plan(compiled.planned)
            # states the pipeline added (RWKV-4's running max): the user never sees them
            self.aux = running_maxes(self.lowered)
        return self._built

    def __getattr__(self, name: str) -> Any:
        # plan, lowered, program, ... of a reference layer: made on first use
        if name in ("plan", "compiled", "lowered", "program", "aux"):
            self._build()
            return self.__dict__[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"<lrc.Layer {self.spec.name} backend={self.backend!r}>"

    def __call__(self, *args: torch.Tensor, initial_state: Any = None,
                 return_final_state: bool = False, reverse: bool = False,
                 cu_seqlens: torch.Tensor | None = None, **kwargs: torch.Tensor) -> Any:
        """Run over the time dim: the outputs, and with return_final_state the final states."""
        if torch.compiler.is_compiling() and cu_seqlens is None:
            from .ops import compiled_call  # one opaque op for torch.compile to trace

            outs, finals = compiled_call(self, args, kwargs, initial_state, reverse)
        else:
            key = None
            if (cu_seqlens is None and initial_state is None and not return_final_state
                    and self.backend == "triton"):
                key = _fast_key(args, kwargs, reverse)
                fast = self._fast.get(key, _UNSEEN) if key is not None else None
                if fast is not None and fast is not _UNSEEN:  # seen: its launches replayed
                    outs = fast(args, kwargs)
                    return outs[0] if len(outs) == 1 else tuple(outs)
                if fast is None:  # seen, and not replayable
                    key = None
            outs, finals = self.run(args, kwargs, initial_state, reverse, cu_seqlens,
                                    finals=return_final_state)
            if key is not None:
                self._remember_fast(key, args, kwargs, reverse)
        out = outs[0] if len(outs) == 1 else tuple(outs)
        if not return_final_state:
            return out
        return out, (finals[0] if len(finals) == 1 else tuple(finals))

    def run(self, args: tuple, kwargs: dict, initial_state: Any = None, reverse: bool = False,
            cu_seqlens: torch.Tensor | None = None, finals: bool = True) -> tuple[list, list]:
        """(outputs, final states) as lists, on this layer's backend (finals=False: the scan
        kernels' final states are not converted to the user's layout, and [] comes back)."""
        if self.backend == "triton":
            call = make_call(self.lowered, args, kwargs, initial_state=self._in(initial_state),
                             reverse=reverse, cu_seqlens=cu_seqlens)
            chosen = self.plan.choose(call.sizes, call.T, _itemsize(call))
            other = self._lowering(chosen) if chosen != "scan" else None
            if other is not None:
                outs, states = other.run(call)
            else:
                outs, states = self.program.run(call, finals)
            finals = self._out(states) if states else states
        else:
            call = make_call(self.graph, args, kwargs, initial_state=initial_state,
                             reverse=reverse, cu_seqlens=cu_seqlens)
            outs, finals = reference.run(call)
        return outs, finals

    def _remember_fast(self, key: tuple, args: tuple, kwargs: dict, reverse: bool) -> None:
        """After a full call with signature `key`: its Fast replay, if the scan ran it and it
        qualifies (triton_call.fast_entry), else a note not to look again."""
        call = make_call(self.lowered, args, kwargs, reverse=reverse)
        fast = None
        if not self.aux and self.plan.choose(call.sizes, call.T, _itemsize(call)) == "scan":
            grad = any(rg for *_, rg in key[2])
            fast = self.program.fast_entry(call, args, kwargs, grad)
        if len(self._fast) > 64:
            self._fast.clear()
        self._fast[key] = fast

    def step(self, *args: torch.Tensor, state: Any = None, inplace: bool = False,
             **kwargs: torch.Tensor) -> tuple[Any, Any]:
        """One token: args are the per-token slices (time dim dropped); returns (outputs, states).

        With inplace=True the given state tensors are overwritten with the new states and
        returned (no copy, no host sync: CUDA-graph capturable)."""
        if inplace and state is None:
            raise CallError("layer.step(inplace=True) needs state= tensors to update")
        key = None
        if inplace and self.backend == "triton" and not self.aux:
            olds = tuple(state) if isinstance(state, (tuple, list)) else (state,)
            key = _fast_key(args, kwargs, False)
            if key is not None and all(isinstance(x, torch.Tensor) for x in olds):
                key = (key, tuple((x.shape, x.stride(), x.dtype, x.device) for x in olds))
                fast = self._fast_steps.get(key)
                outs = None
                if fast is not None:  # seen: its one launch fired again
                    outs = fast(args, kwargs, dict(zip(self.lowered.state_args, olds)),
                                olds[0].device)
                if outs is not None:
                    return (outs[0] if len(outs) == 1 else tuple(outs),
                            olds[0] if len(olds) == 1 else olds)
            else:
                key = None
        if self.backend == "triton":
            from ..layout import part_view

            call = make_call(self.lowered, args, kwargs, initial_state=self._in(state),
                             step=True)
            g = self.lowered
            dst = None
            if inplace and not self.aux:
                for x in call.states.values():
                    if x.dtype not in (torch.float32, torch.complex64):
                        raise CallError("layer.step(inplace=True) needs float32 (complex64) "
                                        f"states, got {x.dtype}")
                dst = {s: part_view(call.states[g[s].arg], g[s].part) for s in g.state_names}
            kept: list = []
            outs, news = self.program.step(call, dst,
                                          kept if key is not None and dst is not None else None)
            if kept:
                if len(self._fast_steps) > 64:
                    self._fast_steps.clear()
                self._fast_steps[key] = kept[0]
            if news is not None:
                news = self._out(news)
                if inplace:  # rescaled states cannot be written in place: copy them back
                    olds = tuple(state) if isinstance(state, (tuple, list)) else (state,)
                    for old, new in zip(olds, news):
                        old.copy_(new)
        else:
            call = make_call(self.graph, args, kwargs, initial_state=state, step=True)
            outs, news = reference.run(call, step=True)
            if inplace:
                for old, new in zip(call.states.values(), news):
                    old.copy_(new)
        if inplace:
            news = list(tuple(state) if isinstance(state, (tuple, list)) else (state,))
        out = outs[0] if len(outs) == 1 else tuple(outs)
        return out, (news[0] if len(news) == 1 else tuple(news))

    def _in(self, state: Any) -> Any:
        """The user's states -> the kernel graph's (a running max starts at 0)."""
        if not self.aux or state is None:
            return state
        return scaled_initial_state(self.lowered, tuple(state) if isinstance(
            state, (tuple, list)) else (state,))

    def _out(self, finals: list) -> list:
        """The kernel graph's states -> the user's (rescaled by exp(running max))."""
        return unscaled_states(self.lowered, finals) if self.aux else finals

    def _lowering(self, name: str):
        """The program of the chunked or conv lowering, built on first use. A lowering the
        cost model chose that cannot run this spec leaves None (the scan runs, and the plan
        says why); one the user forced raises."""
        if name not in self.programs:
            try:
                self.programs[name] = _lowerings.build(name, self.compiled)
            except Unsupported as e:
                if self.lowering == name:
                    raise LoweringError(f"lowering={name!r} cannot run {self.spec.name}: {e}"
                                        ) from e
                self.programs[name] = None
                self.plan.note = (f"the cost model chose {name}, which cannot run this "
                                  f"spec ({e}): the scan runs instead")
        return self.programs[name]

    def source(self, which: str = "forward", lowering: str = "scan") -> str:
        """The generated Triton source of one lowering's kernels, as it runs.

        Args:
            which: a kernel of the lowering ('forward', 'backward', 'step' for the scan;
                'forward', 'backward', 'states' for chunked; the kernel families for conv),
                or 'module' for the whole generated file, helpers included.
            lowering: 'scan' (every spec has it, and its 'step' is the decode kernel),
                'chunked' or 'conv'; which one a call runs is the plan's choice per shape.
        """
        if lowering == "scan":
            prog, why = self.program, getattr(self.plan, "note", "")
        else:
            prog, why = self.programs.get(lowering), ""
            if prog is None:
                try:
                    prog = self.programs[lowering] = _lowerings.build(lowering, self.compiled)
                except Unsupported as e:
                    why = str(e)
        if prog is None:
            raise ValueError(f"{self.spec.name} has no {lowering} kernels: {why}")
        if which == "module":
            return prog.source
        if which not in prog.sources:
            raise ValueError(f"the {lowering} kernels of {self.spec.name} are "
                             f"{', '.join(map(repr, prog.sources))} (or 'module'), got {which!r}")
        return prog.sources[which]

    def draw(self, path: str) -> str:
        """Write a picture of the traced graph to `path` (PNG)."""
        from ..ir.draw import draw

        return draw(self.graph, path)


def _build(g, forced):
    """Pipeline and scan kernels for a graph (what the disk cache stores)."""
    compiled = pipeline.run(g, forced)
    try:
        return compiled, _lowerings.build("scan", compiled), ""
    except Unsupported as e:
        return compiled, None, str(e)


def _itemsize(call) -> int:
    return max(x.element_size() for x in call.tensors.values())


def compile(spec: Spec, *, backend: str = "auto",  # noqa: A001 (lrc.compile)
            lowering: str | None = None) -> Layer:
    """Compile a traced spec into a Layer (see Layer); `lowering` forces 'scan', 'chunked' or
    'conv' (an error says why when the spec cannot be lowered that way)."""
    if not isinstance(spec, Spec):
        raise TypeError(f"lrc.compile takes a spec made by @lrc.recurrence, got {spec!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return Layer(spec, backend, lowering)
