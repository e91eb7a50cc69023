"""Cleanups: drop dead nodes, and fold single-use pointwise nodes into their one user."""
from __future__ import annotations

import networkx as nx

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
    fold = {n.name for n in g.nodes if isinstance(n, Map) and n.name not in keep
            and len(users[n.name]) == 1 and isinstance(g[users[n.name][0]], Map)}
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
