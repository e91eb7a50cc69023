"""The torch lowering's Program: the planned graph evaluated with torch ops over all time steps.

Nodes that no state reaches are evaluated once for the whole sequence, as the reference
interpreter does. The states are then solved group by group, in the order in which they read
one another (a group is a cycle of states that read each other, usually one state):

    scan   a diagonal state, h' = a * h + b with a free of every state: a is its decay
           (the structure pass's), b the new-state node evaluated with h = 0 over the whole
           sequence (other states at their solved values), and `scan.diagonal_scan` gives every
           h_t at once;
    loop   anything else (DPLR, dense, shift, general): a loop over time evaluating only the
           nodes between the group's states and its new states, per step, with batched ops.

With every state's value before each step known, one more pass evaluates the outputs for all
steps at once. Torch autograd differentiates all of it (the scan has its own backward).
Compute is float32 (complex64 for complex values), float64 when the call's states are.
"""
from __future__ import annotations

import networkx as nx
import sympy as sp
import torch

from ...ir.dims import Role
from ...ir.functions import tape
from ...ir.graph import Graph
from ...ir.interpret import canonical_shape, eval_node
from ...ir.nodes import Input, Map, node_symbol
from ...layout import batch_dim, from_canonical, to_canonical
from ...passes.analysis import expr_dims, inline
from ..base import Call
from .hoist import hoist
from .scan import diagonal_scan

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


class Program:
    """Runs a compiled spec with torch ops on any device (the CPU's fast path)."""

    sources: dict[str, str] = {}
    source = ""

    def __init__(self, compiled):
        g: Graph = compiled.planned
        self.graph = g
        st = g.meta("structure")
        sdep = g.state_dependent
        new_of = dict(g.states)
        anc = {s: nx.ancestors(g.nx, new_of[s]) | {new_of[s]} for s in g.state_names}
        reads = nx.DiGraph()
        reads.add_nodes_from(g.state_names)
        for s in g.state_names:
            reads.add_edges_from((o, s) for o in g.state_names if o != s and o in anc[s])
        cond = nx.condensation(reads)
        order = [n for n in g.nodes if n.name in sdep and not _is_state(n)]
        self.groups = []
        for c in nx.topological_sort(cond):
            members = tuple(s for s in g.state_names if s in cond.nodes[c]["members"])
            info = st.state(members[0]) if len(members) == 1 else None
            own = set().union(*(nx.descendants(g.nx, s) for s in members))
            needed = set().union(*(anc[s] for s in members))
            pre = [n for n in order if n.name in needed and n.name not in own]
            per = [n for n in order if n.name in needed and n.name in own]
            if info is not None and info.transition == "diagonal" and info.name == members[0]:
                # b: the new state with this state at zero, for all steps at once
                decay = None if info.decay is None else tape(inline(g, info.decay))
                zero = {node_symbol(g[members[0]]): sp.Integer(0)}
                per = [Map(n.name, n.dims, n.expr.xreplace(zero), n.src, n.complex)
                       if isinstance(n, Map) else n for n in per]
                self.groups.append(("scan", members, decay, pre, per))
            else:
                per, parts = hoist(per, set(members) | {n.name for n in per})
                pre = pre + [Map(k, expr_dims(g, e), e) for k, e in parts.items()]
                self.groups.append(("loop", members, None, pre, per))
        # the outputs from the states before and after each step (both known by then)
        news, outs, todo = set(new_of.values()), set(), list(g.outputs)
        while todo:
            name = todo.pop()
            if name not in outs:
                outs.add(name)
                if name not in news:
                    todo += list(g.nx.predecessors(name))
        self.readout = [n for n in order if n.name in outs and n.name not in news]
        self.free = [n for n in g.nodes if n.name not in sdep]

    def run(self, call: Call, finals: bool = True) -> tuple[list, list]:
        """Outputs and final states of a whole-sequence call, in the user's layouts."""
        return _run(self, call, step=False)

    def step(self, call: Call) -> tuple[list, list]:
        """One token: outputs and new states, in the user's layouts (no time dim)."""
        return _run(self, call, step=True)


def _is_state(node) -> bool:
    return isinstance(node, Input) and node.role is Role.STATE


def _dtypes(call: Call) -> tuple[torch.dtype, torch.dtype]:
    real = torch.float64 if call.state_dtype == torch.float64 else torch.float32
    return real, _COMPLEX[real]


