"""Symbolic tensors: what a step function's arguments are while lrc traces it.

Every operation records a `TraceOp` (what was done, to what, on which line) and checks dims
eagerly, so a bad `.sum("x")` fails on its own line. Nothing is turned into sympy until the
step returns (see `trace.build_graph`), so the value the step returns as a new state keeps its
identity wherever else the step used it.
"""
from __future__ import annotations

import cmath
import contextvars
import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
import torch

from ..errors import SpecError, Src, user_src
from . import functions as F  # noqa: N812 (F: the function table, as torch's F)

_TRACER: contextvars.ContextVar = contextvars.ContextVar("lrc_tracer", default=None)


@dataclass(eq=False)
class TraceOp:
    """One recorded operation. Compared by identity: two ops are the same only if one object."""

    kind: str                          # 'input' | 'const' | 'fn' | 'sum' | 'rename' | 'shift'
    dims: tuple[str, ...]
    complex: bool
    args: tuple[TraceOp, ...] = ()
    fn: Callable[..., sp.Basic] | None = None
    value: sp.Basic | None = None      # const
    name: str = ""                     # input
    dim: str = ""                      # sum, shift
    mapping: tuple[tuple[str, str], ...] = ()
    boolean: bool = False
    src: Src | None = field(default=None)


class SymTensor:
    """A tensor of the step: a value per index of its named dims, for the current time step."""

    __slots__ = ("op",)
    __array_priority__ = 1000  # so numpy scalars defer to our reflected operators

    def __init__(self, op: TraceOp):
        self.op = op

    @property
    def dims(self) -> tuple[str, ...]:
        return self.op.dims

    def __repr__(self) -> str:
        return f"SymTensor(dims={self.dims}, complex={self.op.complex})"

    # arithmetic
    def __add__(self, o): return apply("+", lambda a, b: a + b, self, o)
    def __radd__(self, o): return apply("+", lambda a, b: a + b, o, self)
    def __sub__(self, o): return apply("-", lambda a, b: a - b, self, o)
    def __rsub__(self, o): return apply("-", lambda a, b: a - b, o, self)
    def __mul__(self, o): return apply("*", lambda a, b: a * b, self, o)
    def __rmul__(self, o): return apply("*", lambda a, b: a * b, o, self)
    def __truediv__(self, o): return apply("/", lambda a, b: a / b, self, o)
    def __rtruediv__(self, o): return apply("/", lambda a, b: a / b, o, self)
    def __pow__(self, o): return apply("**", lambda a, b: a ** b, self, o)
    def __rpow__(self, o): return apply("**", lambda a, b: a ** b, o, self)
    def __neg__(self): return apply("-", lambda a: -a, self)
    def __pos__(self): return self
    def __abs__(self): return apply("abs", sp.Abs, self)

    # comparisons give boolean tensors, for `where`
    def __lt__(self, o): return compare(sp.StrictLessThan, self, o)
    def __le__(self, o): return compare(sp.LessThan, self, o)
    def __gt__(self, o): return compare(sp.StrictGreaterThan, self, o)
    def __ge__(self, o): return compare(sp.GreaterThan, self, o)
    def __and__(self, o): return logic(sp.And, self, o)
    def __or__(self, o): return logic(sp.Or, self, o)
    def __invert__(self): return logic(sp.Not, self)
    __hash__ = object.__hash__

    def __bool__(self):
        raise SpecError("a symbolic tensor has no truth value inside a step: "
                        "use lrc.where(cond, a, b) instead of `if`", user_src())

    def _not_a_number(self, what: str):
        raise SpecError(f"{what}: a symbolic tensor is not a number inside a step (it holds a "
                        f"value per index of its dims {_fmt(self.dims)}, known only when the "
                        "layer runs); use lrc's functions (lrc.exp, lrc.log, ...), not math's, "
                        "numpy's or float()/int()", user_src())

    # math.exp(x), float(x), int(x), range(x), numpy.exp(x) convert through these
    def __float__(self): self._not_a_number("float(...) or a math function")
    def __int__(self): self._not_a_number("int(...)")
    def __complex__(self): self._not_a_number("complex(...)")
    def __index__(self): self._not_a_number("an integer index or size")
    def __array__(self, *args, **kwargs): self._not_a_number("a numpy function")

    @property
    def shape(self):
        raise SpecError(f".shape of a symbolic tensor inside a step: sizes are known only when "
                        f"the layer is called; dims are named (this tensor has dims "
                        f"{_fmt(self.dims)}: use .sum(dim), .rename(...) and broadcasting by name)",
                        user_src())

    def __iter__(self):
        raise SpecError("a symbolic tensor cannot be iterated or indexed inside a step: "
                        "name dims in the annotations and use .sum(dim)", user_src())

    def __getitem__(self, item):
        raise SpecError("a symbolic tensor cannot be indexed inside a step: "
                        "broadcasting is by dim name; use .sum(dim) or .rename(...)", user_src())

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        # skip torch's frames too: Python-level functions (F.silu) call this from inside torch
        raise SpecError(f"torch.{name} was called on a symbolic tensor inside a step: "
                        f"use lrc's functions (lrc.exp, lrc.sigmoid, ...)",
                        user_src(skip=(os.path.dirname(os.path.abspath(torch.__file__)),)))

    # complex parts
    @property
    def real(self) -> SymTensor:
        return apply("real", sp.re, self)

    @property
    def imag(self) -> SymTensor:
        return apply("imag", sp.im, self)

    def conj(self) -> SymTensor:
        return apply("conj", sp.conjugate, self)

    def abs(self) -> SymTensor:
        return apply("abs", sp.Abs, self)

    # dims
    def sum(self, *dims: str) -> SymTensor:
        """Sum over the named dims (not the time dim)."""
        if not dims:
            raise SpecError(".sum() needs the dims to reduce, e.g. .sum('n')", user_src())
        out = self
        for d in dims:
            out = out._sum1(d)
        return out

    def _sum1(self, dim: str) -> SymTensor:
        tr, src = _tracer(), user_src()
        _check_bool(self, ".sum", src)
        if dim == tr.time:
            raise SpecError(f".sum({dim!r}): {dim!r} is the time dim; a step sees one time step",
                            src)
        if dim not in self.dims:
            raise SpecError(f".sum({dim!r}): unknown dim {dim!r}; this tensor has dims "
                            f"{_fmt(self.dims)}", src)
        dims = tuple(d for d in self.dims if d != dim)
        return SymTensor(TraceOp("sum", dims, self.op.complex, (self.op,), dim=dim, src=src))

    def rename(self, **mapping: str) -> SymTensor:
        """The same values with dims renamed, e.g. h.rename(n="m") for a matrix-vector product."""
        tr, src = _tracer(), user_src()
        for old, new in mapping.items():
            if old not in self.dims:
                raise SpecError(f".rename({old}={new!r}): unknown dim {old!r}; this tensor has "
                                f"dims {_fmt(self.dims)}", src)
            if not isinstance(new, str) or not new.isidentifier():
                raise SpecError(f".rename({old}={new!r}): a dim name must be an identifier", src)
            if new == tr.time:
                raise SpecError(f".rename({old}={new!r}): {new!r} is the time dim", src)
        renamed = [mapping.get(d, d) for d in self.dims]
        if len(set(renamed)) != len(renamed):
            dup = sorted({d for d in renamed if renamed.count(d) > 1})[0]
            raise SpecError(f".rename(...): dim {dup!r} would appear twice; this tensor has dims "
                            f"{_fmt(self.dims)}", src)
        for old, new in mapping.items():
            tr.add_alias(new, old)
        dims = tr.order(renamed)
        return SymTensor(TraceOp("rename", dims, self.op.complex, (self.op,),
                                 mapping=tuple(sorted(mapping.items())), src=src))

    def shift(self, dim: str, fill: Any = 0) -> SymTensor:
        """out[i] = self[i-1] along `dim`, out[0] = fill: one step of a shift register."""
        return shift(self, dim, fill)


