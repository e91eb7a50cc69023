"""A call of the scan lowering: pre work in PyTorch, the kernels (with autograd), post work;
the one-token step; and the replays of seen calls (Fast, FastStep)."""
from __future__ import annotations

import math
from typing import Any

import torch

from ...ir import interpret
from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Input
from ...kernels.host import canonical_inputs, evaluate
from ...kernels.launch import deterministic
from ...layout import (
    dim_strides,
    dims_to_layout,
    from_canonical,
    part_view,
    to_canonical,
)
from ..base import Call, per_sequence
from . import replay as replays
from . import tune
from .autograd import ScanFunction, input_grads, kernel_input
from .launch import Launch
from .partition import old_name
from .program import ScanProgram
from .replay import back_key


def _to_user_state(x: torch.Tensor, g: Graph, s: str, sizes: dict[str, int]) -> torch.Tensor:
    """A state held as (*node dims) -> the user's annotated layout."""
    return dims_to_layout(x, g[s].dims, g[s].annotation.axes, sizes)


def _assemble_states(g: Graph, values: dict[str, torch.Tensor], sizes, dtype) -> list:
    out = []
    for arg in g.state_args:
        parts = {g[s].part: _to_user_state(values[s], g, s, sizes)
                 for s in g.state_names if g[s].arg == arg}
        value = parts[""] if "" in parts else torch.complex(parts["re"], parts["im"])
        out.append(value.to(dtype if not value.is_complex() else
                            (torch.complex128 if dtype == torch.float64 else torch.complex64)))
    return out


_EMPTY: dict[torch.device, torch.Tensor] = {}


def _no_state(device: torch.device) -> torch.Tensor:
    """The h0 argument of a call without initial states (no elements; one per device)."""
    if device not in _EMPTY:
        _EMPTY[device] = torch.empty(0, device=device)
    return _EMPTY[device]


class _NoGrad:
    """The context a forward gets when nothing needs a gradient (no autograd.Function)."""

    def save_for_backward(self, *tensors) -> None:
        pass

    def set_materialize_grads(self, value: bool) -> None:
        pass

