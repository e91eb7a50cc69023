"""The pipeline on the zoo: the plans are what a human expects (and are pinned by golden files),
the verifier passes after every pass, explain() and draw() work.

`LRC_UPDATE_GOLDEN=1 pytest tests/passes/test_plans.py` rewrites tests/passes/golden/*.txt.
"""
from __future__ import annotations

import os
import pathlib

import pytest
import torch

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
    # a per-key decay (KDA), two distinct vectors (RWKV-7): chunks where forced
    "kda": ("dplr (diagonal plus rank 1), selective", {"scan", "dplr"}, "scan"),
    "rwkv7": ("dplr (diagonal plus rank 1), selective", {"scan", "dplr"}, "scan"),
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
    text = str(layer.plan)
    assert "step (decode): one token at a time, the recurrence itself" in text
    assert "scan: yes: one token at a time: sequential in t" in text
    assert layer.plan.graph.meta("structure").states[0].transition == "dplr"


def test_forced_lowering_that_cannot_run_says_why():
    with pytest.raises(LoweringError, match="h changes with the inputs at every step"):
        lrc.compile(ZOO["mamba1"].spec, lowering="conv")
    with pytest.raises(LoweringError, match="diagonal plus low-rank matrix"):
        lrc.compile(ZOO["s4"].spec, lowering="chunked")


def test_plan_refusals_in_plain_words():
    """Each refusal names the state and says what the lowering needs, without the pass's
    jargon ("no value dims", "varies along ()")."""
    texts = {n: str(lrc.compile(ZOO[n].spec, backend="reference").plan) for n in
             ("mamba1", "rwkv4", "rglru", "lru")}
    assert ("chunked: no: h's decay differs for every (d, n): no tensor-core form (chunked "
            "needs a decay shared along a value dim") in texts["mamba1"]
    assert "conv: no: output y is a nonlinear function of num" in texts["rwkv4"]
    assert "an output reads h without summing it over a state dim" in texts["rglru"]
    assert "x's decay differs for every (n)" in texts["lru"]
    for text in texts.values():
        for jargon in ("no value dims", "varies along", "eligible", "-bound"):
            assert jargon not in text, (jargon, text)


@pytest.mark.parametrize("name", ["rwkv4", "h3", "hyena", "s4"])
def test_loop_kernels_say_they_are_sequential(name):
    """The scan of a spec without an associative form is a one-token loop; the plan says so."""
    text = str(lrc.compile(ZOO[name].spec, backend="reference").plan)
    assert "scan: yes: one token at a time: sequential in" in text


def test_plan_names_the_device_its_estimates_are_for():
    """Before a call the example estimates say which device they model; after a call on CPU
    tensors the plan gives the choice and no microsecond estimates."""
    e = ZOO["mamba1"]
    layer = lrc.compile(e.spec)
    before = str(layer.plan)
    assert "estimates are for one NVIDIA H200 GPU" in before
    assert " us, limited by " in before
    layer(**e.example(t=8, dtype=torch.float32))
    after = str(layer.plan)
    assert "on the CPU, where the torch lowering runs" in after and "so no times" in after
    assert "at b=2 d=5 n=3 t=8 (4-byte inputs): scan" in after
    assert " us" not in after


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


@pytest.mark.gpu
def test_plan_after_a_cuda_call_names_both_devices():
    """After a call on CUDA tensors the plan shows the estimates, says they are for the cost
    model's H200, and names the GPU the call ran on when it is another."""
    e = ZOO["mamba1"]
    layer = lrc.compile(e.spec)
    layer(**e.example(t=64, dtype=torch.float32, device="cuda"))
    text = str(layer.plan)
    assert "the last call (estimates are for one NVIDIA H200 GPU" in text
    assert " us, limited by " in text
    name = torch.cuda.get_device_name()
    assert "H200" in name or f"this call ran on {name}" in text
