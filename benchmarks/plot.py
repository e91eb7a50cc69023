"""A bar chart of a run.py results JSON: peer time / lrc time per row and mode.

    python benchmarks/plot.py benchmarks/results/nvidia-h100-80gb-hbm3.json [--out chart.png]

Bars are the wall-clock ratio (do_bench medians); a black tick is the same ratio of the
kernels' own GPU time where both sides have it. Above the dashed line at 1, lrc is faster.
"""
from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODES = ("fwd", "fwdbwd", "step")
COLORS = {"fwd": "#2a9d8f", "fwdbwd": "#e76f51", "step": "#457b9d"}


def plot(doc: dict, path: str) -> None:
    """Write the chart of doc's summary (lines with both an lrc and a peer time) to path."""
    lines = [s for s in doc["summary"] if s.get("speedup")]
    rows = list(dict.fromkeys(s["row"] for s in lines))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows) + 2), 4.5))
    width = 0.8 / 2  # fwd and fwdbwd side by side; a decode row's one step bar centred
    labeled: set[str] = set()
    for r, row in enumerate(rows):
        mine = [s for mode in MODES for s in lines if s["row"] == row and s["mode"] == mode]
        for m, s in enumerate(mine):
            mode = s["mode"]
            x = r + (m - (len(mine) - 1) / 2) * width
            ax.bar(x, s["speedup"], width, color=COLORS[mode],
                   label=None if mode in labeled else mode)
            labeled.add(mode)
            ax.text(x, s["speedup"], f"{s['speedup']:.2f}", ha="center", va="bottom",
                    fontsize=7)
            if s.get("lrc_gpu_us") and s.get("peer_gpu_us"):  # kernels only
                g = s["peer_gpu_us"] / s["lrc_gpu_us"]
                ax.plot([x - width / 3, x + width / 3], [g, g], c="k", lw=2)
    ax.axhline(1.0, ls="--", c="k", lw=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{row}\nvs {next(s['peer'] for s in lines if s['row'] == row)}"
                        for row in rows], fontsize=8)
    ax.set_ylabel("peer time / lrc time (above 1: lrc faster)")
    ax.legend(fontsize=8)
    meta = doc["meta"]
    ax.set_title(f"lrc vs peers on {meta['card']} (torch {meta['torch']}, Triton "
                 f"{meta['triton']}, lrc {meta.get('lrc_commit')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Read the JSON named on the command line, write the PNG beside it (or at --out)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", help="a results JSON written by run.py")
    p.add_argument("--out", default=None, help="PNG path (default: the JSON's, .png)")
    args = p.parse_args()
    with open(args.json) as fh:
        doc = json.load(fh)
    out = args.out or os.path.splitext(args.json)[0] + ".png"
    plot(doc, out)
    print("wrote", out)


if __name__ == "__main__":
    main()
