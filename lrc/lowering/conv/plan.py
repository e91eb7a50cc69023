"""Which nodes of a time-invariant spec become FFT convolutions, and with which kernels.

Read from the planned graph (complex numbers intact). A *readout* is a Sum node
sum_c(q * h') (or of the old state h) with q free of every state: over all time it is the causal
convolution of the state's input sequence w with K_l = sum_c q Abar^l Bbar, where the state's
update, all Maps inlined, is h' = (transition of h) + Bbar * w, Bbar the factors made of Params
only. Every node computable from readouts, inputs and Params is a *sequence* node, evaluated
over all time steps at once; the nodes between the states and their readouts are never formed.

Transitions: `diagonal` (h' = a h + ...), `dplr` (a h + sum_r U_r sum_c(V_r h) + ..., the
low-rank sums nested as S4's Woodbury step nests them) and `shift` (h' = shift(h) with the input
entering at position 0: the kernel is the readout factor itself). A diagonal state whose input
varies along the contracted dim (LRU's B u), or that an output reads other than through a
readout, is formed as a whole sequence ('spacewise': convolved per state element; a shift
register's by gathering its inputs) and the nodes reading it are evaluated over all time.

An output Map that is g * (alpha * Re(R) + beta * w), with R a readout of input w, alpha and
beta Params-only and g any sequence factor, is computed as one convolution with the kernel
alpha Re(K) + beta delta, times g: S4D's skip D u and H3's gate q fold in this way.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import sympy as sp

from ...errors import Unsupported
from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Input, Map, Rename, Shift, Sum, node_symbol
from ...passes.analysis import expr_dims, factors, inline, seq_dependent

ONE, ZERO = sp.Integer(1), sp.Integer(0)


@dataclass(frozen=True)
class LowRank:
    """One low-rank term U_r sum_c(V_r h): `node` is the Sum, `u` its coefficient; its argument
    is direct * h + sum over earlier terms i of via_i * (that term's sum)."""

    node: str
    u: sp.Basic
    direct: sp.Basic
    via: tuple[tuple[int, sp.Basic], ...]


@dataclass(frozen=True)
class StateForm:
    """A state's update as a convolution sees it (expressions over node symbols)."""

    name: str
    arg: str
    new: str
    kind: str                      # diagonal | dplr | shift
    dims: tuple[str, ...]
    decay: sp.Basic                # diagonal, dplr: the coefficient of the state itself
    bbar: sp.Basic                 # the input term's Params-only factors
    w: sp.Basic                    # the rest: the convolution's input (a sequence)
    lowrank: tuple[LowRank, ...] = ()
    mix: str = ""                  # dplr: the dim the low-rank sums run over; shift: its dim
    spacewise: bool = False        # formed as a whole sequence (per state element)


@dataclass(frozen=True)
class ConvNode:
    """A node computed as gate * (conv(w, alpha K + beta delta) + alpha * initial-state term)."""

    node: str
    state: str
    new: bool                      # reads the updated state (else the one before the step)
    contract: str
    q: sp.Basic                    # the readout factor, Params only
    gate: sp.Basic = ONE
    alpha: sp.Basic = ONE
    beta: sp.Basic = ZERO
    real: bool = False             # only the real part is read: a real kernel suffices
    readout: str = ""              # the readout Sum (== node unless an output folded it in)


@dataclass(frozen=True)
class ConvPlan:
    graph: Graph
    states: tuple[StateForm, ...]
    convs: tuple[ConvNode, ...]
    params: frozenset[str]         # nodes made of Params only (evaluated once, in float64)
    seq: frozenset[str]            # nodes evaluated over all time (conv nodes included)

    def state(self, name: str) -> StateForm:
        return next(s for s in self.states if s.name == name)

    def conv(self, node: str) -> ConvNode | None:
        return next((c for c in self.convs if c.node == node), None)


def analyze(g: Graph) -> ConvPlan:
    """The convolution form of `g`, or Unsupported naming the node that prevents it."""
    lw = g.meta("lowering")
    if lw is None or "conv" not in lw.eligible:
        why = lw.why_not("conv") if lw is not None else "run the pipeline first"
        raise Unsupported(f"the conv lowering cannot run {g.name}: {why}")
    sdep, varying = g.state_dependent, seq_dependent(g)
    params = frozenset(n.name for n in g.nodes if n.name not in sdep and n.name not in varying)
    news = {new: s for s, new in g.states}
    every = _readouts(g, news)
    # states formed as whole sequences: grown until every output can be computed
    formed: set[str] = set()
    while True:
        readouts = {r: v for r, v in every.items() if v[0] not in formed}
        seq = _sequence_nodes(g, readouts, formed)
        forms, grow = {}, set()
        for st, new_node in g.states:
            own = _sequence_nodes(g, readouts, formed - {st})
            keep = lambda n, own=own: n.name not in params and (  # noqa: E731
                n.name not in sdep or n.name in own)
            # another state read directly (not through a readout): form that one first
            update = inline(g, g[new_node].expr, keep)  # type: ignore[union-attr]
            others = {news.get(x.name, x.name) for x in update.free_symbols
                      if x.name in sdep and x.name not in own and x.name != st and
                      (x.name in news or isinstance(g[x.name], Input))}
            grow |= others - formed
            if not others - formed:
                forms[st] = _state_form(g, st, new_node, params, own, keep)
        if grow:
            formed |= grow
            continue
        grow = {st for st, f in forms.items() if f.kind == "diagonal" and f.decay == 0}
        for o in g.outputs:
            if o in sdep and o not in seq:
                grow |= {a for a in nx.ancestors(g.nx, o) | {o} if isinstance(g[a], Input)
                         and g[a].role is Role.STATE}
        for st, _, q, c in readouts.values():
            gate = _split(q, params)[1]
            if forms[st].kind == "diagonal" and (c in expr_dims(g, forms[st].w) or
                                                 c in expr_dims(g, gate)):
                grow.add(st)  # the input varies along the contracted dim (LRU's B u)
        if not grow - formed:
            break
        formed |= grow
    for st in formed:
        if forms[st].kind == "dplr":
            raise Unsupported(f"state {forms[st].arg!r}: a DPLR state is only read through "
                              "sum_c(q * state); forming its whole sequence is not generated")
        forms[st] = _replace(forms[st], spacewise=True)
    keep_seq = lambda n: n.name not in params and (  # noqa: E731
        n.name not in sdep or n.name in seq)
    convs = []
    for r, (st, new, q, c) in readouts.items():
        form = forms[st]
        qp, gate = _split(q, params)
        if form.kind != "diagonal" and c != form.mix:
            raise Unsupported(f"readout {r!r} of state {form.arg!r} sums over {c!r}, not the "
                              f"dim its {form.kind} transition runs along ({form.mix!r})")
        if form.kind != "diagonal" and (c in expr_dims(g, form.w) or c in expr_dims(g, gate)):
            raise Unsupported(f"state {form.arg!r}: its input or readout gate varies along the "
                              f"contracted dim {c!r}; a {form.kind} kernel needs neither to")
        real = _only_real(g, r)
        node = ConvNode(r, st, new, c, qp, gate, real=real, readout=r)
        fold = None if gate != ONE else _fold(g, r, form.w, real, params, keep_seq)
        if fold is not None:
            o, fgate, alpha, beta = fold
            node = ConvNode(o, st, new, c, qp, fgate, alpha, beta, real, readout=r)
            seq.discard(r)
        convs.append(node)
    return ConvPlan(g, tuple(forms.values()), tuple(convs), params, frozenset(seq))


def _replace(form: StateForm, **kw) -> StateForm:
    from dataclasses import replace

    return replace(form, **kw)


def _sequence_nodes(g: Graph, readouts, formed) -> set[str]:
    """State-dependent nodes computable over all time: readouts (convolutions), the formed
    states and their new values, and whatever reads only those, inputs and Params."""
    sdep = g.state_dependent
    given = set(readouts) | set(formed) | {new for st, new in g.states if st in formed}
    seq: set[str] = set()
    for n in g.nodes:
        if n.name in sdep and (n.name in given or (not isinstance(n, Input) and all(
                a not in sdep or a in seq for a in n.args))):
            seq.add(n.name)
    return seq


def _readouts(g: Graph, news: dict[str, str]) -> dict[str, tuple[str, bool, sp.Basic, str]]:
    """Readout Sums: node -> (state, reads the new state, q, contracted dim)."""
    sdep = g.state_dependent
    inside = {s: nx.ancestors(g.nx, new) for new, s in news.items()}
    pre = {n.name for n in g.nodes if n.name not in sdep and n.name in seq_dependent(g)}
    out = {}
    for n in g.nodes:
        if not isinstance(n, Sum) or n.name not in sdep:
            continue
        arg = inline(g, node_symbol(g[n.arg]), keep=lambda m: m.name in news or m.name in pre)
        syms = [x for x in arg.free_symbols if x.name in sdep]
        if len(syms) != 1:
            continue
        t = syms[0]
        if t.name in news:
            state, new = news[t.name], True
        elif isinstance(g[t.name], Input) and g[t.name].role is Role.STATE:
            state, new = t.name, False
        else:
            continue
        if n.name in inside[state] or arg.xreplace({t: ZERO}) != 0:
            continue  # a term of the state's own transition, or not of the form q * state
        q = sp.diff(arg, t)
        if any(x.name in sdep for x in q.free_symbols):
            continue
        out[n.name] = (state, new, q, n.dim)
    return out


def _split(expr: sp.Basic, params: frozenset[str]) -> tuple[sp.Basic, sp.Basic]:
    """expr = (Params-only factors) * (the rest)."""
    fixed: list[sp.Basic] = []
    rest: list[sp.Basic] = []
    for f in factors(expr):
        (fixed if all(s.name in params for s in f.free_symbols) else rest).append(f)
    return sp.Mul(*fixed), sp.Mul(*rest)


def _state_form(g: Graph, s: str, new: str, params: frozenset[str], seq: set[str], keep
                ) -> StateForm:
    sdep = g.state_dependent
    arg = g[s].arg
    E = inline(g, g[new].expr, keep)
    own = sorted((x for x in E.free_symbols if x.name in sdep and x.name not in seq),
                 key=lambda x: [n.name for n in g.nodes].index(x.name))
    coef = {x: sp.diff(E, x) for x in own}
    for x, c in coef.items():
        bad = [y.name for y in c.free_symbols if y.name not in params]
        if bad:
            raise Unsupported(f"state {arg!r}: the coefficient of {x.name} in its update "
                              f"reads {bad[0]!r}, which changes with time (not time-invariant)")
    b = E.xreplace({x: ZERO for x in own})
    decay, shifts, sums = None, [], []
    for x in own:
        node = g[x.name]
        if x.name == s:
            decay = coef[x]
        elif isinstance(node, Shift) and node.arg == s and node.offset == 1:
            shifts.append((node, coef[x]))
        elif isinstance(node, Sum) and _reads_only(g, node.name, s):
            if any(isinstance(g[a], Rename) for a in nx.ancestors(g.nx, node.name)):
                raise Unsupported(f"state {arg!r}: a dense (renamed-dim) transition; the conv "
                                  "lowering generates diagonal, DPLR and shift kernels only")
            sums.append(x)
        else:
            raise Unsupported(f"state {arg!r}: its update reads node {x.name!r} "
                              f"({type(node).__name__}), which no convolution kernel covers")
    if shifts:
        return _shift_form(g, s, new, arg, shifts, decay, sums, b)
    bbar, w = _split(b, params)
    if decay is None and sums:
        raise Unsupported(f"state {arg!r}: low-rank terms without a diagonal")
    if decay is None:  # h' = b: no memory (formed as its input sequence)
        return StateForm(s, arg, new, "diagonal", g[s].dims, ZERO, bbar, w)
    if not sums:
        return StateForm(s, arg, new, "diagonal", g[s].dims, decay, bbar, w)
    dims = {g[x.name].dim for x in sums}
    if len(dims) != 1:
        raise Unsupported(f"state {arg!r}: its low-rank terms sum over several dims {dims}")
    terms = []
    for i, x in enumerate(sums):
        a = inline(g, node_symbol(g[g[x.name].arg]))
        others = [y for y in a.free_symbols if y.name in sdep and y.name != s]
        if any(y not in sums[:i] for y in others) or a.xreplace(
                {y: ZERO for y in others + [node_symbol(g[s])]}) != 0:
            raise Unsupported(f"state {arg!r}: low-rank term {x.name!r} is not a sum of "
                              "Params times the state and earlier low-rank sums")
        via = tuple((sums.index(y), sp.diff(a, y)) for y in others)
        terms.append(LowRank(x.name, coef[x], sp.diff(a, node_symbol(g[s])), via))
    return StateForm(s, arg, new, "dplr", g[s].dims, decay, bbar, w, tuple(terms),
                     dims.pop())


def _reads_only(g: Graph, name: str, s: str) -> bool:
    states = {a for a in nx.ancestors(g.nx, name) if isinstance(g[a], Input)
              and g[a].role is Role.STATE}
    return states == {s}


def _shift_form(g: Graph, s, new, arg, shifts, decay, sums, b) -> StateForm:
    node, c = shifts[0]
    if len(shifts) > 1 or decay is not None or sums or c != 1:
        raise Unsupported(f"state {arg!r}: a shift register must be shift(h) plus its input "
                          "at position 0, with nothing else carried")
    idx = [n for n in g.inputs(Role.INDEX) if n.dims == (node.dim,)]
    if not idx:
        raise Unsupported(f"state {arg!r}: its input does not enter at one position of "
                          f"{node.dim!r}")
    pos = node_symbol(idx[0])
    fill = b.xreplace({pos: ZERO})
    if b.xreplace({pos: ONE}) != 0 or fill.has(pos) or node.dim in expr_dims(g, fill):
        raise Unsupported(f"state {arg!r}: its input must enter the shift register at "
                          f"position 0 of {node.dim!r} only")
    return StateForm(s, arg, new, "shift", g[s].dims, ZERO, ONE, fill, mix=node.dim)


def _only_real(g: Graph, r: str) -> bool:
    """Whether every user of readout r reads only its real part (or r is real)."""
    if not g[r].complex:
        return True
    sym = node_symbol(g[r])
    dummy = sp.Dummy()
    for u in g.users(r):
        node = g[u]
        if not isinstance(node, Map) or node.expr.xreplace({sp.re(sym): dummy}).has(sym):
            return False
    return bool(g.users(r))


def _fold(g: Graph, r: str, w: sp.Basic, real: bool, params: frozenset[str], keep):
    """(output node, gate, alpha, beta) when r's only user is g * (alpha Re(r) + beta w)."""
    users = g.users(r)
    if len(users) != 1 or not isinstance(g[users[0]], Map) or (g[r].complex and not real):
        return None
    o = g[users[0]]
    sym = node_symbol(g[r])
    rho = sp.Dummy("rho", real=True)
    E = inline(g, o.expr, keep).xreplace({sp.re(sym) if g[r].complex else sym: rho})
    if E.has(sym):
        return None
    c_rho = sp.diff(E, rho)
    if c_rho.has(rho) or c_rho == 0:
        return None
    rest = E.xreplace({rho: ZERO})
    alpha_gate = _split(c_rho, params)
    if rest == 0:
        return o.name, alpha_gate[1], alpha_gate[0], ZERO
    beta, gate = _split(rest / w, params)
    if sp.simplify(gate - alpha_gate[1]) != 0:
        return None
    return o.name, gate, alpha_gate[0], beta
