"""Cleanups: drop dead nodes, and fold single-use pointwise nodes into their one user."""
from __future__ import annotations

import dataclasses

import networkx as nx
import sympy as sp

from ..ir.dims import Role
from ..ir.graph import Graph
from ..ir.nodes import Input, Map, node_symbol


def dce(g: Graph) -> Graph:
    """Remove nodes that no output or new state needs (Seq, Param and State inputs stay: they
    are the signature; an unused index input goes)."""
    roots = set(g.outputs) | set(g.new_state_names)
    live = set(roots)
    for r in roots:
        live |= nx.ancestors(g.nx, r)
    nodes = tuple(n for n in g.nodes if n.name in live or
                  (isinstance(n, Input) and n.role is not Role.INDEX))
    return g if len(nodes) == len(g.nodes) else g.replace(nodes=nodes)


def fuse_maps(g: Graph) -> Graph:
    """Inline each Map read by exactly one node, itself a Map (x -> expr(x) in the user)."""
    keep = set(g.outputs) | set(g.new_state_names)
    users = {n.name: g.users(n.name) for n in g.nodes}
    # not into a Piecewise: sympy re-evaluates its conditions when they change, and can fail
    # to compare what it finds (tanh rewritten through cosh of a complex argument)
    fold = {n.name for n in g.nodes if isinstance(n, Map) and n.name not in keep
            and len(users[n.name]) == 1 and isinstance(g[users[n.name][0]], Map)
            and not g[users[n.name][0]].expr.has(sp.Piecewise)}
    if not fold:
        return g
    exprs: dict[str, object] = {}
    nodes = []
    for n in g.nodes:
        if isinstance(n, Map):
            subs = {node_symbol(g[a]): exprs[a] for a in n.args if a in fold}
            expr = n.expr.xreplace(subs) if subs else n.expr
            if n.name in fold:
                exprs[n.name] = expr
                continue
            if subs:
                n = Map(n.name, n.dims, expr, n.src, n.complex)
        nodes.append(n)
    return g.replace(nodes=tuple(nodes))


def merge_duplicates(g: Graph) -> Graph:
    """Nodes that compute the same thing from the same arguments become one (the graph's
    common subexpressions: `x.sum("d")` written twice is summed once, and `f(s) - f(s)` is
    exactly 0 instead of two roundings apart). Outputs and new states are kept as they are;
    an earlier copy can stand for them."""
    keep = set(g.outputs) | set(g.new_state_names)
    seen: dict[object, str] = {}
    alias: dict[str, str] = {}
    nodes = []
    for n in g.nodes:
        if alias and any(a in alias for a in n.args):
            n = _read_through(g, n, alias)
        if not isinstance(n, Input):
            key = dataclasses.replace(n, name="")
            if key in seen and n.name not in keep:
                alias[n.name] = seen[key]
                continue
            seen.setdefault(key, n.name)
        nodes.append(n)
    return g if not alias else g.replace(nodes=tuple(nodes))


def _read_through(g: Graph, n, alias: dict[str, str]):
    """`n` reading each merged argument's survivor instead."""
    if isinstance(n, Map):
        subs = {node_symbol(g[a]): node_symbol(g[alias[a]]) for a in n.args if a in alias}
        return Map(n.name, n.dims, n.expr.xreplace(subs), n.src, n.complex)
    return dataclasses.replace(n, arg=alias.get(n.arg, n.arg))
