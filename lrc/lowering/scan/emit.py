"""The pieces every generated kernel is made of: names, register shapes, loads, stores, sums.

Inside a kernel each value is a register tensor of rank 1 + len(tile): axis 0 is the time chunk
(size TC, or 1 for values constant in time), then one axis per tile dim (BLOCK_<d>, or 1 where
the value does not vary along d). Dims of the index space outside the tile ("grid" dims) are one
index per program and take no axis. Lines that implement an IR node end in `# <node>`.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...errors import Unsupported
from ...ir.graph import Graph
from ...ir.nodes import Input, Map, Sum
from ...kernels.printer import triton_expr
from ...kernels.writer import Writer, ident


def flip(x: str, shape: str, axis: int) -> str:
    """The source of `x` (register shape `shape`) reversed along the time chunk, a gather at
    TC - 1 - t. tl.flip reverses through log2(TC) butterfly exchanges, a shuffle each per
    register where the axis crosses lanes (five at 32 lanes); a gather inside a warp takes one
    indexed shuffle a register."""
    return f"tl.gather({x}, tl.broadcast_to(TC - 1 - o_t, {shape}), {axis})"


@dataclass(frozen=True)
class Tiling:
    """How a kernel covers its index space.

    tile    dims held in registers, one axis each (after the time-chunk axis)
    split   tile dims cut into several blocks across programs (the rest fit in one block)
    grid    dims of the index space not in the tile: one index per program
    """

    space: tuple[str, ...]
    tile: tuple[str, ...]
    split: tuple[str, ...]
    grid: tuple[str, ...]
    time_last: bool = False  # the time-chunk axis last (fastest) instead of first
    unroll: str | None = None  # a whole dim that is no register axis: see `scan.unrolled`

    @property
    def taxis(self) -> int:
        """The register axis of the time chunk."""
        return len(self.tile) if self.time_last else 0

    def axis(self, dim: str) -> int:
        return self.tile.index(dim) + (0 if self.time_last else 1)

    def shape(self, dims, timed: bool) -> str:
        tile = [f"BLOCK_{d}" if d in dims else "1" for d in self.tile]
        t = ["TC" if timed else "1"]
        return "[" + ", ".join(tile + t if self.time_last else t + tile) + "]"

    def carried_shape(self, dims) -> str:
        """The register shape of a value carried from chunk to chunk (a state): with an
        unrolled dim, that dim takes the time axis (q_<dim> indexes it)."""
        if self.unroll is None or self.unroll not in dims:
            return self.shape(dims, False)
        tile = [f"BLOCK_{d}" if d in dims else "1" for d in self.tile]
        return "[" + ", ".join(tile + [f"BLOCK_{self.unroll}"]) + "]"


@dataclass(frozen=True)
class Val:
    """A value in registers: its variable, the dims it varies along, whether it varies in time,
    and dims summed only over this program's share (to be finished on the host)."""

    var: str
    dims: frozenset[str]
    timed: bool
    partial: frozenset[str] = frozenset()


def wide(index: str) -> str:
    """A scalar index (chunk, segment, an unrolled dim's loop index) as int64 where the
    launch has offsets past 2^31 (the constexpr I64), so that its product with an int32
    stride cannot wrap; else as it is, and the kernel compiles as without the check. (Grid
    indices i_<d> are int64 always; the tile's index vectors: `body.prologue`.)"""
    return f"(tl.cast({index}, tl.int64) if I64 else {index})"


def index_terms(tiling: Tiling, dims, prefix: str, timed: bool, carried: bool = False
                ) -> list[str]:
    """Offset terms `index * stride` of a tensor over `dims` (and time) in this kernel.
    `carried`: of a value carried between chunks (see Tiling.carried_shape)."""
    terms = []
    if timed:
        terms.append(f"t64 * {prefix}_st")
    for d in dims:
        if d == tiling.unroll:
            index = f"q_{d}" if carried else wide(f"o_{d}")  # o_<d>: the loop's scalar
            terms.append(f"{index} * {prefix}_s_{d}")
        elif d in tiling.tile:
            terms.append(f"o_{d} * {prefix}_s_{d}")
        else:
            terms.append(f"i_{d} * {prefix}_s_{d}")
    return terms


def mask_of(tiling: Tiling, dims, timed: bool, carried: bool = False) -> str:
    parts = (["m_t"] if timed else []) + [f"m_{d}" for d in dims if d in tiling.tile]
    if tiling.unroll in dims:
        parts.append(f"{'mq' if carried else 'm'}_{tiling.unroll}")
    return " & ".join(parts) if parts else "None"


