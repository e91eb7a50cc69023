"""The compiled layer as PyTorch custom ops, so `torch.compile` (with or without fullgraph),
`torch.export` and meta tensors see one opaque op per call:

    lrc::call            outputs and final states (nothing needs a gradient)
    lrc::call_train      the same plus a tape token: the forward ran under autograd, and the
                         tape keeps its graph (the generated kernels' checkpoints)
    lrc::call_backward   the gradients from the tape: the generated backward kernels on the
                         saved checkpoints, no forward recompute
    lrc::step            one decode token: outputs and new states
    lrc::step_inplace    one decode token writing the new states into the given ones (and
                         the outputs into buffers from lrc::step_outputs)

An op names its layer by a key that holds the spec's canonical hash, the backend, the lowering
and the spec's pickle (lrc.ir.trace: by reference or by value), so a process that never made
the layer (a torch.export file loaded elsewhere) compiles it from the key on first use. The
fake implementations (also the meta kernels) give every shape from the annotations, with
symbolic sizes where torch.compile made them dynamic; nothing is read on the host.
"""
from __future__ import annotations

import base64
import hashlib
import pickle
import weakref
from typing import Any

import torch

from ..errors import CallError
from .shapes import out_specs, step_specs

_LAYERS: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_LOADED: dict[str, Any] = {}  # layers compiled from a key (an exported program's), kept


def spec_hash(g) -> str:
    """The spec's canonical hash: its printed graph, renames and time dim."""
    text = "\n".join([str(g), repr(g.aliases), g.time])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def register(layer, backend: str, lowering: str | None) -> str:
    """The key the ops know `layer` by: the same in every process for the same spec, backend
    and lowering (a string: torch.compile keeps it a constant)."""
    try:
        blob = base64.b64encode(pickle.dumps(layer.spec, protocol=4)).decode()
    except Exception:  # an unpicklable spec still runs in this process
        blob = f"unpicklable-{id(layer)}"
    key = f"{layer.spec.name}:{spec_hash(layer.graph)}:{backend}:{lowering or ''}:{blob}"
    _LAYERS[key] = layer
    return key


def layer_of(key: str):
    """The layer of an op's key: one made in this process, else compiled from the key."""
    layer = _LAYERS.get(key) or _LOADED.get(key)
    if layer is None:
        from .layer import compile as lrc_compile

        name, digest, backend, lowering, blob = key.split(":", 4)
        if blob.startswith("unpicklable-"):
            raise CallError(f"the spec {name!r} could not be pickled, so this op runs only in "
                            "the process that compiled it")
        spec = pickle.loads(base64.b64decode(blob))
        if spec_hash(spec.graph) != digest:
            raise CallError(f"the spec {name!r} this op names has changed since it was saved "
                            "(its canonical hash differs); re-export with this definition")
        layer = _LOADED[key] = lrc_compile(spec, backend=backend, lowering=lowering or None)
    return layer


def _fresh(results: list[torch.Tensor], inputs: list[torch.Tensor],
           kept: set[int] = frozenset()) -> list[torch.Tensor]:
    """The results contiguous (as the fake implementations promise), aliasing no input, no
    other result and no storage in `kept` (a custom op's outputs may not alias, and a buffer
    torch.compile reuses must not be one the tape reads): copied only where that does not hold."""
    seen = {t.untyped_storage().data_ptr() for t in inputs} | set(kept)
    out = []
    for x in results:
        y = x.detach().contiguous()
        ptr = y.untyped_storage().data_ptr()
        if y._base is not None or ptr in seen:
            y = y.clone()
            ptr = y.untyped_storage().data_ptr()
        seen.add(ptr)
        out.append(y)
    return out


def _run(layer, tensors, states, reverse, cu_seqlens, max_seqlen):
    return layer.run(tuple(tensors), {}, tuple(states) if states else None, reverse,
                     cu_seqlens, max_seqlen=max_seqlen)


def _fake_outputs(key, tensors, states, cu_seqlens) -> list[torch.Tensor]:
    layer = layer_of(key)
    n_seqs = None if cu_seqlens is None else cu_seqlens.shape[0] - 1
    like = tensors[0]
    return [like.new_empty(shape, dtype=dtype)
            for shape, dtype in out_specs(layer.graph, tensors, states, n_seqs)]


@torch.library.custom_op("lrc::call", mutates_args=())
def call_op(key: str, tensors: list[torch.Tensor], states: list[torch.Tensor], reverse: bool,
            cu_seqlens: torch.Tensor | None, max_seqlen: int | None) -> list[torch.Tensor]:
    """Outputs then final states of the layer `key` (eager implementation)."""
    with torch.no_grad():
        outs, finals = _run(layer_of(key), tensors, states, reverse, cu_seqlens, max_seqlen)
    return _fresh([*outs, *finals], [*tensors, *states])


@call_op.register_fake
def _call_fake(key, tensors, states, reverse, cu_seqlens, max_seqlen):
    return _fake_outputs(key, tensors, states, cu_seqlens)


