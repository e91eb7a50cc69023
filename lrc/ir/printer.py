"""Deterministic text form of a Graph: names of intermediates are assigned here, at print time."""
from __future__ import annotations

import re

import sympy as sp
from sympy.printing.str import StrPrinter

from .dims import Role
from .graph import Graph
from .nodes import Input, Map, Node, Rename, Shift, Sum


class IRPrinter(StrPrinter):
    """sympy's str printer with node names remapped and lrc's function names."""

    def __init__(self, names: dict[str, str]):
        super().__init__()
        self.names = names

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        return self.names.get(expr.name, expr.name)

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        out = self._print(expr.args[-1][0])
        for value, cond in reversed(expr.args[:-1]):
            out = f"where({self._print(cond)}, {self._print(value)}, {out})"
        return out

    def _print_Equality(self, expr) -> str:
        return f"{self._print(expr.lhs)} == {self._print(expr.rhs)}"

    def _print_Max(self, expr) -> str:
        return "maximum(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Min(self, expr) -> str:
        return "minimum(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Abs(self, expr) -> str:
        return f"abs({self._print(expr.args[0])})"

    def _print_conjugate(self, expr) -> str:
        return f"conj({self._print(expr.args[0])})"

    def _print_re(self, expr) -> str:
        return f"re({self._print(expr.args[0])})"

    def _print_im(self, expr) -> str:
        return f"im({self._print(expr.args[0])})"


def print_names(g: Graph) -> dict[str, str]:
    """Intermediate nodes (named %...) renumbered %0, %1, ... in node order."""
    names: dict[str, str] = {}
    bases: dict[str, str] = {}
    for n in g.nodes:
        m = re.match(r"(%\d+)(.*)$", n.name)
        if m:
            base = bases.setdefault(m.group(1), f"%{len(bases)}")
            names[n.name] = base + m.group(2)
    return names


def format_expr(expr: sp.Basic, names: dict[str, str] | None = None) -> str:
    return IRPrinter(names or {}).doprint(expr)


def _dims(dims: tuple[str, ...]) -> str:
    return "[" + ",".join(dims) + "]"


def format_node(node: Node, names: dict[str, str]) -> str:
    nm = names.get(node.name, node.name)
    lhs = f"{nm}{_dims(node.dims)}"
    if isinstance(node, Map):
        rhs = format_expr(node.expr, names)
    elif isinstance(node, Sum):
        rhs = f"sum({names.get(node.arg, node.arg)}, {node.dim})"
    elif isinstance(node, Rename):
        pairs = ", ".join(f"{a}->{b}" for a, b in node.mapping)
        rhs = f"rename({names.get(node.arg, node.arg)}, {pairs})"
    elif isinstance(node, Shift):
        by = "" if node.offset == 1 else f", {node.offset}"
        rhs = f"shift({names.get(node.arg, node.arg)}, {node.dim}{by})"
    elif isinstance(node, Input) and node.role is Role.INDEX:
        rhs = f"index({node.dims[0]})"
    else:
        rhs = f"input {node.annotation!r}"
    return f"{lhs} = {rhs}"


def format_axes(axes) -> str:
    """(('b',), ('t',), ('g', 'r')) -> 'b t (g r)'."""
    return " ".join(a[0] if len(a) == 1 else "(" + " ".join(a) + ")" for a in axes)


def format_graph(g: Graph) -> str:
    names = print_names(g)
    args = [f"{n.name}: {n.annotation!r}" for n in g.inputs()
            if n.role is not Role.INDEX]
    lines = [f"recurrence {g.name}({', '.join(args)}):"]
    if g.time != "t":
        lines[0] += f"  # time dim {g.time!r}"
    for n in g.nodes:
        if isinstance(n, Input) and n.role is not Role.INDEX:
            continue
        lines.append("  " + format_node(n, names))
    outs = ", ".join(f"{o}: ({format_axes(ax)})" for o, ax in zip(g.outputs, g.out_axes))
    news = ", ".join(f"{s} <- {names.get(n, n)}" for s, n in g.states)
    lines.append(f"  return {outs}; {news}")
    return "\n".join(lines)