def guard(mask: str) -> str:
    """A load's `mask=..., other=0.0` arguments (none when nothing needs masking)."""
    return f", mask={mask}, other=0.0" if mask != "None" else ""


class Values:
    """Node name -> Val, and the code that computes Map and Sum nodes from their arguments."""

    def __init__(self, g: Graph, tiling: Tiling, w: Writer):
        self.g, self.tiling, self.w = g, tiling, w
        self.vals: dict[str, Val] = {}
        self.pending: dict[sp.Symbol, sp.Basic] = {}  # common subexpressions, emitted on use
        self.zeroed: list[str] = []  # sums over an unrolled dim: their zeros before its loop

    def __getitem__(self, name: str) -> Val:
        return self.vals[name]

    def __contains__(self, name: str) -> bool:
        return name in self.vals

    def set(self, name: str, val: Val) -> None:
        self.vals[name] = val

    def expr(self, e: sp.Basic) -> str:
        self.need(e)
        return triton_expr(e, {s.name: self.vals[s.name].var for s in e.free_symbols})

    def need(self, e: sp.Basic) -> None:
        """Emit the common subexpressions `e` uses that are not computed yet."""
        for s in sorted(e.free_symbols, key=lambda x: x.name):
            if s in self.pending and s.name not in self.vals:
                sub = self.pending[s]
                self.need(sub)
                var = ident(s.name)
                dims, timed, part = self.of(sub)
                self.w(f"{var} = {self.gated(sub, part)}")
                self.vals[s.name] = Val(var, dims, timed, part)

    def gated(self, e: sp.Basic, part: frozenset[str]) -> str:
        """`e` as Triton text where a sum spread over programs (partial along `part`) meets
        complete values: a term complete along some of `part` is added by the first program
        along those dims only, so the host's sum over programs counts it once."""
        names = {x.name: self.vals[x.name].var for x in e.free_symbols}
        syms = sorted(e.free_symbols, key=lambda x: x.name)
        if not part or all(self.vals[x.name].partial == part for x in syms):
            return triton_expr(e, names)
        partial = [x for x in syms if self.vals[x.name].partial]
        rest = e.xreplace({x: sp.Integer(0) for x in partial})
        terms = []
        for x in partial:
            coef = sp.diff(e, x)
            if any(self.vals[y.name].partial for y in coef.free_symbols):
                raise Unsupported("a product of two sums spread over programs")
            terms.append((coef * x, part - self.vals[x.name].partial))
        if rest != 0:
            terms.append((rest, part))
        out = []
        for term, over in terms:
            text = triton_expr(term, names)
            if over:
                first = " & ".join(f"({'blk_' if d in self.tiling.split else 'i_'}{d} == 0)"
                                   for d in sorted(over))
                text = f"tl.where({first}, {text}, 0.0)"
            out.append(f"({text})")
        return " + ".join(out)

    def of(self, e: sp.Basic) -> tuple[frozenset[str], bool, frozenset[str]]:
        """Dims, time variation and partial dims of an expression over current values."""
        vs = [self.vals[s.name] for s in e.free_symbols]
        dims = frozenset().union(*(v.dims for v in vs)) if vs else frozenset()
        part = frozenset().union(*(v.partial for v in vs)) if vs else frozenset()
        return dims, any(v.timed for v in vs), part

    def load(self, node: Input, timed: bool) -> Val:
        """Load an input (its dims inside the index space), cast to float32."""
        t = self.tiling
        var = ident(node.name)
        dims = [d for d in node.dims if d in t.space]
        outside = [d for d in node.dims if d not in t.space]
        if outside:
            raise Unsupported(f"input {node.name} has dims {outside} outside the kernel's")
        off = " + ".join(index_terms(t, dims, var, timed)) or "0"
        mask = mask_of(t, dims, timed)
        guard = f", mask={mask}, other=0.0" if mask != "None" else ""
        self.w(f"{var} = tl.load({var}_ptr + {off}{guard}).to(tl.float32)", node.name)
        val = Val(var, frozenset(dims), timed)
        self.vals[node.name] = val
        return val

    def index(self, node: Input) -> Val:
        d = node.dims[0]
        var = ident(node.name)
        src = f"o_{d}" if d in self.tiling.tile else f"i_{d}"
        self.w(f"{var} = {src}.to(tl.float32)", node.name)
        self.vals[node.name] = Val(var, frozenset([d]), False)
        return self.vals[node.name]

    def map(self, node: Map, expr: sp.Basic | None = None) -> Val:
        var = ident(node.name)
        expr = node.expr if expr is None else expr
        self.need(expr)
        dims, timed, part = self.of(expr)
        self.w(f"{var} = {self.gated(expr, part)}", node.name)
        if not node.expr.free_symbols:
            self.w(f"{var} = {var} + tl.zeros([1] * {1 + len(self.tiling.tile)}, tl.float32)")
        self.vals[node.name] = Val(var, dims, timed, part)
        return self.vals[node.name]

    def sum(self, node: Sum, allow_partial: bool) -> Val:
        x, d, t = self.vals[node.arg], node.dim, self.tiling
        var = ident(node.name)
        if d not in x.dims:
            self.w(f"{var} = {x.var} * size_{d}", node.name)
            val = Val(var, x.dims, x.timed, x.partial)
        elif d == t.unroll:  # added up over the unrolled loop; zeroed before it
            self.w(f"{var} += {x.var} if EVEN else tl.where(m_{d}, {x.var}, 0.0)", node.name)
            self.zeroed.append(f"{var} = tl.zeros({t.shape(x.dims - {d}, x.timed)}, "
                               "tl.float32)")
            val = Val(var, x.dims - {d}, x.timed, x.partial)
        elif d in t.tile:
            masked = f"tl.where(m_{d}, {x.var}, 0.0)"
            if t.unroll is not None:  # EVEN: no index past the dim's size (Launch.arguments)
                masked = f"({x.var} if EVEN else {masked})"
            self.w(f"{var} = tl.sum({masked}, axis={t.axis(d)}, keep_dims=True)", node.name)
            partial = x.partial | ({d} if d in t.split else set())
            val = Val(var, x.dims - {d}, x.timed, frozenset(partial))
        else:  # a grid dim: this program holds one index of it
            self.w(f"{var} = {x.var}", node.name)
            val = Val(var, x.dims - {d}, x.timed, x.partial | {d})
        if val.partial and not allow_partial:
            raise Unsupported(f"{node.name}: a sum over dim {d!r}, which is spread over programs "
                              "(make it fit one block)")
        self.vals[node.name] = val
        return val

    def rename(self, node) -> Val:
        """Dims renamed in registers: the axes of old and new dims trade places."""
        x, t = self.vals[node.arg], self.tiling
        var = ident(node.name)
        perm = list(range(1 + len(t.tile)))
        mapping = dict(node.mapping)
        for old, new in mapping.items():
            if old in x.dims and (old not in t.tile or new not in t.tile):
                raise Unsupported(f"{node.name}: renaming {old}->{new} needs both dims whole "
                                  "in one program")
        moved = {t.axis(new): t.axis(old) for old, new in mapping.items() if old in x.dims}
        back = {t.axis(old): t.axis(new) for old, new in mapping.items() if old in x.dims}
        for j in range(len(perm)):
            perm[j] = moved.get(j, back.get(j, j))
        self.w(f"{var} = tl.permute({x.var}, ({', '.join(map(str, perm))}))", node.name)
        dims = frozenset(mapping.get(d, d) for d in x.dims)
        self.vals[node.name] = Val(var, dims, x.timed, x.partial)
        return self.vals[node.name]

    def shift(self, node) -> Val:
        """out[i] = x[i - k] along a whole tile dim (zero outside), by a gather."""
        x, t, d, k = self.vals[node.arg], self.tiling, node.dim, node.offset
        if d not in t.tile or d in t.split:
            raise Unsupported(f"{node.name}: a shift along {d!r} needs the dim whole in one "
                              "program")
        var = ident(node.name)
        full = self.full(x, x.dims | {d}, x.timed)
        self.w(f"{var} = tl.gather({full}, tl.broadcast_to(tl.minimum(tl.maximum(o_{d} - {k}, "
               f"0), BLOCK_{d} - 1), {full}.shape), {t.axis(d)})", node.name)
        self.w(f"{var} = tl.where((o_{d} - {k} >= 0) & (o_{d} - {k} < size_{d}), {var}, 0.0)")
        self.vals[node.name] = Val(var, x.dims | {d}, x.timed, x.partial)
        return self.vals[node.name]

    def full(self, val: Val, dims, timed: bool) -> str:
        """`val` broadcast to the register shape of `dims` (with time if `timed`)."""
        return f"({val.var} + tl.zeros({self.tiling.shape(dims, timed)}, tl.float32))"
