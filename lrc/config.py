"""Every knob of lrc in one table: its default, the environment variable that sets it, and what
it does. Code reads a knob with `config.get(name)`; tests, benchmarks and the AOT check change
one for a scope with `config.override(...)`. No other module keeps a setting of its own.

    import lrc
    with lrc.config.override(tune=False, scan_chunk=32):
        y = layer(x)            # untimed default configs, 32 time steps per scan chunk
    lrc.config.get("tune")      # -> True again (or what LRC_TUNE says)

Overrides nest and are per thread (a ContextVar), so a benchmark thread and a test do not see
each other's settings.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _flag(text: str) -> bool:
    return text.strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Knob:
    """One setting: its default, the environment variable read once at import, and its doc."""

    name: str
    default: Any
    env: str | None
    doc: str
    parse: Callable[[str], Any] = str

    def initial(self) -> Any:
        text = os.environ.get(self.env) if self.env else None
        return self.default if text is None or text == "" else self.parse(text)


KNOBS: dict[str, Knob] = {k.name: k for k in [
    Knob("cache_dir", None, None,
         "where compiled specs, generated modules and tuned tables live "
         "(None: $LRC_CACHE_DIR, read at each use, else ~/.cache/lrc); used only while it "
         "is this user's and writable by no one else (else a CacheWarning, and memory)"),
    Knob("cache_modules", 1000, "LRC_CACHE_MODULES",
         "generated modules kept in the cache directory: writing one more deletes the least "
         "recently used beyond this many", int),
    Knob("tune", True, "LRC_TUNE",
         "on the GPU, time the candidate launch configs once per shape and keep the fastest "
         "(remembered on disk); off: the first config that compiles, untimed", _flag),
    Knob("prefer_loop", False, None,
         "generate one-token loop kernels for diagonal transitions too (benchmarks)"),
    Knob("scan_chunk", None, None,
         "time steps per scan chunk, the forward's checkpoint interval (None: by the tiling)"),
    Knob("scan_segments", None, None,
         "time segments of the two-level scan (None: as many as fill the GPU)"),
    Knob("scan_budget", 4096, None,
         "register elements per value and chunk, for choosing the scan's block sizes"),
    Knob("scan_warps", 4, None, "warps of an untuned scan launch"),
    Knob("scan_stages", 2, None, "software-pipeline stages of an untuned scan launch"),
    Knob("scan_config", None, None,
         "one ScanConfig forced for every scan launch (benchmarks sweep it)"),
    Knob("deterministic", False, "LRC_DETERMINISTIC",
         "sum across programs in a fixed order (buffer slots added up on the host), never "
         "with atomic adds: bitwise-repeatable gradients, somewhat slower; also on while "
         "torch.are_deterministic_algorithms_enabled()", _flag),
    Knob("log", None, "LRC_LOG",
         "the level of the 'lrc' logger's own stderr handler: 'info' (compile, plan and "
         "tuning decisions) or 'debug' (each tuning candidate's time too); None: lrc adds no "
         "handler and prints nothing (a logging setup of the program's own still applies)"),
    Knob("as_gpu", None, None,
         "size launches as for a GPU with this many SMs and run nothing (kernels.aot)"),
]}

# the default dict is never mutated: override() sets a new dict for its scope
_VALUES: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "lrc_config", default={name: k.initial() for name, k in KNOBS.items()})  # noqa: B039


def get(name: str) -> Any:
    """The knob's value in this scope."""
    values = _VALUES.get()
    if name not in values:
        raise KeyError(f"lrc.config has no knob {name!r}; knobs: {', '.join(KNOBS)}")
    return values[name]


def snapshot() -> tuple:
    """Every knob's value, in table order (part of cache and replay keys)."""
    values = _VALUES.get()
    return tuple(values[name] for name in KNOBS)


@contextlib.contextmanager
def override(**changes: Any) -> Iterator[None]:
    """Set knobs for the duration of a `with` block (nested overrides stack)."""
    unknown = [n for n in changes if n not in KNOBS]
    if unknown:
        raise KeyError(f"lrc.config has no knob {unknown[0]!r}; knobs: {', '.join(KNOBS)}")
    token = _VALUES.set({**_VALUES.get(), **changes})
    try:
        yield
    finally:
        _VALUES.reset(token)


def cache_dir() -> Path:
    """The cache directory's path (`cache_dir`, $LRC_CACHE_DIR, else ~/.cache/lrc); not
    created here: lrc.kernels.disk creates and checks it."""
    root = get("cache_dir") or os.environ.get("LRC_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "lrc")
    return Path(root)


def describe() -> str:
    """The table: each knob, its value now, its environment variable and what it does."""
    lines = []
    for name, k in KNOBS.items():
        env = f" (${k.env})" if k.env else ""
        lines.append(f"{name} = {get(name)!r}{env}: {k.doc}")
    return "\n".join(lines)
