"""The cost model's conv/scan choice against the committed GPU sweep (issue 5's crossover)."""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "benchmarks"))
import crossover  # noqa: E402

SWEEP = os.path.join(crossover.RESULTS, "session5_conv_sweep.json")


def test_model_picks_the_measured_winner():
    """Every (shape, T) of the H200 sweep (S4D, two shapes, T = 64 ... 16384): the lowering
    the cost model predicts faster is the one measured faster (bench_conv.py sweep)."""
    rows = crossover.compare(SWEEP)
    assert len(rows) == 10 and all(len(r["measured_us"]) == 2 for r in rows)
    wrong = [(r["B"], r["H"], r["T"], r["measured_us"], r["predicted_us"]) for r in rows
             if r["measured_winner"] != r["predicted_winner"]]
    assert not wrong, wrong


def test_model_is_within_a_factor_of_the_measurements():
    """Not only the winners: each estimate within 3x of the measured time."""
    for r in crossover.compare(SWEEP):
        for k in ("conv", "scan"):
            ratio = r["predicted_us"][k] / r["measured_us"][k]
            assert 1 / 3 <= ratio <= 3, (r["B"], r["H"], r["T"], k, ratio)
