"""The README's demo runs end to end (on the CPU, kernels under Triton's interpreter) and
reports a small error against its plain-PyTorch loop. (The other examples train for minutes:
run them by hand.)"""
from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_demo_runs(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["demo.py"])
    runpy.run_path(str(EXAMPLES / "demo.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "for ci in" in out  # it shows the generated time loop
    err = float(re.search(r"relative error against a plain PyTorch loop: (\S+)", out).group(1))
    assert err <= 1e-4
    steps = [float(x) for x in re.findall(r"max \|step - forward\| = (\S+)", out)]
    assert len(steps) == 4 and max(steps) <= 1e-4


def test_demo_is_quiet(tmp_path):
    """`python -W default examples/demo.py` (every warning shown, fresh kernel cache) writes no
    warning to stderr: none of lrc's own, and not the NumPy deprecation that Triton's
    interpreter triggers on every kernel (ignored inside lrc's interpreter scope)."""
    root = EXAMPLES.parent
    env = dict(os.environ, PYTHONPATH=str(root), LRC_CACHE_DIR=str(tmp_path))
    env.pop("PYTHONWARNINGS", None)
    run = subprocess.run([sys.executable, "-W", "default", str(EXAMPLES / "demo.py")],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "relative error against a plain PyTorch loop" in run.stdout
    warnings = [ln for ln in run.stderr.splitlines() if "Warning" in ln]
    assert not warnings, run.stderr
