"""Every error lrc raises at its user, each exported from `lrc`:

    SpecError     a spec refused at trace time (names the term and the line of the step)
    CallError     a call whose arguments do not fit the spec (names the argument and the dim)
    LoweringError a lowering was forced (`lrc.compile(..., lowering=)`) that cannot run the spec
    Unsupported   a spec the chosen code generator cannot run (names the node and why)
    IRError       an internal graph that breaks an invariant: a bug in lrc, not in the spec
    CacheWarning  (a warning) the cache directory or an entry in it is not used, and why
"""
from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass

_LRC_DIR = os.path.dirname(os.path.abspath(__file__))  # the lrc package


@dataclass(frozen=True, slots=True)
class Src:
    """A line of the user's step function."""

    filename: str
    lineno: int
    text: str

    def __str__(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.lineno}: {self.text}"


def user_src(skip: tuple[str, ...] = ()) -> Src | None:
    """The innermost frame on the stack that is not lrc's own code (nor under a `skip` dir)."""
    frame = sys._getframe(1)
    dirs = tuple(d + os.sep for d in (_LRC_DIR,) + skip)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(dirs):
            text = linecache.getline(filename, frame.f_lineno).strip()
            return Src(filename, frame.f_lineno, text)
        frame = frame.f_back
    return None


class SpecError(ValueError):
    """A spec that lrc refuses at trace time; the message names the term and the line."""

    def __init__(self, message: str, src: Src | None = None):
        self.src = src
        super().__init__(f"{message}\n    at {src}" if src is not None else message)


class CallError(ValueError):
    """A call of a compiled layer with arguments that do not fit the spec."""


class LoweringError(ValueError):
    """A lowering was forced that cannot run this spec; the message says why."""


class Unsupported(NotImplementedError):  # noqa: N818 (a public name)
    """A spec a lowering's code generator cannot run; the message says which node and why."""


class IRError(AssertionError):
    """A graph that breaks an invariant of the IR (lrc.ir.verify): a bug in a pass."""


class CacheWarning(UserWarning):
    """The cache directory, or an entry in it, cannot be used safely and is ignored (lrc
    works on without it); the message names the path and why."""
