"""PNG plots of the benchmark JSON in benchmarks/results (made by bench.py, bench_conv.py,
sweep_scan.py on the GPU).

    python benchmarks/plot.py            # writes benchmarks/results/*.png
"""
from __future__ import annotations

import json
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
HBM = 4.28e12


def load(name):
    with open(os.path.join(HERE, name)) as fh:
        return json.load(fh)


def floors(case: str) -> dict[str, float]:
    """HBM byte floors (us) of the reference shapes, as DESIGN.md section 7 counts them."""
    if case.startswith("diag B8 T4096 D2048"):
        el = 8 * 4096 * 2048
        return {"fwd": 3 * el * 2 / HBM * 1e6, "fwdbwd": 8 * el * 2 / HBM * 1e6}
    if case.startswith("mamba1"):
        return {"fwd": 260.0}  # the SFU floor: 1.07e9 exp
    return {}


def bars(rows, path, title):
    by_case = defaultdict(list)
    for r in rows:
        if (r.get("mode") in ("fwd", "fwdbwd", "step") and "ms" in r
                and not r["impl"].startswith("  ")):
            by_case[r["case"]].append(r)
    cases = sorted(by_case)
    fig, axes = plt.subplots(len(cases), 1, figsize=(11, 2.4 + 2.2 * len(cases)),
                             squeeze=False)
    for ax, case in zip(axes[:, 0], cases):
        rs = by_case[case]
        labels = [f"{r['impl']} ({r['mode']})" for r in rs]
        vals = [r["ms"] * 1e3 for r in rs]
        colors = ["#2a9d8f" if r["impl"].startswith("lrc") else "#e76f51" for r in rs]
        ax.barh(range(len(rs)), vals, color=colors)
        for i, r in enumerate(rs):  # the kernels' own time, where the row has it
            if r.get("gpu_us"):
                ax.plot([r["gpu_us"]] * 2, [i - 0.4, i + 0.4], c="k", lw=2)
        ax.set_yticks(range(len(rs)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("microseconds (wall-clock median; black tick: GPU kernel time)")
        for mode, us in floors(case).items():
            ax.axvline(us, ls="--", c="k", lw=0.8)
            ax.text(us, len(rs) - 0.5, f" floor {mode} {us:.0f} us", fontsize=7)
        ax.set_title(case, fontsize=9)
    fig.suptitle(title + "  (green: lrc, red: peers; one H200, Triton 3.6)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, path), dpi=110)
    plt.close(fig)


def conv_rows(name: str) -> list:
    """bench_conv.py's forward and forward+backward rows of a JSON file (not its pieces)."""
    return [r for r in load(name)
            if r.get("mode") in ("fwd", "fwdbwd") and not r["impl"].startswith("  ")]


def crossover(rows, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sweeps = sorted({r["case"] for r in rows if "sweep" in r["case"]})
    for ax, case in zip(axes, sweeps):
        for kind, color in (("conv", "#2a9d8f"), ("scan", "#e76f51")):
            pts = sorted((int(r["impl"].split("T=")[1]), r["ms"] * 1e3, r["predicted_us"])
                         for r in rows if r["case"] == case and r["impl"].startswith(f"lrc {kind}"))
            if not pts:
                continue
            ts, meas, pred = zip(*pts)
            ax.plot(ts, meas, "o-", c=color, label=f"{kind} measured")
            ax.plot(ts, pred, "x--", c=color, label=f"{kind} predicted (old model)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("T")
        ax.set_ylabel("forward, microseconds")
        ax.set_title(case, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, path), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    bars(load("bench_scan_peers.json") + load("bench_mamba1.json"), "scan_vs_peers.png",
         "Scan lowering vs the peers")
    bars(sum((load(f"latest_{n}.json") for n in ("diag_mamba2fwd", "mamba1", "chunked", "decode",
                                                 "s4d")), []),
         "latest_vs_peers.png", "Latest run (2026-11-28, third session)")
    s4 = load("session4_bench.json") + [
        dict(r, mode=r["mode"]) for r in load("session4_conv.json")
        if r.get("mode") in ("fwd", "fwdbwd") and not r["impl"].startswith("  ")]
    bars(s4, "session4_vs_peers.png", "Fourth session (2026-11-28)")
    bars(load("session7_bench_diag.json"), "session7_diag_vs_peers.png",
         "Elementwise scan, seventh session (2026-11-29): row kernels, tuned on kernel time")
    bars(load("session9_bench_final.json"), "session9_chunked_vs_peers.png",
         "Chunked lowering, ninth session (2026-11-29): Mamba-2 and GLA")
    bars(load("session11_bench_diag_mamba2.json") + load("session11_bench_gla.json"),
         "session11_vs_peers.png", "Eleventh session (2026-11-29): elementwise, Mamba-2, GLA")
    bars(load("session12_bench_mamba1_mamba2.json"), "session12_vs_peers.png",
         "Twelfth session (2026-11-29): Mamba-1 with backward_n, Mamba-2")
    bars(load("session13_bench_mamba1_mamba2.json"), "session13_vs_peers.png",
         "Thirteenth session (2026-11-29): chunked kernels without masks (EVEN)")
    s14 = [r for r in load("session14_bench_decode_s4d_diag.json")  # decode: after its fix
           if not r["case"].startswith("decode")]
    bars(load("session14_bench_mamba1_mamba2.json") + s14
         + load("session14_bench_decode_cached.json"), "session14_vs_peers.png",
         "Fourteenth session (2026-11-29): flips as gathers (Mamba-1), decode, S4D, diag")
    s15 = [r for r in load("session15_bench_mamba1_decode_diag_s4d.json")  # mamba1, s4d
           if r["case"].startswith(("mamba1", "s4d"))]
    bars(s15 + load("session15_bench_diag_final.json") + load("session15_bench_decode_final.json")
         + load("session15_bench_mamba2.json") + conv_rows("session15_bench_conv_final.json"),
         "session15_vs_peers.png",
         "Fifteenth session (2026-11-29): Param kernels (S4D conv), replayed decode step")
    bars(load("session16_bench_decode_final.json") + load("session16_bench_diag.json")
         + load("session16_bench_mamba2.json") + load("session16_bench_gla_fla.json")
         + load("session16_bench_gla_lrc.json") + conv_rows("session16_bench_conv.json"),
         "session16_vs_peers.png",
         "Sixteenth session (2026-11-29): decode step load order; GLA's lrc rows in another "
         "process than fla's")
    bars(load("session17_bench_decode.json") + load("session17_bench_diag.json")
         + load("session17_bench_mamba1.json") + load("session17_bench_mamba2.json")
         + load("session17_bench_gla.json") + conv_rows("session17_bench_conv.json"),
         "session17_vs_peers.png",
         "Seventeenth session (2026-11-29): every Must row, the S4D forward no longer "
         "host-bound")
    bars(load("session18_bench_decode.json") + load("session18_bench_diag_rerun.json")
         + load("session18_bench_mamba1.json") + load("session18_bench_mamba2.json")
         + load("session18_bench_gla.json") + conv_rows("session18_bench_conv.json"),
         "session18_vs_peers.png",
         "Eighteenth session (2026-11-29): the chunked backward's order and state pass, "
         "the S4D forward's host cuts")
    conv = load("bench_conv.json")
    bars([r for r in conv if "sweep" not in r["case"]], "conv_vs_peer.png",
         "Conv lowering vs PyTorch eager S4D")
    crossover(conv, "conv_scan_crossover.png")
    print("wrote", sorted(f for f in os.listdir(HERE) if f.endswith(".png")))
