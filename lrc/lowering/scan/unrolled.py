"""The backward kernel with a whole state dim unrolled (Mamba-1's n): `backward_n`.

The forward with n unrolled (`tiling.unrolled`, forward.py's `unrolled`) holds one [BLOCK, TC]
tile per index of n, time last, so each thread keeps consecutive steps and the scans over time
stay in registers and warps. Its backward does the same per chunk, right to left: before a loop
over n, what does not vary along n (the gates, the output's gradient); in the loop, per index,
the forward column recomputed from the chunk's checkpoint, the adjoint column scanned
(`ChunkBody.column_shifted_scan`: its values before each step come out aligned), the terms of
every gradient along n (B's and C's summed over this program's channels and added atomically,
A's added into a carried [BLOCK, n] tile), the sums over n added up; after the loop, what
reads those sums (u's, delta's, z's gradients).

The adjoint v = e + a' v' (' the step before in the scan's order) is a pair scan over the
decay one step on (`_next_decays`: its inputs loaded there), not a triple over (a, 1, e); and
since Triton reverses a scan by flipping its inputs and output across the lanes, the right to
left scan runs left to right over inputs flipped once per chunk (`_reversed_terms`), its
result flipped back.

The graph is rewritten first, each rewrite exact (tested against the float64 interpreter):
the forward state before each step, h, is read through its decay, a h = h' - b (h' the step's
new value, b its input: `_old_through_decay`), so nothing is shifted (Mamba-1: dA's and
ddelta's terms read exp(dt A) h; a spec whose terms read h otherwise gets no backward_n); sums
over n take their factors that do not vary along n outside (`_pull_factors`).

The layout follows a hand-written Mamba-1 backward kernel of the same shape.
"""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import sympy as sp

from ...errors import Unsupported
from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Input, Map, Sum
from ...kernels.abi import Signature
from ...kernels.writer import Writer, fresh, ident
from ...passes.analysis import time_varying
from .backward import backward_inputs
from .blocks import Block
from .body import ChunkBody, direction, kernel_text, prologue, state_offset, state_ptrs
from .emit import Tiling, Val, Values, guard, index_terms, mask_of, wide
from .emit import flip as emit_flip
from .forward import (
    along_unrolled,
    atomic_over,
    emit_varlen,
    hoist_factors,
    index_loop,
    owned,
    split_axes,
    store_line,
)


def _old_through_decay(bg: Graph, kb: tuple[Block, ...], fstates: dict[str, str]) -> Graph:
    """The adjoint step with each forward state s before the step replaced by (s' - b) / a
    (its block's update s' = a s + b): where s is read times a, that leaves s' - b. Refused
    (Unsupported) where a term would still read s or divide by a."""
    sub = {}
    for b in kb:
        if b.size != 1 or b.states[0] not in fstates:
            continue
        (a,), (inp,) = b.coef[0], b.inp
        if a == 0:
            raise Unsupported(f"state {b.states[0]}: a zero decay")
        sub[sp.Symbol(fstates[b.states[0]], real=True)] = (
            (sp.Symbol(b.news[0], real=True) - inp) / a, a)
    news = {b.news[0] for b in kb}
    nodes = [n for n in bg.nodes if isinstance(n, Input)]
    for b in kb:  # the new values the rewritten terms read (the recompute's scan makes them)
        if b.news[0] not in bg and b.states[0] in fstates:
            dims = bg[fstates[b.states[0]]].dims
            nodes.append(Map(b.news[0], dims, b.coef[0][0] * sp.Symbol(
                fstates[b.states[0]], real=True) + b.inp[0]))
    for n in bg.nodes:
        if isinstance(n, Input):
            continue
        if isinstance(n, Map) and n.name not in news:
            e = n.expr
            for s, (by, a) in sub.items():
                if s in e.free_symbols:
                    e = e.subs(s, by)
                    if s in e.free_symbols or (1 / a) in e.atoms(sp.Pow, sp.exp) or any(
                            (1 / a).equals(x) for x in e.atoms(sp.exp)):
                        raise Unsupported(f"{n.name}: reads the forward state {s} other than "
                                          "through its decay")
            n = replace(n, expr=e)
        nodes.append(n)
    return replace(bg, nodes=tuple(nodes))


