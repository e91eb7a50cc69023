"""examples/synthetic: the task generators checked against plain lookups, the user's block
against a plain PyTorch loop, and a tiny end-to-end smoke run that writes the JSON, PNG and
markdown outputs."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import rel_err

SYNTHETIC = Path(__file__).resolve().parents[2] / "examples" / "synthetic"
MODULES = ("tasks", "models", "train")


@pytest.fixture
def syn(monkeypatch):
    """The example's modules (tasks, models, train), imported from examples/synthetic."""
    import importlib

    monkeypatch.syspath_prepend(str(SYNTHETIC))
    for name in MODULES:   # a module of the same name imported elsewhere must not stand in
        monkeypatch.delitem(sys.modules, name, raising=False)
    mods = {name: importlib.import_module(name) for name in MODULES}
    assert all(Path(m.__file__).parent == SYNTHETIC for m in mods.values())
    yield mods
    for name in MODULES:
        sys.modules.pop(name, None)


def test_mqar_answers_are_the_queried_keys_values(syn):
    t = syn["tasks"]
    b, seq_len, vocab, k = 64, 48, 40, 6
    x, y = t.mqar(b, seq_len, vocab, k, gen=torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (b, seq_len) and x.dtype == y.dtype == torch.long
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        keys, values = row_x[0:2 * k:2], row_x[1:2 * k:2]
        pairs = dict(zip(keys, values, strict=True))
        assert len(set(keys)) == k and len(set(values)) == k
        assert all(1 <= key < vocab // 2 <= v < vocab for key, v in pairs.items())
        answers = [i for i, target in enumerate(row_y) if target != -100]
        assert len(answers) == k and min(answers) >= 2 * k
        assert sorted(row_x[i] for i in answers) == sorted(keys)   # each key queried once
        for i in answers:
            assert row_y[i] == pairs[row_x[i]]       # the value paired with the queried key
            assert row_x[i + 1] == row_y[i]          # the value follows its query
        queried = set(answers) | {i + 1 for i in answers}
        assert all(row_x[i] == 0 for i in range(2 * k, seq_len) if i not in queried)


def test_mqar_queries_favour_early_slots(syn):
    """Zoology's power law p(j) ~ j^(a - 1): the first slot after the context is queried far
    more often than the last."""
    x, y = syn["tasks"].mqar(2000, 64, 64, 4, gen=torch.Generator().manual_seed(0))
    answered = (y != -100).float().mean(0)
    first, last = answered[8].item(), answered[62].item()
    assert first > 3 * last


def test_selective_copying_targets_are_the_data_tokens_in_order(syn):
    t = syn["tasks"]
    b, seq_len, vocab, m = 64, 40, 12, 7
    x, y = t.selective_copying(b, seq_len, vocab, m, gen=torch.Generator().manual_seed(5))
    assert x.shape == y.shape == (b, seq_len)
    region = seq_len - m
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        data = [tok for tok in row_x[:region] if tok != t.NOISE]
        assert len(data) == m and all(2 <= tok < vocab for tok in data)
        assert row_x[region:] == [t.MARKER] * m
        assert row_y[region:] == data
        assert row_y[:region] == [-100] * region
    used = (x[:, :region] != t.NOISE).any(0)
    assert used.sum() > region // 2       # the positions vary from sequence to sequence


def test_generators_repeat_with_a_seed(syn):
    t = syn["tasks"]
    for make in (t.mqar, t.selective_copying):
        a = make(4, gen=torch.Generator().manual_seed(9))
        b = make(4, gen=torch.Generator().manual_seed(9))
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_accuracy_counts_answer_positions_only(syn):
    targets = torch.tensor([[-100, 3, -100, 1], [2, -100, -100, 0]])
    predicted = torch.tensor([[0, 3, 0, 2], [2, 1, 1, 0]])        # right: 1 of 2, 2 of 2
    logits = torch.nn.functional.one_hot(predicted, 4).float()
    token, sequence = syn["tasks"].accuracy(logits, targets)
    assert token == pytest.approx(3 / 4) and sequence == pytest.approx(1 / 2)


def test_user_block_matches_a_plain_loop(syn):
    """SelectiveBlock (the README spec compiled by lrc) against the same block written with a
    plain PyTorch loop over time, in float64."""
    blk = syn["models"].SelectiveBlock(8, d_state=4)
    with torch.no_grad():
        blk.A_log.add_(0.3 * torch.randn_like(blk.A_log))
        blk.D.add_(torch.randn_like(blk.D))
    x = torch.randn(2, 12, 8)
    y = blk(x)

    w = {k: v.detach().double() for k, v in blk.state_dict().items()}
    xd = x.double()
    u, z = (xd @ w["in_proj.weight"].T).chunk(2, -1)
    d, t = u.shape[-1], u.shape[1]
    cw, cb = w["conv.conv.weight"][:, 0], w["conv.conv.bias"]       # (d, width), (d,)
    pad = torch.cat([torch.zeros(2, cw.shape[1] - 1, d, dtype=u.dtype), u], 1)
    u = torch.stack([(pad[:, i:i + cw.shape[1]] * cw.T).sum(1) + cb for i in range(t)], 1)
    u = torch.nn.functional.silu(u)
    dt, B, C = (u @ w["x_proj.weight"].T).split([d, 4, 4], -1)
    A = -torch.exp(w["A_log"])
    h = torch.zeros(2, d, 4, dtype=u.dtype)
    ys = []
    for i in range(t):
        delta = torch.log1p(torch.exp(dt[:, i] + w["dt_bias"]))[..., None]      # softplus
        h = torch.exp(delta * A) * h + delta * B[:, i, None, :] * u[:, i, :, None]
        ys.append((h * C[:, i, None, :]).sum(-1) + w["D"] * u[:, i])
    ref = (torch.stack(ys, 1) * torch.nn.functional.silu(z)) @ w["out_proj.weight"].T
    assert rel_err(y, ref) <= 1e-4


def test_smoke_run_writes_finite_outputs(syn, tmp_path):
    """Two steps at tiny sizes, every model on MQAR and two on selective copying: JSON, PNG
    and table written, every number finite."""
    common = ["--steps", "2", "--eval-every", "1", "--d-model", "16", "--layers", "1",
              "--batch", "4", "--eval-size", "8", "--seq-len", "16", "--out", str(tmp_path)]
    runs = {"mqar": ["mamba", "s4d", "gla", "hawk", "user"], "copying": ["gla", "user"]}
    syn["train"].main(["--task", "mqar", "--vocab-size", "16", "--num-kv-pairs", "2",
                       "--models", ",".join(runs["mqar"]), *common])
    syn["train"].main(["--task", "copying", "--vocab-size", "6", "--num-tokens", "3",
                       "--models", ",".join(runs["copying"]), *common])
    for task, models in runs.items():
        report = json.loads((tmp_path / f"{task}.json").read_text())
        assert report["config"]["task"] == task and list(report["results"]) == models
        for r in report["results"].values():
            assert [h["step"] for h in r["history"]] == [1, 2]
            for h in r["history"]:
                assert all(math.isfinite(h[k]) for k in ("train_loss", "loss", "accuracy"))
                assert 0.0 <= h["accuracy"] <= 1.0
            assert r["params"] > 0
        png = (tmp_path / f"{task}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        md = (tmp_path / f"{task}.md").read_text()
        assert md.count("\n| ") == 1 + len(models)
        assert "examples/synthetic/train.py --task " + task in md
