"""IR nodes: frozen, hashable, one class per op.

A node's value is a tensor over its named `dims` for one time step. `Map` holds a sympy
expression whose free symbols are the names of the nodes it reads (see `symbol`); the other
ops move data between dims. Source lines ride along but take no part in equality.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..errors import Src
from .dims import Annotation, Role
from .functions import is_complex


@dataclass(frozen=True, slots=True)
class Input:
    """An argument of the step: a Seq, Param or State, or the integer positions along a dim.

    `arg` is the user's argument it comes from (its own name unless a pass split it) and `part`
    which part of it: '' the whole, 're' or 'im' the real or imaginary part of a complex one.
    """

    name: str
    role: Role
    dims: tuple[str, ...]
    annotation: Annotation
    complex: bool = False
    arg: str = ""
    part: str = ""

    def __post_init__(self) -> None:
        if not self.arg:
            object.__setattr__(self, "arg", self.name)

    @property
    def args(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Map:
    """Pointwise: `expr` over the nodes named by its free symbols, broadcast by dim name."""

    name: str
    dims: tuple[str, ...]
    expr: sp.Basic
    src: Src | None = field(default=None, compare=False)
    complex: bool = None  # type: ignore[assignment]  # None: decided from expr

    _args: tuple[str, ...] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.complex is None:
            object.__setattr__(self, "complex", is_complex(self.expr))
        object.__setattr__(self, "_args", tuple(sorted(s.name for s in self.expr.free_symbols)))

    @property
    def args(self) -> tuple[str, ...]:
        return self._args


@dataclass(frozen=True, slots=True)
class Sum:
    """Sum of `arg` over `dim`."""

    name: str
    dims: tuple[str, ...]
    arg: str
    dim: str
    complex: bool = False
    src: Src | None = field(default=None, compare=False)

    @property
    def args(self) -> tuple[str, ...]:
        return (self.arg,)


@dataclass(frozen=True, slots=True)
class Rename:
    """`arg` with dims renamed by `mapping` ((old, new), ...): `h.rename(n="m")`."""

    name: str
    dims: tuple[str, ...]
    arg: str
    mapping: tuple[tuple[str, str], ...]
    complex: bool = False
    src: Src | None = field(default=None, compare=False)

    @property
    def args(self) -> tuple[str, ...]:
        return (self.arg,)


@dataclass(frozen=True, slots=True)
class Shift:
    """`arg` moved along `dim`: out[i] = arg[i - offset], zero where that is out of range.

    offset 1 is a shift register's step (out[0] = 0); offset -1 is its adjoint."""

    name: str
    dims: tuple[str, ...]
    arg: str
    dim: str
    complex: bool = False
    src: Src | None = field(default=None, compare=False)
    offset: int = 1

    @property
    def args(self) -> tuple[str, ...]:
        return (self.arg,)


Node = Input | Map | Sum | Rename | Shift


def symbol(name: str, complex: bool = False) -> sp.Symbol:
    """The sympy symbol by which a `Map` reads the node `name`."""
    return sp.Symbol(name) if complex else sp.Symbol(name, real=True)


def node_symbol(node: Node) -> sp.Symbol:
    return symbol(node.name, node.complex)
