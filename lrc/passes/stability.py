"""Numerical-stability rewrites: log-space decays, the running-max trick, the clamped decay.

`stabilize` = `max_trick` after `log_space_decays`; both are Graph -> Graph on their own.

(a) `log_space_decays`: in every state-dependent Map, the coefficient of a state-dependent
    factor that is a product or power of exponentials and sigmoids (also through gate nodes
    that read no state) is rewritten by `LOG_RULES` into a single `exp(E)`, E the log-decay
    (times k where the product has a positive number k: sympy keeps numbers out of exp); a
    later pass reads E with `log_decay`. Gate nodes it looked through that other nodes still
    read get the same `exp(E)` form; `exp(-exp(w))` stays as it is. Then, in every Map,
    `1 - exp(E)` becomes `-expm1(E)` (Griffin's sqrt(1 - a^2) with a near 1).

(b) `max_trick` (RWKV-4): a group of real states fed only terms exp(E)*X (the old state's
    term included) whose readers divide by them, as in wkv = (num + e^{u+k} v)/(den + e^{u+k}),
    is kept scaled by a running max: s = exp(m) * s~. The pass adds the state m, named
    `<first state>.max`, with the same dims and annotation as the group's first state, appended
    last to `g.states`; its update `<first>.max'` is a Map `Max(m + L, K, ...)` over every
    exponent of the updates, NOT affine in the state. Each s~' = sum exp(E + [m] - m') X, and
    each reader's ratio is rescaled by p = Max(its exponents) inline. All exponents are <= 0,
    so nothing overflows in float32. What later passes must know:
      - the linearity check and the structure classification must run before it, or skip the
        states `running_maxes(g)` names and those `scaled_by(g, m)` names (their updates read
        m and m' and so are no longer affine);
      - lowering / code generation: such a group is a sequential scan over (m, s~...) (or a chunked
        scan that carries m per chunk); derivatives: max has a subgradient, but the outputs do
        not depend on m mathematically, so any consistent choice is exact;
      - runtime: a user's initial state s0 starts as (s~ = s0, m = 0) (`scaled_initial_state`),
        and the user's final state is exp(m) * s~ (`unscaled_states`).

(c) `segment_decay(cum_i, cum_j)` = exp(min(cum_i - cum_j, 0)): for the chunked lowering.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import networkx as nx
import sympy as sp
import torch
from sympy.codegen.cfunctions import expm1

from ..ir.dims import Role
from ..ir.functions import sigmoid, softplus
from ..ir.graph import Graph
from ..ir.nodes import Input, Map, symbol
from .expand import Rule, prune, rewrite

Log = Callable[[sp.Basic], sp.Expr | None]


# ---- (a) log-space decays


def _log_pow(e: sp.Pow, log: Log) -> sp.Expr | None:
    base = log(e.base)
    if base is None or not (e.exp.is_integer or (base.is_extended_real and e.exp.is_extended_real)):
        return None  # exp(a)**c = exp(a*c) needs a real or c an integer (no branch cut)
    return e.exp * base


def _log_mul(e: sp.Mul, log: Log) -> sp.Expr | None:
    logs = [log(f) for f in e.args]
    return None if any(x is None for x in logs) else sp.Add(*logs)


def _one_minus(e: sp.Add, log: Log) -> sp.Expr | None:
    if len(e.args) != 2 or sp.S.One not in e.args:
        return None
    x = -next(a for a in e.args if a != 1)
    E = None if isinstance(x, sigmoid) else log(x)  # 1 - sigmoid(x) is sigmoid(-x): leave it
    return None if E is None else -expm1(E)


# head -> (expr, log) -> E with expr == exp(E), or None; `log` recurses into factors
LOG_RULES: dict[type, Callable[[sp.Basic, Log], sp.Expr | None]] = {
    # log(exp(a)) -> a
    sp.exp: lambda e, log: e.args[0],
    # log(sigmoid(x)) -> -softplus(-x)   (so sigmoid(x)**c -> exp(-c*softplus(-x)))
    sigmoid: lambda e, log: -softplus(-e.args[0]),
    # log(b**c) -> c*log(b)              (so exp(a)**c -> exp(a*c))
    sp.Pow: _log_pow,
    # log(a*b) -> log(a) + log(b)         (so exp(a)*exp(b) -> exp(a+b))
    sp.Mul: _log_mul,
}


def _complement_rules(log: Log) -> tuple[Rule, ...]:
    return (
        # 1 - exp(E) -> -expm1(E)   (E = log of a product of exponentials: 1 - a**2 near a = 1)
        (sp.Add, lambda e: _one_minus(e, log)),
    )


class _Logs:
    """log_of for one graph: a symbol of a gate Map (one reading no state) is looked through."""

    def __init__(self, g: Graph):
        self.g = g
        self.memo: dict[sp.Basic, sp.Expr | None] = {}
        self.seen: set[str] = set()  # the gate nodes looked through

    def __call__(self, e: sp.Basic) -> sp.Expr | None:
        if e not in self.memo:
            if isinstance(e, sp.Symbol):
                node = self.g[e.name]
                gate = isinstance(node, Map) and e.name not in self.g.state_dependent
                self.memo[e] = self(node.expr) if isinstance(node, Map) and gate else None
                if gate and self.memo[e] is not None:
                    self.seen.add(e.name)
            else:
                rule = LOG_RULES.get(type(e))
                self.memo[e] = rule(e, self) if rule is not None else None
        return self.memo[e]


def log_decay(coef: sp.Basic) -> sp.Expr | None:
    """The log-decay of a coefficient `log_space_decays` wrote as exp(E) or k*exp(E), k > 0."""
    k, rest = coef.as_coeff_Mul()
    if not isinstance(rest, sp.exp) or not k.is_positive:
        return None
    return rest.args[0] + (sp.log(k) if k != 1 else 0)


def _normalize(e: sp.Basic, dep: set[sp.Symbol], log: _Logs) -> sp.Basic:
    """`e` with the coefficient of each state-dependent factor written exp(log-decay)."""
    if isinstance(e, sp.Add):
        return sp.Add(*(_normalize(t, dep, log) for t in e.args))
    if not isinstance(e, sp.Mul):
        return e
    inner = [f for f in e.args if f.free_symbols & dep]
    if len(inner) != 1:
        return e
    coef = sp.Mul(*(f for f in e.args if f is not inner[0]))
    k, rest = coef.as_coeff_Mul()  # a number stays outside: sympy would pull it out of exp
    E = log(rest) if k.is_positive and not rest.is_Number else None
    return (coef if E is None else k * sp.exp(E)) * _normalize(inner[0], dep, log)


def log_space_decays(g: Graph) -> Graph:
    """Write every state's coefficient that is a product of exponentials as one exp(log-decay)."""
    log = _Logs(g)
    dep = {symbol(n, g[n].complex) for n in g.state_dependent}
    g = prune(_map_exprs(g, lambda n: _normalize(n.expr, dep, log)
                         if n.name in g.state_dependent else n.expr))
    # gates still read elsewhere take the same form, so both places compute one exp(E)
    g = _map_exprs(g, lambda n: sp.exp(log(n.expr)) if n.name in log.seen
                   and not isinstance(n.expr, sp.exp) else n.expr)
    complement = _complement_rules(log)
    return _map_exprs(g, lambda n: rewrite(n.expr, complement))