# ---- building ops

def _tracer():
    tr = _TRACER.get()
    if tr is None:
        raise RuntimeError("symbolic tensors exist only while @lrc.recurrence traces a step")
    return tr


def _fmt(dims) -> str:
    return "(" + ", ".join(dims) + ")" if dims else "() (a scalar)"


def _check_bool(x: SymTensor, what: str, src: Src | None) -> None:
    if x.op.boolean:
        raise SpecError(f"{what} of a boolean (a comparison's result): use lrc.where", src)


def lift(x: Any, src: Src | None = None) -> TraceOp:
    """A SymTensor's op, or a constant op for a Python number."""
    if isinstance(x, SymTensor):
        return x.op
    if isinstance(x, bool):
        return TraceOp("const", (), False, value=sp.true if x else sp.false, boolean=True, src=src)
    if isinstance(x, numbers.Number) and not isinstance(x, torch.Tensor):
        if isinstance(x, numbers.Integral):
            return TraceOp("const", (), False, value=sp.Integer(int(x)), src=src)
        if isinstance(x, numbers.Real):
            if math.isnan(float(x)):
                raise SpecError("a NaN constant inside a step: every value it touches would be "
                                "NaN", src)
            return TraceOp("const", (), False, value=sp.Float(float(x)), src=src)
        z = complex(x)
        if cmath.isnan(z):
            raise SpecError(f"a NaN constant ({z}) inside a step: every value it touches would "
                            "be NaN", src)
        re_, im_ = (sp.Integer(int(v)) if float(v).is_integer() else sp.Float(v)
                    for v in (z.real, z.imag))
        value = re_ + im_ * sp.I
        return TraceOp("const", (), z.imag != 0, value=value, src=src)
    if isinstance(x, torch.Tensor):
        raise SpecError("a torch.Tensor was used inside a step: pass tensors as arguments "
                        "annotated Seq(...) or Param(...); only Python numbers are constants", src)
    raise SpecError(f"cannot use {type(x).__name__} {x!r} inside a step: "
                    "only symbolic tensors and Python numbers", src)


