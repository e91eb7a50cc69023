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
    """A sequence input of a step function: its dims include the time dim.

    Args:
        dims (str): dim names separated by spaces, in memory order (outermost first), for
            example "b t d" or Mamba-1's "b d t". It must name the time dim (`t` unless
            `@lrc.recurrence(time=...)` says otherwise) as an axis of its own. A parenthesized
            group is one memory axis holding several named dims, outer first: Mamba-2's
            `Seq("b t (g r) p")` is a (b, t, g*r, p) tensor whose heads h = g*r come in groups
            g that share `B: Seq("b t g n")`.
        complex (bool): the input is complex (complex64 / complex128). Default: False.

    Returns:
        Annotation: the argument's role, dims and layout. Inside the step the argument is a
        symbolic tensor over its dims without time; at call time a tensor of that layout
        (any strides: nothing is copied), e.g. `(b, t, d)` for "b t d".

    Example::

        >>> from lrc import Seq
        >>> Seq("b t (g r) p").dims
        ('b', 't', 'g', 'r', 'p')
    """
    return Annotation(Role.SEQ, parse_axes(dims), complex, dims)


def Param(dims: str = "", *, complex: bool = False) -> Annotation:  # noqa: N802
    """A time-independent input of a step function (weights, decay rates).

    Args:
        dims (str): dim names in memory order, as for `Seq`, without the time dim; "" (the
            default) is a scalar, a 0-dim tensor at call time.
        complex (bool): the parameter is complex (LRU's and S4D's eigenvalues). Default: False.

    Returns:
        Annotation: the argument's role, dims and layout. At call time a tensor of that layout,
        e.g. `(d, n)` for "d n"; gradients reach it like any PyTorch parameter.

    Example::

        >>> from lrc import Param
        >>> Param("d n", complex=True)
        Param("d n", complex=True)
    """
    return Annotation(Role.PARAM, parse_axes(dims), complex, dims)


def State(dims: str = "", *, complex: bool = False) -> Annotation:  # noqa: N802
    """The carried state of a step function: its value before the step.

    The step returns the new value, which must be affine in the old states (a decay times the
    state plus terms free of it, or a low-rank / dense mixing over a renamed dim).

    Args:
        dims (str): dim names in memory order, without the time dim. This is the layout of
            `initial_state=`, `state=` and the returned states, e.g. `(b, d, n)` for "b d n".
            Dims no Seq or Param has get their size from `initial_state` (else a CallError).
        complex (bool): a complex state (complex64 / complex128 at call time; the outputs stay
            real, take `.real` or `2 * (...).real`). Default: False.

    Returns:
        Annotation: the argument's role, dims and layout.

    Example::

        >>> from lrc import State
        >>> State("b d n").dims
        ('b', 'd', 'n')
    """
    return Annotation(Role.STATE, parse_axes(dims), complex, dims)