def run(prog: ScanProgram, call: Call, finals: bool = True
        ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs and final states for a whole-sequence call (finals=False: no final states, []).
    cu_seqlens: one launch for all the packed sequences where the kernels can
    (`ScanProgram.varlen`), else one per sequence."""
    if call.segments is None:
        return _run(prog, call, call.tensors, call.states, call.T, finals=finals)
    if prog.varlen:
        # runtime.call.Segments: the offsets on the device, no host read with max_seqlen
        segs = call.segments
        return _run(prog, call, call.tensors, call.states, call.T,
                    varlen=(segs.offsets(call.device), segs.longest, len(segs)))
    return per_sequence(prog.g, call, lambda tensors, states, T: _run(prog, call, tensors,
                                                                  states, T))

def _run(prog: ScanProgram, call: Call, tensors, states, T: int, varlen=None,
         finals: bool = True):
    """One launch of the kernels over `tensors` (`varlen`: packed sequences, see
    autograd._varlen), with the pre and post work in PyTorch."""
    g, k, part = prog.g, prog.kernel, prog.part
    sizes = call.sizes
    sub = Call(g, tensors, states, sizes, T, call.reverse, None, call.out_dtype,
               call.state_dtype, call.device)
    env: dict[str, torch.Tensor] = {}
    like = next(iter(tensors.values()))
    if part.pre or part.post:
        env = canonical_inputs(g, sub, torch.float32, readers=(*part.pre, *part.post))
        evaluate(g, set(part.pre), env, sizes, like)
    names = [n.name for n in k.inputs() if n.role in (Role.SEQ, Role.PARAM)]
    ins = [kernel_input(prog, n, sub, env) for n in names]
    h0s = []
    for s in k.state_names:
        if states is None:
            h0s.append(_no_state(call.device))
        else:
            h0s.append(part_view(states[g[s].arg], g[s].part))
    out_dtypes = [call.out_dtype if o in g.outputs else torch.float32 for o in k.outputs]
    info = dict(sizes=sizes, T=T, inputs=names, out_dtypes=out_dtypes, device=call.device,
                reverse=call.reverse, state_axes={s: g[s].annotation.axes for s in k.state_names},
                varlen=varlen)
    info["infer"] = not (torch.is_grad_enabled() and any(x.requires_grad for x in (*ins, *h0s)))
    if not info["infer"]:
        res = ScanFunction.apply(prog, info, *ins, *h0s)
    else:  # nothing to differentiate: the forward alone, without autograd's bookkeeping
        res = ScanFunction.forward(_NoGrad(), prog, info, *ins, *h0s)
    kouts, hTs = res[:len(k.outputs)], res[len(k.outputs):]
    results = dict(zip(k.outputs, kouts))
    if part.post:
        for o, axes in zip(k.outputs, k.out_axes):
            if o not in g.outputs or o in part.post:
                env[o] = to_canonical(g, results[o], _ann(axes), sizes, True)
        for s in part.old_states:
            env[s] = env[old_name(s)]
        evaluate(g, set(part.post), env, sizes, like)
        for o, axes in zip(g.outputs, g.out_axes):
            if o in part.post:
                # an output constant in time (or along a dim) is computed once: repeat it
                x = env[o].expand(interpret.canonical_shape(g, g[o].dims, sizes, T))
                results[o] = from_canonical(g, x, axes, sizes, True).to(call.out_dtype)
    outs = [results[o] for o in g.outputs]
    if not finals:
        return outs, []
    ssizes = sizes if varlen is None else dict(sizes, **{prog.batch: varlen[2]})
    fins = _assemble_states(g, dict(zip(k.state_names, hTs)), ssizes, call.state_dtype)
    return outs, fins

def _ann(axes):
    from ...ir.dims import Annotation

    return Annotation(Role.SEQ, axes, False)


def _params_pre(prog: ScanProgram, tensors: dict, sizes: dict[str, int],
               like: torch.Tensor) -> dict | None:
    """The decode kernel's inputs computed before it from Params alone (hoist_params: in
    float64, rounded once), from the Params' current values on every step. Nothing is kept
    between steps: a Param can change without its version changing (`p.data.add_`,
    `p.data = ...`, a write through `p.numpy()`, `vector_to_parameters`), and the work is a few
    ops on Param-sized tensors. No host sync: a CUDA-graph capture of a step records this work
    too, so each replay reads the Params' memory as it is then. None where the pre work reads
    more than Params."""
    need = _pre_reads(prog)
    if need is None:
        return None
    g, part = prog.g, prog.part
    env = {}
    with torch.no_grad():
        for name in need:
            x = part_view(tensors[g[name].arg], g[name].part)
            env[name] = to_canonical(g, x.to(torch.float32), g[name].annotation, sizes, False)
        evaluate(g, set(part.pre), env, sizes, like)
        at = _Sizes(sizes)
        return {n: kernel_input(prog, n, at, env, with_time=False) for n in part.pre
                if n in prog.kernel}


class _Sizes:
    """What kernel_input reads of a Call for a pre result: the sizes."""

    def __init__(self, sizes: dict[str, int]):
        self.sizes = sizes


def _pre_reads(prog: ScanProgram) -> tuple[str, ...] | None:
    """The Param inputs the decode step's pre work reads (sorted), or None where it reads a
    Seq too; found once per program."""
    if "_pre" not in prog.__dict__:
        g, need, todo = prog.g, set(), list(prog.part.pre)
        while todo:
            n = g[todo.pop()]
            if isinstance(n, Input):
                if n.role is not Role.PARAM:
                    need = None
                    break
                need.add(n.name)
            else:
                todo += list(n.args)
        prog.__dict__["_pre"] = None if need is None else tuple(sorted(need))
    return prog.__dict__["_pre"]


def step(prog: ScanProgram, call: Call, states_out: dict | None = None,
         record: list | None = None):
    """One token through the decode kernel (no autograd). `states_out` maps each state node to
    the tensor to write its new value into (the input state itself for an in-place update).
    `record`: a list the step's FastStep is appended to (None where it does not apply)."""
    g, k, sizes, part = prog.g, prog.kernel, call.sizes, prog.part
    run_ = Launch(prog, "step", sizes, 1, call.device)
    env: dict[str, torch.Tensor] = {}
    like = next(iter(call.tensors.values()))
    pre = _params_pre(prog, call.tensors, sizes, like) if part.pre and not part.post else None
    if pre is None and (part.pre or part.post):
        env = canonical_inputs(g, call, torch.float32, with_time=False,
                               readers=(*part.pre, *part.post))
        evaluate(g, set(part.pre), env, sizes, like)
    for n in k.inputs():
        if n.role in (Role.SEQ, Role.PARAM):
            x = pre[n.name] if pre and n.name in pre else kernel_input(prog, n.name, call, env,
                                                                       with_time=False)
            axes = tuple(a for a in n.annotation.axes if a != (k.time,))
            run_.add(f"in:{n.name}", x, dim_strides(x, axes, sizes, k.time))
    kouts = {}
    for o, axes in zip(k.outputs, k.out_axes):
        axes = tuple(a for a in axes if a != (k.time,))
        dtype = call.out_dtype if o in g.outputs else torch.float32
        y = torch.empty([math.prod(sizes[d] for d in a) for a in axes], dtype=dtype,
                        device=call.device)
        run_.add(f"out:{o}", y, dim_strides(y, axes, sizes, k.time))
        kouts[o] = y
    news = {}
    for s in k.state_names:
        axes = g[s].annotation.axes
        if call.states is not None:
            x = part_view(call.states[g[s].arg], g[s].part)
            run_.add(f"h0:{s}", x, dim_strides(x, axes, sizes, k.time))
        else:
            run_.add(f"h0:{s}", next(iter(kouts.values())), {})
        if states_out is not None:
            dst = states_out[s]
            run_.add(f"hT:{s}", dst, dim_strides(dst, axes, sizes, k.time))
            news[s] = dst
        else:
            dst = torch.empty([sizes[d] for d in k[s].dims], dtype=torch.float32,
                              device=call.device)
            run_.add(f"hT:{s}", dst, {d: dst.stride(i) for i, d in enumerate(k[s].dims)})
            news[s] = dst
    if call.states is not None:
        tune.step_order(run_)
    run_(HAS_H0=call.states is not None)
    if record is not None:
        record.append(FastStep.make(prog, call, run_, pre, kouts, states_out))
    if part.post:
        for o, axes in zip(k.outputs, k.out_axes):
            if o not in g.outputs or o in part.post:
                axes = tuple(a for a in axes if a != (k.time,))
                env[o] = to_canonical(g, kouts[o], _ann(axes), sizes, False)
        for s in part.old_states:
            env[s] = env[old_name(s)]
        evaluate(g, set(part.post), env, sizes, like)
        for o, axes in zip(g.outputs, g.out_axes):
            if o in part.post:
                axes = tuple(a for a in axes if a != (g.time,))
                x = env[o].expand(interpret.canonical_shape(g, g[o].dims, sizes, 1))
                kouts[o] = from_canonical(g, x, axes, sizes, False).to(call.out_dtype)
    outs = [kouts[o] for o in g.outputs]
    if states_out is not None:
        return outs, None
    return outs, _assemble_states(g, news, sizes, call.state_dtype)

