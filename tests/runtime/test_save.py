"""Saving: a spec pickles by reference where an import finds it and by value (its traced graph)
where not, so torch.save of a module holding a layer, spawned workers and torch.export files
loaded in a fresh process work (torch.save used to fail: "Can't pickle <function lru ...>: it's
not the same object as lrc.zoo.lru.lru"; an exported op named its layer by id(layer))."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lrc
from lrc import Param, Seq, State, sigmoid
from lrc.errors import CallError
from lrc.ir.trace import importable
from lrc.nn import Recurrence
from lrc.runtime import ops
from lrc.zoo import ZOO
from tests.conftest import rel_err

ROOT = str(Path(lrc.__file__).resolve().parent.parent)


def local_spec():
    """A spec no import can find (defined in a function): it pickles by value."""

    @lrc.recurrence
    def decay(x: Seq("b t d"), a: Param("d"), h: State("b d")):
        h = sigmoid(a) * h + (1 - sigmoid(a)) * x
        return h, h

    return decay


def loop(x, a):
    """decay by hand in float64."""
    x, a = x.double(), a.double()
    h = torch.zeros(x.shape[0], x.shape[2], dtype=torch.float64)
    ys = []
    for t in range(x.shape[1]):
        h = torch.sigmoid(a) * h + (1 - torch.sigmoid(a)) * x[:, t]
        ys.append(h)
    return torch.stack(ys, 1)


def test_zoo_spec_pickles_by_reference():
    spec = ZOO["lru"].spec
    assert importable(spec) == ("lrc.zoo.lru", "lru")
    assert pickle.loads(pickle.dumps(spec)) is spec


def test_local_spec_pickles_by_value():
    spec = local_spec()
    assert importable(spec) is None
    back = pickle.loads(pickle.dumps(spec))
    assert back.name == "decay" and str(back.graph) == str(spec.graph)
    x, a = torch.randn(2, 6, 3), torch.randn(3)
    assert rel_err(lrc.compile(back)(x, a), loop(x, a)) <= 1e-4


def test_torch_save_module_with_zoo_layer():
    model = torch.nn.Sequential(torch.nn.Linear(5, 5), Recurrence.from_zoo("lru"))
    x = torch.randn(2, 7, 5)
    want = model(x)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert back[1].layer is not model[1].layer  # compiled again on load
    assert rel_err(back(x), want) == 0


def test_torch_save_module_with_local_spec():
    spec = local_spec()
    model = Recurrence(spec, a=torch.randn(3))
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    x = torch.randn(2, 6, 3)
    assert rel_err(back(x), loop(x, model.a)) <= 1e-4


def work(layer, x, a, queue):
    """A spawned worker: runs the layer it was given."""
    queue.put(layer(x, a).tolist())


def test_spawned_worker_runs_a_layer_argument():
    layer = lrc.compile(local_spec())
    x, a = torch.randn(2, 5, 3), torch.randn(3)
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=work, args=(layer, x, a, queue))
    proc.start()
    got = torch.tensor(queue.get(timeout=600))
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert rel_err(got, loop(x, a)) <= 1e-4


def test_export_loads_in_a_fresh_process(tmp_path):
    """torch.export of a module whose spec lives in this test function: saved here, loaded and
    run by a process that never imported this file."""
    model = Recurrence(local_spec(), a=torch.randn(3))
    x = torch.randn(2, 6, 3)
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "model.pt2")
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch, lrc\n"
            "ep = torch.export.load(sys.argv[1] + '/model.pt2')\n"
            "torch.save(ep.module()(torch.load(sys.argv[1] + '/x.pt')), sys.argv[1] + '/y.pt')\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert rel_err(torch.load(tmp_path / "y.pt"), loop(x, model.a)) <= 1e-4


def test_op_key_refuses_a_changed_spec():
    """A key whose spec no longer hashes as it did when saved: a clear error, not a silent
    run of a different recurrence."""
    key = lrc.compile(local_spec()).op_key
    name, digest, rest = key.split(":", 2)
    stale = f"{name}:{'0' * len(digest)}:{rest}"
    with pytest.raises(CallError, match="changed since it was saved"):
        ops.layer_of(stale)
