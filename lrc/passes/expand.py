"""Discretization expansion: every marker (`zoh_a(dt, A)`, ...) becomes primitive expressions.

The markers of `lrc.ir.functions` keep a discretization whole while tracing; this pass rewrites
them by the table `EXPAND` into exact sympy forms that later passes read (an `exp` is a decay,
`phi1` the ZOH input coefficient, stable as dt*A -> 0). Node complex flags are kept as they
were, so readers of a node see the same symbol even where the expansion made its value real.

Two helpers the passes share live here: `rewrite`, the small fixed-point engine (a rule is
(node type, function of the node returning its replacement or None), applied bottom-up until no
rule fires), and `prune`, which drops the nodes that no output or new state reads.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import sympy as sp

from ..ir.functions import (
    MARKERS,
    bilinear_a,
    bilinear_b,
    euler_a,
    euler_b,
    mamba_a,
    mamba_b,
    phi1,
    zoh_a,
    zoh_b,
)
from ..ir.graph import Graph
from ..ir.nodes import Map
from .cleanup import dce

Rule = tuple[type, Callable[[sp.Basic], "sp.Basic | None"]]

_MAX_FIRINGS = 64  # rules that keep firing on one node are a bug in the table


def rewrite(expr: sp.Basic, rules: Sequence[Rule]) -> sp.Basic:
    """`expr` with `rules` applied bottom-up, each node until no rule fires (a fixed point)."""
    memo: dict[sp.Basic, sp.Basic] = {}

    def go(e: sp.Basic) -> sp.Basic:
        if e in memo:
            return memo[e]
        out = e.func(*(go(a) for a in e.args)) if e.args else e
        for _ in range(_MAX_FIRINGS):
            new = next((r for t, rule in rules if isinstance(out, t)
                        for r in (rule(out),) if r is not None and r != out), None)
            if new is None:
                break
            out = new.func(*(go(a) for a in new.args)) if new.args else new  # its parts anew
        else:
            raise RuntimeError(f"rewrite rules do not reach a fixed point on {e}")
        memo[e] = out
        return out

    return go(expr)


def prune(g: Graph) -> Graph:
    """`g` without the nodes no output or new state reads (cleanup.dce)."""
    return dce(g)


def _marker(fn: Callable[[sp.Basic, sp.Basic], sp.Basic]) -> Callable[[sp.Basic], sp.Basic]:
    return lambda e: fn(*e.args)


# marker(dt, A) -> its primitive form (docs/lowerings.md); `*_b` is B-bar without the B
EXPAND: tuple[Rule, ...] = (
    # zoh_a(dt, A) -> exp(dt*A)
    (zoh_a, _marker(lambda dt, A: sp.exp(dt * A))),
    # zoh_b(dt, A) -> dt*phi1(dt*A)   ((exp(dt*A) - 1)/A, finite and accurate as A -> 0)
    (zoh_b, _marker(lambda dt, A: dt * phi1(dt * A))),
    # bilinear_a(dt, A) -> (1 + dt*A/2)/(1 - dt*A/2)
    (bilinear_a, _marker(lambda dt, A: (1 + dt * A / 2) / (1 - dt * A / 2))),
    # bilinear_b(dt, A) -> dt/(1 - dt*A/2)
    (bilinear_b, _marker(lambda dt, A: dt / (1 - dt * A / 2))),
    # euler_a(dt, A) -> 1 + dt*A
    (euler_a, _marker(lambda dt, A: 1 + dt * A)),
    # euler_b(dt, A) -> dt
    (euler_b, _marker(lambda dt, A: dt)),
    # mamba_a(dt, A) -> exp(dt*A)   (Mamba's mix: ZOH for A)
    (mamba_a, _marker(lambda dt, A: sp.exp(dt * A))),
    # mamba_b(dt, A) -> dt          (Mamba's mix: Euler for B)
    (mamba_b, _marker(lambda dt, A: dt)),
)

assert {t for t, _ in EXPAND} == set(MARKERS), "every marker needs an expansion rule"


def has_marker(expr: sp.Basic) -> bool:
    """Whether a discretization marker remains anywhere in `expr`."""
    return any(isinstance(e, MARKERS) for e in sp.preorder_traversal(expr))


def expand_discretizations(g: Graph) -> Graph:
    """Rewrite every discretization marker into primitive sympy expressions by `EXPAND`."""
    nodes = tuple(dataclasses.replace(n, expr=rewrite(n.expr, EXPAND))
                  if isinstance(n, Map) and has_marker(n.expr) else n for n in g.nodes)
    sources = tuple((rewrite(e, EXPAND), src) for e, src in g.sources)
    return g.replace(nodes=nodes, sources=sources)
