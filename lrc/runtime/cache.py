"""Compiled specs kept for the process: the pipeline's result and the scan program per spec,
keyed exactly by the spec's canonical form.

Nothing here touches the disk: the pipeline is deterministic and re-derived from the spec in
each process (loading a pickled result would execute whatever a writable cache file holds).
The generated kernels' text is what is cached on disk (kernels.module, by the sha256 of the
text), and Triton's own cache holds their compiled binaries.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sympy as sp

from ..bounded import Bounded
from ..ir.graph import Graph
from ..ir.nodes import Map

_LRC_DIR = Path(__file__).resolve().parent.parent

# key -> the pickled result built earlier in this process (bytes this process made): each
# compile of the same spec gets its own copy, as a Layer may keep state in its program
_BUILT: dict[str, bytes] = Bounded(64)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of lrc's own source and the sympy, torch and Triton versions: a key is only
    valid for the code that made it."""
    h = hashlib.sha256()
    for dist in ("sympy", "torch", "triton"):
        try:
            h.update(f"{dist}=={importlib.metadata.version(dist)}\n".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{dist} absent\n".encode())
    for path in sorted(_LRC_DIR.rglob("*.py")):
        h.update(path.relative_to(_LRC_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _constants(g: Graph) -> str:
    """Every floating constant of every Map node, by its exact value (the printed graph
    rounds them to 15 digits, which 0.1 and 0.10000000000000002 share)."""
    out = []
    for i, n in enumerate(g.nodes):
        if isinstance(n, Map):
            out.append(f"{i}: " + " ".join(
                sorted(sp.srepr(c) for c in n.expr.atoms(sp.Float))))
    return "\n".join(out)


def canonical_key(g: Graph, **options: Any) -> str:
    """The spec's canonical form (its printed graph, its constants' exact values, renames and
    time dim) plus options and the code version."""
    text = "\n".join([str(g), _constants(g), repr(g.aliases), g.time,
                      repr(sorted(options.items())), code_version()])
    return hashlib.sha256(text.encode()).hexdigest()


def cached(key: str, build: Callable[[], Any]) -> Any:
    """`build()`'s result: a copy of the one built earlier in this process for `key`, else
    built now."""
    done = _BUILT.get(key)
    if done is not None:
        return pickle.loads(done)  # noqa: S301 (bytes pickled by this process, never read)
    value = build()
    try:
        _BUILT[key] = pickle.dumps(value)
    except Exception:  # noqa: BLE001 (an unpicklable result is still usable: built again)
        pass
    return value