_REAL_RESULT = {"real", "imag", "abs"}
_REAL_ONLY = {"softplus", "sigmoid", "tanh", "maximum", "minimum", "logsigmoid", "silu", "relu"}


def apply(name: str, fn: Callable[..., sp.Basic], *xs: Any) -> SymTensor:
    """Record `fn` applied to `xs` (symbolic tensors or numbers), broadcasting dims by name."""
    tr, src = _tracer(), user_src()
    ops = tuple(lift(x, src) for x in xs)
    for op in ops:
        if op.boolean:
            raise SpecError(f"{name}(...) of a boolean (a comparison's result): use lrc.where",
                            src)
    cplx = any(op.complex for op in ops)
    if cplx and name in _REAL_ONLY:
        raise SpecError(f"{name}(...) of a complex tensor: take .real, .imag or .abs() first",
                        src)
    if name in _REAL_RESULT:
        cplx = False
    dims = tr.order(d for op in ops for d in op.dims)
    return SymTensor(TraceOp("fn", dims, cplx, ops, fn=fn, src=src))


def compare(rel: type, a: Any, b: Any) -> SymTensor:
    tr, src = _tracer(), user_src()
    ops = (lift(a, src), lift(b, src))
    if any(op.complex for op in ops):
        raise SpecError("comparison of complex tensors: compare .real, .imag or .abs()", src)
    dims = tr.order(d for op in ops for d in op.dims)
    return SymTensor(TraceOp("fn", dims, False, ops, fn=lambda x, y: rel(x, y), boolean=True,
                             src=src))


def logic(fn: type, *xs: Any) -> SymTensor:
    tr, src = _tracer(), user_src()
    ops = tuple(lift(x, src) for x in xs)
    if not all(op.boolean for op in ops):
        raise SpecError("&, | and ~ take comparisons (boolean tensors)", src)
    dims = tr.order(d for op in ops for d in op.dims)
    return SymTensor(TraceOp("fn", dims, False, ops, fn=fn, boolean=True, src=src))


