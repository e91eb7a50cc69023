"""Kernel emitters for the scan lowering: forward, backward and the one-token step.

The forward kernel walks time in chunks of TC steps. Per chunk it loads every input for the
chunk at once, computes the gates, and runs each state block as `tl.associative_scan` over the
chunk (element (a, b), combine (a1, b1).(a2, b2) = (a1 a2, a2 b1 + b2)), starting from the
carried state; the outputs of all TC steps are then computed and stored together. It saves the
state entering each chunk, so the backward kernel can recompute a chunk's states from there:
it walks the chunks in the opposite order, recomputes the forward states, and scans the adjoint
recurrence (the derived backward graph) in reverse.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import sympy as sp

from ..ir.dims import Role
from ..ir.graph import Graph
from ..ir.nodes import Input, Map, Rename, Shift, Sum
from ..passes.analysis import time_varying
from .blocks import Block
from .emit import Tiling, Val, Values, Writer, flip, guard, ident, index_terms, mask_of
from .partition import Unsupported
from .printer import HELPERS

SCAN_COMBINE = '''
@triton.jit
def _scan1(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _scan3(f1, p1, q1, f2, p2, q2):
    # v = e + (the decay of the step before, in the scan's order) * (v there): a step is
    # (a, 1, e); a stretch is (its last decay, P, Q) with v = Q + P * (the carry into it)
    return f2, p2 * f1 * p1, q2 + p2 * f1 * q1


@triton.jit
def _scan2(a11, a12, a21, a22, b1, b2, c11, c12, c21, c22, d1, d2):
    # 2x2 blocks (complex states as real pairs): (A, b) then (C, d) -> (C A, C b + d)
    return (c11 * a11 + c12 * a21, c11 * a12 + c12 * a22,
            c21 * a11 + c22 * a21, c21 * a12 + c22 * a22,
            c11 * b1 + c12 * b2 + d1, c21 * b1 + c22 * b2 + d2)
'''


@dataclass
class Signature:
    """The kernel's parameters in order: ('ptr', tensor key) / ('stride', key, dim) /
    ('size', dim) / ('const', name). The launcher fills them in the same order."""

    params: list[tuple] = field(default_factory=list)

    def ptr(self, key: str, var: str) -> None:
        self.params.append(("ptr", key, f"{var}_ptr"))

    def strides(self, key: str, var: str, dims) -> None:
        """Strides by dim; '#t' is the time axis, '#c' a checkpoint's chunk (or a segment
        summary's segment) axis, '#j' a decay's column in its block."""
        for d in dims:
            name = {"#t": f"{var}_st", "#c": f"{var}_sc", "#j": f"{var}_sj"}.get(
                d, f"{var}_s_{d}")
            if d.startswith("#p_"):  # a partial sum's axis: one slot per program along d
                name = f"{var}_s__p_{d[3:]}"
            self.params.append(("stride", key, d, name))

    def names(self) -> list[str]:
        return [p[-1] for p in self.params]


def _prologue(w: Writer, tiling: Tiling) -> None:
    """Program id -> grid indices and block offsets; tile index vectors and masks."""
    w("pid = tl.program_id(0)")
    for d in reversed(tiling.tile):
        if d in tiling.split:
            w(f"blk_{d} = pid % tl.cdiv(size_{d}, BLOCK_{d})")
            w(f"pid = pid // tl.cdiv(size_{d}, BLOCK_{d})")
    for d in reversed(tiling.grid):
        w(f"i_{d} = (pid % size_{d}).to(tl.int64)")
        w(f"pid = pid // size_{d}")
    rank = 1 + len(tiling.tile)
    for d in tiling.tile:
        sl = ", ".join(":" if j == tiling.axis(d) else "None" for j in range(rank))
        start = f"blk_{d} * BLOCK_{d} + " if d in tiling.split else ""
        w(f"o_{d} = ({start}tl.arange(0, BLOCK_{d}))[{sl}]")
        w(f"m_{d} = o_{d} < size_{d}")
    sl = ", ".join(":" if j == tiling.taxis else "None" for j in range(rank))
    w(f"o_t = tl.arange(0, TC)[{sl}]")
    if tiling.unroll is not None:  # the carried states' axis along the unrolled dim
        d = tiling.unroll
        w(f"q_{d} = tl.arange(0, BLOCK_{d})[{sl}]")
        w(f"mq_{d} = q_{d} < size_{d}")
    w(f"ONE = tl.zeros([{', '.join(['1'] * rank)}], tl.int64)  # makes any pointer a block")


def _direction(w: Writer, flag: str, tag: str) -> None:
    """For scans running in direction `flag` (a constexpr, True = right to left): LAST_tag is
    where a chunk's carry leaves, FIRST_tag where it enters, SHIFT_tag the previous step."""
    w(f"if {flag}:")
    w(f"    LAST_{tag} = 0")
    w(f"    FIRST_{tag} = TC - 1")
    w(f"    SHIFT_{tag} = tl.minimum(o_t + 1, TC - 1)")
    w("else:")
    w(f"    LAST_{tag} = TC - 1")
    w(f"    FIRST_{tag} = 0")
    w(f"    SHIFT_{tag} = tl.maximum(o_t - 1, 0)")


def _units(g: Graph, blocks: tuple[Block, ...], nodes: list[str]) -> list:
    """Nodes and block scans in an order that respects every dependency."""
    owner = {}
    for i, b in enumerate(blocks):
        for s, n in zip(b.states, b.news) if b is not None else ():
            owner[s] = owner[n] = ("scan", i)
    dep = nx.DiGraph()
    rank = {}
    for k, n in enumerate(nodes):
        dep.add_node(n)
        rank[n] = k
    for i, b in enumerate(blocks):
        if b is None:
            continue
        dep.add_node(("scan", i))
        rank[("scan", i)] = min(rank.get(n, len(nodes)) for n in b.news) - 0.5
        for e in [c for row in b.coef for c in row] + list(b.inp):
            for s in e.free_symbols:
                src = owner.get(s.name, s.name)
                if src in dep and src != ("scan", i):
                    dep.add_edge(src, ("scan", i))
    for n in nodes:
        for a in g[n].args:
            src = owner.get(a, a)
            if src in dep:
                dep.add_edge(src, n)
    return list(nx.lexicographical_topological_sort(dep, key=lambda u: rank[u]))


class ShareBody:
    count = 0  # numbers common-subexpression temporaries uniquely within a module