def _map_exprs(g: Graph, fn: Callable[[Map], sp.Basic]) -> Graph:
    """`g` with each Map's expression replaced by fn(map)."""
    return g.replace(nodes=tuple(dataclasses.replace(n, expr=fn(n)) if isinstance(n, Map) else n
                                 for n in g.nodes))


# ---- (b) the running max for exponentials of inputs (RWKV-4)

Term = tuple[sp.Expr, sp.Expr]  # (E, X): the term exp(E) * X


@dataclasses.dataclass
class _Group:
    """States that share one running max, and the Maps that read them (besides updates)."""

    states: list[str]
    readers: set[str]


def _expr(g: Graph, name: str) -> sp.Basic:
    node = g[name]
    assert isinstance(node, Map), f"{name} is not a Map"
    return node.expr


def _terms(e: sp.Basic, dep: set[sp.Symbol]) -> tuple[sp.Basic, ...]:
    """Additive terms of `e`, distributing a state-free factor over one state-dependent sum."""
    if isinstance(e, sp.Mul):
        sums = [f for f in e.args if isinstance(f, sp.Add) and f.free_symbols & dep]
        if len(sums) == 1:
            rest = sp.Mul(*(f for f in e.args if f is not sums[0]))
            return tuple(rest * t for t in sums[0].args)
    return sp.Add.make_args(e)


