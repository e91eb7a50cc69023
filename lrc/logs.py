"""lrc's logger, `logging.getLogger("lrc")`: compile, plan and tuning decisions.

    LRC_LOG=info    each compile, lowering choice and tuned config (one line each)
    LRC_LOG=debug   and each tuning candidate's time or the reason it failed

With LRC_LOG unset lrc adds only a NullHandler and prints nothing; a program's own logging
setup (`logging.basicConfig(level=logging.INFO)`) still receives the records. One quiet
exception: first-call GPU tuning that takes longer than a second prints a single line to stderr
(`slow_tuning`), so a long first call is not a silent hang.
"""
from __future__ import annotations

import logging
import sys

from . import config

logger = logging.getLogger("lrc")
logger.addHandler(logging.NullHandler())
_HANDLER: list[logging.Handler] = []  # the stderr handler `configure` added, if any
_TOLD: list[bool] = []  # whether the slow-tuning line was printed


def configure(level: str | None) -> None:
    """Print lrc's records at `level` ('info', 'debug', 'warning' or None: none) to stderr
    (config `log`, $LRC_LOG, applied at import; call again to change it)."""
    for h in _HANDLER:
        logger.removeHandler(h)
    _HANDLER.clear()
    if not level:
        return
    name = str(level).strip().upper()
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        raise ValueError(f"LRC_LOG={level!r}: use info or debug (or warning)")
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("lrc %(levelname)s: %(message)s"))
    logger.addHandler(h)
    logger.setLevel(value)
    _HANDLER.append(h)


def slow_tuning(what: str, seconds: float) -> None:
    """First-call tuning took over a second (the tuner logs each at INFO): when nothing shows
    lrc's records (LRC_LOG unset, no logging setup of the program's own), one line on stderr,
    once per process."""
    msg = (f"tuned {what} in {seconds:.1f} s (first call of this shape; the choice is "
           "remembered on disk)")
    if _TOLD or _HANDLER or logging.getLogger().handlers:
        return
    _TOLD.append(True)
    print(f"lrc: {msg}; LRC_LOG=info shows each tuning", file=sys.stderr)


def describe(key: tuple) -> str:
    """A tuning key in a line: a generated module's source as its title ("Scan kernels for
    mamba1."), everything else as it is."""
    out = []
    for x in key:
        if isinstance(x, str) and len(x) > 80:
            x = x.lstrip('"').split("\n", 1)[0]
        out.append(x if isinstance(x, str) else repr(x))
    return ", ".join(out)


configure(config.get("log"))
