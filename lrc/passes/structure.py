"""Structure classification: what kind of linear recurrence each state is, and how outputs read it.

For each state the new value is written (all Maps inlined) as an affine function of the old
states: h' = a * h + (low-rank / dense / shift terms) + b. The pass records the decay a and the
state dims it varies along, whether anything in the transition depends on a Seq input
(selective) or only on Params (time-invariant), b as a product of factors, and which other
states feed in. Each output is split into readouts sum_K(q * state) and a state-free skip.
The result rides on the graph as `g.meta("structure")`; nodes are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import sympy as sp

from ..ir.dims import Role
from ..ir.graph import Graph
from ..ir.linearity import degrees
from ..ir.nodes import Input, Rename, Shift, Sum, node_symbol
from ..ir.printer import format_expr, print_names
from .analysis import depends_on, expr_dims, factors, inline, seq_dependent


@dataclass(frozen=True)
class Factor:
    """One factor of a state's input term: its expression, dims, and whether it varies in time."""

    expr: sp.Basic
    dims: tuple[str, ...]
    varying: bool


@dataclass(frozen=True)
class StateInfo:
    """The transition of one state (names are the graph's; `arg` the user's state)."""

    name: str
    arg: str
    dims: tuple[str, ...]
    transition: str                 # diagonal | dplr | dense | shift | general
    decay: sp.Basic | None          # the coefficient of the state itself
    decay_dims: tuple[str, ...]     # state dims the decay varies along
    selective: bool                 # some transition coefficient depends on a Seq input
    rank: int                       # low-rank terms (dplr)
    couples: tuple[str, ...]        # other states this update reads
    input: sp.Basic                 # the state-free term b
    factors: tuple[Factor, ...]     # b as a product
    kind: str = ""                  # the human-readable label
    keys: tuple[str, ...] = ()      # chunked form: contracted (key) dims
    values: tuple[str, ...] = ()    # chunked form: value dims (the decay is constant along them)


@dataclass(frozen=True)
class Readout:
    """A term sum_{contract}(factor * state) of an output (`new`: reads the updated state)."""

    state: str
    new: bool
    factor: sp.Basic
    contract: tuple[str, ...]
    extra: sp.Basic = sp.Integer(0)  # a state-free term inside the same sum (RWKV's bonus)


@dataclass(frozen=True)
class OutputInfo:
    name: str
    linear: bool
    readouts: tuple[Readout, ...]
    skip: sp.Basic                  # the output with every readout set to zero


@dataclass(frozen=True)
class Structure:
    states: tuple[StateInfo, ...]
    outputs: tuple[OutputInfo, ...]
    batch: tuple[str, ...]          # dims in every Seq and state and in no Param

    def state(self, name: str) -> StateInfo:
        return next(s for s in self.states if s.name == name or s.arg == name)


def batch_dims(g: Graph) -> tuple[str, ...]:
    """Dims in every Seq input and every state, and in no Param."""
    seqs, states = g.inputs(Role.SEQ), g.inputs(Role.STATE)
    params = {d for p in g.inputs(Role.PARAM) for d in p.dims}
    common = set(g.dims)
    for n in seqs + states:
        common &= set(n.dims)
    return g.order(common - params)


def classify(g: Graph) -> Graph:
    """Attach the Structure of `g` as g.meta('structure')."""
    sdep, varying = g.state_dependent, seq_dependent(g)
    batch = batch_dims(g)
    states = [_state_info(g, s, new, sdep, varying) for s, new in g.states]
    outputs = [_output_info(g, o, sdep, varying) for o in g.outputs]
    states = [_label(g, st, outputs, batch, varying) for st in states]
    return g.with_meta(structure=Structure(tuple(states), tuple(outputs), batch))


def _own(g: Graph, name: str, state: str) -> bool:
    """Whether node `name` is the state itself, possibly through Maps that just copy it."""
    return inline(g, node_symbol(g[name])) == node_symbol(g[state])


