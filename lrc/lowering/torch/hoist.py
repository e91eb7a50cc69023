"""Out of the loop over time: the parts of each per-step expression that read no state.

In `S' = -sum(k S) beta k + S + beta k v` only the first product reads the state; `beta k v`
and `-beta k` are computed once for every step before the loop, so each step runs fewer ops
(and torch autograd records fewer nodes).
"""
from __future__ import annotations

import sympy as sp

from ...ir.functions import is_complex
from ...ir.nodes import Map, symbol


def hoist(per: list, dynamic: set[str]) -> tuple[list, dict[str, sp.Basic]]:
    """(per-step nodes with their state-free parts replaced by symbols, {symbol name: the
    part's expression}) for the loop's nodes `per`; `dynamic`: the names that change per step
    (the loop's states and per-step nodes)."""
    parts: dict[str, sp.Basic] = {}
    names: dict[sp.Basic, sp.Symbol] = {}
    out = []
    for node in per:
        if not isinstance(node, Map):
            out.append(node)
            continue

        def name_of(e: sp.Basic, node=node) -> sp.Symbol:
            if e not in names:
                name = f"{node.name}~{len(parts)}"
                parts[name] = e
                names[e] = symbol(name, is_complex(e))
            return names[e]

        def walk(e: sp.Basic, node=node) -> sp.Basic:
            if e.is_Atom or not e.free_symbols:
                return e
            if not any(s.name in dynamic for s in e.free_symbols):
                return name_of(e)
            if isinstance(e, (sp.Add, sp.Mul)):
                static = [a for a in e.args if not any(s.name in dynamic
                                                        for s in a.free_symbols)]
                rest = [walk(a) for a in e.args if a not in static]
                if len(static) > 1 or (static and not static[0].is_Atom):
                    static = [name_of(e.func(*static))]
                return e.func(*static, *rest)
            if isinstance(e, sp.Piecewise):
                return e  # conditions and values as they are
            return e.func(*(walk(a) for a in e.args))

        try:
            expr = walk(node.expr)
        except (TypeError, ValueError):  # a sympy object that does not rebuild from its args
            expr = node.expr
        out.append(node if expr == node.expr else
                   Map(node.name, node.dims, expr, node.src, node.complex))
    return out, parts