__all__ = ["run", "step"]


class FastStep:
    """An in-place decode step replayed straight from the user's tensors: its one launch
    recorded with each tensor argument's origin (an argument, the state, a new output, a
    Param-only term of `_params_pre`) and fired again with the next call's tensors, through
    the compiled kernel's launcher (kernels.launch.Direct): no binding, checks, sizes, strides
    or Triton dispatch again. The Param-only terms are computed again from the call's Params
    on every replay (`_params_pre`). Layer.step keys it by the arguments' and states' shapes,
    strides, dtypes and devices."""

    def __init__(self, run_: Launch, params: list, consts: dict, grid: tuple, kernel,
                 holes: list, picks: dict, sizes: dict | None, outs: list):
        self.run, self.consts, self.grid = run_, consts, grid
        self.base = [None if isinstance(p, torch.Tensor) else p for p in params]
        self.holes, self.picks, self.sizes, self.outs = holes, picks, sizes, outs
        self.direct = None
        if kernel is not None:
            from ...kernels.launch import Direct
            self.direct = Direct(kernel, params, consts, holes)

    @staticmethod
    def make(prog: ScanProgram, call: Call, run_: Launch, pre: dict | None, kouts: dict,
             states_out: dict | None) -> FastStep | None:
        g, k = prog.g, prog.kernel
        if prog.part.post or states_out is None or len(run_.fired) != 1:
            return None
        if prog.part.pre and pre is None:  # pre work reading a Seq: the full path
            return None
        params, consts, grid = run_.fired[0]
        users = {a: x for a, x in call.tensors.items()}
        origin: dict[str, tuple] = {}
        for n in k.inputs():
            if n.role not in (Role.SEQ, Role.PARAM):
                continue
            if pre is not None and n.name in pre:
                origin[f"in:{n.name}"] = ("pre", n.name)
            else:
                origin[f"in:{n.name}"] = ("arg", g[n.name].arg)
        for j, o in enumerate(k.outputs):
            origin[f"out:{o}"] = ("out", j)
        for s in k.state_names:
            origin[f"h0:{s}"] = origin[f"hT:{s}"] = ("state", g[s].arg)
        holes = []
        by_id = {id(x): key for key, (x, _) in run_.tensors.items()}
        for i, p in enumerate(params):
            if not isinstance(p, torch.Tensor):
                continue
            key = by_id.get(id(p))
            src = origin.get(key) if key is not None else None
            if src is None:
                return None
            kind, name = src
            if kind in ("arg", "state"):  # the user's own tensor, not a copy or a part of it
                user = users[name] if kind == "arg" else call.states[name]
                if user.data_ptr() != p.data_ptr() or user.dtype != p.dtype:
                    return None
            if kind == "state" and g[key.split(":", 1)[1]].part:
                return None
            holes.append((i, kind, name))
        outs = [(tuple(y.shape), y.dtype) for y in (kouts[o] for o in k.outputs)]
        fast = FastStep(run_, params, consts, grid, run_.compiled[0], holes, list(g.params),
                        dict(call.sizes) if pre else None, outs)
        fast.order = [list(k.outputs).index(o) for o in g.outputs]
        return fast

    def __call__(self, args: tuple, kwargs: dict, states: dict, device) -> list | None:
        """The new outputs (the states updated in place), or None: take the full path."""
        vals = dict(zip(self.picks, args))
        vals.update(kwargs)
        pre = None
        if self.sizes is not None:
            prog = self.run.prog
            pre = _params_pre(prog, vals, self.sizes, next(iter(vals.values())))
        ys = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in self.outs]
        params = self.base.copy()
        for i, kind, name in self.holes:
            params[i] = (vals[name] if kind == "arg" else states[name] if kind == "state"
                         else ys[name] if kind == "out" else pre[name])
        if self.direct is not None and self.direct.fits(params):
            self.direct(params, self.grid)
        else:
            self.run.fire(params, self.consts, self.grid)
        return [ys[j] for j in self.order]