def _state_info(g: Graph, s: str, new: str, sdep, varying) -> StateInfo:
    E = inline(g, g[new].expr)
    lin = sorted((sym for sym in E.free_symbols if sym.name in sdep), key=lambda x: x.name)
    coefs = {sym: sp.diff(E, sym) for sym in lin}
    b = E.xreplace({sym: sp.Integer(0) for sym in lin})
    decay, rank, couples, kinds, own = None, 0, [], set(), []
    for sym, coef in coefs.items():
        node = g[sym.name]
        if coef.has(sp.Derivative) or depends_on(coef, sdep):
            kinds.add("general")
        elif isinstance(node, Input):
            if node.name == s:
                decay = coef
            else:
                couples.append(node.arg)
                continue
        elif isinstance(node, Shift):
            kinds.add("shift" if _own(g, node.arg, s) else "general")
        elif isinstance(node, Sum):
            arg = inline(g, node_symbol(g[node.arg]))
            syms = {x.name for x in arg.free_symbols if x.name in sdep}
            reads = {g[a].arg for a in nx.ancestors(g.nx, node.name) | {node.name}
                     if isinstance(g[a], Input) and g[a].role is Role.STATE}
            if reads - {g[s].arg}:
                couples += sorted(reads - {g[s].arg})
                continue  # another state drives this one: an input, not a transition
            if any(isinstance(g[x], Rename) for x in syms):
                kinds.add("dense")
            else:
                rank += 1
        else:
            kinds.add("general")
        own.append(coef)
    transition = ("general" if "general" in kinds else "dense" if "dense" in kinds else
                  "shift" if "shift" in kinds else "dplr" if rank else "diagonal")
    sdims = g[s].dims
    ddims = tuple(d for d in expr_dims(g, decay) if d in sdims) if decay is not None else ()
    selective = any(depends_on(c, varying) for c in own)
    facs = tuple(Factor(f, expr_dims(g, f), depends_on(f, varying)) for f in factors(b)
                 if f != 1)
    return StateInfo(s, g[s].arg, sdims, transition, decay, ddims, selective, rank,
                     tuple(dict.fromkeys(couples)), b, facs)


def _output_info(g: Graph, o: str, sdep, varying) -> OutputInfo:
    news = {n for _, n in g.states}
    keep = lambda node: node.name in news
    E = inline(g, g[o].expr, keep)
    deg, _ = degrees(g)
    linear = deg[o] <= 1 and all(deg[n] <= 1 for n in news)
    readouts, lin = [], set()
    state_of = {new: s for s, new in g.states}
    for sym in sorted(E.free_symbols, key=lambda x: x.name):
        node = g[sym.name]
        if sym.name not in sdep:
            continue
        lin.add(sym)
        if isinstance(node, Sum):
            arg = inline(g, node_symbol(g[node.arg]), keep)
            targets = [x for x in arg.free_symbols if x.name in sdep]
            if len(targets) == 1 and (targets[0].name in news or
                                      isinstance(g[targets[0].name], Input)):
                t = targets[0]
                q = sp.diff(arg, t)
                extra = arg.xreplace({t: sp.Integer(0)})
                st = state_of.get(t.name, t.name)
                contract = (node.dim,)
                readouts.append(Readout(st, t.name in news, q, contract, extra))
                continue
        if sym.name in news or isinstance(node, Input):
            readouts.append(Readout(state_of.get(sym.name, sym.name), sym.name in news,
                                    sp.Integer(1), ()))
            continue
        linear = False
    skip = E.xreplace({sym: sp.Integer(0) for sym in lin})
    return OutputInfo(o, linear, tuple(readouts), skip)


def _groups(dims_list: list[set[str]]) -> list[set[str]]:
    """Connected groups of dims: factors sharing a dim are joined."""
    groups: list[set[str]] = []
    for ds in dims_list:
        merged = [gr for gr in groups if gr & ds]
        new = set(ds).union(*merged) if merged else set(ds)
        groups = [gr for gr in groups if not (gr & ds)] + [new]
    return [gr for gr in groups if gr]


