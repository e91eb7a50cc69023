"""The body of a scan kernel's chunk: the per-step values of the kernel graph in registers,
the states' associative scans along the chunk, and the stores.
"""
from __future__ import annotations

import networkx as nx
import sympy as sp

from ...errors import Unsupported
from ...ir.graph import Graph
from ...ir.nodes import Map, Rename, Shift, Sum
from ...kernels import abi
from ...kernels.abi import Signature
from ...kernels.writer import Writer, fresh, ident
from .blocks import Block
from .emit import Tiling, Val, Values, flip, index_terms, wide

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


def prologue(w: Writer, tiling: Tiling) -> None:
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
    vectors = [f"o_{d}" for d in tiling.tile] + (
        [f"q_{tiling.unroll}"] if tiling.unroll is not None else [])
    if vectors:
        w("if I64:  # an offset reaches 2^31 (the launcher's check): index products in int64")
        for v in vectors:
            w(f"    {v} = {v}.to(tl.int64)")
    w(f"ONE = tl.zeros([{', '.join(['1'] * rank)}], tl.int64)  # makes any pointer a block")


def direction(w: Writer, flag: str, tag: str) -> None:
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
        names = sp.numbered_symbols(fresh("c") + "_", real=True)
        repl, reduced = sp.cse(exprs, symbols=names, order="none")
        self.vals.pending.update(dict(repl))
        self.reduced.update(zip(exprs, reduced))

    def r(self, e: sp.Basic) -> sp.Basic:
        return self.reduced.get(e, e)

    def direct(self, i: int, b: Block) -> None:
        """One step, no scan (decode): new = coef @ old + inp from the loaded states."""
        vals, w = self.vals, self.w
        dims = self.g[b.states[0]].dims
        for _k, (new, row, inp) in enumerate(zip(b.news, b.coef, b.inp)):
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
        for _k, (new, row) in enumerate(zip(b.news, ((A11, A12, B1), (A21, A22, B2)))):
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


def state_ptrs(sig: Signature, g: Graph, s: str, key: str, suffix: str, chunked: bool) -> None:
    var = f"{ident(s)}_{suffix}"
    sig.ptr(f"{key}:{s}", var)
    sig.strides(f"{key}:{s}", var, (["#c"] if chunked else []) + list(g[s].dims))


def state_offset(t: Tiling, g: Graph, s: str, suffix: str, chunk: str | None) -> str:
    var = f"{ident(s)}_{suffix}"
    terms = index_terms(t, g[s].dims, var, False, carried=True)
    if chunk is not None:
        terms.insert(0, f"{wide(chunk)} * {var}_sc")
    return " + ".join(terms) or "0"


def kernel_text(name: str, sig: Signature, consts: list[str], w: Writer) -> str:
    """The kernel `name` (kernels.abi.kernel_source) with the body `w` wrote: its
    parameters, then the constexprs `consts` and I64 (which every scan kernel's prologue
    reads)."""
    return abi.kernel_source(name, sig, consts + ["I64"], w.text())


def module_source(kernels: list[str], title: str) -> str:
    """The generated module (kernels.abi.module_source) with this lowering's helpers."""
    return abi.module_source(kernels, title, SCAN_COMBINE)
