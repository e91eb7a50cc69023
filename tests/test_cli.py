"""`python -m lrc`: each command on the CPU, checked on what it prints."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lrc
from lrc import cli

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_of_a_zoo_name_and_a_module_path(capsys):
    code, out, _ = run(capsys, "plan", "mamba1")
    assert code == 0
    assert out.startswith("plan for mamba1:")
    assert "scan: yes:" in out and "gradients: summed with atomics across programs" in out
    code, out2, _ = run(capsys, "plan", "lrc.zoo.mamba1:mamba1")
    assert code == 0 and out2 == out


def test_file_path_spec(capsys, tmp_path):
    f = tmp_path / "my_spec.py"
    f.write_text(
        "import lrc\n"
        "from lrc import Param, Seq, State\n\n"
        "@lrc.recurrence\n"
        "def leaky(x: Seq('b t d'), a: Param('d'), h: State('b d')):\n"
        "    h = a * h + x\n"
        "    return h, h\n")
    code, out, _ = run(capsys, "plan", f"{f}:leaky")
    assert code == 0 and out.startswith("plan for leaky:")


def test_explain_source_and_which(capsys):
    code, out, _ = run(capsys, "explain", "rglru")
    assert code == 0 and "== traced ==" in out and "derive_backward" in out
    code, out, _ = run(capsys, "source", "mamba1", "--which", "backward")
    assert code == 0 and "def mamba1_backward(" in out
    code, out, _ = run(capsys, "source", "gla", "--lowering", "chunked", "--which", "forward")
    assert code == 0 and "def gla_chunked_forward(" in out
    code, _, err = run(capsys, "source", "mamba1", "--which", "sideways")
    assert code == 2 and "'sideways'" in err


def test_draw(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out_png = tmp_path / "g.png"
    code, out, _ = run(capsys, "draw", "rglru", "--out", str(out_png))
    assert code == 0 and out.strip() == str(out_png)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_spec_names_the_choices(capsys):
    code, _, err = run(capsys, "plan", "nosuch")
    assert code == 2 and "not a zoo name" in err and "mamba1" in err
    code, _, err = run(capsys, "plan", "lrc.zoo.mamba1:nosuch")
    assert code == 2 and "has no 'nosuch'" in err
    code, _, err = run(capsys, "bench", "mamba1", "--shape", "b=eight")
    assert code == 2 and "dim=size" in err


def test_cache_ls_and_clear(capsys, tmp_path):
    home = tmp_path / "cache"
    home.mkdir(mode=0o700)
    mine = ["lrc_0123abcd.py", "scan_tuned.json", "scan_tuned.json.lock"]
    for name in mine + ["notes.txt"]:
        (home / name).write_text("x")
    with lrc.config.override(cache_dir=str(home)):
        code, out, _ = run(capsys, "cache", "ls")
        assert code == 0 and f"{home}: 3 entries" in out
        assert all(name in out for name in mine) and "notes.txt" not in out
        code, out, _ = run(capsys, "cache", "clear")
        assert code == 0 and out.strip() == f"removed 3 entries from {home}"
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]


CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of the command")


@CPU_ONLY
def test_bench_on_the_cpu(capsys):
    code, out, _ = run(capsys, "bench", "rglru", "--shape", "b=1,t=8,d=4")
    assert code == 0
    assert "no CUDA GPU: timing the CPU path at b=1, t=8" in out
    assert "rglru forward: " in out and "rglru forward+backward: " in out
    assert "d=4" in out and "ran: " in out


@CPU_ONLY
def test_tune_tables_needs_a_gpu(capsys, tmp_path):
    code, _, err = run(capsys, "tune-tables", "--out", str(tmp_path))
    assert code == 2 and "on a GPU" in err


def test_python_dash_m():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "lrc", "plan", "s4d_zoh"], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("plan for s4d_zoh:")
