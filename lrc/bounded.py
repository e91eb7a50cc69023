"""The one in-memory cache lrc keeps per process: a dict that starts over when full.

Host-side work that depends only on a call's signature (strides per named dim, canonical
layouts, checked shapes, launch configurations, replays of recorded launches) is cached in
these. A process that sees many signatures (packed batches of changing lengths, a sweep) only
refills them; nothing in one is needed for correctness."""
from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()


class Bounded(dict):
    """A dict of at most `limit` entries: adding one more empties it first."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self and len(self) >= self.limit:
            with _LOCK:
                self.clear()
        super().__setitem__(key, value)
