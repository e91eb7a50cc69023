"""The cost model's conv/scan choice against a measured GPU sweep (S4D forward on an H200, two
shapes, T = 64 ... 16384; each row the median forward time of one lowering, kept as data in
tests/passes/data)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import lrc
from lrc.zoo import ZOO

SWEEP = Path(__file__).parent / "data" / "s4d_conv_scan_sweep_h200.json"


def measured() -> dict[tuple[int, int, int], dict[int, dict[str, float]]]:
    """{(B, H, N): {T: {"conv": us, "scan": us}}} from the sweep's forward rows."""
    out: dict = {}
    for row in json.loads(SWEEP.read_text()):
        m = re.match(r"s4d sweep B(\d+) H(\d+) N(\d+)", row["case"])
        t = re.match(r"lrc (conv|scan) T=(\d+)", row["impl"])
        if m and t and row["mode"] == "fwd":
            shape = tuple(int(x) for x in m.groups())
            out.setdefault(shape, {}).setdefault(int(t[2]), {})[t[1]] = row["ms"] * 1e3
    return out


def compare() -> list[dict]:
    """Each measured (shape, T) with the cost model's estimate of both lowerings."""
    g = lrc.compile(ZOO["s4d_zoh"].spec, backend="triton").plan.graph
    lw = g.meta("lowering")
    rows = []
    for (B, H, N), by_t in sorted(measured().items()):
        for T, us in sorted(by_t.items()):
            costs = lw.choose(g, {"b": B, "h": H, "n": N}, T, 4)[1]
            pred = {k: costs[k].seconds * 1e6 for k in ("conv", "scan")}
            rows.append(dict(B=B, H=H, N=N, T=T, measured_us=us, predicted_us=pred,
                             measured_winner=min(us, key=us.get),
                             predicted_winner=min(pred, key=pred.get)))
    return rows


def test_model_picks_the_measured_winner():
    """Every (shape, T) of the sweep: the lowering the cost model predicts faster is the one
    measured faster."""
    rows = compare()
    assert len(rows) == 10 and all(len(r["measured_us"]) == 2 for r in rows)
    wrong = [(r["B"], r["H"], r["T"], r["measured_us"], r["predicted_us"]) for r in rows
             if r["measured_winner"] != r["predicted_winner"]]
    assert not wrong, wrong


def test_model_is_within_a_factor_of_the_measurements():
    """Not only the winners: each estimate within 3x of the measured time."""
    for r in compare():
        for k in ("conv", "scan"):
            ratio = r["predicted_us"][k] / r["measured_us"][k]
            assert 1 / 3 <= ratio <= 3, (r["B"], r["H"], r["T"], k, ratio)
