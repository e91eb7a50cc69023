"""Which nodes a scan kernel computes, and which run in PyTorch before or after it.

The kernel's index space is the union of the state dims. Inside it go the state-dependent nodes
over those dims and the pointwise state-free work they need (gates, discretizations: fused, never
written to memory). Reductions of inputs (input projections such as LRU's B u) and anything over
other dims run in PyTorch for all time steps at once: before the kernel (pre) when state-free,
after it (post) when they read per-step values the kernel writes out.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import sympy as sp

from ...errors import Unsupported
from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Input, Map, node_symbol
from ...passes.analysis import time_varying


@dataclass(frozen=True)
class Partition:
    """pre / core / post node names, and the core's inputs and outputs."""

    graph: Graph
    space: tuple[str, ...]            # the kernel's index space: every state dim
    pre: tuple[str, ...]
    core: tuple[str, ...]
    post: tuple[str, ...]
    kernel_inputs: tuple[str, ...]    # Input nodes and pre nodes the core reads
    kernel_outputs: tuple[str, ...]   # core nodes written out per step (outputs, or post's needs)
    old_states: tuple[str, ...] = ()  # states whose values before each step post reads


def params_only(g: Graph) -> frozenset[str]:
    """Nodes computed from Params alone (constant in time, not the Param inputs themselves)."""
    varying = time_varying(g)
    params = {n.name for n in g.inputs(Role.PARAM)}
    return frozenset(n.name for n in g.nodes if n.name not in varying and n.name not in params
                     and nx.ancestors(g.nx, n.name) & params)


def hoist_params(g: Graph) -> Graph:
    """Each largest subexpression of Params alone inside a time-varying Map (or a new state)
    becomes its own node: `partition` leaves those to PyTorch, which computes them once in
    float64 and rounds once, instead of in the kernel in float32 (a log near 1 or a tanh near
    1 loses its digits there)."""
    varying = time_varying(g) | set(g.new_state_names)
    alone = params_only(g) | {n.name for n in g.inputs(Role.PARAM)}
    parts: dict[sp.Basic, Map] = {}  # shared by all nodes: one input per distinct term
    nodes, changed = [], False
    for n in g.nodes:
        if isinstance(n, Map) and n.name in varying:
            known = len(parts)
            expr = _split_params(g, n, alone, parts)
            if expr != n.expr:
                changed = True
                nodes.extend(list(parts.values())[known:])
                n = Map(n.name, n.dims, expr, n.src, n.complex)
        nodes.append(n)
    return g.replace(nodes=tuple(nodes)) if changed else g


def _split_params(g: Graph, n: Map, alone, parts: dict[sp.Basic, Map]) -> sp.Basic:
    """`n`'s expression with its largest subexpressions over `alone` (node names) replaced by
    nodes' symbols: those in `parts` already (a complex spec's real and imaginary halves
    repeat their Params terms), else new ones, added to `parts`."""

    def visit(x: sp.Basic) -> sp.Basic:
        syms = x.free_symbols
        if (isinstance(x, sp.Expr) and syms and not x.is_Symbol and x.has(sp.Function)
                and all(s.name in alone for s in syms)):
            if x not in parts:
                dims = g.order({d for s in syms for d in g[s.name].dims})
                parts[x] = Map(f"{n.name}.p{len(parts)}", dims, x, n.src, False)
            return node_symbol(parts[x])
        if not isinstance(x, (sp.Add, sp.Mul, sp.Pow, sp.Function)) or not x.args:
            return x  # conditions and branches stay whole
        return x.func(*[visit(a) for a in x.args])

    return visit(n.expr)


