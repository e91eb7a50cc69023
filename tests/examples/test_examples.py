"""The README's demo runs end to end (on the CPU, kernels under Triton's interpreter) and
reports a small error against its plain-PyTorch loop. (The other examples train for minutes:
run them by hand.)"""
from __future__ import annotations

import re
import runpy
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
