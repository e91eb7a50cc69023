"""Argument annotations: named dims whose order is the memory layout.

`Seq("b t (g r) p")` names five dims laid out in four memory axes; a parenthesized group is one
memory axis holding several named dims (outer first), which is how Mamba-2's heads share B and C
within a group: B is `Seq("b t g n")`, x is `Seq("b t (g r) p")`.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\(|\)|[A-Za-z_][A-Za-z0-9_]*|\S")


class Role(enum.Enum):
    SEQ = "Seq"
    PARAM = "Param"
    STATE = "State"
    INDEX = "Index"


@dataclass(frozen=True, slots=True)
class Annotation:
    """The declared role, dims and layout of one argument of a step function."""

    role: Role
    axes: tuple[tuple[str, ...], ...]
    complex: bool = False
    text: str = ""

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(d for axis in self.axes for d in axis)

    def __repr__(self) -> str:
        extra = ", complex=True" if self.complex else ""
        return f'{self.role.value}("{self.text}"{extra})'


def parse_axes(text: str) -> tuple[tuple[str, ...], ...]:
    """'b t (g r) p' -> (('b',), ('t',), ('g', 'r'), ('p',)); raises on malformed text."""
    if not isinstance(text, str):
        raise TypeError(f"dims must be a string such as 'b t d', got {text!r}")
    axes: list[tuple[str, ...]] = []
    group: list[str] | None = None
    for tok in _TOKEN.findall(text):
        if tok == "(":
            if group is not None:
                raise ValueError(f"nested parentheses in dims {text!r}")
            group = []
        elif tok == ")":
            if group is None:
                raise ValueError(f"unbalanced ')' in dims {text!r}")
            if not group:
                raise ValueError(f"empty group '()' in dims {text!r}")
            axes.append(tuple(group))
            group = None
        elif tok.isidentifier():
            if group is not None:
                group.append(tok)
            else:
                axes.append((tok,))
        else:
            raise ValueError(f"unexpected {tok!r} in dims {text!r}: use names separated by spaces")
    if group is not None:
        raise ValueError(f"unbalanced '(' in dims {text!r}")
    names = [d for axis in axes for d in axis]
    dup = sorted({d for d in names if names.count(d) > 1})
    if dup:
        raise ValueError(f"dim {dup[0]!r} appears twice in {text!r}")
    return tuple(axes)


def Seq(dims: str, *, complex: bool = False) -> Annotation:  # noqa: N802 (a type-like constructor)
    """A per-time-step input: its dims include the time dim."""
    return Annotation(Role.SEQ, parse_axes(dims), complex, dims)


def Param(dims: str = "", *, complex: bool = False) -> Annotation:  # noqa: N802
    """A time-independent input (weights, decay rates); never has the time dim."""
    return Annotation(Role.PARAM, parse_axes(dims), complex, dims)


def State(dims: str = "", *, complex: bool = False) -> Annotation:  # noqa: N802
    """The carried state; the step returns its new value, which must be affine in the old one."""
    return Annotation(Role.STATE, parse_axes(dims), complex, dims)