def _merge_same(g: Graph) -> Graph:
    """Nodes that compute the same thing (a Map's expression, a Sum's argument and dim, over
    the same dims) made one: later nodes read the first. Outputs and states stay."""
    keep = set(g.outputs) | set(g.new_state_names)
    seen: dict[tuple, str] = {}
    to: dict[sp.Symbol, sp.Symbol] = {}
    nodes = []
    for n in g.nodes:
        if isinstance(n, Map):
            n = replace(n, expr=n.expr.xreplace(to))
            key = ("map", n.dims, n.expr)
        elif isinstance(n, Sum):
            arg = to.get(sp.Symbol(n.arg, real=True))
            n = replace(n, arg=arg.name) if arg is not None else n
            key = ("sum", n.dims, n.arg, n.dim)
        else:
            nodes.append(n)
            continue
        if key in seen and n.name not in keep:
            to[sp.Symbol(n.name, real=True)] = sp.Symbol(seen[key], real=True)
            continue
        seen.setdefault(key, n.name)
        nodes.append(n)
    return replace(g, nodes=tuple(nodes))


def _pull_factors(g: Graph, u: str) -> Graph:
    """Each sum over the unrolled dim u of a product with factors that do not vary along u,
    those factors taken outside: sum_n s(x) q_n = s(x) sum_n q_n (Mamba-1's delta gradient:
    one multiply by softplus' per step, not per step and index). A sum over u of a sum over
    another dim is swapped first (sum_n sum_b = sum_b sum_n), and duplicates merged, so that
    delta_bias's gradient becomes a sum over b of delta's."""
    g = _merge_same(g)
    users = {n.name: set(g.users(n.name)) for n in g.nodes}
    nodes = list(g.nodes)
    for i, n in enumerate(nodes):  # sum_u (sum_v x) -> sum_v (sum_u x)
        inner = g[n.arg] if isinstance(n, Sum) and n.dim == u else None
        if (isinstance(inner, Sum) and inner.dim != u and users[inner.name] == {n.name}
                and inner.name not in g.outputs):
            x = g[inner.arg]
            j = nodes.index(inner)
            nodes[j] = Sum(inner.name, g.order(d for d in x.dims if d != u), x.name, u)
            nodes[i] = Sum(n.name, n.dims, inner.name, inner.dim)
    g = _merge_same(replace(g, nodes=tuple(nodes)))
    users = {n.name: set(g.users(n.name)) for n in g.nodes}
    nodes = []
    for n in g.nodes:
        x = g[n.arg] if isinstance(n, Sum) and n.dim == u else None
        if not isinstance(x, Map) or u not in x.dims:
            nodes.append(n)
            continue
        e = sp.factor_terms(x.expr)
        along = [f for f in sp.Mul.make_args(e)
                 if any(u in g[s.name].dims for s in f.free_symbols)]
        out = [f for f in sp.Mul.make_args(e) if f not in along]
        if not along or not out or not any(f.free_symbols for f in out):
            nodes.append(n)
            continue
        part = sp.Mul(*along)
        dims = g.order(d for s in part.free_symbols for d in g[s.name].dims)
        if users[x.name] == {n.name}:  # x is read by this sum only: its place is taken
            nodes = [m for m in nodes if m.name != x.name]
        nodes.append(Map(f"{x.name}~{u}", dims, part))
        nodes.append(Sum(f"{n.name}~{u}", tuple(d for d in dims if d != u), f"{x.name}~{u}", u))
        nodes.append(Map(n.name, n.dims, sp.Mul(*out) * sp.Symbol(f"{n.name}~{u}", real=True)))
    return replace(g, nodes=tuple(nodes))


