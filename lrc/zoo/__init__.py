"""The zoo: the seed systems (docs/architecture.md) written as lrc specs, with standard inits.

`ZOO[name]` is a `ZooEntry`; `lrc.compile(e.spec)(**e.example())` runs any of them, and
`e.initial_state()` gives a nonzero state. Vision Mamba's bidirectional scan is not a spec of
its own (it is Mamba-1 run both ways): see `lrc.zoo.vim`. The Griffin hybrid block is in
examples/griffin_hybrid.py.
"""
from __future__ import annotations

from . import (
    deltanet,
    gated_deltanet,
    gla,
    h3,
    hyena,
    kda,
    lru,
    mamba1,
    mamba2,
    retnet,
    rglru,
    rwkv4,
    rwkv6,
    rwkv7,
    s4,
    s4d,
    vim,
)
from ._entry import ZooEntry

ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    mamba1.ENTRY, mamba2.ENTRY, s4d.ZOH, s4d.BILINEAR, s4.ENTRY, lru.ENTRY, rglru.ENTRY,
    rwkv4.ENTRY, rwkv6.ENTRY, gla.ENTRY, retnet.ENTRY, h3.ENTRY, hyena.ENTRY,
    deltanet.ENTRY, gated_deltanet.ENTRY, kda.ENTRY, rwkv7.ENTRY,
)}

__all__ = ["ZOO", "ZooEntry", "deltanet", "gated_deltanet", "gla", "h3", "hyena", "kda", "lru",
           "mamba1", "mamba2", "retnet", "rglru", "rwkv4", "rwkv6", "rwkv7", "s4", "s4d", "vim"]
