"""Cleanups: drop dead nodes, and fold single-use pointwise nodes into their one user."""
from __future__ import annotations

import networkx as nx

from ..ir.graph import Graph
from ..ir.nodes import Input, Map, node_symbol


def dce(g: Graph) -> Graph:
    """Remove nodes that no output or new state needs (inputs stay: they are the signature)."""
    roots = set(g.outputs) | set(g.new_state_names)
    live = set(roots)
    for r in roots:
        live |= nx.ancestors(g.nx, r)
    nodes = tuple(n for n in g.nodes if n.name in live or isinstance(n, Input))
    return g if len(nodes) == len(g.nodes) else g.replace(nodes=nodes)


def fuse_maps(g: Graph) -> Graph:
    """Inline each Map read by exactly one node, itself a Map (x -> expr(x) in the user)."""
    keep = set(g.outputs) | set(g.new_state_names)
    while True:
        users = {n.name: g.users(n.name) for n in g.nodes}
        target = next((n for n in g.nodes if isinstance(n, Map) and n.name not in keep
                       and len(users[n.name]) == 1 and isinstance(g[users[n.name][0]], Map)),
                      None)
        if target is None:
            return g
        user = g[users[target.name][0]]
        fused = Map(user.name, user.dims, user.expr.xreplace({node_symbol(target): target.expr}),
                    user.src, user.complex)
        g = g.replace(nodes=tuple(fused if n.name == user.name else n
                                  for n in g.nodes if n.name != target.name))