def _term(t: sp.Basic, scale: dict[sp.Symbol, sp.Expr], dep: set[sp.Symbol],
          log: _Logs) -> Term | None:
    """(E, X) with t = exp(E) X, a state factor's scale exponent counted in E; None when t
    holds state-dependent values other than one factor `scale` knows."""
    E, X, states = sp.S.Zero, [], 0
    for f in sp.Mul.make_args(t):
        if f in scale:
            E, states = E + scale[f], states + 1
            X.append(f)
        elif f.free_symbols & dep:
            return None
        elif not f.is_Number and (L := log(f)) is not None:
            E += L
        else:
            X.append(f)
    return (E, sp.Mul(*X)) if states <= 1 else None


def _split_terms(e: sp.Basic, scale: dict[sp.Symbol, sp.Expr], dep: set[sp.Symbol],
                 log: _Logs) -> list[Term] | None:
    terms = [_term(t, scale, dep, log) for t in _terms(e, dep)]
    return None if any(t is None for t in terms) else terms  # type: ignore[return-value]


def _ratio(e: sp.Basic, dep: set[sp.Symbol]) -> tuple[sp.Basic, sp.Basic] | None:
    """(N, D) with e = N/D and D the one state-dependent sum e divides by, else None."""
    den = [f for f in sp.Mul.make_args(e) if isinstance(f, sp.Pow) and f.exp == -1
           and f.free_symbols & dep]
    if len(den) != 1:
        return None
    return sp.Mul(*(f for f in sp.Mul.make_args(e) if f is not den[0])), den[0].base


def _seq_dependent(g: Graph) -> set[sp.Symbol]:
    out: set[str] = set()
    for n in g.inputs(Role.SEQ):
        out |= {n.name} | nx.descendants(g.nx, n.name)
    return {symbol(n, g[n].complex) for n in out}


def _groups(g: Graph, dep: set[sp.Symbol], log: _Logs) -> list[_Group]:
    """The state groups the max trick applies to (see the module docstring)."""
    update = dict(g.states)
    real = [s for s in g.state_names if not g[s].complex]
    new_of = {update[s]: s for s in real}
    old = {symbol(s): sp.S.Zero for s in real}
    scale = {**old, **{symbol(n): sp.S.Zero for n in new_of}}
    uf = nx.utils.UnionFind(real)
    ok, fed, divides = set(real), set(), set()
    seq = _seq_dependent(g)
    for s in real:  # updates: exp-terms of old states of one group
        terms = _split_terms(_expr(g, update[s]), old, dep, log)
        if terms is None:
            ok.discard(s)
            continue
        for E, X in terms:
            for x in X.free_symbols & set(old):
                uf.union(s, x.name)
            if not X.free_symbols & set(old) and E.free_symbols & seq:
                fed.add(s)
    readers: dict[str, set[str]] = {s: set() for s in real}
    for s in real:  # readers: ratios of exp-terms, old or new states in either part
        for user in set(g.users(s)) | set(g.users(update[s])):
            node = g[user]
            if user in new_of:  # another update: it may read the old state, never the new one
                if update[s] in node.args:
                    ok.discard(s)
                continue
            nd = _ratio(node.expr, dep) if isinstance(node, Map) else None
            if nd is None or any(_split_terms(x, scale, dep, log) is None for x in nd):
                ok.discard(s)
                continue
            readers[s].add(user)
            for x in _expr(g, user).free_symbols & set(scale):
                uf.union(s, new_of.get(x.name, x.name))
            if nd[1].free_symbols & set(scale):
                divides.add(s)
    groups = []
    for members in uf.to_sets():
        states = [s for s in real if s in members]
        if (set(states) <= ok and len({g[s].dims for s in states}) == 1 and fed & members
                and divides & members):
            groups.append(_Group(states, set().union(*(readers[s] for s in states))))
    return groups


def _rescale(terms: list[Term], p: sp.Expr) -> sp.Expr:
    return sp.Add(*(sp.exp(E - p) * X for E, X in terms))