def backward_unrolled_source(k: Graph, kb: tuple[Block, ...], bg: Graph, bb: tuple[Block, ...],
                             backward, tiling: Tiling, name: str, batch: str | None = None
                             ) -> tuple[str, Signature, dict]:
    """The backward kernel with tiling.unroll's dim unrolled (see the module's doc). Its
    signature is `backward_source`'s less the segment summaries: one segment of time per
    program. Returns the source, the signature and the gradients' partial dims (the host
    adds those up), as `backward_source` does.

    Long on purpose: one kernel's text in order (see backward_source)."""
    t, u = tiling, tiling.unroll
    fstates = dict(backward.forward_states)
    bg = _pull_factors(_old_through_decay(bg, kb, fstates), u)
    if any(x.name in fstates.values() for n in bg.nodes if isinstance(n, Map)
           and n.name not in k.new_state_names for x in n.expr.free_symbols):
        raise Unsupported("the adjoint step reads a forward state itself")
    if any(b.size != 1 for b in kb + bb):
        raise Unsupported("a block of several states along an unrolled dim")
    need = set()
    for n in k.new_state_names:
        need |= {a for a in nx.ancestors(k.nx, n) if not isinstance(k[a], Input)} | {n}
    fnodes = [n.name for n in k.nodes if n.name in need]
    along_f = {n: v for n, v in along_unrolled(k, t).items() if n in need}
    along_b = along_unrolled(bg, t, outputs_along=True)
    sig = Signature()
    backward_inputs(sig, k, bg, backward)
    for s, adj in backward.adjoints:
        state_ptrs(sig, bg, adj, "dhT", "dhT", False)
        state_ptrs(sig, k, s, "dh0", "dh0", False)
    w = Writer()
    prologue(w, t)
    at = len(w.lines)
    w("seg = pid  # one segment: the whole sequence")
    direction(w, "REVERSE", "f")
    direction(w, "BACK", "b")
    vals = Values(bg, t, w)
    for n in bg.inputs(Role.PARAM):
        if u not in n.dims:
            vals.load(n, False)
    for n in k.inputs(Role.INDEX) + bg.inputs(Role.INDEX):
        if n.name not in vals:
            vals.index(n)
    body_f = ChunkBody(k, kb, vals, w, "REVERSE", "f")
    body_b = ChunkBody(bg, bb, vals, w, "BACK", "b", allow_partial=True)
    varying = time_varying(bg)
    fixed = [n.name for n in bg.nodes if not isinstance(n, Input) and n.name not in varying
             and n.name not in bg.state_dependent and n.name not in along_b]
    body_b.run(fixed)
    for s, adj in backward.adjoints:
        sv = body_b.state_var(adj)
        w(f"{sv} = tl.zeros({t.carried_shape(k[s].dims)}, tl.float32)")
        w("if HAS_DHT:")
        w(f"    {sv} += tl.load({ident(adj)}_dhT_ptr + {state_offset(t, bg, adj, 'dhT', None)}"
          f"{guard(mask_of(t, k[s].dims, False, carried=True))}).to(tl.float32)",
          f"gradient of the final {s}")
    for s in k.state_names:  # each column of a chunk's checkpoint, loaded in the loop over u
        var = f"{ident(s)}_chk"
        off = " + ".join([f"{wide('c')} * {var}_sc"] + index_terms(t, k[s].dims, var, False))
        body_f.columns[s] = f"tl.load({var}_ptr + {off}{guard(mask_of(t, k[s].dims, False))})"
    grads, accs = _gradient_slots(k, bg, backward, t, sig, w)
    partials = {out: (parts, atomic) for out, (_, parts, atomic, _) in grads.items()}
    w("n_chunks = tl.cdiv(T, TC)")
    w("for ci in tl.range(0, n_chunks, num_stages=STAGES):")
    w.indent()
    w("c = n_chunks - 1 - ci")
    w("if REVERSE:")
    w("    c = ci")
    w("t = c * TC + o_t")
    w("m_t = t < T")
    w("t64 = t.to(tl.int64)")
    for n in bg.inputs(Role.SEQ):
        if n.name not in fstates.values() and u not in n.dims:
            vals.load(n, True)
    chunk_f = [n for n in fnodes if n not in vals]
    chunk_b = [n.name for n in bg.nodes if not isinstance(n, Input) and n.name not in vals]
    # one set of common subexpressions for both steps: the recompute's decay is the adjoint's
    exprs = [k[n].expr for n in chunk_f if isinstance(k[n], Map)]
    exprs += [bg[n].expr for n in chunk_b if isinstance(bg[n], Map) and n not in need]
    for b in kb + bb:
        exprs += [c for row in b.coef for c in row] + list(b.inp)
    repl, reduced = sp.cse(exprs, symbols=sp.numbered_symbols(fresh("c") + "_", real=True),
                           order="none")
    vals.pending.update(dict(repl))
    body_b.reduced = body_f.reduced = dict(zip(exprs, reduced))
    inputs_u = {n.name for n in k.inputs() + bg.inputs() if u in n.dims}
    hoist_factors(body_b, inputs_u | set(along_f) | set(along_b) | set(k.state_names)
                   | set(k.new_state_names) | set(bg.state_names) | set(bg.new_state_names)
                   | set(fstates.values()))
    body_f.run([n for n in chunk_f if n not in along_f], share=False)
    body_b.run([n for n in chunk_b if n not in along_b], share=False)
    _next_decays(w, bg, bb, body_b, vals, t)
    body_b.flush()
    _reversed_terms(w, bg, bb, body_b, vals, t)

    def steps() -> None:
        loaded = set()
        for n in k.inputs() + bg.inputs():
            if (n.role in (Role.SEQ, Role.PARAM) and u in n.dims and n.name not in loaded
                    and n.name not in fstates.values()):
                loaded.add(n.name)
                vals.load(n, n.role is Role.SEQ)
        for line in body_b.column_loads:
            w(line)
        body_f.run([n for n in chunk_f if n in along_f], share=False)
        body_b.run([n for n in chunk_b if along_b.get(n) in ("in", "sum")], share=False)
        for out in grads:
            if along_b.get(out) == "in":
                _gradient_out(w, k, vals, t, out, grads[out], along=True)

    index_loop(w, vals, u, steps)
    body_b.run([n for n in chunk_b if along_b.get(n) == "after"], share=False)
    for out in grads:
        if along_b.get(out) != "in":
            _gradient_out(w, k, vals, t, out, grads[out], along=False)
    w.dedent()
    for var, off, _dims, atomic, mask in accs:
        w(store_line(var, off, f"{var}_acc", mask, atomic))
    for s, adj in backward.adjoints:
        m = mask_of(t, k[s].dims, False, carried=True)
        w(f"tl.store({ident(s)}_dh0_ptr + ONE + {state_offset(t, k, s, 'dh0', None)}, "
          f"{body_b.state_var(adj)}, mask={m})", f"gradient of the initial {s}")
    for d in t.space:
        sig.params.append(("size", d, f"size_{d}"))
    sig.params.append(("size", "T", "T"))
    sig.params.append(("size", "N_SEG", "N_SEG"))
    sig.params.append(("size", "SEG_LEN", "SEG_LEN"))
    emit_varlen(w, at, sig, t, batch)
    consts = ["HAS_DHT", "REVERSE", "BACK", "SUMMARY", "TC", "STAGES", "VARLEN", "EVEN",
              "LOOP_BY"] + [f"BLOCK_{d}" for d in t.tile] + [f"BLOCK_{u}"]
    return kernel_text(name, sig, consts, w), sig, partials


