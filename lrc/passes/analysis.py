"""Small graph analyses the passes share: inlining, dims of an expression, time variation,
the terms of Params alone."""
from __future__ import annotations

import functools
from collections.abc import Callable

import networkx as nx
import sympy as sp

from ..ir.dims import Role
from ..ir.functions import Tape
from ..ir.graph import Graph
from ..ir.nodes import Input, Map, Node


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


_PARAMS_TAPES: dict = {}


def params_tape(g: Graph, names: frozenset[str]) -> tuple[tuple[str, ...], Tape] | None:
    """The Map nodes among `names` computed from Params alone (directly, or through other such
    Maps, which are inlined), as one Tape: shared terms computed once across nodes (a complex
    spec's real and imaginary halves repeat their Params terms), one PyTorch op per step."""
    key = (id(g), names)
    if key not in _PARAMS_TAPES:
        varying = time_varying(g)
        maps = {n.name: n for n in g.nodes if isinstance(n, Map) and n.name not in varying}

        @functools.cache
        def pure(name: str) -> bool:
            n = g[name]
            if isinstance(n, Input):
                return n.role is Role.PARAM
            return name in maps and all(pure(a) for a in n.args)

        out = tuple(n for n in maps if n in names and pure(n))
        inline = {n: maps[n].expr for n in maps if pure(n)}
        tape = Tape(inline[out[0]], inline, tuple(inline[n] for n in out[1:])) if out else None
        _PARAMS_TAPES[key] = (g, (out, tape) if out else None)  # g: its id stays unique
    return _PARAMS_TAPES[key][1]
