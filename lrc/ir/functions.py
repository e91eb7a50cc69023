"""The functions a step may use: sympy classes for those sympy lacks, and their evaluation rules.

Each function has its rules next to it: the sympy class (with `fdiff`, its derivative, and its
realness) and an entry in `EVAL`, the torch implementation the reference interpreter runs.
A sympy node with no rule raises `NotImplementedError(type)` rather than guessing.
"""
from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from typing import Any

import sympy as sp
import torch
from sympy.codegen.cfunctions import expm1, log1p

Value = Any  # a torch.Tensor or a Python number


class softplus(sp.Function):  # noqa: N801 (sympy functions are lower-case)
    """log(1 + exp(x))."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_is_extended_real(self):
        return self.args[0].is_extended_real


class sigmoid(sp.Function):  # noqa: N801
    """1 / (1 + exp(-x))."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_is_extended_real(self):
        return self.args[0].is_extended_real


class phi1(sp.Function):  # noqa: N801
    """(exp(x) - 1) / x, with phi1(0) = 1: ZOH's input coefficient, stable as x -> 0."""

    def fdiff(self, argindex=1):
        x = self.args[0]
        return (sp.exp(x) - phi1(x)) / x

    def _eval_is_extended_real(self):
        return self.args[0].is_extended_real


class cabs(sp.Function):  # noqa: N801
    """|a + ib| = sqrt(a^2 + b^2) of a complex value split in parts; its derivative at 0 is 0
    (the subgradient torch's abs uses), not the 0/0 of sqrt's."""

    nargs = 2

    def fdiff(self, argindex=1):
        a, b = self.args
        part = (a, b)[argindex - 1]
        return sp.Piecewise((sp.Integer(0), sp.Eq(a, 0) & sp.Eq(b, 0)), (part / self, True))

    def _eval_is_extended_real(self):
        return True


def _marker(name: str, doc: str) -> type[sp.Function]:
    """A discretization helper kept whole until the expansion pass rewrites it."""
    return type(name, (sp.Function,), {"__doc__": doc, "nargs": 2})


# The discretization helpers (docs/lowerings.md), as two-argument functions of (dt, A).
# `*_a` is the state coefficient A-bar; `*_b` multiplies B to give B-bar.
zoh_a = _marker("zoh_a", "exp(dt*A)")
zoh_b = _marker("zoh_b", "(exp(dt*A) - 1) / A")
bilinear_a = _marker("bilinear_a", "(1 + dt*A/2) / (1 - dt*A/2)")
bilinear_b = _marker("bilinear_b", "dt / (1 - dt*A/2)")
euler_a = _marker("euler_a", "1 + dt*A")
euler_b = _marker("euler_b", "dt")
mamba_a = _marker("mamba_a", "exp(dt*A)")
mamba_b = _marker("mamba_b", "dt")
MARKERS = (zoh_a, zoh_b, bilinear_a, bilinear_b, euler_a, euler_b, mamba_a, mamba_b)


# ---- evaluation rules: sympy node type -> torch implementation over evaluated args

def _tensor(x: Value, like: Value) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    ref = like if isinstance(like, torch.Tensor) else None
    dtype = ref.dtype if ref is not None else torch.float64
    if isinstance(x, complex) and not dtype.is_complex:
        dtype = torch.complex128
    return torch.as_tensor(x, dtype=dtype, device=ref.device if ref is not None else None)


def _pow(base: Value, exp: Value, node: sp.Pow) -> Value:
    e = node.exp
    if e == sp.Rational(1, 2):
        return torch.sqrt(_tensor(base, base))
    if e == sp.Rational(-1, 2):
        return torch.rsqrt(_tensor(base, base))
    if e.is_Integer:
        return base ** int(e)
    return torch.pow(_tensor(base, exp), exp)


def _where(*pairs: Value) -> Value:
    """Piecewise((v0, c0), (v1, c1), ..., (vk, True)) -> nested torch.where."""
    values, conds = pairs[0::2], pairs[1::2]
    out = values[-1]
    for v, c in zip(reversed(values[:-1]), reversed(conds[:-1])):
        if isinstance(c, bool):
            out = v if c else out
        else:
            out = torch.where(c, _tensor(v, out), _tensor(out, v))
    return out