def _next_decays(w: Writer, g: Graph, blocks: tuple[Block, ...], body: ChunkBody,
                 vals: Values, t: Tiling) -> None:
    """The adjoint's values before each step, v = e + a' v' (' the step before in the scan's
    order), by a pair scan over (a', e) rather than a triple over (a, 1, e): where a block's
    decay reads inputs only (Seq ones not along the unrolled dim), those are loaded at the
    neighbour step (per chunk, before the loop over u) and the decay there registered with
    `body` (ChunkBody.next_decay), its parts that do not vary along u computed once. One more
    exp per element (the SFUs have room: Mamba-1's backward is bound by the scans' shuffles
    and arithmetic), a lighter scan: the triple combine costs twice the pair's."""
    u = t.unroll
    todo, seqs = [], set()
    for b in blocks:
        names = {x.name for x in b.coef[0][0].free_symbols} if b.size == 1 else {""}
        if all(n in g and isinstance(g[n], Input) and g[n].role in (Role.SEQ, Role.PARAM)
               and not (g[n].role is Role.SEQ and u in g[n].dims) for n in names):
            todo.append(b)
            seqs |= {n for n in names if g[n].role is Role.SEQ}
    if not todo:
        return
    w("ts = t + 1  # the step before, in the adjoint scan's order")
    w("if not BACK:")
    w("    ts = t - 1")
    w("nx_ok = (ts >= 0) & (ts < T)")
    for n in sorted(seqs):
        dims = [d for d in g[n].dims if d in t.space]
        var = ident(n)
        off = " + ".join([f"ts.to(tl.int64) * {var}_st"] + index_terms(t, dims, var, False))
        mask = " & ".join(["nx_ok"] + [f"m_{d}" for d in dims if d in t.tile])
        w(f"{var}_nx = tl.load({var}_ptr + {off}, mask={mask}, other=0.0).to(tl.float32)",
          f"{n} one step before")
        vals.set(f"{n}⁺", Val(f"{var}_nx", frozenset(dims), True))
    to = {sp.Symbol(n, real=True): sp.Symbol(f"{n}⁺", real=True) for n in seqs}
    for b in todo:
        body.next_decay[b.states[0]] = _hoist_subtrees(vals, g, b.coef[0][0].xreplace(to), u)


