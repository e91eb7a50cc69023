"""Small graph analyses the passes share: inlining, dims of an expression, time variation."""
from __future__ import annotations

from typing import Callable

import networkx as nx
import sympy as sp

from ..ir.dims import Role
from ..ir.graph import Graph
from ..ir.nodes import Map, Node


def time_varying(g: Graph) -> frozenset[str]:
    """Nodes whose value changes with time: those depending on a Seq input or a state."""
    out: set[str] = set()
    for n in g.inputs():
        if n.role in (Role.SEQ, Role.STATE):
            out |= {n.name} | nx.descendants(g.nx, n.name)
    return frozenset(out)


def seq_dependent(g: Graph) -> frozenset[str]:
    """Nodes depending on a Seq input (a decay among them makes a recurrence selective)."""
    out: set[str] = set()
    for n in g.inputs(Role.SEQ):
        out |= {n.name} | nx.descendants(g.nx, n.name)
    return frozenset(out)


def expr_dims(g: Graph, expr: sp.Basic) -> tuple[str, ...]:
    """The dims an expression over node symbols varies along (canonical order)."""
    return g.order(d for s in expr.free_symbols for d in g[s.name].dims)


def depends_on(expr: sp.Basic, names: frozenset[str] | set[str]) -> bool:
    return any(s.name in names for s in expr.free_symbols)


def inline(g: Graph, expr: sp.Basic, keep: Callable[[Node], bool] = lambda n: False,
           memo: dict[str, sp.Basic] | None = None) -> sp.Basic:
    """Substitute Map nodes' expressions for their symbols, recursively, except where `keep`."""
    memo = {} if memo is None else memo
    subs = {}
    for s in expr.free_symbols:
        node = g[s.name]
        if isinstance(node, Map) and not keep(node):
            if s.name not in memo:
                memo[s.name] = inline(g, node.expr, keep, memo)
            subs[s] = memo[s.name]
    return expr.xreplace(subs) if subs else expr


def factors(expr: sp.Basic) -> tuple[sp.Basic, ...]:
    """A product's factors (a non-product is its own single factor); numbers folded in."""
    if isinstance(expr, sp.Mul):
        return tuple(expr.args)
    return (expr,)
