"""`lrc.compile`: a spec becomes a differentiable PyTorch callable with a decode `step`."""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from .. import config
from .. import lowering as _lowerings
from ..bounded import Bounded
from ..errors import CallError, LoweringError, Unsupported
from ..ir.trace import Spec
from ..logs import logger
from ..passes import pipeline
from ..passes.stability import running_maxes, scaled_initial_state, unscaled_states
from . import ops, reference
from .cache import cached, canonical_key
from .call import make_call
from .plan import Plan
from .step import _WIDE, StepMixin, _fast_key, _on_meta

BACKENDS = ("auto", "reference", "triton")


_UNSEEN = object()

# what a float64 call does on a layer whose kernels run, for the plan and the error
_F64_AUTO = ("calls with a float64 (complex128) argument or state run on the float64 "
             "reference backend (the generated kernels compute in float32)")
_F64_TRITON = ("refused (CallError): the generated kernels compute in float32/bf16; use "
               "backend='auto' or 'reference' for float64")


def _float64_arg(tensors: dict, state: Any, names: tuple, what: str) -> str | None:
    """The first float64 (complex128) argument or state of a call, named with its dtype;
    None if none."""
    for k, x in tensors.items():
        if x.dtype in _WIDE:
            return f"argument {k!r} is {x.dtype}"
    if state is not None:
        states = tuple(state) if isinstance(state, (tuple, list)) else (state,)
        for n, x in zip(names, states, strict=False):  # a wrong count: make_call says so
            if isinstance(x, torch.Tensor) and x.dtype in _WIDE:
                return f"{what} for state {n!r} is {x.dtype}"
    return None




