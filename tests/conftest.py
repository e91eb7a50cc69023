"""Shared test helpers: fresh random seeds, relative errors, the gpu marker."""
from __future__ import annotations

import contextlib
import os

import pytest
import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64; NaN or inf anywhere gives inf."""
    a = actual.detach().to(torch.complex128 if actual.is_complex() else torch.float64).cpu()
    e = expected.detach().to(a.dtype).cpu()
    if a.shape != e.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    if not torch.isfinite(a).all():
        return float("inf")
    denom = e.norm().item()
    return (a - e).norm().item() / (denom if denom > 0 else 1.0)


@pytest.fixture(autouse=True)
def seed(request) -> int:
    """A fresh seed per test, printed so a failure can be replayed with LRC_SEED=<seed>."""
    s = int(os.environ.get("LRC_SEED", int.from_bytes(os.urandom(4), "little")))
    torch.manual_seed(s)
    print(f"LRC_SEED={s}")
    return s


@pytest.fixture
def knobs():
    """`knobs(name=value, ...)` sets lrc.config knobs until the test ends."""
    import lrc

    with contextlib.ExitStack() as stack:
        yield lambda **kw: stack.enter_context(lrc.config.override(**kw))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; run on the GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