class ChunkBody:
    """Emits the work of one chunk for one graph: node values, block scans, old-state shifts."""

    def __init__(self, g: Graph, blocks: tuple[Block, ...], vals: Values, w: Writer,
                 reverse: str, tag: str, allow_partial: bool = False):
        self.g, self.blocks, self.vals, self.w = g, blocks, vals, w
        self.reverse, self.tag, self.allow_partial = reverse, tag, allow_partial
        self.carry_in: dict[str, str] = {}
        self.totals: dict[int, list[str]] = {}  # block -> its cumulative decay (scan outputs)
        self.step = False
        self.reduced: dict[sp.Basic, sp.Basic] = {}
        self.need_old: set[str] = set()  # states whose values before each step are read
        # states along an unrolled dim whose column enters each chunk from memory (the
        # backward's checkpoints), not from a carried tile: state -> the column's load
        self.columns: dict[str, str] = {}
        # a state's decay at the neighbour step (the one before in the scan's order), where
        # the kernel loaded its inputs there: its values before each step come from a pair
        # scan instead of `shifted_scan`'s triple (state -> expression)
        self.next_decay: dict[str, sp.Basic] = {}
        # the same pair scan's terms (decay before, offset) in the chunk's steps reversed,
        # when the scan runs right to left (state -> (decay, offset) over reversed values):
        # Triton reverses a scan by flipping its inputs and outputs across the lanes, 40
        # shuffles each at [2, 128] on a warp; from reversed loads it takes one flip back
        self.reversed_terms: dict[str, tuple[sp.Basic, sp.Basic]] = {}
        self.column_loads: list[str] = []  # their inputs along the unrolled dim, per index
        self.decay_one_past_end: set[str] = set()  # reversed decays that need no mask
        # state -> (its value plus offset, v, as a variable; the offset over graph nodes):
        # a node that computes old + offset takes v instead (column_shifted_scan)
        self.plus_offset: dict[str, tuple[str, sp.Basic]] = {}

    def share(self, nodes: list[str], blocks: list[Block]) -> None:
        """Common subexpressions of this stretch of work (sympy's cse), emitted when first used."""
        exprs = [self.g[n].expr for n in nodes if isinstance(self.g[n], Map)]
        for b in blocks:
            exprs += [c for row in b.coef for c in row] + list(b.inp)
        if not exprs:
            return
        ShareBody.count += 1
        names = sp.numbered_symbols(f"c{ShareBody.count}_", real=True)
        repl, reduced = sp.cse(exprs, symbols=names, order="none")
        self.vals.pending.update(dict(repl))
        self.reduced.update(zip(exprs, reduced))

    def r(self, e: sp.Basic) -> sp.Basic:
        return self.reduced.get(e, e)

    def direct(self, i: int, b: Block) -> None:
        """One step, no scan (decode): new = coef @ old + inp from the loaded states."""
        vals, w = self.vals, self.w
        dims = self.g[b.states[0]].dims
        for k, (new, row, inp) in enumerate(zip(b.news, b.coef, b.inp)):
            terms = [f"({vals.expr(self.r(c))}) * {self.state_var(s)}"
                     for c, s in zip(row, b.states)]
            nv = ident(new) + f"_{self.tag}"
            w(f"{nv} = {' + '.join(terms)} + ({vals.expr(self.r(inp))}) + "
              f"tl.zeros({vals.tiling.shape(dims, False)}, tl.float32)", new)
            vals.set(new, Val(nv, frozenset(dims), False))

    def state_var(self, s: str) -> str:
        return f"{ident(s)}_{self.tag}"

    def scan(self, i: int, b: Block) -> None:
        g, vals, w, t = self.g, self.vals, self.w, self.vals.tiling
        dims = set(g[b.states[0]].dims)
        for e in [c for row in b.coef for c in row] + list(b.inp):
            if vals.of(e)[2]:
                raise Unsupported(f"state {', '.join(b.states)}: its update reads a sum spread "
                                  "over programs")
        if t.unroll is not None and b.size == 1 and b.states[0] in self.need_old:
            if self.offset(b) is None:
                raise Unsupported(f"state {b.states[0]}: its values before each step along "
                                  "an unrolled dim")
            self.column_shifted_scan(i, b, dims)
            return
        if t.unroll is not None:
            self.column_scan(i, b, dims)
            return
        full = lambda e: f"({vals.expr(self.r(e))} + z_{self.tag}{i})"
        w(f"z_{self.tag}{i} = tl.zeros({t.shape(dims, True)}, tl.float32)")
        if b.size == 1 and b.states[0] in self.need_old and self.offset(b) is not None:
            self.shifted_scan(i, b, dims)
            return
        if b.size == 1:
            (a,), (inp,) = b.coef[0], b.inp
            w(f"a_{self.tag}{i} = tl.where(m_t, {full(a)}, 1.0)", f"decay of {b.states[0]}")
            w(f"b_{self.tag}{i} = tl.where(m_t, {full(inp)}, 0.0)", f"input of {b.states[0]}")
            w(f"A_{self.tag}{i}, B_{self.tag}{i} = tl.associative_scan((a_{self.tag}{i}, "
              f"b_{self.tag}{i}), {t.taxis}, _scan1, reverse={self.reverse})")
            self.totals[i] = [f"A_{self.tag}{i}"]
            s = self.state_var(b.states[0])
            self.carry_in[b.states[0]] = f"{s}_in"
            w(f"{s}_in = {s}")
            new = ident(b.news[0]) + f"_{self.tag}"
            w(f"{new} = A_{self.tag}{i} * {s} + B_{self.tag}{i}", b.news[0])
            vals.set(b.news[0], Val(new, frozenset(dims), True))
            w(f"{s} = tl.sum(tl.where(o_t == LAST_{self.tag}, {new}, 0.0), axis={t.taxis}, "
              "keep_dims=True)")
            return
        names = [f"{x}_{self.tag}{i}" for x in ("a11", "a12", "a21", "a22", "b1", "b2")]
        coefs = [b.coef[0][0], b.coef[0][1], b.coef[1][0], b.coef[1][1]]
        for nm, c, one in zip(names[:4], coefs, ("1.0", "0.0", "0.0", "1.0")):
            w(f"{nm} = tl.where(m_t, {full(c)}, {one})")
        for nm, e in zip(names[4:], b.inp):
            w(f"{nm} = tl.where(m_t, {full(e)}, 0.0)")
        outs = [x.upper() for x in names]
        self.totals[i] = outs[:4]
        w(f"{', '.join(outs)} = tl.associative_scan(({', '.join(names)}), {t.taxis}, _scan2, "
          f"reverse={self.reverse})", f"block {', '.join(b.states)}")
        s1, s2 = (self.state_var(s) for s in b.states)
        for s, sv in zip(b.states, (s1, s2)):
            self.carry_in[s] = f"{sv}_in"
            w(f"{sv}_in = {sv}")
        A11, A12, A21, A22, B1, B2 = outs
        for k, (new, row) in enumerate(zip(b.news, ((A11, A12, B1), (A21, A22, B2)))):
            nv = ident(new) + f"_{self.tag}"
            w(f"{nv} = {row[0]} * {s1}_in + {row[1]} * {s2}_in + {row[2]}", new)
            vals.set(new, Val(nv, frozenset(dims), True))
        for s, new in zip(b.states, b.news):
            w(f"{self.state_var(s)} = tl.sum(tl.where(o_t == LAST_{self.tag}, "
              f"{vals[new].var}, 0.0), axis={self.vals.tiling.taxis}, keep_dims=True)")

    def offset(self, b: Block, raw: bool = False) -> sp.Basic | None:
        """e when a one-state block's update is new = a (old + e) (an adjoint: the gradient
        of the new state joins the output's before the decay), else None. `raw`: over the
        graph's nodes, not the common subexpressions."""
        r = (lambda e: e) if raw else self.r
        a, inp = r(b.coef[0][0]), r(b.inp[0])
        if a == 0 or inp == 0:
            return None
        num, den = sp.fraction(sp.cancel(inp / a))
        return num / den if not den.free_symbols else None

    def shifted_scan(self, i: int, b: Block, dims) -> None:
        """A block of the form new = a (old + e) whose old values are read: v = old + e obeys
        v = e + a' v' (' the step before, in the scan's order), scanned as a triple whose
        combine takes the earlier stretch's last decay (_scan3). So the old values come out
        aligned, old = v - e, with no shift of the new values (tl.gather)."""
        w, t, tg, vals = self.w, self.vals.tiling, self.tag, self.vals
        full = lambda e: f"({vals.expr(self.r(e))} + z_{tg}{i})"
        s, new = self.state_var(b.states[0]), ident(b.news[0]) + f"_{tg}"
        w(f"a_{tg}{i} = tl.where(m_t, {full(b.coef[0][0])}, 1.0)", f"decay of {b.states[0]}")
        w(f"e_{tg}{i} = tl.where(m_t, {full(self.offset(b))}, 0.0)",
          f"{b.states[0]} before each step, less its value")
        w(f"_, P_{tg}{i}, Q_{tg}{i} = tl.associative_scan((a_{tg}{i}, z_{tg}{i} + 1.0, "
          f"e_{tg}{i}), {t.taxis}, _scan3, reverse={self.reverse})")
        w(f"v_{tg}{i} = Q_{tg}{i} + P_{tg}{i} * {s}")
        w(f"A_{tg}{i} = a_{tg}{i} * P_{tg}{i}", "decay of the chunk so far")
        self.totals[i] = [f"A_{tg}{i}"]
        self.carry_in[b.states[0]] = f"{s}_in"
        w(f"{s}_in = {s}")
        old = f"{ident(b.states[0])}_old_{tg}"
        w(f"{old} = v_{tg}{i} - e_{tg}{i}", f"{b.states[0]} before each step")
        w(f"{new} = a_{tg}{i} * v_{tg}{i}", b.news[0])
        vals.set(b.states[0], Val(old, frozenset(dims), True))
        vals.set(b.news[0], Val(new, frozenset(dims), True))
        w(f"{s} = tl.sum(tl.where(o_t == LAST_{tg}, {new}, 0.0), axis={t.taxis}, "
          "keep_dims=True)")

    def column_scan(self, i: int, b: Block, dims) -> None:
        """A state's column o_<u> of the unrolled dim u (a diagonal block): read from the
        carried tile (or loaded, `columns`), scanned over the chunk with the carry folded
        into its first step (so the scan's values are the states), written back as the
        chunk's last state. EVEN (no step past T in the chunk, no index past u's size) drops
        the masks: a select per element and index, and Triton cannot fold `x + zeros` away,
        so values are broadcast."""
        w, tg = self.w, self.tag
        if b.size != 1:
            raise Unsupported(f"state {', '.join(b.states)}: a block of {b.size} along an "
                              "unrolled dim")
        (a,), (inp,) = b.coef[0], b.inp
        s = self._column_in(b.states[0])
        self._column_terms(i, dims, (("a", a, "1.0", "decay"), ("b", inp, "0.0", "input")),
                           b.states[0])
        w(f"b_{tg}{i} += tl.where(o_t == FIRST_{tg}, a_{tg}{i} * {s}_in, 0.0)",
          "the carry at the first step")
        new = ident(b.news[0]) + f"_{tg}"
        w(f"_, {new} = tl.associative_scan((a_{tg}{i}, b_{tg}{i}), {self.vals.tiling.taxis}, "
          f"_scan1, reverse={self.reverse})", b.news[0])
        self.vals.set(b.news[0], Val(new, frozenset(dims), True))
        self._column_out(b.states[0], new, dims)

    def column_shifted_scan(self, i: int, b: Block, dims) -> None:
        """`shifted_scan` for a state's column o_<u> of the unrolled dim u: the column of
        the carried tile enters the triple scan, its value before each step comes out
        aligned (the adjoint of Mamba-1's state in the backward with n unrolled)."""
        w, t, tg = self.w, self.vals.tiling, self.tag
        s = self._column_in(b.states[0])
        self._column_terms(i, dims, (("a", b.coef[0][0], "1.0", "decay"),
                                     ("e", self.offset(b), "0.0", "offset")), b.states[0])
        nxt = self.next_decay.get(b.states[0])
        rev = self.reversed_terms.get(b.states[0])
        shape, vals = t.shape(dims, True), self.vals
        if nxt is not None and rev is not None:
            w(f"if {self.reverse}:  # the chunk's steps reversed: a scan left to right")
            n = f"tl.broadcast_to({vals.expr(rev[0])}, {shape})"
            if b.states[0] not in self.decay_one_past_end:
                n = f"tl.where(nx_ok_rv, {n}, 1.0)"
            w(f"    n_{tg}{i} = {n}", f"decay of {b.states[0]} one step before, reversed")
            w(f"    x_{tg}{i} = tl.broadcast_to({vals.expr(rev[1])}, {shape})",
              f"offset of {b.states[0]}, reversed")
            w("    if not EVEN:")
            w(f"        x_{tg}{i} = tl.where(m_rv, x_{tg}{i}, 0.0)")
            w(f"    x_{tg}{i} += tl.where(o_t == 0, {s}_in, 0.0)", "the carry at the first step")
            w(f"    _, v_{tg}{i} = tl.associative_scan((n_{tg}{i}, x_{tg}{i}), {t.taxis}, "
              "_scan1)")
            w(f"    v_{tg}{i} = {flip(f'v_{tg}{i}', shape, t.taxis)}")
            w("else:")
            w.indent()
        if nxt is not None:  # v = e + a(the step before) v(there): a pair scan
            w(f"n_{tg}{i} = tl.where(nx_ok, tl.broadcast_to({vals.expr(nxt)}, "
              f"{shape}), 1.0)", f"decay of {b.states[0]} one step before")
            w(f"_, v_{tg}{i} = tl.associative_scan((n_{tg}{i}, e_{tg}{i} + tl.where(o_t == "
              f"FIRST_{tg}, {s}_in, 0.0)), {t.taxis}, _scan1, reverse={self.reverse})")
            if rev is not None:
                w.dedent()
        else:
            w(f"_, P_{tg}{i}, Q_{tg}{i} = tl.associative_scan((a_{tg}{i}, tl.full("
              f"a_{tg}{i}.shape, 1.0, tl.float32), e_{tg}{i}), {t.taxis}, _scan3, "
              f"reverse={self.reverse})")
            w(f"v_{tg}{i} = Q_{tg}{i} + P_{tg}{i} * {s}_in")
        old, new = f"{ident(b.states[0])}_old_{tg}", ident(b.news[0]) + f"_{tg}"
        w(f"{old} = v_{tg}{i} - e_{tg}{i}", f"{b.states[0]} before each step")
        w(f"{new} = a_{tg}{i} * v_{tg}{i}", b.news[0])
        self.vals.set(b.states[0], Val(old, frozenset(dims), True))
        self.vals.set(b.news[0], Val(new, frozenset(dims), True))
        self.plus_offset[b.states[0]] = (f"v_{tg}{i}", self.offset(b, raw=True))
        self._column_out(b.states[0], new, dims)

    def _plus_offset(self, node: Map) -> tuple[str, str] | None:
        """(v's variable, the state) where `node` computes a state's value plus its offset
        (the adjoint of Mamba-1's state: lambda = e + the gradient from the next step)."""
        for s, (v, off) in self.plus_offset.items():
            sym = sp.Symbol(s, real=True)
            if sym in node.expr.free_symbols and sp.expand(node.expr - off - sym) == 0:
                return v, s
        return None

    def _column_in(self, state: str) -> str:
        """Emit `<s>_in`, the state's column entering the chunk; returns <s>."""
        u, s = self.vals.tiling.unroll, self.state_var(state)
        self.carry_in[state] = f"{s}_in"
        if state in self.columns:
            self.w(f"{s}_in = {self.columns[state]}", f"{state} entering the chunk")
        else:
            self.w(f"{s}_in = tl.sum(tl.where(q_{u} == o_{u}, {s}, 0.0), "
                   f"axis={self.vals.tiling.taxis}, keep_dims=True)")
        return s

    def _column_terms(self, i: int, dims, terms, state: str) -> None:
        """A column scan's per-step terms (prefix, expression, value past the end, what),
        broadcast to the chunk, masked past the end unless EVEN."""
        w, t, tg, vals = self.w, self.vals.tiling, self.tag, self.vals
        for p, e, _, what in terms:
            w(f"{p}_{tg}{i} = tl.broadcast_to({vals.expr(self.r(e))}, {t.shape(dims, True)})",
              f"{what} of {state}")
        w("if not EVEN:")
        for p, _, pad, _ in terms:
            w(f"    {p}_{tg}{i} = tl.where(m_t, {p}_{tg}{i}, {pad})")

    def _column_out(self, state: str, new: str, dims) -> None:
        """The chunk's last value of the column back into the carried tile (not for a
        column loaded per chunk). In the backward (backward_n: one warp a program) a gather
        at LAST, one indexed shuffle a register where a masked sum takes a butterfly
        reduction (five shuffles at 32 lanes); not in the forward, whose 8-warp layout a
        gather turns into one with many times the scans' shuffles (in sm_90 builds)."""
        if state in self.columns:
            return
        u, t, s = self.vals.tiling.unroll, self.vals.tiling, self.state_var(state)
        if self.tag == "b":
            last = f"tl.gather({new}, tl.zeros({t.shape(dims, False)}, tl.int32) + LAST_b, " \
                f"{t.taxis})"
        else:
            last = f"tl.sum(tl.where(o_t == LAST_{self.tag}, {new}, 0.0), axis={t.taxis}, " \
                "keep_dims=True)"
        self.w(f"{s} = tl.where(q_{u} == o_{u}, {last}, {s})")

    def flush(self) -> None:
        """Emit now every common subexpression computable from the values at hand (before an
        unrolled loop: what does not vary along it is computed once, not per index)."""
        have = set(self.vals.vals)
        ready = {}
        for sym, e in self.vals.pending.items():  # in creation order: operands first
            if sym.name not in have and all(x.name in have or x in ready
                                            for x in e.free_symbols):
                ready[sym] = e
        for sym in ready:
            self.vals.need(sym)

    def old(self, s: str, new: str) -> None:
        """The state before each step of the chunk: the new values shifted by one step."""
        vals, w = self.vals, self.w
        nv = vals[new]
        var = f"{ident(s)}_old_{self.tag}"
        tg = self.tag
        w(f"{var} = tl.where(o_t == FIRST_{tg}, {self.carry_in[s]}, tl.gather({nv.var}, "
          f"tl.broadcast_to(SHIFT_{tg}, {nv.var}.shape), {vals.tiling.taxis}))",
          f"{s} before each step")
        vals.set(s, Val(var, nv.dims, True))

    def run(self, nodes: list[str], share: bool = True) -> None:
        """Emit `nodes` and the block scans, in dependency order (`share`: find their common
        subexpressions first; else those of an earlier `share`)."""
        news = {n: (i, b) for i, b in enumerate(self.blocks) for n in b.news}
        olds = {s: n for b in self.blocks for s, n in zip(b.states, b.news)}
        todo = [n for n in nodes if n not in news]
        active = tuple(b if any(n in nodes for n in b.news) else None for b in self.blocks)
        units = _units(self.g, active, todo)
        for u in units:
            if isinstance(u, tuple):
                b = self.blocks[u[1]]
                reads = {x.name for e in [c for row in b.coef for c in row] + list(b.inp)
                         for x in e.free_symbols}
            else:
                reads = set(self.g[u].args)
            self.need_old |= {x for x in reads if x in olds}
        if share:
            self.share([u for u in units if not isinstance(u, tuple) and u not in self.vals],
                       [self.blocks[u[1]] for u in units if isinstance(u, tuple)])
        for u in units:
            if isinstance(u, tuple):
                b = self.blocks[u[1]]
                for e in [c for row in b.coef for c in row] + list(b.inp):
                    for x in e.free_symbols:  # another state's values before each step
                        if x.name in olds and x.name not in self.vals:
                            self.old(x.name, olds[x.name])
                (self.direct if self.step else self.scan)(u[1], b)
                continue
            if u in self.vals:
                continue
            node = self.g[u]
            for a in node.args:
                if a in olds and a not in self.vals:
                    self.old(a, olds[a])
            v = self._plus_offset(node) if isinstance(node, Map) else None
            if v is not None:
                self.w(f"{ident(u)} = {v[0]}", u)
                self.vals.set(u, Val(ident(u), self.vals[v[1]].dims, True))
            elif isinstance(node, Map):
                self.vals.map(node, self.r(node.expr))
            elif isinstance(node, Sum):
                self.vals.sum(node, self.allow_partial)
            elif isinstance(node, Rename):
                self.vals.rename(node)
            elif isinstance(node, Shift):
                self.vals.shift(node)
            else:
                raise Unsupported(f"{u}: {type(node).__name__} inside a scan kernel")