class Fast:
    """A whole-sequence call replayed straight from the user's tensors: for a layer whose
    kernels read the arguments as given and write its outputs (no pre or post work, no
    initial state, no final state asked), a later call with the same signature skips binding,
    checks, planning and the generic autograd wrapper and plays the recorded launches
    (replay.Replay); when some argument needs a gradient, through `FastGrad`, whose
    backward replays the recorded backward launches (replay.BackReplay) per cotangent
    signature. Layer.__call__ keys these by the arguments' shapes, strides, dtypes, devices
    and which of them need a gradient."""

    def __init__(self, replay, picks: list[tuple[bool, Any]], outs: list[int],
                 h0s: list[torch.Tensor], info: dict, grad: bool):
        self.replay, self.picks, self.outs = replay, picks, outs
        self.h0s, self.info, self.device, self.grad = h0s, info, info["device"], grad
        # write-only buffers kept across calls: the final states, and without gradients the
        # checkpoints (Replay.scratch)
        self.plan = replay.planned(not grad, self.device)
        self.backs: dict[tuple, Any] = {}  # cotangents' signature -> (BackReplay, scratch)

    def __call__(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        ins = [args[i] if positional else kwargs[i] for positional, i in self.picks]
        if self.grad:
            return list(FastGrad.apply(self, *ins))
        kouts = self.replay(ins, self.h0s, self.device, self.plan)[0]
        return [kouts[i] for i in self.outs]


class _Saved:
    """What ScanFunction.backward reads from its ctx, for a FastGrad's first backward."""

    def __init__(self, fast: Fast, saved: tuple, tc: int):
        self.prog, self.info, self.has_h0, self.tc = fast.replay.run.prog, fast.info, False, tc
        self.saved_tensors = saved


class FastGrad(torch.autograd.Function):
    """A Fast call with gradients: the forward's launches replayed, the kernels' inputs and
    checkpoints saved; the backward replayed once its cotangents' signature was seen (the
    first one runs ScanFunction.backward, which records it)."""

    @staticmethod
    def forward(ctx, fast: Fast, *ins: torch.Tensor):
        kouts, _, chks, tc = fast.replay(list(ins), fast.h0s, fast.device, fast.plan)
        ctx.fast, ctx.tc = fast, tc
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*ins, *chks)
        return tuple(kouts[i] for i in fast.outs)

    @staticmethod
    def backward(ctx, *gys):
        fast, saved = ctx.fast, ctx.saved_tensors
        prog, info = fast.replay.run.prog, fast.info
        n_in = len(info["inputs"])
        ins, chks = saved[:n_in], saved[n_in:]
        grads: list = [None] * (len(prog.kernel.outputs) + len(prog.kernel.state_names))
        if len(gys) == 1:  # one output (the usual call): no generator on the way to a launch
            gy = gys[0]
            grads[fast.outs[0]] = gy
            key = (None,) if gy is None else ((gy.shape, gy.stride(), gy.dtype),)
        else:
            for i, gy in zip(fast.outs, gys):
                grads[i] = gy
            key = tuple(None if gy is None else (gy.shape, gy.stride(), gy.dtype) for gy in gys)
        key = (*key, deterministic())  # the fixed-order kernels replay apart
        hit = fast.backs.get(key)
        if hit is None:
            res = ScanFunction.backward(_Saved(fast, saved, ctx.tc), *grads)
            back = replays.BACK_REPLAYS.get(back_key(prog, info, ins, chks, grads, ctx.tc))
            if back is not None and back.run.prog is prog:
                fast.backs[key] = back, back.scratch(fast.device)
            return (None, *res[2:2 + n_in])
        back, scratch = hit
        bufs, _ = back(ins, chks, grads, fast.device, scratch)
        return (None, *input_grads(prog, info, ins, bufs))


