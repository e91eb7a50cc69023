"""The 'lrc' logger: compile, plan and tuning decisions; LRC_LOG; quiet by default."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import lrc
from lrc import logs as log
from lrc.kernels import tune
from lrc.zoo import ZOO

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Cfg:
    n: int


def test_compile_and_plan_are_logged(caplog):
    e = ZOO["rglru"]
    with caplog.at_level(logging.INFO, logger="lrc"):
        layer = lrc.compile(e.spec)
        layer(**{k: v.float() for k, v in e.example(1, 5).items()})
    text = caplog.text
    assert "compiled rglru in" in text
    assert "plan rglru: scan at sizes" in text


def test_each_candidate_and_failure_logged(caplog, monkeypatch):
    """choose logs each candidate's time (DEBUG), each failure's reason and the pick (INFO);
    the timer is replaced (no GPU here): what is checked is what is said."""
    import triton.testing

    times = {1: 3.0, 2: 1.5}
    last = []

    def run(cfg):
        if cfg.n == 3:
            raise RuntimeError("out of shared memory: 300000 > 232448")
        last.append(cfg)
    monkeypatch.setattr(triton.testing, "do_bench",
                        lambda fn, **kw: fn() or times[last[-1].n])
    key = ("test_log", "choose", os.urandom(4).hex())
    with caplog.at_level(logging.DEBUG, logger="lrc"):
        best = tune.choose(key, [Cfg(1), Cfg(2), Cfg(3)], run)
    assert best == Cfg(2)
    text = caplog.text
    assert "Cfg(n=1) 3.0000 ms" in text and "Cfg(n=2) 1.5000 ms" in text
    assert "Cfg(n=3) failed: Cfg(n=3): RuntimeError: out of shared memory" in text
    assert "Cfg(n=2) at 1.5000 ms, fastest of 3 (1 failed)" in text


def test_untimed_choice_logged(caplog):
    def run(cfg):
        if cfg.n == 1:
            raise ValueError("layout pass failed")
    key = ("test_log", "first_working", os.urandom(4).hex())
    with caplog.at_level(logging.INFO, logger="lrc"):
        assert tune.first_working(key, [Cfg(1), Cfg(2)], run) == Cfg(2)
    assert "Cfg(n=1) failed: Cfg(n=1): ValueError: layout pass failed" in caplog.text
    assert "Cfg(n=2) (the first that runs)" in caplog.text


def test_slow_tuning_line_once(capsys, monkeypatch):
    monkeypatch.setattr(log, "_TOLD", [])
    monkeypatch.setattr(log, "_HANDLER", [])
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    log.slow_tuning("Scan kernels for mamba1., forward", 2.5)
    log.slow_tuning("Scan kernels for mamba1., backward", 3.0)
    err = capsys.readouterr().err
    assert err.count("lrc: tuned Scan kernels for mamba1., forward in 2.5 s") == 1
    assert "backward" not in err


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "LRC_LOG"}
    full.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, cwd=ROOT, timeout=300)


CODE = ("import lrc, torch; from lrc.zoo import ZOO; e = ZOO['rglru']; "
        "lrc.compile(e.spec)(**{k: v.float() for k, v in e.example(1, 5).items()})")


@pytest.mark.parametrize("level", ["info", "debug"])
def test_env_switches_it_on(level):
    r = _run(CODE, LRC_LOG=level)
    assert r.returncode == 0, r.stderr
    assert "lrc INFO: compiled rglru" in r.stderr
    assert "lrc INFO: plan rglru: scan" in r.stderr


def test_silent_by_default():
    r = _run(CODE)
    assert r.returncode == 0, r.stderr
    assert "lrc INFO" not in r.stderr and "lrc:" not in r.stderr


def test_bad_level_says_so():
    with pytest.raises(ValueError, match="LRC_LOG='loud'"):
        log.configure("loud")
