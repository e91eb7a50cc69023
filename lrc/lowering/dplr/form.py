"""The DPLR (delta-rule) form of a spec: which terms are k, beta, the decay, u and q.

A state the structure pass labels "dplr (diagonal plus rank 1), selective" is, with every Map
inlined and the one state-dependent sum over the key dim kept as a symbol s = sum_key(b S),

    S' = alpha S + c s + input,     y = gate * sum_key(q S') + skip

The kernels take S' = alpha (S - beta k (k^T S)) + k u^T with k over the key dim, alpha and
beta per grid index (batch, heads) and step, u over the value dim. `extract` matches: k is b's
factors over the key dim, c must be a multiple of k by a term constant along the key dim
(lambda = -(c / k)(b / k), beta = lambda / alpha), and input / k is u. A decay alpha per key
channel (KDA's) takes S' = (I - beta k k^T) diag(alpha) S + k u^T: then k is c's factors over
the key dim, and b must be a multiple of alpha * k (beta = -(c / k)(b / (alpha k))). Any other
pair of vectors (RWKV-7's a != b) takes the two-vector form S' = diag(alpha) S + x (y^T S) +
k u^T: x = c, y = b, and k u^T the input term's split. What does not fit raises
`Unsupported`, naming it (a readout of the old state, a term over both state dims), and the
scan's loop runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...errors import Unsupported
from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Map, Sum, node_symbol
from ...passes.analysis import expr_dims, inline
from ...passes.stability import log_decay


@dataclass(frozen=True)
class DplrForm:
    """What the chunked delta-rule kernels of one spec compute (see the module docstring).

    key / value   the state's contracted dim and its value dim
    grid          the other state dims, batch first (flattened into the kernels' heads)
    exprs         q, k (over key), u (over value), beta, g = log alpha (None: no decay), gate,
                  skip (None where absent): sympy over the graph's state-free nodes
    per_key       whether g varies along the key dim (the `_pk` kernels)
    two_vectors   the two-vector form (exprs x, y; beta None): the `_ab` kernels
    """

    g: Graph
    state: str
    output: str
    key: str
    value: str
    grid: tuple[str, ...]
    batch: str | None
    exprs: dict
    per_key: bool = False
    two_vectors: bool = False


def _split(g: Graph, expr: sp.Basic, key: str, value: str, what: str):
    """A product -> (its factors over the key dim, the rest); a sum or a factor over both
    dims raises."""
    expr = sp.factor_terms(expr)
    if isinstance(expr, sp.Add):
        raise Unsupported(f"{what} {expr} is a sum of terms, not one product")
    keys, rest = [], []
    for f in sp.Mul.make_args(expr):
        dims = expr_dims(g, f)
        if key in dims and value in dims:
            raise Unsupported(f"{what}: factor {f} varies along both {key!r} and {value!r}")
        (keys if key in dims else rest).append(f)
    return sp.Mul(*keys), sp.Mul(*rest)


def _ratio(g: Graph, num: sp.Basic, den: sp.Basic, key: str, what: str) -> sp.Basic:
    """num / den, which must not vary along the key dim (the two are parallel vectors)."""
    r = sp.simplify(num / den)
    if key in expr_dims(g, r):
        raise Unsupported(f"{what}: the rank-1 update's vectors differ ({num} vs {den}); the "
                          "chunked DPLR kernels take a = -beta k with b = k, or b = alpha * k "
                          "under a per-key decay alpha (RWKV-7's a != b is not generated yet)")
    return r


def extract(compiled) -> DplrForm:
    """The DPLR form of a pipeline result; raises Unsupported with the reason when the spec
    does not fit it."""
    planned, g = compiled.planned, compiled.lowered
    st = planned.meta("structure")
    if st is None or len(st.states) != 1 or len(g.states) != 1:
        raise Unsupported("the chunked DPLR kernels take exactly one state")
    info = st.states[0]
    if info.transition != "dplr" or info.rank != 1 or info.couples:
        raise Unsupported(f"state {info.arg} is {info.kind!r}, not a rank-1 DPLR transition")
    (state, new), = g.states
    if g[state].complex or g[state].part:
        raise Unsupported(f"state {info.arg} is complex")
    update = g[new]
    if not isinstance(update, Map):
        raise Unsupported(f"state {info.arg} is returned unchanged")
    S = node_symbol(g[state])
    sdep = g.state_dependent
    E = inline(g, update.expr)
    sums = [x for x in E.free_symbols if x.name in sdep and isinstance(g[x.name], Sum)]
    if len(sums) != 1:
        raise Unsupported(f"the update of {info.arg} must hold one sum over the state")
    s = sums[0]
    node = g[s.name]
    key = node.dim
    arg = inline(g, node_symbol(g[node.arg]))
    bvec = sp.diff(arg, S)
    alpha, c = sp.diff(E, S), sp.diff(E, s)
    inp = sp.sympify(E.xreplace({S: 0, s: 0}))
    if any(x.name in sdep for e in (bvec, alpha, c, inp) for x in e.free_symbols) or \
            arg.xreplace({S: 0}) != 0:
        raise Unsupported(f"the update of {info.arg} is not of the form alpha S + c sum(b S)")
    sdims = g[state].dims
    near = set(expr_dims(g, bvec)) | set(expr_dims(g, c)) | set(expr_dims(g, alpha))
    grid = tuple(d for d in sdims if d != key and (d in near or d in st.batch))
    values = [d for d in sdims if d != key and d not in grid]
    if len(values) != 1:
        raise Unsupported(f"state {info.arg}: the kernels take one value dim, found {values}")
    value = values[0]
    per_key = key in expr_dims(g, alpha)
    kb, bs = _split(g, bvec, key, value, "the vector the state is contracted with")
    kc, cs = _split(g, c, key, value, "the rank-1 update's vector")
    if inp == 0:
        raise Unsupported(f"state {info.arg} has no input term")
    ki, vi = _split(g, inp, key, value, f"the input term of {info.arg}")
    two = False
    try:
        if per_key:     # (I - beta k k^T) diag(alpha): updated along k, contracted with alpha k
            beta = sp.simplify(-cs * bs * _ratio(g, kb, alpha * kc, key, f"state {info.arg}"))
            kb = kc
        else:
            lam = -cs * bs * _ratio(g, kc, kb, key, f"state {info.arg}")
            beta = sp.simplify(lam / alpha)
        u = sp.simplify(_ratio(g, ki, kb, key, f"the input term of {info.arg}") * vi)
    except Unsupported:     # diag(alpha) S + x (y^T S) + k u^T
        two, beta, u, kb = True, None, vi, ki
    ldecay = None
    if alpha != 1:
        ldecay = log_decay(alpha)
        ldecay = sp.log(alpha) if ldecay is None else ldecay
    checks = (("the decay", alpha), ("u", u)) + ((("beta", beta),) if not two else ())
    for what, e in checks:
        along_key = key in expr_dims(g, e) and not (per_key and what == "the decay")
        if along_key or (what != "u" and value in expr_dims(g, e)):
            raise Unsupported(f"{what} = {e} varies along a state dim it must not")
    if len(g.outputs) != 1:
        raise Unsupported("the chunked DPLR kernels take one output")
    out = g.outputs[0]
    Ey = inline(g, g[out].expr if isinstance(g[out], Map) else node_symbol(g[out]),
                lambda n: n.name == new)
    reads = [x for x in Ey.free_symbols if x.name in sdep]
    if len(reads) != 1 or not isinstance(g[reads[0].name], Sum) or g[reads[0].name].dim != key:
        raise Unsupported(f"output {out} must read the state through one sum over {key!r}")
    r = reads[0]
    rarg = inline(g, node_symbol(g[g[r.name].arg]), lambda n: n.name == new)
    Snew = node_symbol(g[new])
    if S in rarg.free_symbols:
        raise Unsupported(f"output {out} reads the state before the update: not generated "
                          "for DPLR chunks yet")
    q = sp.diff(rarg, Snew)
    if rarg.xreplace({Snew: 0}) != 0 or any(x.name in sdep for x in q.free_symbols) or \
            value in expr_dims(g, q):
        raise Unsupported(f"output {out}'s readout is not sum_key(q S') with q over the key")
    gate, skip = sp.diff(Ey, r), sp.sympify(Ey.xreplace({r: 0}))
    if any(x.name in sdep for e in (gate, skip) for x in e.free_symbols):
        raise Unsupported(f"output {out} is not linear in the state")
    if key in expr_dims(g, gate) or key in expr_dims(g, skip):
        raise Unsupported(f"output {out}'s gate or skip varies along the key dim")
    if set(g[out].dims) != set(grid) | {value}:
        raise Unsupported(f"output {out} has dims {g[out].dims}, not {grid + (value,)}")
    for n in g.inputs(Role.SEQ) + g.inputs(Role.PARAM):
        if n.complex or n.part:
            raise Unsupported(f"input {n.arg} is complex")
    batch = st.batch[0] if st.batch and st.batch[0] in grid else None
    exprs = {"q": q, "k": kb, "u": u, "beta": beta, "g": ldecay,
             "gate": None if gate == 1 else gate, "skip": None if skip == 0 else skip}
    if two:
        exprs.update(x=c, y=bvec)
    return DplrForm(g, state, out, key, value, grid, batch, exprs, per_key, two)
