"""Layer's text for a newcomer: what `source()` shows, and why it refuses a lowering."""
from __future__ import annotations

import pytest

import lrc
from lrc.zoo import ZOO


def test_source_of_a_lowering_the_spec_cannot_take_says_why():
    """Mamba-1 has no chunked or conv kernels: the message says which lowering was asked for,
    the plan's reason in plain words, and the lowerings it can take."""
    layer = lrc.compile(ZOO["mamba1"].spec)
    with pytest.raises(ValueError) as info:
        layer.source(lowering="chunked")
    msg = str(info.value)
    assert msg.startswith("mamba1 has no chunked kernels: h's decay differs for every (d, n)")
    assert "(it can take: scan)" in msg and "chosen" not in msg
    with pytest.raises(ValueError, match="no conv kernels: h changes with the inputs"):
        layer.source(lowering="conv")
    with pytest.raises(ValueError, match="lowering must be 'scan', 'chunked' or 'conv'"):
        layer.source(lowering="fft")


def test_source_shows_the_lowering_asked_for():
    """Mamba-2's chunked kernels are shown on request, whichever lowering a call would get."""
    layer = lrc.compile(ZOO["mamba2"].spec)
    assert "def mamba2_chunked_forward(" in layer.source(lowering="chunked")
    assert "def mamba2_forward(" in layer.source()