class Layer(StepMixin):
    """A compiled recurrence: call it on whole sequences, `step` it one token at a time.

    Made by `lrc.compile(spec)`. A Layer is an ordinary differentiable PyTorch callable:
    gradients reach every Seq, Param and initial state that requires one, and
    `torch.compile(fullgraph=True)` traces a call or a step as one custom op (lrc.runtime.ops);
    a Layer pickles as (spec, backend, lowering) and compiles again on load.

    Attributes:
        spec (Spec): what `@lrc.recurrence` traced.
        backend (str): what runs CUDA tensors: 'triton' (generated kernels, compiled for CUDA
            tensors, under Triton's interpreter for CPU tensors) or 'reference' (the float64
            interpreter with torch autograd; also what backend='auto' falls back to for a spec
            with no kernels, with a note in the plan).
        requested (str): the backend asked for. With 'auto' (and no forced lowering), CPU
            tensors run on the torch lowering (`lrc.lowering.torch`: the graph in vectorized
            torch ops, float32), whatever `backend` says; the plan's note says so.
        plan (Plan): the structure found, the eligible lowerings and the cost model's choice;
            `print(layer.plan)`.

    Dtypes: the generated kernels read float32, bfloat16 or float16 inputs and compute in
    float32. A call with a float64 (complex128) argument or state is never computed in float32
    silently: with backend='auto' the float64 reference backend runs it (exact, slow, on the
    tensors' device, so `torch.autograd.gradcheck` works), and with backend='triton' it raises
    CallError naming the argument. `layer.plan` says which.

    Determinism: on the GPU, gradients are not bitwise deterministic by default. Some backward
    kernels add partial gradients from several programs with atomics (the chunked lowering's
    Param gradients; the scan's sums over a tile dim split across programs, such as Mamba-1's
    dB and dC), so the rounding of those sums depends on the order the programs run in;
    `torch.use_deterministic_algorithms(True)` does not change this. `layer.plan` prints a
    "gradients:" line when the lowering chosen for the shape uses atomics. Forward outputs
    and the decode step are deterministic.

    Calling convention (see `__call__` and `step`), for a step
    `def f(x: Seq("b t d"), p: Param("d"), h: State("b d")) -> (y, h')`:

        y = layer(x, p)                                    # the outputs
        y, h_T = layer(x, p, initial_state=h0, return_final_state=True)
        y_t, h = layer.step(x[:, t], p, state=h)           # one token

    Example::

        >>> import torch, lrc
        >>> from lrc import Seq, Param, State, sigmoid
        >>> @lrc.recurrence
        ... def ema(x: Seq("b t d"), a: Param("d"), h: State("b d")):
        ...     h = sigmoid(a) * h + x
        ...     return h, h
        >>> layer = lrc.compile(ema)
        >>> x, a = torch.randn(2, 16, 4), torch.zeros(4)
        >>> y, h_T = layer(x, a, return_final_state=True)
        >>> y.shape, h_T.shape
        (torch.Size([2, 16, 4]), torch.Size([2, 4]))
        >>> y_t, h = layer.step(x[:, 0], a)                # state=None: zeros
        >>> torch.allclose(y_t, y[:, 0], atol=1e-6)
        True
    """

    def __init__(self, spec: Spec, backend: str, lowering: str | None = None):
        self.spec = spec
        self.graph = spec.graph
        self.lowering = lowering
        self.programs: dict[str, Any] = {}  # chunked / conv programs, built on first use
        self._fast: dict[tuple, Any] = Bounded(64)  # call signature -> scan.call.Fast
        self._fast_steps: dict[tuple, Any] = Bounded(64)  # step signature -> scan.call.FastStep
        self._built = None
        self.backend = backend
        self.requested = backend  # asked for: 'auto' may become either; CPU tensors: torch
        # what the custom ops read (plain attributes: torch.compile traces the routing)
        self.op_params, self.op_n_out = tuple(self.graph.params), len(self.graph.outputs)
        self.op_key = ops.register(self, backend, lowering)
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
            self.plan.float64 = _F64_TRITON if backend == "triton" else _F64_AUTO
            self.plan.atomics = self._atomic_grads
        if lowering not in (None, "scan") and self.backend == "triton":
            self._lowering(lowering)  # a forced lowering builds now, or raises saying why

    def _build(self):
        """Pipeline and kernels (a copy of the ones built for the same spec earlier in this
        process, if any)."""
        if self._built is None:
            g, forced = self.spec.graph, self.lowering
            loop = config.get("prefer_loop")
            key = canonical_key(g, lowering=forced, loop=loop)
            start = time.perf_counter()
            compiled, program, why = cached(key, lambda: _build(g, forced))
            logger.info("compiled %s in %.2f s: %s", g.name, time.perf_counter() - start,
                        "scan kernels generated" if program is not None else
                        f"no generated kernels ({why})")
            self._built = (compiled, program, why)
            self.compiled, self.lowered, self.program = compiled, compiled.lowered, program
            self.plan = Plan(compiled.planned,
                             scan_mode=program.mode if program is not None else "")
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

    def __reduce__(self):
        """Pickled as (spec, backend, lowering): compiled again on load (from the disk cache
        when this machine compiled it before)."""
        return _load_layer, (self.spec, self.requested, self.lowering)

    def __call__(self, *args: torch.Tensor, initial_state: Any = None,
                 return_final_state: bool = False, reverse: bool = False,
                 cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                 **kwargs: torch.Tensor) -> Any:
        """Run the recurrence over the time dim of every Seq argument.

        Args:
            *args (Tensor): the step's non-state arguments in the order written, each in the
                layout its annotation names (`Seq("b t d")`: `(b, t, d)`; any strides). Keyword
                arguments by name work too (`**kwargs`).
            initial_state (Tensor | tuple[Tensor, ...], optional): the state before the first
                step, in its `State` annotation's layout; a tuple in declaration order when the
                step has several states. None: zeros. Any floating dtype (a float64 one makes
                the states float64).
            return_final_state (bool): also return the state after the last step.
            reverse (bool): scan right to left (step T-1 first): the same as flipping every Seq
                in time, running, and flipping the outputs back; the final state is the state
                after step 0.
            cu_seqlens (Tensor, optional): packed variable-length sequences, a 1-D int32/int64
                tensor [0, l1, l1 + l2, ..., T]. The sequences lie back to back along time with
                batch size 1 (the batch dim is the first dim of the first Seq argument and must
                appear in every Seq and State); the state resets at each boundary, and
                `initial_state` and the final states hold one entry per sequence along it.
            max_seqlen (int, optional): with cu_seqlens, the longest sequence's length (the
                FlashAttention convention): given, the scan reads no offsets on the host (no
                device sync; the offsets are checked on the device), so a call can sit in a
                compiled graph or a CUDA graph. It must be at least the longest length.

        Returns:
            The output (a tuple of outputs if the step returns several), each in the layout of
            the Seq argument with exactly its dims, in the promoted dtype of the Seq arguments
            (`torch.promote_types`; Params and states do not count). With
            `return_final_state=True`: `(outputs, final_states)`, the final states in their
            `State` layouts (a tuple if several), float32 (complex64), or float64 if any
            argument or initial state is float64. The kernels accumulate in float32; a call
            with a float64 argument or initial state runs on the float64 reference backend
            (backend='auto') or raises CallError (backend='triton').

        Raises:
            CallError: a missing, extra or duplicated argument, a wrong number of dims, sizes
                that disagree for one dim or time length, a non-floating dtype, a complex
                tensor for a real annotation, tensors on different devices, bad cu_seqlens;
                with backend='triton', a float64 (complex128) argument or initial state.

        Shape legend (for `Seq("b t d")`, `State("b d n")`):
            - b: batch (number of sequences with cu_seqlens);  t: time, T steps;
            - d, n: the annotation's other dims.
        """
        if torch.compiler.is_compiling() or _on_meta(args, kwargs):
            # one opaque op for torch.compile to trace; its fake gives meta tensors' shapes
            outs, finals = ops.compiled_call(self, args, kwargs, initial_state, reverse,
                                             cu_seqlens, max_seqlen)
        else:
            key = None
            if (cu_seqlens is None and initial_state is None and not return_final_state
                    and self.backend == "triton" and self._cpu_lowering(args, kwargs) is None):
                key = _fast_key(args, kwargs, reverse)
                fast = self._fast.get(key, _UNSEEN) if key is not None else None
                if fast is not None and fast is not _UNSEEN:  # seen: its launches replayed
                    outs = fast(args, kwargs)
                    return outs[0] if len(outs) == 1 else tuple(outs)
                if fast is None:  # seen, and not replayable
                    key = None
            outs, finals = self.run(args, kwargs, initial_state, reverse, cu_seqlens,
                                    finals=return_final_state, max_seqlen=max_seqlen)
            if key is not None:
                self._remember_fast(key, args, kwargs, reverse)
        out = outs[0] if len(outs) == 1 else tuple(outs)
        if not return_final_state:
            return out
        return out, (finals[0] if len(finals) == 1 else tuple(finals))

    def run(self, args: tuple, kwargs: dict, initial_state: Any = None, reverse: bool = False,
            cu_seqlens: torch.Tensor | None = None, finals: bool = True,
            max_seqlen: int | None = None) -> tuple[list, list]:
        """(outputs, final states) as lists, on this layer's backend (finals=False: the scan
        kernels' final states are not converted to the user's layout, and [] comes back)."""
        torch_prog = self._cpu_lowering(args, kwargs)
        if torch_prog is not None:  # CPU tensors under backend="auto": the torch lowering
            call = make_call(torch_prog.graph, args, kwargs, initial_state=initial_state,
                             reverse=reverse, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
            self.plan.choose(call.sizes, call.T, _itemsize(call), call.device)  # for printing
            return torch_prog.run(call)
        if self.backend == "triton":
            call = make_call(self.lowered, args, kwargs, initial_state=self._in(initial_state),
                             reverse=reverse, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
            if not self._float64(call, initial_state, "initial_state"):
                chosen = self.plan.choose(call.sizes, call.T, _itemsize(call), call.device)
                other = self._lowering(chosen) if chosen != "scan" else None
                if other is not None:
                    outs, states = other.run(call)
                else:
                    outs, states = self.program.run(call, finals)
                finals = self._out(states) if states else states
                return outs, finals
        call = make_call(self.graph, args, kwargs, initial_state=initial_state,
                         reverse=reverse, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        return reference.run(call)

    def _float64(self, call, state: Any, what: str) -> bool:
        """Whether a call of the kernels' backend has a float64 (complex128) argument or
        state: then the reference backend runs it (backend='auto'), or CallError names it
        (backend='triton'): the kernels compute in float32, never a silent downcast."""
        wide = _float64_arg(call.tensors, state, self.graph.state_args, what)
        if wide is not None and self.requested == "triton":
            raise CallError(f"{wide}: the generated kernels compute in float32/bf16 "
                            "(backend='triton'); use "
                            "backend='auto' (float64 calls run on the float64 reference "
                            "backend) or backend='reference'")
        return wide is not None

    def _atomic_grads(self, name: str) -> bool:
        """Whether the lowering that runs when the cost model chooses `name` adds gradients
        with atomics (a chosen lowering that could not be built leaves the scan)."""
        if name != "scan" and self.programs.get(name, True) is None:
            name = "scan"
        return _lowerings.atomic_grads(name, self.program if name == "scan" else None)

    def _cpu_lowering(self, args: tuple, kwargs: dict):
        """The torch lowering's program when this call runs on it: backend='auto' with the
        arguments on the CPU (the generated kernels would run under Triton's interpreter);
        None otherwise (backend='triton' keeps the kernels, interpreted on the CPU)."""
        if self.requested != "auto" or self.lowering is not None:
            return None
        first = args[0] if args else next(iter(kwargs.values()), None)
        if not isinstance(first, torch.Tensor) or first.device.type != "cpu":
            return None
        if any(isinstance(x, torch.Tensor) and x.dtype in _WIDE
               for x in (*args, *kwargs.values())):
            return None  # float64 calls run on the float64 reference backend, as on CUDA
        if "torch" not in self.programs:
            self.programs["torch"] = _lowerings.build("torch", self.compiled)
            self.plan.note = ((self.plan.note + "; ") if self.plan.note else "") + (
                "CPU tensors run on the torch lowering (vectorized torch ops); "
                "backend='triton' runs the generated kernels under Triton's interpreter")
        return self.programs["torch"]

    def _remember_fast(self, key: tuple, args: tuple, kwargs: dict, reverse: bool) -> None:
        """After a full call with signature `key`: its Fast replay, if the scan ran it and it
        qualifies (lowering.scan.call.fast_entry), else a note not to look again."""
        call = make_call(self.lowered, args, kwargs, reverse=reverse)
        fast = None
        if not self.aux and self.plan.choose(call.sizes, call.T, _itemsize(call)) == "scan":
            grad = any(rg for *_, rg in key[2])
            fast = self.program.fast_entry(call, args, kwargs, grad)
        self._fast[key] = fast


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
                logger.info("%s: %s kernels generated", self.spec.name, name)
            except Unsupported as e:
                logger.info("%s: no %s kernels: %s", self.spec.name, name, e)
                if self.lowering == name:
                    raise LoweringError(f"lowering={name!r} cannot run {self.spec.name}: {e}"
                                        ) from e
                self.programs[name] = None
                self.plan.note = (f"the cost model chose {name}, which cannot run this "
                                  f"spec ({e}): the scan runs instead")
        return self.programs[name]

    def source(self, which: str = "forward", lowering: str = "scan") -> str:
        """The generated Triton source of one lowering's kernels, as text.

        It shows the lowering asked for (the scan by default), whether or not the cost model
        picks it for a given call: `print(layer.plan)` says which one a call's shape gets.

        Args:
            which (str): the kernel. For the scan lowering: 'forward', 'backward', 'step' (the
                decode kernel), 'module' (the whole generated file, helpers included), and for
                some specs 'forward_n' / 'backward_n' (a state dim unrolled). For 'chunked':
                'forward', 'backward', 'states', 'module'. For 'conv': the generated kernel
                families this spec uses (e.g. 'vandermonde', 'fft'), 'module'.
            lowering (str): 'scan' (default; it also holds the decode step), 'chunked' or
                'conv', where that lowering is generated for this spec.

        Returns:
            str: the source, as written to the cache directory and imported (each line that
            implements an IR node ends in a `# <node>` comment).

        Raises:
            ValueError: the spec has no kernels of that lowering (the reason is in the plan's
                note), or `which` is not one of the above.

        Example::

            >>> print(layer.source("step"))           # doctest: +SKIP
        """
        lw = self.plan.lowering
        if lowering not in ("scan", "chunked", "conv"):
            raise ValueError(f"lowering must be 'scan', 'chunked' or 'conv', got {lowering!r}")
        if lowering not in lw.eligible:
            raise ValueError(f"{self.spec.name} has no {lowering} kernels: {lw.why_not(lowering)} "
                             f"(it can take: {', '.join(lw.eligible)})")
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
        """Write a picture of the traced graph to `path` (PNG); needs matplotlib, the `draw`
        extra (`pip install "lrc[draw]"`)."""
        from ..ir.draw import draw

        return draw(self.graph, path)




def _load_layer(spec: Spec, backend: str, lowering: str | None) -> Layer:
    """A pickled Layer, compiled again."""
    return compile(spec, backend=backend, lowering=lowering)


def _checked(compiled, forced):
    """The pipeline's eligible lowerings less those whose own form check refuses the spec
    (`lowering.refuses`), the reason kept for the plan; a forced one that is refused raises."""
    lw = compiled.planned.meta("lowering")
    refused = {name: why for name in lw.eligible if (why := _lowerings.refuses(name, compiled))}
    if not refused:
        return compiled
    if forced in refused:
        raise LoweringError(f"lowering={forced!r} cannot run {compiled.planned.name}: "
                            f"{refused[forced]}")
    lw = dataclasses.replace(lw, eligible=tuple(n for n in lw.eligible if n not in refused),
                             reasons=lw.reasons + tuple(refused.items()))
    return dataclasses.replace(compiled, planned=compiled.planned.with_meta(lowering=lw))


def _build(g, forced):
    """Pipeline and scan kernels for a graph (what the disk cache stores)."""
    compiled = _checked(pipeline.run(g, forced), forced)
    try:
        return compiled, _lowerings.build("scan", compiled), ""
    except Unsupported as e:
        return compiled, None, str(e)


def _itemsize(call) -> int:
    return max(x.element_size() for x in call.tensors.values())


def compile(spec: Spec, *, backend: str = "auto",  # noqa: A001 (lrc.compile)
            lowering: str | None = None) -> Layer:
    """Compile a traced spec into a `Layer`: the pipeline of passes, the plan, the kernels.

    The pipeline runs once per spec and process; the generated kernels' text is cached on disk
    (`LRC_CACHE_DIR`, default ~/.cache/lrc; see `lrc.CacheWarning` for when it is not used).
    The chunked and conv kernels are generated when first chosen.

    Args:
        spec (Spec): made by `@lrc.recurrence`.
        backend (str): 'auto' (default): for CUDA tensors the generated Triton kernels, or
            the reference interpreter (with a note in `layer.plan`) for a spec they cannot
            run and for calls with float64 (complex128) tensors; for CPU tensors the torch
            lowering (vectorized torch ops, no Triton); 'triton': the kernels or an
            `Unsupported` error, on every device (CPU tensors run them under Triton's
            interpreter, slowly: for testing the kernels; a float64 call raises CallError);
            'reference': the float64 interpreter with torch autograd, the oracle (slow by
            design).
        lowering (str, optional): force 'scan', 'chunked' or 'conv' for every call. None
            (default): the cost model chooses per call shape (`print(layer.plan)`).

    Returns:
        Layer: the differentiable callable; see `Layer.__call__` and `Layer.step`.

    Raises:
        TypeError: `spec` is not a Spec. ValueError: an unknown backend. LoweringError: the
            forced lowering cannot run this spec (the message says why). Unsupported: with
            backend='triton', no kernels can be generated for the spec.

    Example::

        >>> import lrc
        >>> from lrc.zoo import ZOO
        >>> layer = lrc.compile(ZOO["mamba2"].spec, lowering="chunked")
        >>> layer.plan.lowering.eligible
        ('scan', 'chunked')
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"lrc.compile takes a spec made by @lrc.recurrence, got {spec!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return Layer(spec, backend, lowering)
