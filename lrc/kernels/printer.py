"""TritonPrinter: sympy expressions -> Triton expressions.

One `_print_<Node>` method per sympy node type (sympy's printer protocol); functions without a
Triton builtin call helpers that every generated module defines at its top (`HELPERS`), so the
module runs the same under Triton's interpreter and compiled for the GPU.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.str import StrPrinter

# Helper jit functions emitted into every generated module (defined there, so they are
# interpreted or compiled together with the kernels that call them).
HELPERS = '''
@triton.jit
def _expm1(x):
    # exp(x) - 1: Kahan's (u - 1) * x / log(u), u = exp(x), where it cancels (|x| < 1), u - 1
    # elsewhere; the unused lanes divide safe values (no 0/0 or inf/inf under the interpreter)
    u = tl.exp(x)
    um1 = u - 1.0
    near = (tl.abs(x) < 1.0) & (um1 != 0.0)
    kahan = tl.where(near, um1, 1.0) * x / tl.log(tl.where(near, u, 2.718281828459045))
    return tl.where(near, kahan, tl.where(um1 == 0.0, x, um1))


@triton.jit
def _log1p(x):
    # log(1 + x): Kahan's log(u) * x / (u - 1), u = 1 + x, where it cancels (|x| < 0.5),
    # log(u) elsewhere; the unused lanes divide safe values
    u = 1.0 + x
    near = (tl.abs(x) < 0.5) & (u != 1.0)
    kahan = tl.log(tl.where(near, u, 2.718281828459045)) * x / tl.where(near, u - 1.0, 1.0)
    return tl.where(near, kahan, tl.where(u == 1.0, x, tl.log(u)))


@triton.jit
def _softplus(x):
    # log(1 + exp(x)), linear above 20 like PyTorch
    return tl.where(x > 20.0, x, _log1p(tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _sigmoid(x):
    # exp(-x) may overflow to inf for x << 0: 1 / inf = 0, the right value, no 0/0 (the
    # branch-free form keeps the unrolled kernels' registers)
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # odd, so evaluate at -|x| where exp cannot overflow
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _sech(x):
    # 1 / cosh(x) = 2 e^-|x| / (1 + e^-2|x|), no overflow
    e = tl.exp(-tl.abs(x))
    return 2.0 * e / (1.0 + e * e)


@triton.jit
def _first(a, b):
    return a


@triton.jit
def _after(x, y):
    # x, with a data dependency on y: prmt with selector 0x3210 returns x's four bytes
    return tl.inline_asm_elementwise("prmt.b32 $0, $1, $2, 0x3210;", "=r,r,r", [x, y],
                                     dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _phi1(x):
    # (exp(x) - 1) / x with phi1(0) = 1 and phi1(inf) = inf
    den = tl.where((x == 0.0) | (x == float("inf")), 1.0, x)
    return tl.where(tl.abs(x) < 1e-6, 1.0 + 0.5 * x, _expm1(x) / den)
'''

_CALLS = {
    "exp": "tl.exp", "log": "tl.log", "cos": "tl.cos", "sin": "tl.sin", "Abs": "tl.abs",
    "softplus": "_softplus", "sigmoid": "_sigmoid", "tanh": "_tanh", "sech": "_sech",
    "expm1": "_expm1",
    "log1p": "_log1p", "phi1": "_phi1",
}


class TritonPrinter(StrPrinter):
    """Print sympy expressions as Triton code over the given variable names."""

    def __init__(self, names: dict[str, str]):
        super().__init__()
        self.names = names

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        return self.names[expr.name]

    def _print_Integer(self, expr) -> str:
        return f"{float(expr.p)!r}"

    def _print_Rational(self, expr) -> str:
        return f"{float(expr)!r}"

    def _print_Float(self, expr) -> str:
        return repr(float(expr))

    def _print_Pi(self, expr) -> str:
        return "3.141592653589793"

    def _print_Exp1(self, expr) -> str:
        return "2.718281828459045"

    def _print_BooleanTrue(self, expr) -> str:
        return "True"

    def _print_BooleanFalse(self, expr) -> str:
        return "False"

    def _print_exp(self, expr) -> str:
        # exp(a b) as exp2((a log2 e) b): Triton's exp multiplies by log2(e) per element;
        # folded into the first factor (a param, a constant) that is one multiply less
        arg = expr.args[0]
        if arg.is_Mul and len(arg.args) > 1:
            first, rest = arg.args[0], sp.Mul(*arg.args[1:])
            return (f"tl.exp2(({self._print(first)} * 1.4426950408889634) * "
                    f"{self.parenthesize(rest, sp.printing.precedence.PRECEDENCE['Mul'])})")
        return f"tl.exp({self._print(arg)})"

    def _print_Function(self, expr) -> str:
        name = type(expr).__name__
        if name not in _CALLS:
            raise NotImplementedError(f"no Triton rule for {name}: {expr}")
        return f"{_CALLS[name]}({', '.join(self._print(a) for a in expr.args)})"

    def _print_Pow(self, expr, rational=False) -> str:
        base, e = expr.base, expr.exp
        b = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Pow"])
        if e == sp.Rational(1, 2):
            return f"tl.sqrt({self._print(base)})"
        if e == sp.Rational(-1, 2):
            return f"(1.0 / tl.sqrt({self._print(base)}))"
        if e.is_Integer and 1 <= abs(int(e)) <= 4:
            prod = "*".join([b] * abs(int(e)))
            return f"({prod})" if e > 0 else f"(1.0 / ({prod}))"
        if e.is_Integer and int(e) == 0:
            return "1.0"
        return f"tl.exp({self._print(e)} * tl.log({self._print(base)}))"

    def _print_Mul(self, expr) -> str:
        # sympy writes x/y as Mul(x, Pow(y, -1)): keep that a division
        return super()._print_Mul(expr)

    def _print_Piecewise(self, expr) -> str:
        out = self._print(expr.args[-1][0])
        for value, cond in reversed(expr.args[:-1]):
            out = f"tl.where({self._print(cond)}, {self._print(value)}, {out})"
        return out

    def _print_Relational(self, expr) -> str:
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_ITE(self, expr) -> str:
        c, a, b = (self._print(x) for x in expr.args)
        return f"tl.where({c}, {a}, {b})"

    # boolean connectives as tl.where: `&` of a scalar and a block fails under the interpreter
    def _print_And(self, expr) -> str:
        out = self._print(expr.args[-1])
        for a in reversed(expr.args[:-1]):
            out = f"tl.where({self._print(a)}, {out}, False)"
        return out

    def _print_Or(self, expr) -> str:
        out = self._print(expr.args[-1])
        for a in reversed(expr.args[:-1]):
            out = f"tl.where({self._print(a)}, True, {out})"
        return out

    def _print_Not(self, expr) -> str:
        return f"tl.where({self._print(expr.args[0])}, False, True)"

    def _print_Max(self, expr) -> str:
        return self._fold("tl.maximum", expr.args)

    def _print_Min(self, expr) -> str:
        return self._fold("tl.minimum", expr.args)

    def _print_cabs(self, expr) -> str:
        a, b = (self._print(x) for x in expr.args)
        return f"tl.sqrt({a} * {a} + {b} * {b})"

    def _print_Heaviside(self, expr) -> str:
        x = self._print(expr.args[0])
        return f"tl.where({x} > 0, 1.0, tl.where({x} < 0, 0.0, 0.5))"

    def _print_sign(self, expr) -> str:
        x = self._print(expr.args[0])
        return f"tl.where({x} > 0, 1.0, tl.where({x} < 0, -1.0, 0.0))"

    def _fold(self, fn: str, args) -> str:
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_ImaginaryUnit(self, expr) -> str:
        raise NotImplementedError("complex values reach codegen only as real/imaginary pairs")


def triton_expr(expr: sp.Basic, names: dict[str, str]) -> str:
    """`expr` as a Triton expression over the variables `names` (node name -> variable)."""
    return TritonPrinter(names).doprint(expr)
