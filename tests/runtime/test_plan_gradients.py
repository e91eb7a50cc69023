"""`layer.plan` says when the chosen lowering's backward adds gradients with atomics (not
bitwise deterministic on the GPU), checked against the generated backward source."""
from __future__ import annotations

import torch

import lrc
import lrc.lowering
from lrc.zoo import ZOO

LINE = "gradients: summed with atomics across programs (not bitwise deterministic on the GPU"


def _atomics_in(layer, lowering: str) -> bool:
    src = "\n".join(v for k, v in layer.program.sources.items() if k.startswith("backward")) \
        if lowering == "scan" else layer.source("backward", lowering)
    return "tl.atomic_add" in src


def test_scan_with_atomic_sums_says_so():
    layer = lrc.compile(ZOO["mamba1"].spec)  # dB, dC summed over d across programs
    assert _atomics_in(layer, "scan")
    assert LINE in str(layer.plan)
    layer(**ZOO["mamba1"].example(b=1, t=5, dtype=torch.float32))  # the plan of a call's shape
    assert layer.plan.choose(*layer.plan.shapes) == "scan" and LINE in str(layer.plan)


def test_scan_without_atomics_says_nothing():
    for name in ("rglru", "rwkv4"):
        layer = lrc.compile(ZOO[name].spec)
        assert not _atomics_in(layer, "scan"), name
        assert "atomics" not in str(layer.plan), name


def test_chunked_says_so_and_conv_does_not():
    e = ZOO["mamba2"]
    chunked = lrc.compile(e.spec, lowering="chunked")
    assert _atomics_in(chunked, "chunked")
    assert LINE in str(chunked.plan)
    conv = lrc.compile(ZOO["s4d_zoh"].spec, lowering="conv")
    assert "tl.atomic_add" not in conv.source("module", "conv")
    assert "atomics" not in str(conv.plan)
    assert lrc.lowering.atomic_grads("chunked") and not lrc.lowering.atomic_grads("conv")


def test_reference_backend_says_nothing():
    layer = lrc.compile(ZOO["mamba1"].spec, backend="reference")
    assert "atomics" not in str(layer.plan) and "float64" not in str(layer.plan)
