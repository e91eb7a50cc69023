"""The Graph: an immutable DAG of nodes for one time step, plus what the step takes and returns."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import sympy as sp

from ..errors import Src
from .dims import Role
from .nodes import Input, Map, Node

Axes = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Graph:
    """One step of a recurrence.

    nodes    every node, in a topological order (arguments before users)
    params   the non-state inputs, in the order the compiled layer takes them
    states   (state input, node holding its new value) pairs, in declaration order
    outputs  the nodes returned as outputs, with `out_axes` their layouts (time included)
    dims     every named dim except time, in the canonical order nodes list theirs in
    aliases  (dim, source) pairs: a dim made by `rename` has its source's size
    """

    name: str
    nodes: tuple[Node, ...]
    params: tuple[str, ...]
    states: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]
    out_axes: tuple[Axes, ...]
    time: str
    dims: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()
    sources: tuple[tuple[sp.Basic, Src], ...] = field(default=(), compare=False, repr=False)
    # what analysis passes found: derived from the nodes, so not part of equality
    info: tuple[tuple[str, Any], ...] = field(default=(), compare=False, repr=False)

    def meta(self, key: str, default: Any = None) -> Any:
        """An analysis result a pass attached (see `with_meta`)."""
        return dict(self.info).get(key, default)

    def with_meta(self, **items: Any) -> Graph:
        """The same graph with analysis results attached (structure, lowering, backward, ...)."""
        merged = dict(self.info)
        merged.update(items)
        return dataclasses.replace(self, info=tuple(merged.items()))

    @functools.cached_property
    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def __getitem__(self, name: str) -> Node:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    @functools.cached_property
    def nx(self) -> nx.DiGraph:
        """The dataflow graph as a frozen networkx DiGraph (edges point from argument to user)."""
        g = nx.DiGraph()
        for i, node in enumerate(self.nodes):
            g.add_node(node.name, node=node, index=i)
            for a in node.args:
                g.add_edge(a, node.name)
        return nx.freeze(g)

    def annotation(self, arg: str):
        """The annotation of the user's argument `arg` (also after a pass split it in parts)."""
        for n in self.nodes:
            if isinstance(n, Input) and n.arg == arg:
                return n.annotation
        raise KeyError(arg)

    def inputs(self, role: Role | None = None) -> tuple[Input, ...]:
        return self._inputs[role]

    @functools.cached_property
    def _inputs(self) -> dict:
        """The Input nodes per role (None: all), computed once: every call asks."""
        every = tuple(n for n in self.nodes if isinstance(n, Input))
        out: dict = {None: every}
        for r in Role:
            out[r] = tuple(n for n in every if n.role is r)
        return out

    @functools.cached_property
    def state_names(self) -> tuple[str, ...]:
        """The state input nodes, in declaration order (a split complex state has two)."""
        return tuple(s for s, _ in self.states)

    @functools.cached_property
    def state_args(self) -> tuple[str, ...]:
        """The user's state arguments, in declaration order (what initial_state= holds)."""
        return tuple(dict.fromkeys(self[s].arg for s in self.state_names))

    @functools.cached_property
    def new_state_names(self) -> tuple[str, ...]:
        return tuple(n for _, n in self.states)

    def order(self, dims) -> tuple[str, ...]:
        """`dims` sorted in the graph's canonical order."""
        pos = {d: i for i, d in enumerate(self.dims)}
        return tuple(sorted(set(dims), key=lambda d: pos[d]))

    def users(self, name: str) -> tuple[str, ...]:
        return tuple(sorted(self.nx.successors(name), key=lambda n: self.nx.nodes[n]["index"]))

    @functools.cached_property
    def state_dependent(self) -> frozenset[str]:
        """Nodes whose value depends on some state (the ones a scan must compute per step)."""
        out: set[str] = set()
        for s in self.state_names:
            out |= {s} | nx.descendants(self.nx, s)
        return frozenset(out)

    def source_of(self, expr: sp.Basic) -> Src | None:
        """The user's line that built `expr`, or the nearest recorded expression containing it."""
        table = dict(self.sources)
        if expr in table:
            return table[expr]
        for e, src in self.sources:
            if expr in sp.preorder_traversal(e):
                return src
        return None

    def replace(self, **changes) -> Graph:
        """A new graph with some fields changed (nodes are re-sorted topologically)."""
        g = dataclasses.replace(self, **changes)
        if "nodes" in changes:
            g = dataclasses.replace(g, nodes=toposort(g.nodes))
        return g

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)


def toposort(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """A deterministic topological order: stable with respect to the given order."""
    index = {n.name: i for i, n in enumerate(nodes)}
    g = nx.DiGraph()
    for n in nodes:
        g.add_node(n.name)
        for a in n.args:
            if a in index:
                g.add_edge(a, n.name)
    by_name = {n.name: n for n in nodes}
    order = nx.lexicographical_topological_sort(g, key=lambda name: index[name])
    return tuple(by_name[name] for name in order)


def map_nodes(g: Graph) -> tuple[Map, ...]:
    return tuple(n for n in g.nodes if isinstance(n, Map))
