"""CPU smoke test of the benchmark registry: run.py --tiny on two rows, the JSON checked."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "benchmarks")


def test_tiny_run_writes_rows(tmp_path):
    """The tiny run times lrc's elementwise and Mamba-1 rows and cross-checks them."""
    out = tmp_path / "tiny.json"
    # lrc from this checkout, Triton's interpreter on CPU tensors, no GPU even if there is one
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               CUDA_VISIBLE_DEVICES="", LRC_CACHE_DIR=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, os.path.join(HERE, "run.py"), "--tiny",
                          "--rows", "elementwise,mamba1", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["meta"]["tiny"] and doc["meta"]["device"] == "cpu"
    assert doc["meta"]["lrc_file"].startswith(ROOT)
    lines = {(s["row"], s["mode"]): s for s in doc["summary"]}
    assert set(lines) == {("elementwise", "fwd"), ("elementwise", "fwdbwd"),
                          ("mamba1", "fwd"), ("mamba1", "fwdbwd")}
    for s in lines.values():
        assert math.isfinite(s["lrc_us"]) and s["lrc_us"] > 0
        # bf16 inputs against the float64 reference backend
        assert 0 <= s["check"]["rel_l2_vs_reference"] < 2e-2
    # the peers need CUDA: marked unavailable with the reason, not a crash
    peers = [e for e in doc["results"] if e["kind"] == "peer"]
    assert {e["row"] for e in peers} == {"elementwise", "mamba1"}
    assert all(e["status"] == "unavailable" and e["reason"] for e in peers)