def _state_ptrs(sig: Signature, g: Graph, s: str, key: str, suffix: str, chunked: bool) -> None:
    var = f"{ident(s)}_{suffix}"
    sig.ptr(f"{key}:{s}", var)
    sig.strides(f"{key}:{s}", var, (["#c"] if chunked else []) + list(g[s].dims))


def _state_offset(t: Tiling, g: Graph, s: str, suffix: str, chunk: str | None) -> str:
    var = f"{ident(s)}_{suffix}"
    terms = index_terms(t, g[s].dims, var, False, carried=True)
    if chunk is not None:
        terms.insert(0, f"{chunk} * {var}_sc")
    return " + ".join(terms) or "0"


def independent(g: Graph, blocks: tuple[Block, ...]) -> bool:
    """Whether no block's update reads another block's states: then a stretch of time can be
    scanned from a zero state and the stretches joined afterwards (the two-level scan)."""
    dependent = set(g.state_dependent) | set(g.state_names)
    for b in blocks:
        mine = set(b.states) | set(b.news)
        for e in [c for row in b.coef for c in row] + list(b.inp):
            if any(x.name in dependent and x.name not in mine for x in e.free_symbols):
                return False
    return True


def forward_source(g: Graph, blocks: tuple[Block, ...], tiling: Tiling,
                   name: str, batch: str | None = None) -> tuple[str, Signature]:
    """The forward kernel of kernel graph `g` (see `partition.kernel_graph`).

    Time is cut into N_SEG segments of SEG_LEN steps (a multiple of TC), one program per
    segment and block of channels. With one segment this is the plain chunked scan. With
    several (the two-level scan, when batch x channels alone would leave the GPU idle) it runs
    twice: SUMMARY scans each segment from a zero state and stores, per state, the state it
    ends in (E) and the segment's decay (M, the product of its steps' transitions); then each
    program joins the summaries of the segments before its own, h <- M h + E from the initial
    state, and scans its segment from there, storing outputs and checkpoints."""
    sig, w, t = Signature(), Writer(), tiling
    vals = Values(g, t, w)
    inputs = [n for n in g.inputs() if n.role in (Role.SEQ, Role.PARAM)]
    for n in inputs:
        sig.ptr(f"in:{n.name}", ident(n.name))
        sig.strides(f"in:{n.name}", ident(n.name), (["#t"] if n.role is Role.SEQ else [])
                    + [d for d in n.dims])
    for o, axes in zip(g.outputs, g.out_axes):
        sig.ptr(f"out:{o}", ident(o))
        sig.strides(f"out:{o}", ident(o), ["#t"] + list(g[o].dims))
    for s in g.state_names:
        _state_ptrs(sig, g, s, "h0", "h0", False)
        _state_ptrs(sig, g, s, "hT", "hT", False)
        _state_ptrs(sig, g, s, "chk", "chk", True)
        _summary_ptrs(sig, g, s)
    for d in t.space:
        sig.params.append(("size", d, f"size_{d}"))
    sig.params.append(("size", "T", "T"))
    sig.params.append(("size", "N_SEG", "N_SEG"))
    sig.params.append(("size", "SEG_LEN", "SEG_LEN"))
    consts = ["HAS_H0", "SAVE", "REVERSE", "SUMMARY", "TC", "STAGES", "VARLEN"] + [
        f"BLOCK_{d}" for d in t.tile]
    if t.unroll:  # EVEN: whole chunks, no index past the unrolled dim's size (Launch.even)
        consts += [f"BLOCK_{t.unroll}", "EVEN", "LOOP_BY"]
    _prologue(w, t)
    at = len(w.lines)
    w("seg = pid  # the segment of time this program scans")
    _direction(w, "REVERSE", "f")
    varying = time_varying(g)
    along = _along_unrolled(g, t)
    for n in g.inputs():
        if n.role is Role.PARAM and t.unroll not in n.dims:
            vals.load(n, False)
        elif n.role is Role.INDEX:
            vals.index(n)
    body = ChunkBody(g, blocks, vals, w, "REVERSE", "f")
    core = [n.name for n in g.nodes if not isinstance(n, Input)]
    news = set(g.new_state_names)  # a new state is scanned per chunk, even a constant one
    hoisted = [n for n in core if n not in varying and n not in news and n not in along]
    body.run(hoisted)
    for s in g.state_names:
        w(f"{body.state_var(s)} = tl.zeros({t.carried_shape(g[s].dims)}, tl.float32)")
    segmented = independent(g, blocks) and t.unroll is None
    w("if not SUMMARY:")
    w.indent()
    for s in g.state_names:
        sv, dims = body.state_var(s), g[s].dims
        w("if HAS_H0:")
        w(f"    {sv} += tl.load({ident(s)}_h0_ptr + {_state_offset(t, g, s, 'h0', None)}"
          f"{guard(mask_of(t, dims, False, carried=True))}).to(tl.float32)", f"initial {s}")
    if segmented:
        _join_before(w, g, blocks, t, body.state_var, backward=False)
    w.dedent()
    if segmented:
        w("if SUMMARY:")
        w.indent()
        _decay_init(w, g, blocks, t)
        w.dedent()
    w("n_chunks = tl.cdiv(T, TC)")
    w("seg_ch = SEG_LEN // TC")
    w("c0 = seg * seg_ch")
    w("c1 = tl.minimum(c0 + seg_ch, n_chunks)")
    w("for ci in tl.range(0, c1 - c0, num_stages=STAGES):  # loads of later chunks in flight")
    w.indent()
    w("c = c0 + ci")
    w("if REVERSE:")
    w("    c = c1 - 1 - ci")
    w("t = c * TC + o_t")
    w("m_t = t < T")
    w("t64 = t.to(tl.int64)")
    w("if SAVE:")
    w.indent()
    w("if not SUMMARY:")
    w.indent()
    for s in g.state_names:
        w(f"tl.store({ident(s)}_chk_ptr + ONE + {_state_offset(t, g, s, 'chk', 'c')}, "
          f"{body.state_var(s)}, mask={mask_of(t, g[s].dims, False, carried=True)})",
          f"checkpoint of {s}")
    w.dedent()
    w.dedent()
    for n in g.inputs(Role.SEQ):
        if t.unroll not in n.dims:
            vals.load(n, True)
    chunk = [n for n in core if n in varying or n in news or n in along]
    if t.unroll is None:
        body.run(chunk)
    else:
        _unrolled(w, g, body, chunk, along)
    if segmented:
        w("if SUMMARY:")
        w.indent()
        _decay_step(w, blocks, body, t)
        w.dedent()
    w("if not SUMMARY:")
    w.indent()
    for o in g.outputs:
        v = vals[o]
        dims = g[o].dims
        off = " + ".join(index_terms(t, dims, ident(o), True))
        w(f"tl.store({ident(o)}_ptr + ONE + {off}, {vals.full(v, dims, True)}"
          f".to({ident(o)}_ptr.dtype.element_ty), mask={mask_of(t, dims, True)})", o)
    w.dedent()
    w.dedent()
    if segmented:
        w("if SUMMARY:")
        w.indent()
        _summary_store(w, g, blocks, t, body.state_var)
        w.dedent()
    w("last = seg == N_SEG - 1  # the segment the scan ends in")
    w("if REVERSE:")
    w("    last = seg == 0")
    w("if not SUMMARY:")
    w.indent()
    for s in g.state_names:
        m = mask_of(t, g[s].dims, False, carried=True)
        m = "last" if m == "None" else f"{m} & last"
        w(f"tl.store({ident(s)}_hT_ptr + ONE + {_state_offset(t, g, s, 'hT', None)}, "
          f"{body.state_var(s)}, mask={m})", f"final {s}")
    w.dedent()
    _varlen(w, at, sig, t, batch)
    src = _kernel(name, sig, consts, w)
    return src, sig