def _size(x: Value) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else 0


def _fold(op: Callable[[Value, Value], Value]) -> Callable[..., Value]:
    # smallest operands first: broadcasting to the full shape happens once, at the end
    return lambda *xs: functools.reduce(op, sorted(xs, key=_size) if len(xs) > 2 else xs)


def _tmax(a: Value, b: Value) -> Value:
    return torch.maximum(_tensor(a, b), _tensor(b, a))


def _tmin(a: Value, b: Value) -> Value:
    return torch.minimum(_tensor(a, b), _tensor(b, a))


def _cabs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """hypot(a, b) whose autograd gradient at (0, 0) is 0, as cabs.fdiff says (not NaN)."""
    zero = (a == 0) & (b == 0)
    r = torch.hypot(torch.where(zero, torch.ones_like(a), a), torch.where(zero, 0 * b, b))
    return torch.where(zero, torch.zeros_like(r), r)


def _phi1(x: Value) -> Value:
    x = _tensor(x, x)
    small = x.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1 + x / 2, torch.expm1(safe) / safe)


class _Tanh(torch.autograd.Function):
    """tanh whose gradient is sech(x)**2 = 1 / cosh(x)**2 rather than torch's 1 - tanh(x)**2:
    the same value without the cancellation that loses every digit in float32 where tanh
    saturates (at x = 9, 6.1e-8 against float32's 1 - 0.99999994**2). The kernels' derivatives
    take the same form (passes/derivatives.sech_form); this is the rule where torch's autograd
    differentiates an expression (the conv lowering's and the interpreter's)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        c = torch.cosh(x)  # overflows to inf past |x| ~ 89 in float32: a gradient of 0
        return g / (c * c)


def _tanh(x: Value) -> torch.Tensor:
    x = _tensor(x, x)
    if x.requires_grad and not x.is_complex():
        return _Tanh.apply(x)
    return torch.tanh(x)


EVAL: dict[type, Callable[..., Value]] = {
    sp.Add: _fold(operator.add),
    sp.Mul: _fold(operator.mul),
    sp.exp: lambda x: torch.exp(_tensor(x, x)),
    sp.log: lambda x: torch.log(_tensor(x, x)),
    sp.tanh: _tanh,
    sp.cos: lambda x: torch.cos(_tensor(x, x)),
    sp.sin: lambda x: torch.sin(_tensor(x, x)),
    sp.Abs: lambda x: torch.abs(_tensor(x, x)),
    sp.re: lambda x: torch.real(_tensor(x, x)),
    sp.im: lambda x: torch.imag(_tensor(x, x)) if _tensor(x, x).is_complex() else 0 * x,
    sp.conjugate: lambda x: torch.conj(_tensor(x, x)).resolve_conj(),
    sp.Max: _fold(_tmax),
    sp.Min: _fold(_tmin),
    sp.Piecewise: _where,
    sp.StrictGreaterThan: operator.gt,
    sp.GreaterThan: operator.ge,
    sp.StrictLessThan: operator.lt,
    sp.LessThan: operator.le,
    sp.Equality: operator.eq,
    sp.Unequality: operator.ne,
    sp.And: _fold(operator.and_),
    sp.Or: _fold(operator.or_),
    sp.Not: lambda x: ~x,
    expm1: lambda x: torch.expm1(_tensor(x, x)),
    # derivatives of maximum/minimum/abs (the backward of a running max)
    sp.Heaviside: lambda x, *h0: torch.heaviside(
        _tensor(x, x), torch.tensor(0.5, dtype=torch.float64, device=_tensor(x, x).device)),
    sp.sign: lambda x: torch.sign(_tensor(x, x)),
    log1p: lambda x: torch.log1p(_tensor(x, x)),
    softplus: lambda x: torch.logaddexp(_tensor(x, x), torch.zeros_like(_tensor(x, x))),
    sigmoid: lambda x: torch.sigmoid(_tensor(x, x)),
    phi1: _phi1,
    cabs: lambda a, b: _cabs(_tensor(a, b), _tensor(b, a)),
    # the discretization helpers by their textbook formulas (the expansion pass must agree)
    zoh_a: lambda dt, a: torch.exp(_tensor(dt * a, a)),
    zoh_b: lambda dt, a: torch.expm1(_tensor(dt * a, a)) / a,
    bilinear_a: lambda dt, a: (1 + dt * a / 2) / (1 - dt * a / 2),
    bilinear_b: lambda dt, a: dt / (1 - dt * a / 2),
    euler_a: lambda dt, a: 1 + dt * a,
    euler_b: lambda dt, a: dt * (0 * a + 1),
    mamba_a: lambda dt, a: torch.exp(_tensor(dt * a, a)),
    mamba_b: lambda dt, a: dt * (0 * a + 1),
}

_CONSTANTS: dict[type, Value] = {
    sp.core.numbers.Pi: math.pi,
    sp.core.numbers.Exp1: math.e,
    sp.core.numbers.ImaginaryUnit: 1j,
    sp.logic.boolalg.BooleanTrue: True,
    sp.logic.boolalg.BooleanFalse: False,
}


def evaluate(expr: sp.Basic, env: dict[sp.Symbol, Value],
             memo: dict[sp.Basic, Value] | None = None) -> Value:
    """Evaluate a sympy expression over torch tensors bound to its free symbols."""
    memo = {} if memo is None else memo
    if expr in memo:
        return memo[expr]
    if isinstance(expr, sp.Symbol):
        value = env[expr]
    elif type(expr) in _CONSTANTS:
        value = _CONSTANTS[type(expr)]
    elif expr.is_Number:
        value = complex(expr) if not expr.is_real else float(expr)
    elif isinstance(expr, sp.Pow):
        value = _pow(evaluate(expr.base, env, memo), evaluate(expr.exp, env, memo), expr)
    elif isinstance(expr, sp.Piecewise):
        flat = [evaluate(x, env, memo) for pair in expr.args for x in pair]
        value = _where(*flat)
    else:
        rule = EVAL.get(type(expr))
        if rule is None:
            raise NotImplementedError(f"no evaluation rule for {type(expr).__name__}: {expr}")
        value = rule(*(evaluate(a, env, memo) for a in expr.args))
    memo[expr] = value
    return value


class Tape:
    """An expression compiled once into steps (shared subexpressions computed once), run with
    `evaluate`'s rules over values bound by symbol name: what runs on every call (a Map node
    of the interpreter, the Params' terms the kernels read, the conv lowering's expressions),
    without walking and hashing the sympy tree each time."""

    def __init__(self, expr: sp.Basic, inline: dict[str, sp.Basic] | None = None,
                 outputs: tuple[sp.Basic, ...] = ()):
        """`inline`: symbols (by name) whose expressions are computed here, not read from the
        environment; `outputs`: further expressions computed in the same steps (`many`)."""
        self.steps: list[tuple] = []
        index: dict[sp.Basic, int] = {}
        inline = inline or {}

        def visit(e: sp.Basic) -> int:
            if e in index:
                return index[e]
            if isinstance(e, sp.Symbol) and e.name in inline:
                index[e] = visit(inline[e.name])
                return index[e]
            if isinstance(e, sp.Symbol):
                step: tuple = ("symbol", e.name)
            elif type(e) in _CONSTANTS:
                step = ("const", _CONSTANTS[type(e)])
            elif e.is_Number:
                step = ("const", complex(e) if not e.is_real else float(e))
            elif isinstance(e, sp.Pow):
                step = ("pow", e, visit(e.base), visit(e.exp))
            elif isinstance(e, sp.Piecewise):
                step = ("where", [visit(x) for pair in e.args for x in pair])
            elif type(e) in EVAL:
                step = ("call", EVAL[type(e)], [visit(a) for a in e.args])
            else:
                raise NotImplementedError(f"no evaluation rule for {type(e).__name__}: {e}")
            index[e] = len(self.steps)
            self.steps.append(step)
            return index[e]

        self.out = visit(expr)
        self.outs = (self.out,) + tuple(visit(e) for e in outputs)
        self.names = tuple(sorted({s[1] for s in self.steps if s[0] == "symbol"}))

    @property
    def ops(self) -> int:
        """The tensor operations one run performs (each a kernel launch on a GPU)."""
        return sum(1 for s in self.steps if s[0] != "symbol" and s[0] != "const")

    def __call__(self, env: dict[str, object]):
        """The value (a tensor, or a Python number for a constant expression)."""
        return self.run(env)[self.out]

    def many(self, env: dict[str, object]) -> list:
        """The values of all outputs (the first expression, then `outputs`)."""
        vals = self.run(env)
        return [vals[i] for i in self.outs]

    def run(self, env: dict[str, object]) -> list:
        vals: list = []
        for step in self.steps:
            kind = step[0]
            if kind == "symbol":
                vals.append(env[step[1]])
            elif kind == "const":
                vals.append(step[1])
            elif kind == "pow":
                vals.append(_pow(vals[step[2]], vals[step[3]], step[1]))
            elif kind == "where":
                vals.append(_where(*(vals[i] for i in step[1])))
            else:
                vals.append(step[1](*(vals[i] for i in step[2])))
        return vals


@functools.lru_cache(maxsize=4096)
def tape(expr: sp.Basic) -> Tape:
    """`expr`'s Tape, compiled once per expression."""
    return Tape(expr)