def _cast(x: torch.Tensor, real: torch.dtype, cplx: torch.dtype) -> torch.Tensor:
    """x in the compute dtype of its kind (booleans and integers as they are)."""
    if x.is_complex():
        return x if x.dtype == cplx else x.to(cplx)
    if x.is_floating_point() and x.dtype != real:
        return x.to(real)
    return x


def _inputs(g: Graph, tensors: dict, roles, sizes: dict, with_time: bool, device,
            real: torch.dtype, cplx: torch.dtype) -> dict[str, torch.Tensor]:
    """Canonical values of the input nodes of `roles`, by node name, in the compute dtype."""
    whole: dict[str, torch.Tensor] = {}
    out = {}
    for node in g.inputs():
        if node.role not in roles:
            continue
        ann = node.annotation
        if node.arg not in whole:
            if node.arg in tensors:
                x = tensors[node.arg]
                x = x.to(cplx if (ann.complex or x.is_complex()) else real)
                whole[node.arg] = to_canonical(g, x, ann, sizes, with_time)
            else:  # a state given as None starts at zero
                dims = [d for d in ann.dims if d != g.time]
                whole[node.arg] = torch.zeros(canonical_shape(g, dims, sizes),
                                              dtype=cplx if ann.complex else real,
                                              device=device)
        x = whole[node.arg]
        if node.part == "re":
            x = x.real
        elif node.part == "im":
            x = x.imag if x.is_complex() else torch.zeros_like(x)
        out[node.name] = x
    return out


def _run(prog: Program, call: Call, step: bool) -> tuple[list, list]:
    g, sizes = prog.graph, call.sizes
    real, cplx = _dtypes(call)
    values = _inputs(g, call.tensors, (Role.SEQ, Role.PARAM), sizes, not step, call.device,
                     real, cplx)
    b = batch_dim(g) if call.segments is not None else None
    state_sizes = dict(sizes, **({b: len(call.segments)} if b else {}))
    states = _inputs(g, call.states or {}, (Role.STATE,), state_sizes, False, call.device,
                     real, cplx)
    if call.segments is None:
        outs, fins = _solve(prog, values, states, sizes, 1 if step else call.T, call.reverse,
                            real, cplx)
    else:
        outs, fins = _segments(prog, call, values, states, b, real, cplx)
    out_t = [from_canonical(g, o, ax, sizes, not step).to(call.out_dtype)
             for o, ax in zip(outs, g.out_axes, strict=True)]
    by_node = dict(zip(g.state_names, fins, strict=True))
    fin_t = []
    for arg in g.state_args:
        parts = {g[s].part: by_node[s] for s in g.state_names if g[s].arg == arg}
        value = parts[""] if "" in parts else torch.complex(parts["re"], parts["im"])
        ann = g.annotation(arg)
        dtype = real if not ann.complex else cplx
        fin_t.append(from_canonical(g, value, ann.axes, state_sizes, False).to(dtype))
    return out_t, fin_t


def _segments(prog: Program, call: Call, values, states, b: str, real, cplx):
    """cu_seqlens: each packed sequence runs from its own initial state."""
    g, sizes = prog.graph, call.sizes
    ax = 1 + g.dims.index(b)
    seq = {n.name for n in g.inputs(Role.SEQ)}
    outs_all: list[list] = [[] for _ in g.outputs]
    fins_all: list[list] = [[] for _ in g.state_names]
    for i, (start, end) in enumerate(call.segments):
        vals = {k: (v[start:end] if k in seq else v) for k, v in values.items()}
        st = {k: v.narrow(ax, i, 1) for k, v in states.items()}
        outs, fins = _solve(prog, vals, st, sizes, end - start, call.reverse, real, cplx)
        for j, o in enumerate(outs):
            outs_all[j].append(o)
        for j, f in enumerate(fins):
            fins_all[j].append(f)
    return [torch.cat(o, 0) for o in outs_all], [torch.cat(f, ax) for f in fins_all]


def _eval(g, node, env, sizes, like, real, cplx) -> torch.Tensor:
    return _cast(eval_node(g, node, env, sizes, like), real, cplx)


def _fit(x: torch.Tensor, g: Graph, node, sizes, t: int) -> torch.Tensor:
    """x as a value of state `node` over t steps: its kind (real or complex) and full shape."""
    if x.is_complex() and not node.complex:
        x = x.real
    return x.expand(canonical_shape(g, node.dims, sizes, t))