def _along_unrolled(g: Graph, t: Tiling, outputs_along: bool = False) -> dict[str, str]:
    """Where each node is computed with an unrolled dim u: in the loop over u ("in": a value
    along u; "sum": a sum over u, added up there) or after it ("after": reading such a sum);
    nodes not named come before the loop; {} without an unrolled dim. Refused (Unsupported)
    where the loop cannot run once per chunk: a value along u reading a sum over u, an output
    along u, a state not along u."""
    u = t.unroll
    if u is None:
        return {}
    out: dict[str, str] = {}
    for n in g.nodes:
        if isinstance(n, Input):
            if n.role is Role.INDEX and u in n.dims:
                raise Unsupported(f"index input {n.name} along the unrolled dim {u!r}")
            continue
        before = {out[a] for a in n.args if a in out}
        if u in n.dims or (isinstance(n, Sum) and n.dim == u and u in g[n.arg].dims):
            if before - {"in"}:
                raise Unsupported(f"{n.name}: a value along {u!r} reads a sum over {u!r}")
            out[n.name] = "sum" if isinstance(n, Sum) and n.dim == u else "in"
        elif "in" in before:
            raise Unsupported(f"{n.name}: leaves the unrolled dim {u!r} but by a sum")
        elif before:
            out[n.name] = "after"
    for o in g.outputs if not outputs_along else ():
        if u in g[o].dims:
            raise Unsupported(f"output {o} is along the unrolled dim {u!r}")
    for s in g.state_names:
        if u not in g[s].dims:
            raise Unsupported(f"state {s} is not along the unrolled dim {u!r}")
    return out


