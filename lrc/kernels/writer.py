"""Writing generated code: a line collector with indentation, and identifiers from names.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from dataclasses import dataclass, field


def ident(name: str) -> str:
    """A Python identifier for a node name: h' -> h_new, %3 -> v3, ∂y -> d_y, B.re -> B_re."""
    out = name.replace("'", "_new").replace("∂", "d_").replace(".", "_").replace("#", "idx_")
    out = re.sub(r"%(\d+)", r"v\1", out)
    out = re.sub(r"%d(\d+)", r"g\1", out)
    out = re.sub(r"[^0-9A-Za-z_]", "_", out)
    return out if not out[0].isdigit() else "v" + out


@dataclass
class Writer:
    """Collects indented source lines."""

    lines: list[str] = field(default_factory=list)
    depth: int = 1

    def __call__(self, line: str, node: str | None = None) -> None:
        self.lines.append("    " * self.depth + line + (f"  # {node}" if node else ""))

    def indent(self) -> Writer:
        self.depth += 1
        return self

    def dedent(self) -> None:
        self.depth -= 1

    def text(self) -> str:
        """The lines, with `pass` where a block opener (`if X:`) got no body."""
        out = []
        for i, line in enumerate(self.lines):
            out.append(line)
            code = line.split("#")[0].rstrip()
            if code.endswith(":"):
                depth = len(line) - len(line.lstrip())
                rest = [x for x in self.lines[i + 1:] if x.strip()]
                if not rest or len(rest[0]) - len(rest[0].lstrip()) <= depth:
                    out.append(" " * (depth + 4) + "pass")
        return "\n".join(out)


class Namespace:
    """Numbers for generated temporaries, unique within one generated module and the same
    for the same spec in every process (names come from the module, not the process)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def fresh(self, prefix: str) -> str:
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}{self.counts[prefix]}"


_NAMES: contextvars.ContextVar[Namespace | None] = contextvars.ContextVar("lrc_names",
                                                                          default=None)
_LOOSE = Namespace()  # for emitters called outside a module's `namespace()` (tests)


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """The names of one generated module: `fresh` numbers from 1 inside."""
    token = _NAMES.set(Namespace())
    try:
        yield _NAMES.get()
    finally:
        _NAMES.reset(token)


def fresh(prefix: str) -> str:
    """A name `prefix`N not yet given out in the module being generated."""
    return (_NAMES.get() or _LOOSE).fresh(prefix)