def _inputs_only(g: Graph, e: sp.Basic) -> sp.Basic | None:
    """`e` with the Map nodes it reads written out, down to Seq and Param inputs; None where
    it reads anything else (a state, a sum)."""
    while True:
        maps = {s: g[s.name].expr for s in e.free_symbols
                if s.name in g and isinstance(g[s.name], Map)}
        if not maps:
            break
        e = e.xreplace(maps)
    ok = all(s.name in g and isinstance(g[s.name], Input) and g[s.name].role in (Role.SEQ,
             Role.PARAM) for s in e.free_symbols)
    return e if ok else None


def _reversed_terms(w: Writer, g: Graph, blocks: tuple[Block, ...], body: ChunkBody,
                    vals: Values, t: Tiling) -> None:
    """For the adjoint's pair scan (`_next_decays`) when it runs right to left (BACK): its
    terms over the chunk's steps reversed (ChunkBody.reversed_terms), so that the scan runs
    left to right and only its result is flipped back. The values they read are flipped
    once per chunk where they do not vary along the unrolled dim (after `flush`), per index
    otherwise (Triton reverses a scan by flipping its two inputs and its output; a reversed
    load is not vectorized, and its layout made the scans' shuffles quadruple). Flips are
    gathers (emit.flip)."""
    u, ax = t.unroll, t.taxis
    terms = {}
    for s, nxt in body.next_decay.items():
        (b,) = [b for b in blocks if b.states[0] == s]
        e = _inputs_only(g, body.offset(b, raw=True))
        if e is not None:
            terms[s] = (nxt, _hoist_subtrees(vals, g, e, u))
    if not terms:
        return
    body.flush()
    w("t_rv = c * TC + (TC - 1 - o_t)  # the chunk's steps reversed")
    w("m_rv = t_rv < T")
    w("nx_ok_rv = t_rv + 1 < T  # the step before each, in the adjoint scan's order")
    # a decay that is 1 where the one value it reads that varies in time is 0 (exp(A dt)):
    # that value zeroed per chunk past the sequence's end, not the decay per index
    timed = lambda a: [x for x in a.free_symbols if x.name in vals and vals[x.name].timed]
    zeroed = {}
    for s, (a, _e) in terms.items():
        if len(timed(a)) == 1 and a.xreplace({timed(a)[0]: sp.Integer(0)}) == 1:
            zeroed[timed(a)[0]] = s
    to = {}
    for x in sorted({x for a, e in terms.values() for x in a.free_symbols | e.free_symbols},
                    key=lambda x: x.name):
        if x.name in vals and vals[x.name].timed:
            v = vals[x.name]
            shape = t.shape(v.dims, True)
            flip = emit_flip(f"{v.var} + tl.zeros({shape}, tl.float32)", shape, ax)
            w(f"{v.var}_rv = {f'tl.where(nx_ok_rv, {flip}, 0.0)' if x in zeroed else flip}")
            vals.set(f"{x.name}~rv", Val(f"{v.var}_rv", v.dims, True))
        elif x.name not in vals and g[x.name].role is Role.SEQ:  # along u: per index
            dims = frozenset(d for d in g[x.name].dims if d in t.space)
            shape = t.shape(dims, True)
            body.column_loads.append(f"{ident(x.name)}_rv = " + emit_flip(
                f"{ident(x.name)} + tl.zeros({shape}, tl.float32)", shape, ax))
            vals.set(f"{x.name}~rv", Val(f"{ident(x.name)}_rv", dims, True))
        else:
            continue
        to[x] = sp.Symbol(f"{x.name}~rv", real=True)
    for s, (a, e) in terms.items():
        body.reversed_terms[s] = (a.xreplace(to), e.xreplace(to))
        if s in zeroed.values():
            body.decay_one_past_end.add(s)