def _unrolled(w: Writer, g: Graph, body: ChunkBody, chunk: list[str],
              along: dict[str, str]) -> None:
    """One chunk's work with an unrolled dim u (see `unrolled` in tiling.py): what does not
    vary along u first, then a loop over u, one [BLOCK, TC] tile per index (inputs along u
    loaded per index, state columns scanned, sums over u added up), then what reads those
    sums. The loop is unrolled whole at compile time, or with LOOP_BY > 0 (ScanConfig.loop)
    a `tl.range` unrolled that many times: the same steps, fewer registers."""
    u, vals = body.vals.tiling.unroll, body.vals
    news = set(g.new_state_names)
    body.share([n for n in chunk if n not in news], list(body.blocks))
    inputs = {n.name for n in g.inputs() if u in n.dims}
    _hoist_factors(body, inputs | set(along) | set(g.state_names) | news)
    body.run([n for n in chunk if n not in along], share=False)
    body.flush()

    def steps() -> None:
        for n in g.inputs():
            if n.role in (Role.SEQ, Role.PARAM) and u in n.dims:
                vals.load(n, n.role is Role.SEQ)
        body.run([n for n in chunk if along.get(n) in ("in", "sum")], share=False)

    index_loop(w, vals, u, steps)
    body.run([n for n in chunk if along.get(n) == "after"], share=False)


