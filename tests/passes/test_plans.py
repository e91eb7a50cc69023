"""The pipeline on the zoo: the plans are what a human expects (and are pinned by golden files),
the verifier passes after every pass, explain() and draw() work.

`LRC_UPDATE_GOLDEN=1 pytest tests/passes/test_plans.py` rewrites tests/passes/golden/*.txt.
"""
from __future__ import annotations

import os
import pathlib

import pytest

import lrc
from lrc.errors import LoweringError
from lrc.passes import pipeline
from lrc.zoo import ZOO
from tests.strategies import random_specs

GOLDEN = pathlib.Path(__file__).parent / "golden"
UPDATE = os.environ.get("LRC_UPDATE_GOLDEN") == "1"

# (state kind fragment, lowerings that must be eligible, lowering chosen at the shapes below)
EXPECT = {
    "mamba1": ("diagonal selective", {"scan"}, "scan"),
    "mamba2": ("diagonal, scalar decay", {"scan", "chunked"}, "chunked"),
    "retnet": ("diagonal, scalar decay", {"scan", "chunked"}, "chunked"),
    "gla": ("diagonal, per-key decay", {"scan", "chunked"}, "chunked"),
    "rwkv6": ("diagonal, per-key decay", {"scan", "chunked"}, "chunked"),
    "s4d_zoh": ("time-invariant diagonal", {"scan", "conv"}, None),
    "s4d_bilinear": ("time-invariant diagonal", {"scan", "conv"}, None),
    "lru": ("time-invariant diagonal", {"scan", "conv"}, None),
    "s4": ("dplr (diagonal plus rank 2), time-invariant", {"scan", "conv"}, None),
    "h3": ("time-invariant", {"scan", "conv"}, None),
    "hyena": ("shift register, time-invariant", {"scan", "conv"}, "conv"),
    "rglru": ("elementwise, selective", {"scan"}, "scan"),
    "rwkv4": ("elementwise", {"scan"}, "scan"),
    "deltanet": ("dplr (diagonal plus rank 1), selective", {"scan", "dplr"}, "scan"),
    "gated_deltanet": ("dplr (diagonal plus rank 1), selective", {"scan", "dplr"}, "scan"),
    # per-key decays: not chunked yet (lowering/dplr names why), the scan's loop runs them
    "kda": ("dplr (diagonal plus rank 1), selective", {"scan"}, "scan"),
    "rwkv7": ("dplr (diagonal plus rank 1), selective", {"scan"}, "scan"),
}
# the reference shapes of DESIGN.md section 7 (and a long Hyena filter)
SHAPES = {
    "mamba1": (dict(b=8, d=2048, n=16), 4096), "mamba2": (dict(b=8, g=1, r=32, p=64, n=128), 4096),
    "retnet": (dict(b=8, h=16, k=128, v=128), 4096), "gla": (dict(b=8, h=16, k=128, v=128), 4096),
    "rwkv6": (dict(b=8, h=16, k=64, v=64), 4096), "hyena": (dict(b=8, d=768, l=4096), 4096),
    "rglru": (dict(b=8, d=2048), 4096), "rwkv4": (dict(b=8, c=2048), 4096),
    "deltanet": (dict(b=8, h=16, k=128, v=128), 4096),
    "gated_deltanet": (dict(b=8, h=16, k=128, v=128), 4096),
    "kda": (dict(b=8, h=16, k=128, v=128), 4096), "rwkv7": (dict(b=8, h=16, k=64, v=64), 4096),
}


def planned(name: str):
    return pipeline.run(ZOO[name].spec.graph, check=True).planned


@pytest.mark.parametrize("name", sorted(ZOO))
def test_plan_is_what_a_human_expects(name):
    kind, eligible, chosen = EXPECT[name]
    g = planned(name)
    st, lw = g.meta("structure"), g.meta("lowering")
    assert any(kind in s.kind for s in st.states), [s.kind for s in st.states]
    assert eligible <= set(lw.eligible)
    if name in SHAPES:
        sizes, T = SHAPES[name]
        sizes = {d: sizes.get(d, 4) for d in g.dims}
        assert lw.choose(g, sizes, T, 2)[0] == chosen


@pytest.mark.parametrize("name", sorted(ZOO))
def test_plan_golden(name):
    text = str(lrc.compile(ZOO[name].spec, backend="reference").plan) + "\n"
    path = GOLDEN / f"{name}.txt"
    if UPDATE or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"plan of {name} changed; LRC_UPDATE_GOLDEN=1 to accept"


def test_s4_decodes_with_its_recurrence():
    """S4: trained as a convolution, decoded with the DPLR step."""
    layer = lrc.compile(ZOO["s4"].spec, backend="reference")
    assert "step (decode): the recurrence" in str(layer.plan)
    assert layer.plan.graph.meta("structure").states[0].transition == "dplr"


def test_forced_lowering_that_cannot_run_says_why():
    with pytest.raises(LoweringError, match="selective"):
        lrc.compile(ZOO["mamba1"].spec, lowering="conv")
    with pytest.raises(LoweringError, match="dplr"):
        lrc.compile(ZOO["s4"].spec, lowering="chunked")


@pytest.mark.parametrize("name", ["mamba1", "s4d_zoh", "rwkv4"])
def test_explain_prints_every_pass(name):
    text = pipeline.explain(ZOO[name].spec)
    for stage, _ in pipeline.stages():
        assert f"== after {stage} ==" in text
    assert "-- backward step --" in text


def test_draw_writes_a_png(tmp_path):
    layer = lrc.compile(ZOO["mamba1"].spec, backend="reference")
    path = layer.draw(str(tmp_path / "graph.png"))
    assert pathlib.Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verifier_after_every_pass_on_random_specs():
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(random_specs())
    def check(rs):
        pipeline.run(rs.spec.graph, check=True)

    check()
