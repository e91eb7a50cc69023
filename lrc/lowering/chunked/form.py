"""The chunked form of a spec: the per-step quantities the chunked kernels compute.

A state the structure pass labels 'diagonal, scalar decay' or 'diagonal, per-key decay' is
S_t = diag(exp(l_t)) S_{t-1} + k_t v_t^T over its key dim (contracted by the readout) and value
dim (along which the decay is constant), one such matrix per index of the other state dims (the
grid: batch and heads). Its output is

    y_t = gate_t * (q_t^T S_t + (sum_key ek_t) ev_t) + skip_t        (S_{t-1} when `old`)

`extract` finds l, k, v, q, gate, skip, ek, ev as sympy expressions over the graph's Seq and
Param inputs (every Map inlined), so a kernel evaluates them from the loaded inputs in registers
and the backward differentiates them with sympy. What does not fit raises `Unsupported`, with
the reason, and the scan runs instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...errors import Unsupported
from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Input, Map, Sum, node_symbol
from ...passes.analysis import expr_dims, inline
from ...passes.stability import log_decay

KEY, VALUE = "key", "value"


@dataclass(frozen=True)
class Quantity:
    """One per-step quantity: its expression over input symbols and the tile it lives in
    ('key': time x key dim, 'value': time x value dim)."""

    name: str
    expr: sp.Basic
    side: str


@dataclass(frozen=True)
class ChunkForm:
    """What the chunked kernels of one spec compute (see the module docstring).

    key / value   the state's contracted dim and its value dim
    grid          the other state dims (batch first): one program per index of them
    per_key       the decay varies along the key dim (else one scalar per grid index and step)
    old           the output reads the state before the update (strict causal mask)
    quantities    q, k, v, l (and gate, skip, ek, ev when the spec has them), by name
    inputs        the Seq and Param input nodes the quantities read, in graph order
    """

    g: Graph
    state: str
    output: str
    key: str
    value: str
    grid: tuple[str, ...]
    batch: str | None
    per_key: bool
    old: bool
    quantities: tuple[Quantity, ...]
    inputs: tuple[str, ...]

    def q(self, name: str) -> Quantity | None:
        return next((x for x in self.quantities if x.name == name), None)

    def input(self, name: str) -> Input:
        node = self.g[name]
        assert isinstance(node, Input), name
        return node

    def seq(self, name: str) -> bool:
        """Whether input `name` is a Seq (else a Param)."""
        return self.input(name).role is Role.SEQ

    def input_side(self, name: str) -> str | None:
        """'key' or 'value' for an input over the key or value dim, None for neither."""
        dims = self.g[name].dims
        return KEY if self.key in dims else VALUE if self.value in dims else None


def _split(g: Graph, expr: sp.Basic, key: str, value: str, what: str) -> tuple[sp.Basic,
                                                                                 sp.Basic]:
    """A product -> (factors over the key dim, the rest); a factor over both raises."""
    if isinstance(expr, sp.Add):
        raise Unsupported(f"{what} {expr} is a sum of terms, not one outer product of a key "
                          "factor and a value factor")
    keys: list[sp.Basic] = []
    rest: list[sp.Basic] = []
    for f in sp.Mul.make_args(expr):
        dims = expr_dims(g, f)
        if key in dims and value in dims:
            raise Unsupported(f"{what}: factor {f} varies along both the key dim {key!r} and "
                              f"the value dim {value!r}")
        (keys if key in dims else rest).append(f)
    return sp.Mul(*keys), sp.Mul(*rest)


def _only_inputs(g: Graph, q: Quantity) -> None:
    for s in q.expr.free_symbols:
        node = g[s.name]
        if not isinstance(node, Input) or node.role not in (Role.SEQ, Role.PARAM):
            raise Unsupported(f"{q.name} = {q.expr} reads {s.name}, which is not a Seq or Param "
                              "input (a reduction of inputs): not generated for chunks yet")
        if node.complex or node.part:
            raise Unsupported(f"{q.name} reads the complex input {node.arg!r}")


def _readout(g: Graph, output: str, state: str, new: str):
    """(Sum node symbol, readout factor q, extra, reads-old) of the one output reading `state`."""
    keep = lambda n: n.name == new
    out = g[output]
    if not isinstance(out, Map):
        raise Unsupported(f"output {output} returns the state itself")
    E = inline(g, out.expr, keep)
    sdep = g.state_dependent
    syms = [s for s in E.free_symbols if s.name in sdep]
    if len(syms) != 1 or not isinstance(g[syms[0].name], Sum):
        raise Unsupported(f"output {output} must read the state through one sum over its key "
                          f"dim; it reads {sorted(s.name for s in syms)}")
    ssym = syms[0]
    node = g[ssym.name]
    assert isinstance(node, Sum)
    arg = inline(g, node_symbol(g[node.arg]), keep)
    targets = [s for s in arg.free_symbols if s.name in (state, new)]
    others = [s for s in arg.free_symbols if s.name in sdep and s not in targets]
    if len(targets) != 1 or others:
        raise Unsupported(f"the sum {ssym.name} must read exactly one of {state}, {new}")
    t = targets[0]
    q = sp.diff(arg, t)
    if q.free_symbols & {t} or any(s.name in sdep for s in q.free_symbols):
        raise Unsupported(f"the readout of {state} in {output} is not linear in it")
    return E, ssym, node.dim, q, arg.xreplace({t: sp.Integer(0)}), t.name == state


def extract(compiled) -> ChunkForm:
    """The chunked form of a pipeline result (planned graph for the structure, lowered graph
    for the nodes); raises Unsupported with the reason when the spec does not fit it."""
    planned, g = compiled.planned, compiled.lowered
    st = planned.meta("structure")
    if st is None or len(st.states) != 1 or len(g.states) != 1:
        raise Unsupported("the chunked kernels take exactly one state")
    info = st.states[0]
    if info.kind not in ("diagonal, scalar decay", "diagonal, per-key decay"):
        raise Unsupported(f"state {info.arg} is {info.kind!r}, not a chunkable diagonal")
    if len(info.keys) != 1 or len(info.values) != 1:
        raise Unsupported(f"state {info.arg} has keys {info.keys} and values {info.values}; "
                          "the chunked kernels take one key dim and one value dim")
    (state, new), = g.states
    if g[state].complex or g[state].part:
        raise Unsupported(f"state {info.arg} is complex")
    key, value = info.keys[0], info.values[0]
    grid = tuple(d for d in g[state].dims if d not in (key, value))
    batch = st.batch[0] if st.batch and st.batch[0] in grid else None
    S = node_symbol(g[state])
    update = g[new]
    if not isinstance(update, Map):
        raise Unsupported(f"state {info.arg} is returned unchanged")
    E = inline(g, update.expr)
    a = sp.diff(E, S)
    b = E.xreplace({S: sp.Integer(0)})
    if S in a.free_symbols or S in b.free_symbols:
        raise Unsupported(f"the update of {info.arg} is not affine in it")
    L = log_decay(a)
    L = sp.log(a) if L is None else L
    ldims = expr_dims(g, L)
    if value in ldims:
        raise Unsupported(f"the decay {a} varies along the value dim {value!r}")
    kx, vx = _split(g, b, key, value, f"the input term of {info.arg}")
    readers = [o for o in g.outputs if any(s.name in g.state_dependent
                                          for s in inline(g, node_symbol(g[o])).free_symbols)]
    if len(g.outputs) != 1 or len(readers) != 1:
        raise Unsupported("the chunked kernels take one output, reading the state")
    out = g.outputs[0]
    if set(g[out].dims) != set(grid) | {value}:
        raise Unsupported(f"output {out} has dims {g[out].dims}; the chunked kernels write "
                          f"one value per {', '.join(grid + (value,))}")
    Ey, ssym, sdim, qx, extra, old = _readout(g, out, state, new)
    if sdim != key or value in expr_dims(g, qx):
        raise Unsupported(f"output {out} must contract the state over its key dim {key!r} "
                          "with a factor constant along the value dim")
    gate = sp.diff(Ey, ssym)
    skip = Ey.xreplace({ssym: sp.Integer(0)})
    if ssym in gate.free_symbols:
        raise Unsupported(f"output {out} is not linear in the state")
    for what, e in (("gate", gate), ("skip", skip)):
        if key in expr_dims(g, e):
            raise Unsupported(f"the output's {what} {e} varies along the key dim")
    qs = [Quantity("q", qx, KEY), Quantity("k", kx, KEY), Quantity("v", vx, VALUE),
          Quantity("l", L, KEY)]
    if gate != 1:
        qs.append(Quantity("gate", gate, VALUE))
    if skip != 0:
        qs.append(Quantity("skip", skip, VALUE))
    if extra != 0:
        ek, ev = _split(g, extra, key, value, "the state-free term inside the readout sum")
        qs += [Quantity("ek", ek, KEY), Quantity("ev", ev, VALUE)]
    for q in qs:
        _only_inputs(g, q)
    used = {s.name for q in qs for s in q.expr.free_symbols}
    inputs = tuple(n.name for n in g.inputs() if n.name in used)
    for n in inputs:
        extra_dims = set(g[n].dims) - set(g[state].dims)
        if extra_dims:
            raise Unsupported(f"input {n} has dims {sorted(extra_dims)} outside the state's")
    return ChunkForm(g, state, out, key, value, grid, batch, key in ldims, old, tuple(qs),
                     inputs)