def index_loop(w: Writer, vals: Values, u: str, steps) -> None:
    """The loop over the unrolled dim u around `steps()`, which emits one index's work:
    unrolled whole at compile time (LOOP_BY 0: each index a constant) or a `tl.range`
    unrolled LOOP_BY times (the same lines). The sums over u it adds up are zeroed before."""
    mark, first = len(w.lines), len(vals.zeroed)
    w(f"if LOOP_BY == 0:  # {u} unrolled whole: one index at a time, each a constant")
    w(f"    for o_{u} in tl.static_range(BLOCK_{u}):")
    w.indent().indent()
    start = len(w.lines)
    w(f"m_{u} = o_{u} < size_{u}")
    steps()
    w.dedent()
    w.dedent()
    lines = w.lines[start:]
    w("else:  # the same steps in a loop unrolled LOOP_BY times: fewer values live at once")
    w(f"    for o_{u} in tl.range(0, BLOCK_{u}, num_stages=1, loop_unroll_factor=LOOP_BY):")
    w.lines += lines
    w.lines[mark:mark] = ["    " * w.depth + z for z in vals.zeroed[first:]]


def _hoist_factors(body: ChunkBody, along: set[str]) -> None:
    """The factors of a product in the loop over an unrolled dim that do not vary along it
    (the values named in `along` do), made one value computed before the loop: B * dt * u
    multiplies B by dt * u per index, not by dt and then u."""
    pending = body.vals.pending
    dep = set(along)
    for sym, e in pending.items():  # in creation order: operands first
        if any(x.name in dep for x in e.free_symbols):
            dep.add(sym.name)
    made: dict[sp.Basic, sp.Symbol] = {}

    def split(e: sp.Basic) -> sp.Basic:
        if not e.args:
            return e
        if e.is_Mul:
            free = [a for a in e.args if a.free_symbols and not
                    any(x.name in dep for x in a.free_symbols)]
            if len(free) > 1:
                prod = sp.Mul(*free)
                if prod not in made:
                    ShareBody.count += 1
                    made[prod] = sp.Symbol(f"f{ShareBody.count}", real=True)
                    pending[made[prod]] = prod
                rest = [split(a) for a in e.args if a not in free]
                return sp.Mul(made[prod], *rest)
        return e.func(*[split(a) for a in e.args])

    for e, r in list(body.reduced.items()):
        body.reduced[e] = split(r)
    for sym in [x for x in pending if x.name in dep]:
        pending[sym] = split(pending[sym])


def varlen_able(tiling: Tiling, batch: str | None) -> bool:
    """Whether the kernels can run packed sequences (cu_seqlens) in one launch: the batch dim
    indexes programs, one per sequence."""
    return batch is not None and batch in tiling.grid


def _varlen(w: Writer, at: int, sig: Signature, t: Tiling, batch: str | None) -> None:
    """Packed sequences (VARLEN, see `varlen_able`): the program's batch index is its sequence,
    which spans [cu[i], cu[i + 1]) of the packed time axis; its length replaces T, and every
    tensor with a time axis is rebased to the sequence's first step (the launcher passes those
    with batch stride 0). States, checkpoints and summaries are per sequence already."""
    sig.ptr("cu", "cu")
    if not varlen_able(t, batch):
        return
    timed = [p[1] for p in sig.params if p[0] == "stride" and p[2] == "#t"]
    ptrs = {p[1]: p[2] for p in sig.params if p[0] == "ptr"}
    strides = {p[1]: p[3] for p in sig.params if p[0] == "stride" and p[2] == "#t"}
    lines = ["if VARLEN:  # packed sequences: this program's sequence is cu[i], cu[i + 1]",
             f"    t_start = tl.load(cu_ptr + i_{batch}).to(tl.int64)",
             f"    T = (tl.load(cu_ptr + i_{batch} + 1) - t_start).to(tl.int32)"]
    lines += [f"    {ptrs[key]} += t_start * {strides[key]}" for key in timed]
    w.lines[at:at] = ["    " + line for line in lines]


def _kernel(name: str, sig: Signature, consts: list[str], w: Writer) -> str:
    params = sig.names() + [f"{c}: tl.constexpr" for c in consts]
    head = f"@triton.jit\ndef {name}(\n" + "".join(f"    {p},\n" for p in params) + "):\n"
    return head + w.text() + "\n"


def module_source(kernels: list[str], title: str) -> str:
    """A whole generated module: imports, helpers, scan combines, kernels."""
    return (f'"""{title}\n\nGenerated by lrc; every kernel line that implements an IR node '
            'ends in a comment naming it."""\nimport triton\nimport triton.language as tl\n'
            + HELPERS + SCAN_COMBINE + "\n\n" + "\n\n".join(kernels))


def _partial_axes(val: Val, t: Tiling) -> list[str]:
    """Dims summed over one program's share that get a buffer axis (the grid dims); shares of a
    split tile dim are added up in place with atomics instead."""
    return [d for d in t.space if d in val.partial and d not in t.split]


def _store(var: str, off: str, value: str, mask: str, atomic: bool) -> str:
    if atomic:
        return f"tl.atomic_add({var}_ptr + ONE + {off}, {value}, mask={mask}, sem='relaxed')"
    return (f"tl.store({var}_ptr + ONE + {off}, ({value}).to({var}_ptr.dtype.element_ty), "
            f"mask={mask})")


def _owned(mask: str, dims, partial, t: Tiling) -> str:
    """`mask`, and only the first program along the kernel's program dims a gradient neither
    has nor sums over: the others hold the same value, which an atomic add would count again."""
    rest = [d for d in t.space if (d not in t.tile or d in t.split) and d != t.unroll]
    first = [f"({'blk_' if d in t.split else 'i_'}{d} == 0)" for d in rest
             if d not in dims and d not in partial]
    if not first:
        return mask
    return " & ".join(([] if mask == "None" else [mask]) + ["(ONE == 0)"] + first)


def _partial_index(d: str, t: Tiling) -> str:
    return f"blk_{d}.to(tl.int64)" if d in t.split else f"i_{d}"


def _join_before(w: Writer, g: Graph, blocks: tuple[Block, ...], t: Tiling, var,
                 backward: bool) -> None:
    """Join the summaries of the segments scanned before this program's own, in the order they
    were scanned: earlier in time for a forward scan (later when REVERSE), the other way round
    for the adjoint scan of a backward kernel."""
    ahead, behind = ("N_SEG - 1 - seg", "seg") if backward else ("seg", "N_SEG - 1 - seg")
    w(f"n_prev = {ahead}  # the segments scanned before this one, joined: h <- M h + E")
    w("if REVERSE:")
    w(f"    n_prev = {behind}")
    w("for jj in range(0, n_prev):")
    w.indent()
    w(f"j = {'N_SEG - 1 - jj' if backward else 'jj'}")
    w("if REVERSE:")
    w(f"    j = {'jj' if backward else 'N_SEG - 1 - jj'}")
    _join(w, g, blocks, t, var)
    w.dedent()


