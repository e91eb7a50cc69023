"""Symbolic derivatives: the backward of a step is another step, run in reverse time.

For h_t = F(h_{t-1}, x_t), y_t = G(h_{t-1}, h_t, x_t), with lambda_t = dL/dh_t, one backward
step is the vector-Jacobian product of the forward step: given lambda_t and dL/dy_t it returns
lambda_{t-1}, dL/dx_t and this step's share of dL/dParam. That map is linear in (lambda, dy),
so the backward is again a linear recurrence (state lambda, reversed time) over the forward's
inputs and its states h_{t-1}: the same IR, interpreter and code generators run it.

Each node's adjoint follows its rule: a Map's arguments get d(expr)/d(arg) * adjoint (sympy
derivatives), summed over the dims they were broadcast along; a Sum's argument gets the adjoint
broadcast back; a Rename's the inverse rename; a Shift's the opposite shift. The forward nodes
stay in the backward graph (recomputed, shared with the derivative expressions) and dead ones
are removed. Run it after complex lowering: it works over real graphs.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..ir.dims import Annotation, Role
from ..ir.graph import Graph, toposort
from ..ir.nodes import Input, Map, Node, Rename, Shift, Sum, node_symbol
from .cleanup import dce, fuse_maps


@dataclass(frozen=True)
class Backward:
    """The adjoint step and how its names relate to the forward graph's.

    graph            one step of the adjoint recurrence; run it with reverse time
    forward_states   (forward state, backward Seq input holding h_{t-1} at each step)
    cotangents       (forward output, backward Seq input holding dL/dy_t)
    adjoints         (forward state, backward state): dL/dh_t flowing backwards; its final
                     value is the gradient of the initial state
    seq_grads        (forward Seq input, backward output: dL/dx_t per step)
    param_grads      (forward Param input, backward output: this step's share, to sum over time)
    """

    graph: Graph
    forward_states: tuple[tuple[str, str], ...]
    cotangents: tuple[tuple[str, str], ...]
    adjoints: tuple[tuple[str, str], ...]
    seq_grads: tuple[tuple[str, str], ...]
    param_grads: tuple[tuple[str, str], ...]



def _tanh_square_arg(e: sp.Basic):
    """u when e is 1 - tanh(u)**2, else None."""
    if not e.is_Add or len(e.args) != 2 or sp.Integer(1) not in e.args:
        return None
    sq = -(e - 1)
    if sq.is_Pow and sq.exp == 2 and isinstance(sq.base, sp.tanh):
        return sq.base.args[0]
    return None


def sech_form(e: sp.Basic) -> sp.Basic:
    """sympy's derivative of tanh, 1 - tanh(u)**2, as sech(u)**2: the same value without the
    cancellation that loses every digit in float32 where tanh saturates."""
    return e.replace(lambda x: _tanh_square_arg(x) is not None,
                     lambda x: sp.sech(_tanh_square_arg(x)) ** 2)


def adjoint_name(name: str) -> str:
    return "∂" + name


def derive_backward(g: Graph) -> Graph:
    """Attach g.meta('backward'): the Backward of the (real) step `g`."""
    return g.with_meta(backward=vjp(g))


def vjp(g: Graph) -> Backward:
    """The adjoint step of `g` (see the module docstring).

    Long on purpose: one walk over the graph in reverse, each node's rule next to the
    others so the adjoint graph's construction reads in one place."""
    if any(n.complex for n in g.nodes):
        raise ValueError("vjp needs a real graph: run lower_complex first")
    t = g.time
    nodes: list[Node] = []
    fresh = iter(f"%d{i}" for i in range(10**9))
    contrib: dict[str, list[str]] = {}
    seq_in, state_fwd, cot_in, adj_in = [], [], [], []

    # inputs of the backward step: forward Seq and Param inputs, forward states as Seq, the
    # outputs' cotangents as Seq, the adjoint states as State
    for n in g.nodes:
        if isinstance(n, Input) and n.role is Role.STATE:
            ann = Annotation(Role.SEQ, ((t,),) + n.annotation.axes, False,
                             f"{t} {n.annotation.text}")
            nodes.append(Input(n.name, Role.SEQ, n.dims, ann, False, n.arg, n.part))
            state_fwd.append((n.name, n.name))
        elif isinstance(n, Input):
            nodes.append(n)
            if n.role is Role.SEQ:
                seq_in.append(n.name)
        else:
            nodes.append(n)
    news = set(g.new_state_names)
    for o, axes in zip(g.outputs, g.out_axes):
        # an output that is also a new state gets two cotangents: as output and from the future
        nm = adjoint_name(o) + ("@out" if o in news else "")
        ann = Annotation(Role.SEQ, axes, False, _text(axes))
        nodes.append(Input(nm, Role.SEQ, g[o].dims, ann))
        cot_in.append((o, nm))
        contrib.setdefault(o, []).append(nm)
    for s, new in g.states:
        nm = adjoint_name(new)
        ann = Annotation(Role.STATE, g[s].annotation.axes, False, g[s].annotation.text)
        nodes.append(Input(nm, Role.STATE, g[s].dims, ann, False, nm))
        adj_in.append(nm)
        contrib.setdefault(new, []).append(nm)

    by_name = {n.name: n for n in nodes}

    def add(node: Node) -> str:
        nodes.append(node)
        by_name[node.name] = node
        return node.name

    def total(name: str) -> sp.Basic:
        """The adjoint of forward node `name` as one symbol (a Map summing contributions)."""
        parts = contrib.get(name, [])
        syms = [node_symbol(by_name[p]) for p in parts]
        if len(syms) == 1 and by_name[parts[0]].dims == g[name].dims:
            return syms[0]
        nm = add(Map(next(fresh), g[name].dims, sp.Add(*syms) if syms else sp.Integer(0)))
        contrib[name] = [nm]
        return node_symbol(by_name[nm])

    def reduce_to(name: str, dims: tuple[str, ...]) -> str:
        """Sum node `name` over the dims it has beyond `dims`."""
        for d in [d for d in by_name[name].dims if d not in dims]:
            node = by_name[name]
            name = add(Sum(next(fresh), tuple(x for x in node.dims if x != d), name, d))
        return name

    for node in reversed(g.nodes):
        if isinstance(node, Input) or node.name not in contrib:
            continue
        bar = total(node.name)
        if isinstance(node, Map):
            for a in node.args:
                d = sech_form(sp.diff(node.expr, node_symbol(g[a])))
                if d == 0:
                    continue
                c = add(Map(next(fresh), node.dims, d * bar))
                contrib.setdefault(a, []).append(reduce_to(c, g[a].dims))
        elif isinstance(node, Sum):
            arg = g[node.arg]
            contrib.setdefault(node.arg, []).append(add(Map(next(fresh), arg.dims, bar)))
        elif isinstance(node, Rename):
            inv = tuple(sorted((new, old) for old, new in node.mapping))
            c = Rename(next(fresh), g[node.arg].dims, bar.name, inv)
            contrib.setdefault(node.arg, []).append(add(c))
        elif isinstance(node, Shift):
            c = Shift(next(fresh), node.dims, bar.name, node.dim, offset=-node.offset)
            contrib.setdefault(node.arg, []).append(add(c))

    outputs, out_axes, seq_grads, param_grads = [], [], [], []
    for n in g.inputs():
        if n.role not in (Role.SEQ, Role.PARAM):
            continue
        nm = add(Map(adjoint_name(n.name), n.dims, total(n.name)))
        outputs.append(nm)
        if n.role is Role.SEQ:
            out_axes.append(n.annotation.axes)
            seq_grads.append((n.name, nm))
        else:
            out_axes.append(((t,),) + n.annotation.axes)
            param_grads.append((n.name, nm))
    adjoints, states = [], []
    for (s, _new), a in zip(g.states, adj_in):
        nm = add(Map(adjoint_name(s), g[s].dims, total(s)))
        adjoints.append((s, a))
        states.append((a, nm))
    params = tuple(dict.fromkeys(n.arg for n in nodes if isinstance(n, Input)
                                 and n.role in (Role.SEQ, Role.PARAM)))
    bg = Graph(f"{g.name}_backward", toposort(tuple(nodes)), params, tuple(states),
               tuple(outputs), tuple(out_axes), t, g.dims, g.aliases)
    bg = fuse_maps(dce(bg))
    return Backward(bg, tuple(state_fwd), tuple(cot_in), tuple(adjoints), tuple(seq_grads),
                    tuple(param_grads))


def _text(axes) -> str:
    return " ".join(a[0] if len(a) == 1 else "(" + " ".join(a) + ")" for a in axes)