def is_complex(expr: sp.Basic) -> bool:
    """Whether the value may be complex: complex symbols or I, outside re/im/abs."""
    if isinstance(expr, sp.Symbol):
        return not expr.is_real
    if expr.is_extended_real:  # sympy proved it real (|z|^2 = z conj(z), arg z, ...)
        return False
    if isinstance(expr, (sp.re, sp.im, sp.Abs, sp.core.relational.Relational,
                         sp.logic.boolalg.Boolean)):
        return False
    if isinstance(expr, sp.core.numbers.ImaginaryUnit):
        return True
    if expr.is_Number:
        return not expr.is_real
    if isinstance(expr, sp.Piecewise):
        return any(is_complex(v) for v, _ in expr.args)
    if isinstance(expr, sp.Mul):  # z * conj(z) is real
        rest = list(expr.args)
        for a in expr.args:
            c = sp.conjugate(a)
            if a in rest and c in rest and c != a:
                rest.remove(a)
                rest.remove(c)
        return any(is_complex(a) for a in rest)
    return any(is_complex(a) for a in expr.args)


def supported(expr: sp.Basic) -> list[sp.Basic]:
    """The subexpressions of `expr` that no rule evaluates (empty when all are known)."""
    bad = []
    for node in sp.preorder_traversal(expr):
        known = (isinstance(node, (sp.Symbol, sp.Pow, sp.Piecewise, sp.core.containers.Tuple))
                 or node.is_Number or type(node) in _CONSTANTS or type(node) in EVAL
                 or isinstance(node, sp.logic.boolalg.BooleanAtom))
        if not known:
            bad.append(node)
    return bad


