"""State updates as scan blocks: new = M old + b, with M a small matrix per state element.

A real state is a block of one (h' = a h + b); a complex one, split in parts by the complex
lowering, a block of two whose M is a 2x2 rotation-scaling. Blocks are scanned one after another
in dependency order, so a state driven by another (H3: a shift SSM feeding a diagonal one) reads
the driver's values for every step of the chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import sympy as sp

from ...errors import Unsupported
from ...ir.graph import Graph
from ...ir.nodes import node_symbol
from ...passes.analysis import inline


@dataclass(frozen=True)
class Block:
    """States scanned together: new[i] = sum_j coef[i][j] * old[j] + inp[i]."""

    states: tuple[str, ...]          # state input nodes
    news: tuple[str, ...]            # their new-value nodes
    coef: tuple[tuple[sp.Basic, ...], ...]
    inp: tuple[sp.Basic, ...]

    @property
    def size(self) -> int:
        return len(self.states)


def blocks(g: Graph) -> tuple[Block, ...]:
    """The scan blocks of `g`'s states, in an order where each block's drivers come first."""
    sdep, news = g.state_dependent, set(g.new_state_names)
    own_new = dict(g.states)
    keep = lambda n: n.name not in sdep or n.name in news  # inline state-dependent work only
    exprs, coefs, inps = {}, {}, {}
    for s, new in g.states:
        exprs[s] = inline(g, g[new].expr, keep)
    syms = {s: node_symbol(g[s]) for s in g.state_names}
    reads = nx.DiGraph()  # s -> o: the update of s reads o's old value
    reads.add_nodes_from(g.state_names)
    for s in g.state_names:
        for o in g.state_names:
            c = sp.diff(exprs[s], syms[o])
            if c != 0:
                coefs[(s, o)] = c
                if o != s:
                    reads.add_edge(s, o)
    result = []
    # states reading each other are scanned together; one that only reads another (a cascade)
    # gets the other's values as input, scanned after it
    for comp in nx.strongly_connected_components(reads):
        members = tuple(s for s in g.state_names if s in comp)
        if len(members) > 2:
            raise Unsupported(f"states {', '.join(members)} mix with each other; the scan kernel "
                              "handles blocks of one (real) or two (complex) states")
        if len({g[m].dims for m in members}) > 1:
            raise Unsupported(f"states {', '.join(members)} read each other over different dims")
        for s in members:
            inps[s] = exprs[s].xreplace({syms[o]: sp.Integer(0) for o in members})
        for s in members:
            reached = set()
            for sym in inps[s].free_symbols:
                reached |= nx.ancestors(g.nx, sym.name) | {sym.name}
            bad = [m for m in members if m in reached or own_new[m] in reached]
            if bad:
                raise Unsupported(f"state {g[s].arg!r}: its update mixes the state through a sum "
                                  "or rename (a low-rank or dense transition), not generated yet")
        coef = tuple(tuple(coefs.get((i, j), sp.Integer(0)) for j in members) for i in members)
        for row in coef:
            for c in row:
                if any(x.name in sdep for x in c.free_symbols):
                    raise Unsupported("a state's coefficient depends on a state")
        result.append(Block(members, tuple(own_new[s] for s in members), coef,
                            tuple(inps[s] for s in members)))
    return _ordered(g, result)


def _ordered(g: Graph, bl: list[Block]) -> tuple[Block, ...]:
    owner = {}
    for i, b in enumerate(bl):
        for s, n in zip(b.states, b.news):
            owner[s] = owner[n] = i
    dep = nx.DiGraph()
    dep.add_nodes_from(range(len(bl)))
    for i, b in enumerate(bl):
        exprs = [c for row in b.coef for c in row] + list(b.inp)
        for e in exprs:
            for sym in e.free_symbols:
                for a in nx.ancestors(g.nx, sym.name) | {sym.name}:
                    if a in owner and owner[a] != i:
                        dep.add_edge(owner[a], i)
    try:
        order = list(nx.lexicographical_topological_sort(dep))
    except nx.NetworkXUnfeasible as e:
        raise Unsupported("states drive each other in a cycle; not generated yet") from e
    return tuple(bl[i] for i in order)
