"""The cost model's conv/scan choice against a measured sweep (bench_conv.py's `sweep` stage).

    python benchmarks/crossover.py [sweep.json]   # default: results/session5_conv_sweep.json

Recomputes the model's estimate of both lowerings for every measured (shape, T) with the
current `lrc.passes.lowering` constants, prints measured and predicted times side by side with
the winner of each, and writes results/crossover.json and results/crossover.png. Runs on the
CPU (it reads measurements; it times nothing).
"""
from __future__ import annotations

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import lrc  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def measured(path: str) -> dict[tuple[int, int, int], dict[int, dict[str, float]]]:
    """{(B, H, N): {T: {"conv": us, "scan": us}}} from the sweep's forward rows."""
    out: dict = {}
    for row in json.load(open(path)):
        m = re.match(r"s4d sweep B(\d+) H(\d+) N(\d+)", row["case"])
        t = re.match(r"lrc (conv|scan) T=(\d+)", row.get("impl", ""))
        if m and t and row.get("mode") == "fwd":
            shape = tuple(int(x) for x in m.groups())
            out.setdefault(shape, {}).setdefault(int(t[2]), {})[t[1]] = row["ms"] * 1e3
    return out


def compare(path: str) -> list[dict]:
    g = lrc.compile(ZOO["s4d_zoh"].spec, backend="triton").plan.graph
    lw = g.meta("lowering")
    rows = []
    for (B, H, N), by_t in sorted(measured(path).items()):
        for T, us in sorted(by_t.items()):
            costs = lw.choose(g, {"b": B, "h": H, "n": N}, T, 4)[1]
            pred = {k: costs[k].seconds * 1e6 for k in ("conv", "scan")}
            rows.append(dict(B=B, H=H, N=N, T=T, measured_us=us, predicted_us=pred,
                             bound={k: costs[k].bound for k in pred},
                             measured_winner=min(us, key=us.get),
                             predicted_winner=min(pred, key=pred.get)))
    return rows


def plot(rows: list[dict], png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({(r["B"], r["H"], r["N"]) for r in rows})
    fig, axes = plt.subplots(1, len(shapes), figsize=(6 * len(shapes), 4.2))
    for ax, shape in zip(axes if len(shapes) > 1 else [axes], shapes):
        rs = [r for r in rows if (r["B"], r["H"], r["N"]) == shape]
        ts = [r["T"] for r in rs]
        for k, c in (("conv", "tab:blue"), ("scan", "tab:orange")):
            ax.plot(ts, [r["measured_us"][k] for r in rs], "o-", color=c, label=f"{k} measured")
            ax.plot(ts, [r["predicted_us"][k] for r in rs], "x--", color=c,
                    label=f"{k} predicted")
        ax.set(xscale="log", yscale="log", xlabel="T", ylabel="forward, us",
               title="S4D B%d H%d N%d fp32 (H200)" % shape)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(RESULTS, "session5_conv_sweep.json")
    rows = compare(src)
    for r in rows:
        m, p = r["measured_us"], r["predicted_us"]
        ok = "ok" if r["measured_winner"] == r["predicted_winner"] else "DIFFERS"
        print(f"B{r['B']} H{r['H']} N{r['N']} T={r['T']:6d}  measured conv {m['conv']:8.0f} "
              f"scan {m['scan']:8.0f} us | predicted conv {p['conv']:8.0f} ({r['bound']['conv']}) "
              f"scan {p['scan']:8.0f} ({r['bound']['scan']}) | winner {r['measured_winner']} / "
              f"{r['predicted_winner']} {ok}")
    with open(os.path.join(RESULTS, "crossover.json"), "w") as fh:
        json.dump(dict(source=os.path.basename(src), rows=rows), fh, indent=1)
    plot(rows, os.path.join(RESULTS, "crossover.png"))