def _join(w: Writer, g: Graph, blocks: tuple[Block, ...], t: Tiling, var) -> None:
    """h <- M h + E for the summary of segment j (see `forward_source`), every block."""
    for b in blocks:
        svs = [var(s) for s in b.states]
        rows = []
        for s in b.states:
            mask = guard(mask_of(t, g[s].dims, False, carried=True))
            base = _state_offset(t, g, s, "dec", "j")
            ms = [f"tl.load({ident(s)}_dec_ptr + {base} + {k} * {ident(s)}_dec_sj{mask})"
                  for k in range(b.size)]
            e = f"tl.load({ident(s)}_sum_ptr + {_state_offset(t, g, s, 'sum', 'j')}{mask})"
            rows.append(" + ".join(f"{m} * {v}" for m, v in zip(ms, svs)) + f" + {e}")
        w(f"{', '.join(svs)} = {', '.join(rows)}", f"join a segment into {', '.join(b.states)}")


def _decay_init(w: Writer, g: Graph, blocks: tuple[Block, ...], t: Tiling) -> None:
    for i, b in enumerate(blocks):
        for r in range(b.size):
            for c in range(b.size):
                w(f"M_{i}_{r}{c} = tl.full({t.shape(g[b.states[0]].dims, False)}, "
                  f"{1.0 if r == c else 0.0}, tl.float32)")


def _decay_step(w: Writer, blocks: tuple[Block, ...], body: "ChunkBody", t: Tiling) -> None:
    """M <- (this chunk's transition) M, per block, from the scan's cumulative decays."""
    for i, b in enumerate(blocks):
        for k, a in enumerate(body.totals[i]):
            w(f"C_{i}_{k} = tl.sum(tl.where(o_t == LAST_{body.tag}, {a}, 0.0), axis={t.taxis}, "
              "keep_dims=True)")
        n = b.size
        prods = [" + ".join(f"C_{i}_{r * n + k} * M_{i}_{k}{c}" for k in range(n))
                 for r in range(n) for c in range(n)]
        lhs = [f"M_{i}_{r}{c}" for r in range(n) for c in range(n)]
        w(f"{', '.join(lhs)} = {', '.join(prods)}", f"decay of {', '.join(b.states)}")


def _summary_store(w: Writer, g: Graph, blocks: tuple[Block, ...], t: Tiling, var) -> None:
    for i, b in enumerate(blocks):
        for r, s in enumerate(b.states):
            m = mask_of(t, g[s].dims, False, carried=True)
            w(f"tl.store({ident(s)}_sum_ptr + ONE + {_state_offset(t, g, s, 'sum', 'seg')}, "
              f"{var(s)}, mask={m})", f"{s} at the segment's end from zero")
            for c in range(b.size):
                w(f"tl.store({ident(s)}_dec_ptr + ONE + {_state_offset(t, g, s, 'dec', 'seg')} "
                  f"+ {c} * {ident(s)}_dec_sj, M_{i}_{r}{c}, mask={m})")


def _summary_ptrs(sig: Signature, g: Graph, s: str) -> None:
    _state_ptrs(sig, g, s, "sum", "sum", True)
    sig.ptr(f"dec:{s}", f"{ident(s)}_dec")
    sig.strides(f"dec:{s}", f"{ident(s)}_dec", ["#c", "#j"] + list(g[s].dims))


def saved_states(k: Graph, backward) -> dict[str, str]:
    """{forward state: the output that is its new value} (y = h', as an elementwise linear
    RNN returns its state), when every state the backward reads is one: the backward then
    reads each state before a step from the saved output one step earlier, instead of
    recomputing the forward scan and shifting it (accelerated-scan's backward; faster for
    the elementwise scan, which then does less work per step). Else {}."""
    found = {}
    for s, new in k.states:
        for o in k.outputs:
            node = k[o]
            if (isinstance(node, Map) and node.args == (new,) and node.expr.is_Symbol
                    and set(node.dims) == set(k[s].dims)):
                found[s] = o
                break
    need = [s for s, _ in backward.forward_states]
    return {s: found[s] for s in need} if all(s in found for s in need) else {}


def _saved_old(w: Writer, t: Tiling, k: Graph, s: str, o: str, carry: str) -> str:
    """Emit state `s` before each step from output `o` (= s') one step earlier (`ts`), the
    chunk's checkpoint `carry` at its first step and where that step lies past the end."""
    var, ptr = f"{ident(s)}_old_f", f"{ident(o)}_sv"
    off = " + ".join([f"ts64 * {ptr}_st"] + index_terms(t, k[o].dims, ptr, False))
    mask = " & ".join(["m_t", "(o_t != FIRST_f)", "(ts >= 0)", "(ts < T)"] +
                      [f"m_{d}" for d in k[o].dims if d in t.tile])
    w(f"{var} = tl.where({mask}, tl.load({ptr}_ptr + {off}, mask={mask}, other=0.0)"
      f".to(tl.float32), {carry})", f"{s} before each step: the saved {o} one step earlier")
    return var


def backward_inputs(sig: Signature, k: Graph, bg: Graph, backward) -> None:
    """A backward kernel's first parameters: the forward's inputs, the outputs' cotangents,
    the states' checkpoints."""
    for n in k.inputs():
        if n.role in (Role.SEQ, Role.PARAM):
            sig.ptr(f"in:{n.name}", ident(n.name))
            sig.strides(f"in:{n.name}", ident(n.name), (["#t"] if n.role is Role.SEQ else [])
                        + list(n.dims))
    for o, cot in backward.cotangents:
        sig.ptr(f"in:{cot}", ident(cot))
        sig.strides(f"in:{cot}", ident(cot), ["#t"] + list(bg[cot].dims))
    for s in k.state_names:
        _state_ptrs(sig, k, s, "chk", "chk", True)