# ---- appended for the complex lowering (lrc/passes/complex.py): the argument of a complex number

def _atan2(y: Value, x: Value) -> Value:
    return torch.atan2(_tensor(y, x), _tensor(x, y))


# atan2(y, x): arg(x + iy); also what sympy makes of im(log(z)) on its own
EVAL[sp.atan2] = _atan2


# what sympy's own re/im evaluation writes: re(cos z) = cos(re z) cosh(im z), im(log z) = arg z
EVAL[sp.cosh] = lambda x: torch.cosh(_tensor(x, x))
EVAL[sp.sech] = lambda x: 1 / torch.cosh(_tensor(x, x))  # tanh's derivative, sech^2
EVAL[sp.sinh] = lambda x: torch.sinh(_tensor(x, x))
EVAL[sp.arg] = lambda x: torch.angle(_tensor(x, x))


# ---- appended by the foundation tests: sympy folds a comparison of a `where` into ITE

def _ite(c: Value, a: Value, b: Value) -> Value:
    """ITE(c, a, b) of booleans: what sympy makes of `where(c, x, y) > z`."""
    if isinstance(c, bool):
        return a if c else b
    return torch.where(c, torch.as_tensor(a, device=c.device), torch.as_tensor(b, device=c.device))


EVAL[sp.ITE] = _ite


# zoh_b as dt * phi1(dt*A): the same (exp(dt*A) - 1) / A, but finite at A = 0, where it is dt
EVAL[zoh_b] = lambda dt, a: dt * _phi1(dt * a)
