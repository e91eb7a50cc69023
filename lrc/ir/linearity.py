"""Linearity check: every new state must be affine in the old states (jointly).

Degrees propagate through the graph: a state has degree 1, anything built without one degree 0;
sums, products and linear maps (re, im, conj, sum over a dim, rename, shift) add up degrees;
any other function of something of degree >= 1 is nonlinear. Outputs may be anything.
"""
from __future__ import annotations

import sympy as sp

from ..errors import SpecError
from .dims import Role
from .graph import Graph
from .nodes import Input, Map
from .printer import format_expr, print_names

NONLINEAR = 2
_LINEAR_FNS = (sp.re, sp.im, sp.conjugate)


def expr_degree(expr: sp.Basic, deg: dict[str, int]) -> tuple[int, sp.Basic | None]:
    """(degree in the states capped at 2, the smallest offending subexpression if nonlinear)."""
    if isinstance(expr, sp.Symbol):
        return deg.get(expr.name, 0), None
    if not expr.free_symbols:
        return 0, None
    parts = [expr_degree(a, deg) for a in expr.args]
    for _d, bad in parts:
        if bad is not None:
            return NONLINEAR, bad
    ds = [d for d, _ in parts]
    if isinstance(expr, sp.Add) or isinstance(expr, _LINEAR_FNS):
        return max(ds), None
    if isinstance(expr, sp.Mul):
        total = sum(ds)
        return (total, None) if total <= 1 else (NONLINEAR, expr)
    if isinstance(expr, sp.Pow):
        db, de = ds
        if de == 0 and db == 0:
            return 0, None
        if de == 0 and expr.exp.is_Integer and int(expr.exp) in (0, 1):
            return db * int(expr.exp), None
        return NONLINEAR, expr
    if isinstance(expr, sp.Piecewise):
        conds = [expr_degree(c, deg)[0] for _, c in expr.args]
        values = [expr_degree(v, deg)[0] for v, _ in expr.args]
        if any(c > 0 for c in conds):
            return NONLINEAR, expr
        return max(values), None
    if isinstance(expr, sp.core.containers.Tuple):
        return max(ds), None
    return (0, None) if max(ds) == 0 else (NONLINEAR, expr)


def degrees(g: Graph) -> tuple[dict[str, int], dict[str, sp.Basic]]:
    """Each node's degree in the states, and for nonlinear Map nodes the offending term."""
    deg: dict[str, int] = {}
    offender: dict[str, sp.Basic] = {}
    for node in g.nodes:
        if isinstance(node, Input):
            deg[node.name] = 1 if node.role is Role.STATE else 0
        elif isinstance(node, Map):
            d, bad = expr_degree(node.expr, deg)
            deg[node.name] = d
            if bad is not None:
                offender[node.name] = bad
        else:
            deg[node.name] = deg[node.arg]
    return deg, offender


def check_linear(g: Graph) -> Graph:
    """Refuse a graph whose new states are not affine in the old states; else return it."""
    deg, offender = degrees(g)
    names = print_names(g)
    for s, new in g.states:
        if deg[new] < NONLINEAR:
            continue
        culprit = _first_offender(g, new, deg, offender)
        bad = offender[culprit]
        kind = _describe(bad, deg)
        src = g.source_of(bad) or g[culprit].src
        raise SpecError(f"the new value of state {s!r} is not affine in the state: "
                        f"{format_expr(bad, names)} {kind}", src)
    return g


def _first_offender(g: Graph, name: str, deg: dict[str, int], offender: dict[str, sp.Basic]) -> str:
    """Walk back from a nonlinear node to the first node whose own expression is nonlinear."""
    node = g[name]
    if name in offender:
        # prefer a nonlinear argument: that is where the user's offending line is
        for a in node.args:
            if deg[a] >= NONLINEAR:
                return _first_offender(g, a, deg, offender)
        return name
    for a in node.args:
        if deg[a] >= NONLINEAR:
            return _first_offender(g, a, deg, offender)
    return name


def _describe(bad: sp.Basic, deg: dict[str, int]) -> str:
    if isinstance(bad, sp.Mul):
        return "(a product of two state terms)"
    if isinstance(bad, sp.Pow):
        return "(a power of the state)" if bad.exp.is_positive else "(division by the state)"
    if isinstance(bad, (sp.Piecewise, sp.core.relational.Relational)):
        return "(a condition on the state)"
    return f"(the state enters {type(bad).__name__} nonlinearly)"
