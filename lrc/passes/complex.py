"""Complex -> real lowering: complex inputs, states and nodes become (real, imaginary) pairs.

A complex Input `x` becomes real Inputs `x.re` and `x.im` (same role, dims and annotation,
`arg="x"`, `part="re"/"im"`), a complex Map/Sum/Rename/Shift `n` becomes the pair `n.re`,
`n.im`, and a complex state's pair (x, x') becomes (x.re, x'.re), (x.im, x'.im). Map
expressions are split by `SPLIT`, one rule per sympy head that can see a complex argument
(`where` is split branch by branch); a head without a rule is only allowed on real arguments,
else NotImplementedError names it. Real nodes that read complex ones read their parts.

Numerics: divisions use (a - ib)/(a^2 + b^2) and moduli sqrt(a^2 + b^2), fine unless |z|
passes ~1e154 (float64) or ~1e19 (float32); phi1 and expm1 of a complex argument keep
e^a cos b - 1 as expm1(a) cos b - 2 sin^2(b/2), so they stay accurate as the argument -> 0
(phi1 of a small complex argument is its Taylor polynomial, for an accurate derivative too).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from ..ir.functions import cabs, phi1
from ..ir.graph import Graph
from ..ir.nodes import Input, Map, Node, node_symbol, symbol
from .expand import prune

Parts = tuple[sp.Expr, sp.Expr]
ZERO = sp.S.Zero

# below this |z|^2, complex phi1 is its Taylor polynomial (see _phi1)
PHI1_SERIES = sp.Float(1e-4)


def part_names(name: str) -> tuple[str, str]:
    """The names of the real and imaginary parts of the complex node `name`."""
    return f"{name}.re", f"{name}.im"


def _real(p: Parts) -> bool:
    return p[1] == ZERO


def _mul(x: Parts, y: Parts) -> Parts:
    (a, b), (c, d) = x, y
    if b == ZERO or d == ZERO:
        return (a * c, a * d + b * c)
    return (a * c - b * d, a * d + b * c)


def _inv(x: Parts) -> Parts:
    a, b = x
    if b == ZERO:
        return (1 / a, ZERO)
    r2 = a**2 + b**2
    return (a / r2, -b / r2)


def _pow_int(x: Parts, n: int) -> Parts:
    """x**n by repeated squaring (n < 0: of the reciprocal)."""
    if n < 0:
        return _pow_int(_inv(x), -n)
    out: Parts = (sp.S.One, ZERO)
    while n:
        if n & 1:
            out = _mul(out, x)
        x, n = _mul(x, x), n >> 1
    return out


def _exp(x: Parts) -> Parts:
    a, b = x
    if b == ZERO:
        return (sp.exp(a), ZERO)
    return (sp.exp(a) * sp.cos(b), sp.exp(a) * sp.sin(b))


def _log(x: Parts) -> Parts:
    a, b = x
    return (sp.log(a**2 + b**2) / 2, sp.atan2(b, a))


def _expm1(x: Parts) -> Parts:
    a, b = x
    if b == ZERO:
        return (expm1(a), ZERO)
    return (expm1(a) * sp.cos(b) - 2 * sp.sin(b / 2)**2, sp.exp(a) * sp.sin(b))


def _phi1(x: Parts) -> Parts:
    """(e^z - 1)/z: the stable numerator times conj(z)/|z|^2, or its series where |z| is small.

    The quotient's value is accurate down to tiny |z|, but its derivative cancels two terms of
    size 1/|z| (relative error eps/|z|); below |z| = 1e-2 the Taylor polynomial to z^5 (error
    |z|^6/5040) gives both the value and the derivative to rounding."""
    a, b = x
    if b == ZERO:
        return (phi1(a), ZERO)
    nr, ni = _expm1(x)
    r2 = a**2 + b**2
    small = sp.StrictLessThan(r2, PHI1_SERIES)
    series: Parts = (sp.Rational(1, 720), ZERO)
    for k in (120, 24, 6, 2, 1):  # Horner: sum z^k / (k+1)!
        series = _mul(series, x)
        series = (series[0] + sp.Rational(1, k), series[1])
    # |z|^2 + 1 where small: never 0, so neither branch of the where has a NaN gradient
    # (a where around the denominator alone would be distributed over the division by sympy)
    safe = r2 + sp.Piecewise((1, small), (0, True))
    return (sp.Piecewise((series[0], small), ((nr * a + ni * b) / safe, True)),
            sp.Piecewise((series[1], small), ((ni * a - nr * b) / safe, True)))


def _cosh_sinh(b: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    return (sp.exp(b) + sp.exp(-b)) / 2, (expm1(b) - expm1(-b)) / 2


def _pow(e: sp.Pow, ps: list[Parts]) -> Parts:
    base, ex = ps
    if _real(base) and _real(ex):
        return (base[0]**ex[0], ZERO)
    if _real(ex) and ex[0].is_Integer:
        return _pow_int(base, int(ex[0]))
    return _exp(_mul(ex, _log(base)))  # z**w -> exp(w log z), principal branch


def _piecewise(branches: list[tuple[Parts, sp.Basic]]) -> Parts:
    """where(c, a+ib, d+ie) -> where(c, a, d) + i where(c, b, e): conditions are real."""
    re = sp.Piecewise(*((p[0], c) for p, c in branches))
    if all(_real(p) for p, _ in branches):
        return (re, ZERO)
    return (re, sp.Piecewise(*((p[1], c) for p, c in branches)))


def _sin(e: sp.Basic, ps: list[Parts]) -> Parts:
    (a, b), = ps
    ch, sh = _cosh_sinh(b)
    return (sp.sin(a) * ch, sp.cos(a) * sh)


def _cos(e: sp.Basic, ps: list[Parts]) -> Parts:
    (a, b), = ps
    ch, sh = _cosh_sinh(b)
    return (sp.cos(a) * ch, -sp.sin(a) * sh)


def _log1p(e: sp.Basic, ps: list[Parts]) -> Parts:
    (a, b), = ps
    return (log1p(2 * a + a**2 + b**2) / 2, sp.atan2(b, 1 + a))


# head -> (e, parts of its args) -> parts of e; used when some argument is complex
SPLIT: dict[type, Callable[[sp.Basic, list[Parts]], Parts]] = {
    # (a+ib) + (c+id) -> (a+c) + i(b+d)
    sp.Add: lambda e, ps: (sp.Add(*(p[0] for p in ps)), sp.Add(*(p[1] for p in ps))),
    # (a+ib)(c+id) -> (ac - bd) + i(ad + bc)
    sp.Mul: lambda e, ps: functools.reduce(_mul, ps),
    # z**n -> repeated products (n < 0: of (a - ib)/(a^2 + b^2)); z**w -> exp(w log z)
    sp.Pow: _pow,
    # exp(a+ib) -> exp(a) cos b + i exp(a) sin b
    sp.exp: lambda e, ps: _exp(ps[0]),
    # log(a+ib) -> log(a^2 + b^2)/2 + i atan2(b, a)
    sp.log: lambda e, ps: _log(ps[0]),
    # expm1(a+ib) -> expm1(a) cos b - 2 sin(b/2)^2 + i exp(a) sin b
    expm1: lambda e, ps: _expm1(ps[0]),
    # log1p(a+ib) -> log1p(2a + a^2 + b^2)/2 + i atan2(b, 1 + a)
    log1p: _log1p,
    # phi1(z) -> (expm1 parts) * conj(z)/|z|^2, or its Taylor polynomial where |z| < 1e-2
    phi1: lambda e, ps: _phi1(ps[0]),
    # sin(a+ib) -> sin a cosh b + i cos a sinh b
    sp.sin: _sin,
    # cos(a+ib) -> cos a cosh b - i sin a sinh b
    sp.cos: _cos,
    # arg(a+ib) -> atan2(b, a)
    sp.arg: lambda e, ps: (sp.atan2(ps[0][1], ps[0][0]), ZERO),
    # |a+ib| -> sqrt(a^2 + b^2)
    sp.Abs: lambda e, ps: (cabs(ps[0][0], ps[0][1]), ZERO),  # its gradient at 0 is 0
    # re(a+ib) -> a
    sp.re: lambda e, ps: (ps[0][0], ZERO),
    # im(a+ib) -> b
    sp.im: lambda e, ps: (ps[0][1], ZERO),
    # conj(a+ib) -> a - ib
    sp.conjugate: lambda e, ps: (ps[0][0], -ps[0][1]),
}


def split(expr: sp.Basic, env: dict[sp.Symbol, Parts]) -> Parts:
    """(real part, imaginary part) of `expr`, whose complex symbols `env` maps to their parts."""
    memo: dict[sp.Basic, Parts] = {}

    def go(e: sp.Basic) -> Parts:
        if e in memo:
            return memo[e]
        if isinstance(e, sp.Symbol):
            out = env.get(e, (e, ZERO))
        elif e.is_Atom:  # numbers, I, pi, true
            out = e.as_real_imag() if isinstance(e, sp.Expr) else (e, ZERO)
        elif isinstance(e, sp.Piecewise):
            out = _piecewise([(go(v), go(c)[0]) for v, c in e.args])
        else:
            ps = [go(a) for a in e.args]
            rule = SPLIT.get(type(e))
            if all(map(_real, ps)):
                out = (e.func(*(p[0] for p in ps)), ZERO)
            elif rule is not None:
                out = rule(e, ps)
            else:
                raise NotImplementedError(f"lower_complex: no rule for {type(e).__name__} of "
                                          f"a complex argument in {e}")
        memo[e] = out
        return out

    return go(expr)


def _lower_map(g: Graph, n: Map) -> tuple[Map, ...]:
    env = {node_symbol(g[a]): tuple(symbol(p) for p in part_names(a))
           for a in n.args if g[a].complex}
    if not env and not n.complex:
        return (n,)
    re, im = split(n.expr, env)  # type: ignore[arg-type]
    if not n.complex:
        return (Map(n.name, n.dims, re, n.src, False),)
    return tuple(Map(name, n.dims, e, n.src, False)
                 for name, e in zip(part_names(n.name), (re, im), strict=True))


def _lower_node(g: Graph, n: Node) -> tuple[Node, ...]:
    if isinstance(n, Map):
        return _lower_map(g, n)
    if not n.complex:
        return (n,)
    if isinstance(n, Input):
        return tuple(dataclasses.replace(n, name=name, complex=False, part=part)
                     for name, part in zip(part_names(n.name), ("re", "im"), strict=True))
    # Sum, Rename, Shift are linear: each part moves on its own
    return tuple(dataclasses.replace(n, name=name, arg=arg, complex=False)
                 for name, arg in zip(part_names(n.name), part_names(n.arg), strict=True))


def lower_complex(g: Graph) -> Graph:
    """Split every complex input, state and node into real and imaginary parts (real arithmetic)."""
    taken = {n.name for n in g.nodes}
    clash = [p for n in g.nodes if n.complex for p in part_names(n.name) if p in taken]
    if clash:
        raise ValueError(f"lower_complex: node name {clash[0]!r} is taken")
    nodes = tuple(m for n in g.nodes for m in _lower_node(g, n))
    states = tuple(pair for s, new in g.states
                   for pair in (zip(part_names(s), part_names(new), strict=True) if g[s].complex
                                else ((s, new),)))
    return prune(g.replace(nodes=nodes, states=states))  # e.g. the im part under a .real