def _label(g: Graph, st: StateInfo, outputs: list[OutputInfo], batch, varying) -> StateInfo:
    """The human label, and for chunkable states their key and value dims."""
    from dataclasses import replace

    reads = [r for o in outputs for r in o.readouts if r.state == st.name]
    readers = [o for o in outputs if any(r.state == st.name for r in o.readouts)]
    lti = (not st.selective and st.transition != "general"
           and all(o.linear for o in readers)
           and all(_invariant_readout(g, r, varying) for r in reads))
    if st.transition != "diagonal":
        base = {"dplr": f"dplr (diagonal plus rank {st.rank})", "dense": "dense mixing",
                "shift": "shift register", "general": "general linear"}[st.transition]
        return replace(st, kind=base + (", time-invariant" if lti else
                                        ", selective" if st.selective else ""))
    if lti:
        return replace(st, kind="time-invariant diagonal")  # couples: a cascade of LTI stages
    keys = tuple(sorted({d for r in reads for d in r.contract}, key=g.dims.index))
    heads = set(st.decay_dims) | set(batch)
    values = tuple(d for d in st.dims if d not in keys and d not in heads)
    facdims = [set(f.dims) & (set(keys) | set(values)) for f in st.factors]
    separable = all(fd <= set(keys) or fd <= set(values) for fd in facdims)
    if (keys and values and reads and not st.couples and separable
            and all(o.linear for o in readers) and all(r.contract for r in reads)):
        per_key = bool(set(st.decay_dims) & set(keys))
        kind = "diagonal, per-key decay" if per_key else "diagonal, scalar decay"
        return replace(st, kind=kind, keys=keys, values=values)
    nonbatch = [set(f.dims) - set(batch) for f in st.factors]
    outer = len(_groups([d for d in nonbatch if d])) > 1
    if outer:
        return replace(st, kind="diagonal selective" if st.selective else "diagonal")
    return replace(st, kind="elementwise" + (", selective" if st.selective else ""))


def _invariant_readout(g: Graph, r: Readout, varying) -> bool:
    """A readout a convolution can use: time-varying factors only outside the contraction."""
    for f in factors(r.factor):
        if depends_on(f, varying) and set(expr_dims(g, f)) & set(r.contract):
            return False
    return not depends_on(r.extra, varying) or not r.contract


def format_structure(g: Graph) -> str:
    """Human-readable lines describing each state and output, in plain words."""
    st: Structure = g.meta("structure")
    names = print_names(g)
    fmt = lambda e: format_expr(e, names)
    lines = []
    for s in st.states:
        lines.append(f"state {s.arg}[{','.join(s.dims)}]: {s.kind}: {describe_state(s, st, fmt)}")
    reads_new = False
    for o in st.outputs:
        if not o.linear:
            lines.append(f"output {o.name}: a nonlinear function of the state (only the scan "
                         "computes it)")
            continue
        parts = []
        for r in o.readouts:
            reads_new |= r.new
            ref = r.state + ("'" if r.new else "")
            term = ref if r.factor == 1 else f"{fmt(r.factor)} * {ref}"
            parts.append(f"sum_{''.join(r.contract)}({term})" if r.contract else term)
        if o.skip != 0:
            parts.append(fmt(o.skip))
        lines.append(f"output {o.name} = {' + '.join(parts) or '0'}"
                     + ("" if o.readouts else " (reads no state)"))
    if reads_new:
        lines.append("(a primed state such as h' is the state after this step's update)")
    return "\n".join(lines)


_TRANSITIONS = {
    "dplr": "a diagonal decay plus a rank-{rank} matrix mixes its elements",
    "dense": "a full matrix mixes its elements",
    "shift": "each step moves its elements one place along a state dim (a delay line)",
    "general": "a linear update of a form lrc has no special kernel for",
}


def describe_state(s: StateInfo, st: Structure, fmt) -> str:
    """One sentence on how state `s` evolves: its transition, where its decay differs, and
    whether it reads the inputs."""
    if s.transition == "diagonal":
        own = [d for d in s.dims if d not in st.batch]
        shared = [d for d in own if d not in s.decay_dims]
        text = f"each element decays on its own, by {fmt(s.decay)}"
        if s.decay_dims:
            text += f", which differs for every ({', '.join(s.decay_dims)})"
            if shared:
                text += f" and is shared along ({', '.join(shared)})"
        else:
            text += ", the same for every element"
    else:
        text = _TRANSITIONS[s.transition].format(rank=s.rank)
    if s.selective:
        text += "; it changes with the inputs at every step (selective)"
    elif "time-invariant" in s.kind:
        text += "; fixed in time (Params only)"
    if s.keys:
        text += (f"; outputs sum it over ({', '.join(s.keys)}) (keys) and keep "
                 f"({', '.join(s.values)}) (values)")
    if s.couples:
        text += f"; fed by state {', '.join(s.couples)}"
    return text