class _Tape:
    """A forward run under autograd: the leaves that want gradients and the results."""

    def __init__(self, leaves: list[torch.Tensor], results: list[torch.Tensor]):
        self.leaves, self.results = leaves, results


_TAPES: weakref.WeakValueDictionary[int, _Tape] = weakref.WeakValueDictionary()


class _Holder(bytearray):
    """The token tensor's memory; it holds the tape, so the tape lives exactly as long as the
    token (torch.compile keeps the token for the backward, and frees it after)."""


def _token(tape: _Tape) -> torch.Tensor:
    buf = _Holder(8)
    buf.tape = tape
    token = torch.frombuffer(buf, dtype=torch.int64)
    token[0] = id(tape)
    _TAPES[id(tape)] = tape
    return token


@torch.library.custom_op("lrc::call_train", mutates_args=())
def call_train_op(key: str, tensors: list[torch.Tensor], states: list[torch.Tensor],
                  reverse: bool, cu_seqlens: torch.Tensor | None, max_seqlen: int | None,
                  needs: list[bool]) -> list[torch.Tensor]:
    """Outputs, final states and a tape token (a CPU int64 tensor): the forward runs under
    autograd for the inputs flagged in `needs`, and the tape keeps what its backward reads."""
    layer = layer_of(key)
    n = len(tensors)
    inputs = [*tensors, *states]
    in_ptrs = {x.untyped_storage().data_ptr() for x in inputs} - {0}
    saved: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        # the tape must not alias the op's inputs: torch.compile may reuse their memory
        ptr = t.untyped_storage().data_ptr()
        if ptr in in_ptrs:
            t = t.detach().clone().requires_grad_(t.requires_grad)
        saved.add(t.untyped_storage().data_ptr())
        return t

    leaves = [x.detach().requires_grad_(need) for x, need in zip(inputs, needs, strict=False)]
    with _autograd_on(), torch.enable_grad(), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs, finals = _run(layer, leaves[:n], leaves[n:], reverse, cu_seqlens, max_seqlen)
    results = [*outs, *finals]
    tape = _Tape([x for x, need in zip(leaves, needs, strict=False) if need], results)
    return [*_fresh(results, inputs, saved - {0}), _token(tape)]


@call_train_op.register_fake
def _call_train_fake(key, tensors, states, reverse, cu_seqlens, max_seqlen, needs):
    return [*_fake_outputs(key, tensors, states, cu_seqlens),
            torch.empty(1, dtype=torch.int64, device="cpu")]