def _hoist_subtrees(vals: Values, g: Graph, e: sp.Basic, u: str) -> sp.Basic:
    """`e` with each largest subexpression that does not vary along u made a common
    subexpression (emitted before the loop over u by ChunkBody.flush)."""
    def along(x: sp.Symbol) -> bool:
        return u in (vals[x.name].dims if x.name in vals else g[x.name].dims)

    def hoist(x: sp.Basic) -> sp.Symbol:
        sym = sp.Symbol(fresh("f"), real=True)
        vals.pending[sym] = x
        return sym

    def walk(x: sp.Basic) -> sp.Basic:
        if not x.args or not x.free_symbols:
            return x
        if not any(along(s) for s in x.free_symbols):
            return hoist(x)
        if x.is_Mul or x.is_Add:  # the terms or factors that do not vary, as one
            fixed = [a for a in x.args if not any(along(s) for s in a.free_symbols)]
            rest = [walk(a) for a in x.args if a not in fixed]
            if len([a for a in fixed if a.free_symbols]) > 1 or any(a.args for a in fixed):
                return x.func(hoist(x.func(*fixed)), *rest)
            return x.func(*fixed, *rest)
        return x.func(*[walk(a) for a in x.args])

    return walk(e)


def _gradient_out(w: Writer, k: Graph, vals: Values, t: Tiling, out: str, slot: tuple,
                  along: bool) -> None:
    """A gradient's chunk: a Seq input's stored (added atomically where summed over a split
    dim), a Param's added into its accumulator (per index of the unrolled dim: `along`)."""
    x, parts, atomic, var = slot
    v, dims = vals[out], k[x].dims
    full = vals.full(v, dims, True)
    if k[x].role is Role.SEQ:
        off = " + ".join([f"{_partial(d, t)} * {var}_s__p_{d}" for d in parts]
                         + index_terms(t, dims, var, True))
        w(store_line(var, off, full, owned(mask_of(t, dims, True), dims, v.partial, t), atomic),
          out)
        return
    part = (f"tl.sum({full} if EVEN else tl.where(m_t, {full}, 0.0), axis={t.taxis}, "
            "keep_dims=True)")
    if along:
        u = t.unroll
        w(f"{var}_acc = tl.where(q_{u} == o_{u}, {var}_acc + {part}, {var}_acc)", out)
    else:
        w(f"{var}_acc += {part}", out)


def _partial(d: str, t: Tiling) -> str:
    return f"blk_{d}.to(tl.int64)" if d in t.split else f"i_{d}"


def _gradient_slots(k: Graph, bg: Graph, backward, t: Tiling, sig: Signature, w: Writer
                    ) -> tuple[dict, list]:
    """Each gradient's buffer in the signature: {output: (input, partial axes, atomic, var)},
    and for a Param's gradient its accumulator (zeroed here; carried along the unrolled dim
    like a state where it varies along it) with where it is stored after the chunks."""
    grads, accs = {}, []
    for x, out in backward.seq_grads + backward.param_grads:
        dims = k[x].dims
        # a gradient's partial dims follow from its node's: the sums over programs it reads
        partial = _partial_dims(bg, out, t)
        parts = split_axes(partial, t)
        atomic = atomic_over(partial, t)
        var = f"{ident(out)}_g"
        sig.ptr(f"grad:{x}", var)
        timed = k[x].role is Role.SEQ
        sig.strides(f"grad:{x}", var, ([] if timed else ["#c"]) + [f"#p_{d}" for d in parts]
                    + (["#t"] if timed else []) + list(dims))
        grads[out] = (x, parts, atomic, var)
        if not timed:
            w(f"{var}_acc = tl.zeros({t.carried_shape(dims)}, tl.float32)")
            off = " + ".join([f"{wide('seg')} * {var}_sc"] + [f"{_partial(d, t)} * {var}_s__p_{d}"
                                                      for d in parts]
                             + index_terms(t, dims, var, False, carried=True))
            mask = owned(mask_of(t, dims, False, carried=True), dims, partial, t)
            accs.append((var, off, dims, atomic, mask))
    return grads, accs


def _partial_dims(bg: Graph, out: str, t: Tiling) -> frozenset[str]:
    """The dims `out` is summed over only in part by one program: sums over grid dims or a
    split tile dim on its way (Values.sum's rule, read off the graph before emitting)."""
    found: set[str] = set()
    for a in nx.ancestors(bg.nx, out) | {out}:
        n = bg[a]
        if isinstance(n, Sum) and n.dim in bg[n.arg].dims and (
                n.dim in t.split or (n.dim not in t.tile and n.dim != t.unroll)):
            found.add(n.dim)
    return frozenset(found)
