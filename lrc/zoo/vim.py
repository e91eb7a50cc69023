"""Vision Mamba's bidirectional scan, Zhu et al. 2024: two Mamba-1 scans over the patch
sequence, left-to-right and right-to-left, each with its own parameters and projections, summed.

No new spec: the backward branch is the same compiled Mamba-1 layer called with reverse=True,
which equals Vim's flip -> scan -> flip without materializing the flipped copies.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

import lrc

from ._entry import Sizes
from .mamba1 import ENTRY as MAMBA1
from .mamba1 import mamba1


def bidirectional(fwd: Mapping[str, torch.Tensor], bwd: Mapping[str, torch.Tensor],
                  layer: lrc.Layer | None = None, backend: str = "auto") -> torch.Tensor:
    """Vim's y = scan(fwd) + reverse-scan(bwd); fwd and bwd are Mamba-1 arguments by name."""
    layer = layer if layer is not None else lrc.compile(mamba1, backend=backend)
    return layer(**fwd) + layer(**bwd, reverse=True)


def example(b: int = 2, t: int = 37, dtype: torch.dtype = torch.float64, device="cpu",
            **dim_sizes: int) -> tuple[dict, dict]:
    """Arguments for both directions: the same tokens u, separate dt/B/C and Params."""
    fwd = MAMBA1.example(b, t, dtype, device, **dim_sizes)
    bwd = MAMBA1.example(b, t, dtype, device, **dim_sizes)
    bwd["u"] = fwd["u"]
    return fwd, bwd


SIZES: Sizes = dict(MAMBA1.sizes)