def _apply(g: Graph, grp: _Group) -> Graph:
    """Scale the group's states by a new running max; rescale its readers' ratios."""
    log, dep = _Logs(g), {symbol(n, g[n].complex) for n in g.state_dependent}
    first, update = grp.states[0], dict(g.states)
    m, m_new = f"{first}.max", f"{first}.max'"
    old = {symbol(s): symbol(m) for s in grp.states}
    scale = {**old, **{symbol(update[s]): symbol(m_new) for s in grp.states}}
    new: dict[str, sp.Basic] = {}
    exps: set[sp.Expr] = set()
    for s in grp.states:
        terms = _split_terms(_expr(g, update[s]), old, dep, log) or []
        exps |= {E for E, _ in terms}
        new[update[s]] = _rescale(terms, symbol(m_new))
    for r in grp.readers:
        num, den = (_split_terms(x, scale, dep, log) or [] for x in _ratio(_expr(g, r), dep) or ())
        p = sp.Max(*{E for E, _ in num + den})
        new[r] = _rescale(num, p) / _rescale(den, p)
    nodes = [dataclasses.replace(n, expr=new[n.name]) if n.name in new else n for n in g.nodes]
    node0, src = g[first], g[update[first]].src  # type: ignore[union-attr]
    assert isinstance(node0, Input)
    nodes += [Input(m, Role.STATE, node0.dims, node0.annotation),
              Map(m_new, node0.dims, sp.Max(*exps), src, False)]
    return g.replace(nodes=tuple(nodes), states=g.states + ((m, m_new),))


def max_trick(g: Graph) -> Graph:
    """Keep states fed exp(input) terms and divided by in outputs scaled by a running max."""
    dep = {symbol(n, g[n].complex) for n in g.state_dependent}
    for grp in _groups(g, dep, _Logs(g)):
        g = _apply(g, grp)
    return prune(g)


def running_maxes(g: Graph) -> tuple[str, ...]:
    """The running-max states `max_trick` added (their update is a Max, not affine)."""
    return tuple(s for s, new in g.states if s.endswith(".max")
                 and isinstance(_expr(g, new), sp.Max))


def scaled_by(g: Graph, m: str) -> tuple[str, ...]:
    """The states that the running max `m` scales (their updates read its new value)."""
    m_new = dict(g.states)[m]
    return tuple(s for s, new in g.states if s != m and m_new in g[new].args)


def scaled_initial_state(g: Graph, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The user's initial states (original order) plus m = 0 for each running max."""
    by_arg = dict(zip([a for a in g.state_args if a not in running_maxes(g)], states,
                      strict=True))
    for m in running_maxes(g):
        by_arg[m] = torch.zeros_like(by_arg[scaled_by(g, m)[0]])
    return tuple(by_arg[a] for a in g.state_args)


def unscaled_states(g: Graph, finals: list[torch.Tensor]) -> list[torch.Tensor]:
    """The user's final states (exp(m) * s~) from the final states of a max-trick graph."""
    by_arg = dict(zip(g.state_args, finals, strict=True))
    for m in running_maxes(g):
        for s in scaled_by(g, m):
            by_arg[s] = by_arg[s] * torch.exp(by_arg[m])
    return [by_arg[a] for a in g.state_args if a not in running_maxes(g)]


# ---- (c) the clamped decay between two steps, for the chunked lowering


def segment_decay(cum_i: sp.Expr, cum_j: sp.Expr) -> sp.Expr:
    """exp(min(cum_i - cum_j, 0)): the decay from step j to step i >= j, and at most 1.

    cum is the inclusive cumulative sum of log-decays within a chunk. For i >= j the min is a
    no-op (up to rounding, which it clamps); for i < j the difference is large and positive,
    exp of it overflows to inf and the causal mask's inf * 0 gives NaN (Mamba-2's NaN, in the
    forward and in the gradient). The codegen builds the masked decay matrix from this
    expression and applies the mask after, so the masked entries are finite (<= 1).
    """
    return sp.exp(sp.Min(cum_i - cum_j, 0))


def stabilize(g: Graph) -> Graph:
    """The stability rewrites in order: log-space decays, then the running-max trick."""
    return max_trick(log_space_decays(g))