def partition(g: Graph) -> Partition:
    """Split `g` (real, after the pipeline) into pre, core and post (see the module docstring)."""
    sdep = g.state_dependent
    # every dim the state update itself runs over: the states', and those its mixing or
    # shifting goes through (a dense matrix's second dim)
    feeds: set[str] = set()
    for new in g.new_state_names:
        feeds |= {a for a in nx.ancestors(g.nx, new) if a in sdep} | {new}
    space = g.order({d for n in feeds for d in g[n].dims})
    inside = set(space)
    core: set[str] = set()
    post: set[str] = set()
    for n in g.nodes:
        if isinstance(n, Input):
            continue
        if n.name in sdep or n.name in g.new_state_names:  # a new state may read no state
            if set(n.dims) <= inside and not any(a in post for a in n.args):
                core.add(n.name)
            else:
                post.add(n.name)
    for s, new in g.states:
        if new in post:
            raise Unsupported(f"state {g[s].arg!r}: its update reads dims beyond the state's "
                              f"({', '.join(g[new].dims)}), which the scan kernel cannot compute")
    # state-free nodes the core reads: pointwise ones over the index space are fused in, but
    # for those of Params alone, which PyTorch computes once, in float64 (see hoist_params)
    of_params = params_only(g)
    pre: set[str] = set()
    todo = [a for n in core for a in g[n].args]
    while todo:
        name = todo.pop()
        node = g[name]
        if name in core or name in pre or isinstance(node, Input):
            continue
        if isinstance(node, Map) and set(node.dims) <= inside and name not in of_params \
                and not any(a in pre for a in node.args):
            core.add(name)
            todo.extend(node.args)
        else:
            pre.add(name)
            todo.extend(node.args)
    # PyTorch computes a pre node from scratch: its ancestors too (some also run in the kernel)
    for name in list(pre):
        pre |= {a for a in nx.ancestors(g.nx, name) if not isinstance(g[a], Input)}
    pre = {n for n in pre if not isinstance(g[n], Input)}
    # outputs that read no state run in PyTorch after the kernel, like post's readouts; so do
    # the state-free nodes post reads
    post |= {o for o in g.outputs if o not in core and o not in post}
    for name in list(post):
        post |= {a for a in nx.ancestors(g.nx, name)
                 if not isinstance(g[a], Input) and a not in core}
    order = [n.name for n in g.nodes]
    reads = {a for n in core for a in g[n].args}
    k_in = [n for n in order if n in reads and n not in core
            and not (isinstance(g[n], Input) and g[n].role is Role.STATE)]
    needed_by_post = {a for n in post for a in g[n].args if a in core}
    k_out = [n for n in order if n in core and (n in g.outputs or n in needed_by_post)]
    # post work reading an old state gets it from the kernel too, as the output `s@old`
    olds = tuple(s for s in g.state_names if any(s in g[n].args for n in post))
    k_out += [old_name(s) for s in olds]
    return Partition(g, space, tuple(n for n in order if n in pre),
                     tuple(n for n in order if n in core), tuple(n for n in order if n in post),
                     tuple(k_in), tuple(k_out), olds)


def old_name(state: str) -> str:
    """The kernel output holding a state's value before each step."""
    return f"{state}@old"


def kernel_graph(part: Partition) -> Graph:
    """The core as a Graph of its own: pre results become inputs, post's needs become outputs.

    A pre result is a Seq input (time-varying) or a Param (constant in time) over its own dims,
    laid out canonically (time first, then the graph's dim order)."""
    from ...ir.dims import Annotation

    g = part.graph
    varying = time_varying(g)
    nodes: list = []
    for name in part.kernel_inputs:
        node = g[name]
        if isinstance(node, Input):
            nodes.append(node)
        else:
            timed = name in varying
            axes = (((g.time,),) if timed else ()) + tuple((d,) for d in node.dims)
            role = Role.SEQ if timed else Role.PARAM
            nodes.append(Input(name, role, node.dims, Annotation(role, axes, False), False))
    nodes += [g[s] for s in g.state_names]
    nodes += [g[n] for n in part.core]
    nodes += [Map(old_name(s), g[s].dims, node_symbol(g[s]), None, g[s].complex)
              for s in part.old_states]
    outs = tuple(part.kernel_outputs)
    axes = []
    olds = {old_name(s_): s_ for s_ in part.old_states}
    for o in outs:
        if o in g.outputs:
            axes.append(g.out_axes[g.outputs.index(o)])
        else:
            axes.append(((g.time,),) + tuple((d,) for d in g[olds.get(o, o)].dims))
    params = tuple(dict.fromkeys(n.arg for n in nodes if isinstance(n, Input)
                                 and n.role in (Role.SEQ, Role.PARAM)))
    from ...ir.graph import toposort

    return Graph(f"{g.name}_kernel", toposort(tuple(nodes)), params, g.states, outs, tuple(axes),
                 g.time, g.dims, g.aliases)