def _solve(prog: Program, values, states, sizes, T: int, reverse: bool, real, cplx):
    """(outputs over T steps, final states), canonical, from canonical inputs and states."""
    g = prog.graph
    like = next(iter(values.values()), None)
    if like is None:
        like = next(iter(states.values()))
    if T == 0:
        return ([torch.zeros(canonical_shape(g, g[o].dims, sizes, 0), dtype=real,
                             device=like.device) for o in g.outputs],
                [states[s] for s in g.state_names])
    env: dict[str, torch.Tensor] = dict(values)
    for node in prog.free:
        if node.name not in env:
            env[node.name] = _eval(g, node, env, sizes, like, real, cplx)
    new_of = dict(g.states)
    finals = {}
    for kind, members, decay, pre, per in prog.groups:
        for n in pre:  # what the group reads from earlier states, for all steps at once
            if n.name not in env:
                env[n.name] = _eval(g, n, env, sizes, like, real, cplx)
        if kind == "scan":
            (s,) = members
            node = g[s]
            h0 = states[s]
            if node.complex and not h0.is_complex():
                h0 = h0.to(cplx)
            tmp = dict(env)
            tmp[s] = torch.zeros_like(h0)
            for n in per:
                tmp[n.name] = _eval(g, n, tmp, sizes, like, real, cplx)
            bt = tmp[new_of[s]]
            if bt.is_complex() and not node.complex:
                bt = bt.real
            if node.complex and not bt.is_complex():
                bt = bt.to(cplx)
            a = torch.zeros((), dtype=real, device=h0.device) if decay is None else decay(env)
            a = _cast(torch.as_tensor(a, device=h0.device), real, cplx)
            if a.dim() == 0:
                a = a.reshape((1,) * bt.dim())
            if a.is_complex() and not node.complex:
                a = a.real
            full = canonical_shape(g, node.dims, sizes, T)
            H = diagonal_scan(a.expand(torch.broadcast_shapes(a.shape, full)),
                              bt.expand(full), h0[0], reverse)
            _record(env, finals, s, new_of[s], H, h0, reverse)
        else:
            Hs = _loop(g, env, states, members, per, new_of, sizes, T, reverse, like,
                       real, cplx)
            for s in members:
                _record(env, finals, s, new_of[s], Hs[s], states[s], reverse)
    for n in prog.readout:
        if n.name not in env:
            env[n.name] = _eval(g, n, env, sizes, like, real, cplx)
    outs = [_fit(env[o], g, g[o], sizes, T) for o in g.outputs]
    return outs, [finals[s] for s in g.state_names]


def _record(env, finals, s, new, H, h0, reverse) -> None:
    """The states before every step (env[s]), after every step (env[new]) and after the last
    (finals[s]) from H, the states after every step."""
    env[new] = H
    h0 = h0.to(H.dtype).expand((1,) + H.shape[1:])
    if reverse:
        env[s] = torch.cat([H[1:], h0])
        finals[s] = H[:1]
    else:
        env[s] = torch.cat([h0, H[:-1]])
        finals[s] = H[-1:]


def _loop(g, env, states, members, per, new_of, sizes, T, reverse, like, real, cplx):
    """The states after every step of a group of states, by a loop over time."""
    names = {a for n in per for a in n.args} - {n.name for n in per} - set(members)
    sliced = {k: (env[k].split(1, 0) if env[k].shape[0] > 1 else None) for k in names}
    current = {}
    for s in members:
        h = states[s]
        if g[s].complex and not h.is_complex():
            h = h.to(cplx)
        current[s] = h
    rec: dict[str, list] = {s: [None] * T for s in members}
    for t in (reversed(range(T)) if reverse else range(T)):
        step = {k: (env[k] if v is None else v[t]) for k, v in sliced.items()}
        step.update(current)
        for n in per:
            step[n.name] = _eval(g, n, step, sizes, like, real, cplx)
        for s in members:
            new = new_of[s]
            if new not in step:  # computed for all steps before the loop (it reads no
                # member of this group: an earlier state's values, or nothing that varies)
                v = env[new] if new in env else _eval(g, g[new], step, sizes, like, real, cplx)
                step[new] = v[t:t + 1] if new in env and v.shape[0] > 1 else v
            h = _fit(step[new], g, g[s], sizes, 1)
            if g[s].complex and not h.is_complex():
                h = h.to(cplx)
            current[s] = rec[s][t] = h
    return {s: torch.cat(rec[s], 0) for s in members}