@torch.library.custom_op("lrc::call_backward", mutates_args=())
def call_backward_op(token: torch.Tensor, tensors: list[torch.Tensor],
                     grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients of the inputs of `tensors` (those the forward flagged), from the tape: the
    generated backward kernels on the forward's checkpoints (zeros where none flows)."""
    tape = _TAPES.get(int(token[0]))
    if tape is None or tape.results is None:
        raise RuntimeError("lrc: this backward's forward tape is gone (a second backward through "
                           "a compiled lrc call needs the forward run again)")
    pairs = [(r, g) for r, g in zip(tape.results, grads, strict=False) if r.requires_grad]
    with _autograd_on(), torch.enable_grad():
        got = torch.autograd.grad([r for r, _ in pairs], tape.leaves,
                                  [g.to(r.dtype) for r, g in pairs], allow_unused=True) \
            if pairs else [None] * len(tape.leaves)
    tape.results = None  # the autograd graph is freed: the checkpoints go with it
    # laid out like the inputs, as the fake implementation promises
    return [torch.zeros_like(x) if gx is None else torch.empty_like(x).copy_(gx)
            for x, gx in zip(tensors, got, strict=False)]


@call_backward_op.register_fake
def _call_backward_fake(token, tensors, grads):
    return [torch.empty_like(x) for x in tensors]


def _autograd_on():
    """Autograd back on inside an op's implementation (PyTorch runs it below autograd)."""
    inc = torch._C._dispatch_tls_local_include_set()
    exc = torch._C._dispatch_tls_local_exclude_set()
    for key in (torch._C.DispatchKey.AutogradCPU, torch._C.DispatchKey.AutogradCUDA,
                torch._C.DispatchKey.AutogradOther, torch._C.DispatchKey.ADInplaceOrView):
        exc = exc.remove(key)
    return torch._C._ForceDispatchKeyGuard(inc, exc)


def _setup(ctx, inputs, output):
    key, tensors, states, reverse, cu_seqlens, max_seqlen, needs = inputs
    ctx.needs = list(needs)
    ctx.n = len(tensors)
    ctx.outs = [(o.shape, o.dtype, o.device) for o in output[:-1]]
    flagged = [x for x, need in zip((*tensors, *states), needs, strict=False) if need]
    ctx.save_for_backward(output[-1], *flagged)


def _backward(ctx, grads):
    token, *flagged = ctx.saved_tensors
    grads = [torch.zeros(s, dtype=d, device=v) if g is None else g
             for (s, d, v), g in zip(ctx.outs, grads[:-1], strict=False)]
    got = iter(torch.ops.lrc.call_backward(token, flagged, grads))
    each = [next(got) if need else None for need in ctx.needs]
    return None, each[:ctx.n], each[ctx.n:], None, None, None, None


call_train_op.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("lrc::step", mutates_args=())
def step_op(key: str, tensors: list[torch.Tensor], states: list[torch.Tensor]
            ) -> list[torch.Tensor]:
    """One token of the layer `key`: outputs then new states (states empty: zeros)."""
    layer = layer_of(key)
    with torch.no_grad():
        out, news = layer.step(*tensors, state=tuple(states) if states else None)
    outs = list(out) if isinstance(out, tuple) else [out]
    news = list(news) if isinstance(news, tuple) else [news]
    return _fresh([*outs, *news], [*tensors, *states])


@step_op.register_fake
def _step_fake(key, tensors, states):
    like = tensors[0]
    return [like.new_empty(shape, dtype=dtype)
            for shape, dtype in step_specs(layer_of(key).graph, tensors, states)]


@torch.library.custom_op("lrc::step_inplace", mutates_args=("states", "outs"))
def step_inplace_op(key: str, tensors: list[torch.Tensor], states: list[torch.Tensor],
                    outs: list[torch.Tensor]) -> None:
    """One token of the layer `key`: the new states written into `states`, the outputs into
    `outs` (a mutating op returns nothing: torch.compile functionalizes it)."""
    layer = layer_of(key)
    with torch.no_grad():
        out, _ = layer.step(*tensors, state=tuple(states), inplace=True)
    for dst, src in zip(outs, out if isinstance(out, tuple) else (out,), strict=False):
        dst.copy_(src)


@step_inplace_op.register_fake
def _step_inplace_fake(key, tensors, states, outs):
    return None


def _step_buffers(key, tensors, states) -> list[torch.Tensor]:
    g = layer_of(key).graph
    like = tensors[0]
    return [like.new_empty(shape, dtype=dtype)
            for shape, dtype in step_specs(g, tensors, states)[:len(g.outputs)]]


@torch.library.custom_op("lrc::step_outputs", mutates_args=())
def step_outputs_op(key: str, tensors: list[torch.Tensor], states: list[torch.Tensor]
                    ) -> list[torch.Tensor]:
    """Empty buffers for one token's outputs (what lrc::step_inplace writes)."""
    return _step_buffers(key, tensors, states)


step_outputs_op.register_fake(_step_buffers)


def _tensors(layer, args: tuple, kwargs: dict, what: str) -> list[torch.Tensor]:
    """Positional and keyword arguments in the step's order (plain attributes only: this runs
    under torch.compile's tracer)."""
    params = layer.op_params
    if len(args) > len(params):
        raise CallError(f"{what} takes {len(params)} arguments ({', '.join(params)}), "
                        f"got {len(args)}")
    extra = [k for k in kwargs if k not in params[len(args):]]
    if extra:
        raise CallError(f"{what} got an unexpected or repeated argument {extra[0]!r}")
    missing = [p for p in params[len(args):] if p not in kwargs]
    if missing:
        raise CallError(f"{what} is missing argument {missing[0]!r}")
    return list(args) + [kwargs[p] for p in params[len(args):]]


def _states(value: Any) -> list[torch.Tensor]:
    if value is None:
        return []
    return list(value) if isinstance(value, (tuple, list)) else [value]


def compiled_call(layer, args: tuple, kwargs: dict, initial_state: Any, reverse: bool,
                  cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None):
    """The layer's call through the ops (what torch.compile traces, and meta tensors run):
    (outputs, final states)."""
    tensors = _tensors(layer, args, kwargs, "layer")
    states = _states(initial_state)
    inputs = [*tensors, *states]
    if torch.is_grad_enabled() and any(x.requires_grad for x in inputs):
        needs = [x.requires_grad for x in inputs]
        res = torch.ops.lrc.call_train(layer.op_key, tensors, states, reverse, cu_seqlens,
                                       max_seqlen, needs)[:-1]
    else:
        res = torch.ops.lrc.call(layer.op_key, tensors, states, reverse, cu_seqlens,
                                 max_seqlen)
    n_out = layer.op_n_out
    return list(res[:n_out]), list(res[n_out:])


def compiled_step(layer, args: tuple, kwargs: dict, state: Any, inplace: bool):
    """`layer.step` through the ops: (outputs, new states) as lists."""
    tensors = _tensors(layer, args, kwargs, "layer.step")
    states = _states(state)
    if inplace:
        outs = torch.ops.lrc.step_outputs(layer.op_key, tensors, states)
        torch.ops.lrc.step_inplace(layer.op_key, tensors, states, outs)
        return list(outs), states
    res = torch.ops.lrc.step(layer.op_key, tensors, states)
    n_out = layer.op_n_out
    return list(res[:n_out]), list(res[n_out:])


def use_ops(tensors) -> bool:
    """Whether a call goes through the ops: under torch.compile, or on meta tensors."""
    if torch.compiler.is_compiling():
        return True
    return any(isinstance(x, torch.Tensor) and x.is_meta for x in tensors)


__all__ = ["call_op", "compiled_call", "compiled_step", "layer_of", "register", "spec_hash",
           "use_ops"]