def where(cond: Any, a: Any, b: Any) -> SymTensor:
    """a where cond holds, else b (cond is a comparison of symbolic tensors)."""
    tr, src = _tracer(), user_src()
    c, x, y = lift(cond, src), lift(a, src), lift(b, src)
    if not c.boolean:
        raise SpecError("where(cond, a, b): cond must be a comparison such as x > 0", src)
    if x.boolean or y.boolean:
        raise SpecError("where(cond, a, b): a and b must be numbers, not comparisons", src)
    dims = tr.order(d for op in (c, x, y) for d in op.dims)
    return SymTensor(TraceOp("fn", dims, x.complex or y.complex, (c, x, y),
                             fn=lambda cc, xx, yy: sp.Piecewise((xx, cc), (yy, True)), src=src))


def index(dim: str) -> SymTensor:
    """The positions 0, 1, ... along `dim`, as a real tensor over that one dim."""
    tr, src = _tracer(), user_src()
    if dim not in tr.dims or dim == tr.time:
        raise SpecError(f"index({dim!r}): unknown dim {dim!r}", src)
    return SymTensor(tr.index_op(dim))


def shift(x: SymTensor, dim: str, fill: Any = 0) -> SymTensor:
    """out[i] = x[i-1] along `dim`, out[0] = fill: one step of a shift register (H3, Hyena)."""
    _tracer()  # only inside a trace
    src = user_src()
    if not isinstance(x, SymTensor):
        raise SpecError("shift(x, dim): x must be a symbolic tensor", src)
    _check_bool(x, "shift", src)
    if dim not in x.dims:
        raise SpecError(f"shift(x, {dim!r}): unknown dim {dim!r}; x has dims {_fmt(x.dims)}", src)
    moved = SymTensor(TraceOp("shift", x.dims, x.op.complex, (x.op,), dim=dim, src=src))
    if isinstance(fill, numbers.Number) and fill == 0:
        return moved
    first = compare(sp.Eq, index(dim), 0)
    return moved + where(first, fill, 0)


_TORCH_UNARY = {
    "exp": torch.exp, "log": torch.log, "tanh": torch.tanh, "sqrt": torch.sqrt,
    "sigmoid": torch.sigmoid, "softplus": torch.nn.functional.softplus, "abs": torch.abs,
    "silu": torch.nn.functional.silu, "cos": torch.cos, "sin": torch.sin,
    "expm1": torch.expm1, "log1p": torch.log1p, "relu": torch.relu,
    "logsigmoid": torch.nn.functional.logsigmoid,
}


def _unary(name: str, fn: Callable[[sp.Basic], sp.Basic], doc: str) -> Callable[[Any], Any]:
    def f(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and _TRACER.get() is None:
            return _TORCH_UNARY[name](x)
        return apply(name, fn, x)

    f.__name__ = name
    f.__doc__ = doc
    return f


exp = _unary("exp", sp.exp, "e**x.")
log = _unary("log", sp.log, "Natural logarithm.")
tanh = _unary("tanh", sp.tanh, "Hyperbolic tangent.")
sqrt = _unary("sqrt", sp.sqrt, "Square root.")
sigmoid = _unary("sigmoid", F.sigmoid, "1 / (1 + exp(-x)).")
softplus = _unary("softplus", F.softplus, "log(1 + exp(x)).")
silu = _unary("silu", lambda x: x * F.sigmoid(x), "x * sigmoid(x).")
logsigmoid = _unary("logsigmoid", lambda x: -F.softplus(-x), "log(sigmoid(x)).")
relu = _unary("relu", lambda x: sp.Max(x, 0), "max(x, 0).")
cos = _unary("cos", sp.cos, "Cosine.")
sin = _unary("sin", sp.sin, "Sine.")
expm1 = _unary("expm1", F.expm1, "exp(x) - 1, accurate near 0.")
log1p = _unary("log1p", F.log1p, "log(1 + x), accurate near 0.")


def abs(x: Any) -> Any:  # noqa: A001 (the user-facing name)
    """|x| (the modulus, for complex x)."""
    if isinstance(x, torch.Tensor) and _TRACER.get() is None:
        return torch.abs(x)
    return apply("abs", sp.Abs, x)


def maximum(a: Any, b: Any) -> SymTensor:
    """Elementwise max."""
    return apply("maximum", sp.Max, a, b)


def minimum(a: Any, b: Any) -> SymTensor:
    """Elementwise min."""
    return apply("minimum", sp.Min, a, b)
