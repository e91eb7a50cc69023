"""The on-disk cache of compiled specs: pipeline results and generated kernels, keyed by the
spec's canonical form, so a second process skips the symbolic work."""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any, Callable

from ..config import cache_dir
from ..ir.graph import Graph

_LRC_DIR = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of lrc's own source: a cached entry is only valid for the code that made it."""
    h = hashlib.sha256()
    for path in sorted(_LRC_DIR.rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def canonical_key(g: Graph, **options: Any) -> str:
    """The spec's canonical form (its printed graph, renames and time dim) plus options."""
    text = "\n".join([str(g), repr(g.aliases), g.time, repr(sorted(options.items())),
                      code_version()])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached(key: str, build: Callable[[], Any]) -> Any:
    """`build()`'s result, from disk when an earlier process already built it."""
    path = cache_dir() / "compiled" / f"{key}.pkl"
    if path.exists():
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh)
        except Exception:  # a stale or torn file: rebuild it
            pass
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pickle.dump(value, fh)
        os.replace(tmp, path)
    except Exception:  # an unpicklable result is still usable in this process
        tmp.unlink(missing_ok=True)
    return value