def backward_source(k: Graph, kb: tuple[Block, ...], bg: Graph, bb: tuple[Block, ...],
                    backward, tiling: Tiling, name: str, batch: str | None = None,
                    saved: dict[str, str] | None = None) -> tuple[str, Signature, dict]:
    """The backward kernel: per chunk, in the opposite order to the forward, recompute the
    forward states from the chunk's checkpoint, then run the adjoint step `bg` as a reverse scan.
    With `saved` (see saved_states) the forward states are read from the saved outputs instead
    of recomputed.

    Time is cut into segments as in `forward_source`: with several, a SUMMARY pass scans the
    adjoint of each segment from zero and stores its end value and decay, and the second pass
    joins the segments processed before its own (those later in time, for a forward scan) from
    the final state's gradient. Param gradients get one slot per segment (summed by the host).

    Returns the source, the signature and, per gradient output, the dims summed only over one
    program's share (the host adds those partial sums up)."""
    sig, t = Signature(), tiling
    pre, loop, post = Writer(), Writer(depth=2), Writer()
    vals = Values(bg, t, loop)
    fstates = dict(backward.forward_states)
    segmented = independent(bg, bb)
    backward_inputs(sig, k, bg, backward)
    saved = saved or {}
    for o in saved.values():
        sig.ptr(f"saved:{o}", f"{ident(o)}_sv")
        sig.strides(f"saved:{o}", f"{ident(o)}_sv", ["#t"] + list(k[o].dims))
    for s, adj in backward.adjoints:
        _state_ptrs(sig, bg, adj, "dhT", "dhT", False)
        _state_ptrs(sig, k, s, "dh0", "dh0", False)
        _summary_ptrs(sig, bg, adj)
    _prologue(pre, t)
    at = len(pre.lines)
    pre("seg = pid  # the segment of time this program scans")
    _direction(pre, "REVERSE", "f")
    _direction(pre, "BACK", "b")
    # time-invariant work, shared by the recompute and the adjoint step
    pvals = Values(bg, t, pre)
    for n in bg.inputs():
        if n.role is Role.PARAM:
            pvals.load(n, False)
    for n in k.inputs(Role.INDEX) + bg.inputs(Role.INDEX):  # the recompute may need one too
        if n.name not in pvals:
            pvals.index(n)
    varying = time_varying(bg)
    hoisted = [n.name for n in bg.nodes if not isinstance(n, Input) and n.name not in varying
               and n.name not in bg.state_dependent]
    ChunkBody(bg, (), pvals, pre, "REVERSE", "f").run(hoisted)
    vals.vals.update(pvals.vals)
    body_f = ChunkBody(k, kb, vals, loop, "REVERSE", "f")
    body_b = ChunkBody(bg, bb, vals, loop, "BACK", "b", allow_partial=True)
    for s, adj in backward.adjoints:
        pre(f"{body_b.state_var(adj)} = tl.zeros({t.shape(k[s].dims, False)}, tl.float32)")
    pre("if not SUMMARY:")
    pre.indent()
    for s, adj in backward.adjoints:
        pre("if HAS_DHT:")
        pre(f"    {body_b.state_var(adj)} += tl.load({ident(adj)}_dhT_ptr + "
            f"{_state_offset(t, bg, adj, 'dhT', None)}"
            f"{guard(mask_of(t, k[s].dims, False, carried=True))})"
            ".to(tl.float32)", f"gradient of the final {s}")
    if segmented:
        _join_before(pre, bg, bb, t, body_b.state_var, backward=True)
    pre.dedent()
    if segmented:
        pre("if SUMMARY:")
        pre.indent()
        _decay_init(pre, bg, bb, t)
        pre.dedent()
    head = Writer()
    head("n_chunks = tl.cdiv(T, TC)")
    head("seg_ch = SEG_LEN // TC")
    head("c0 = seg * seg_ch")
    head("c1 = tl.minimum(c0 + seg_ch, n_chunks)")
    head("for ci in tl.range(0, c1 - c0, num_stages=STAGES):")
    head.indent()
    head("c = c1 - 1 - ci")
    head("if REVERSE:")
    head("    c = c0 + ci")
    head("t = c * TC + o_t")
    head("m_t = t < T")
    head("t64 = t.to(tl.int64)")
    for s in k.state_names:
        sv = body_f.state_var(s)
        loop(f"{sv} = tl.load({ident(s)}_chk_ptr + {_state_offset(t, k, s, 'chk', 'c')}"
             f"{guard(mask_of(t, k[s].dims, False, carried=True))})", f"checkpoint of {s}")
    for n in bg.inputs(Role.SEQ):
        if n.name not in fstates.values():
            vals.load(n, True)
    if saved:  # the states before each step, from the saved outputs
        loop("ts = t - 1  # the step before, in the scan's direction")
        loop("if REVERSE:")
        loop("    ts = t + 1")
        loop("ts64 = ts.to(tl.int64)")
        for s, o in saved.items():
            var = _saved_old(loop, t, k, s, o, body_f.state_var(s))
            vals.set(s, Val(var, frozenset(k[s].dims), True))
    else:
        need = set()
        for n in k.new_state_names:
            need |= {a for a in nx.ancestors(k.nx, n) if not isinstance(k[a], Input)} | {n}
        body_f.run([n.name for n in k.nodes if n.name in need])
        for s, new in k.states:
            if s in {f for f, _ in backward.forward_states}:
                body_f.old(s, new)
    body_b.run([n.name for n in bg.nodes if not isinstance(n, Input)])
    if segmented:
        loop("if SUMMARY:")
        loop.indent()
        _decay_step(loop, bb, body_b, t)
        loop.dedent()
    loop("if not SUMMARY:")
    loop.indent()
    partials: dict[str, list[str]] = {}
    accs = []
    for (x, out) in backward.seq_grads + backward.param_grads:
        v = vals[out]
        parts = _partial_axes(v, t)
        atomic = bool(v.partial & set(t.split))
        partials[out] = (parts, atomic)
        key, var = f"grad:{x}", f"{ident(out)}_g"
        sig.ptr(key, var)
        timed = k[x].role is Role.SEQ
        sig.strides(key, var, ([] if timed else ["#c"]) + [f"#p_{d}" for d in parts]
                    + (["#t"] if timed else []) + list(k[x].dims))
        terms = ([] if timed else [f"seg * {var}_sc"])
        terms += [f"{_partial_index(d, t)} * {var}_s__p_{d}" for d in parts]
        terms += index_terms(t, k[x].dims, var, timed)
        off = " + ".join(terms) or "0"
        dims = k[x].dims
        if timed:
            loop(_store(var, off, vals.full(v, dims, True),
                        _owned(mask_of(t, dims, True), dims, v.partial, t), atomic), out)
        else:
            acc = f"{var}_acc"
            pre(f"{acc} = tl.zeros({t.shape(dims, False)}, tl.float32)")
            loop(f"{acc} += tl.sum(tl.where(m_t, {vals.full(v, dims, True)}, 0.0), "
                 f"axis={t.taxis}, "
                 "keep_dims=True)", out)
            accs.append((acc, var, off, dims, atomic,
                         _owned(mask_of(t, dims, False), dims, v.partial, t)))
    loop.dedent()
    if segmented:
        post("if SUMMARY:")
        post.indent()
        _summary_store(post, bg, bb, t, body_b.state_var)
        post.dedent()
    post("last = seg == 0  # the segment the adjoint scan ends in")
    post("if REVERSE:")
    post("    last = seg == N_SEG - 1")
    post("if not SUMMARY:")
    post.indent()
    for acc, var, off, dims, atomic, mask in accs:
        post(_store(var, off, acc, mask, atomic))
    for s, adj in backward.adjoints:
        m = mask_of(t, k[s].dims, False, carried=True)
        m = "last" if m == "None" else f"{m} & last"
        post(f"tl.store({ident(s)}_dh0_ptr + ONE + {_state_offset(t, k, s, 'dh0', None)}, "
             f"{body_b.state_var(adj)}, mask={m})", f"gradient of the initial {s}")
    post.dedent()
    for d in t.space:
        sig.params.append(("size", d, f"size_{d}"))
    sig.params.append(("size", "T", "T"))
    sig.params.append(("size", "N_SEG", "N_SEG"))
    sig.params.append(("size", "SEG_LEN", "SEG_LEN"))
    _varlen(pre, at, sig, t, batch)
    body = Writer(lines=pre.lines + head.lines + loop.lines + post.lines)
    consts = ["HAS_DHT", "REVERSE", "BACK", "SUMMARY", "TC", "STAGES", "VARLEN"] + [
        f"BLOCK_{d}" for d in t.tile]
    src = _kernel(name, sig, consts, body)
    return src, sig, partials