def fast_entry(prog: ScanProgram, call: Call, args: tuple, kwargs: dict,
               grad: bool = False) -> Fast | None:
    """The Fast replay of `call` (args, kwargs as the user passed them), just run through the
    full path with no initial state and no final state; None where it does not apply."""
    from .replay import replay_key

    g, k, part = prog.g, prog.kernel, prog.part
    if call.segments is not None or call.states is not None or part.pre or part.post:
        return None
    names = [n.name for n in k.inputs() if n.role in (Role.SEQ, Role.PARAM)]
    where = {p: (True, i) for i, p in enumerate(g.params[:len(args)])}
    where.update({p: (False, p) for p in kwargs})
    picks = []
    for n in names:
        node = g[n] if n in g else None
        if not isinstance(node, Input) or node.part or node.arg not in where:
            return None
        picks.append(where[node.arg])
    if grad and len(set(picks)) != len(picks):  # one argument read twice: its grads add up
        return None
    ins = [call.tensors[g[n].arg] for n in names]
    h0s = [_no_state(call.device) for _ in k.state_names]
    out_dtypes = [call.out_dtype if o in g.outputs else torch.float32 for o in k.outputs]
    info = dict(sizes=call.sizes, T=call.T, inputs=names, out_dtypes=out_dtypes,
                device=call.device, reverse=call.reverse, varlen=None, infer=not grad,
                state_axes={s: g[s].annotation.axes for s in k.state_names})
    replay = replays.REPLAYS.get(replay_key(prog, info, ins, h0s))
    if replay is None or replay.run.prog is not prog:
        return None
    return Fast(replay, picks, [list(k.outputs).index(o) for o in g.outputs], h0s, info, grad)
