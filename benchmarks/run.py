"""The benchmark runner: times every (row, implementation, mode) of registry.py in one process.

    python benchmarks/run.py [--rows a,b] [--impl lrc,peer] [--out PATH] [--tiny] [--merge]
                             [--knob name=value ...] [--ab OTHER_CHECKOUT [--rounds 3]]

GPU: each time is the median of triton.testing.do_bench (`us`, wall-clock between CUDA events,
launch overhead included) and the kernels' own time per call from torch.profiler (`gpu_us`).
lrc's output is checked against the row's first peer (`rel_l2_vs_<peer>`) and against lrc's
float64 reference backend at the tiny shapes (`rel_l2_vs_reference`). `speedup` is peer us /
lrc us (DESIGN.md section 7's ratio: above 1, lrc is faster).

--tiny    every shape shrunk, on the CPU: lrc under Triton's interpreter, peers that need CUDA
          marked unavailable; times are perf_counter medians (a smoke run, not a benchmark).
--merge   keep the other rows of an existing --out file (a run split over several calls).
--knob    an lrc.config override for the whole run (tune=0, scan_chunk=32, prefer_loop=1).
--ab DIR  A/B: each row's lrc rows timed in fresh processes that import lrc from this checkout
          (A) and from DIR (B, the baseline), alternately for --rounds rounds; prints and
          writes A/B per row and mode (medians over rounds) and flags A slower by over 3%.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
try:  # lrc from PYTHONPATH (the A/B mode sets it to a checkout), else this checkout
    import lrc
except ImportError:
    sys.path.append(ROOT)
    import lrc

import torch  # noqa: E402
from registry import ROWS, Row, Unavailable, rel_l2  # noqa: E402

SLOWER = 1.03  # the A/B bound: this checkout at most 3% slower than the baseline


# ---- timing

def wall_us(fn, cuda: bool) -> float:
    """Median microseconds per call: do_bench on the GPU, perf_counter on the CPU."""
    if cuda:
        import triton

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3
    times = []  # the caller has warmed fn up
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def gpu_us(fn, n: int = 3) -> float:
    """GPU time per call, kernels only (torch.profiler's device time summed over kernels):
    with the wall-clock median it separates the kernels from the host's launch overhead."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    total = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages())
    return round(total / n, 1)


def peak_mib(fn) -> int:
    """Peak GPU memory a call allocates beyond what was allocated before it, MiB."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - base) / 2**20)


# ---- one row

def short(e: BaseException) -> str:
    """An exception as one short line."""
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:300]


def run_row(row: Row, impls: set[str], tiny: bool, device: str) -> list[dict]:
    """Every selected implementation of `row` in every mode: a list of result entries."""
    cuda = device == "cuda"
    sizes = row.tiny if tiny else row.sizes
    torch.manual_seed(0)
    inputs = row.inputs(sizes, device)
    entries, outputs, lrc_ref = [], {}, None
    for impl in row.impls:
        if impl.kind not in impls and impl.name not in impls:
            continue
        base = dict(row=row.name, case=row.describe(sizes), impl=impl.name, kind=impl.kind)
        try:
            if not cuda and impl.kind == "peer" and not impl.cpu:
                raise Unavailable("needs CUDA (this run is on the CPU)")
            built = impl.build(inputs, sizes)
            outputs[impl.name] = built.output()
            if built.reference is not None and tiny:
                lrc_ref = rel_l2(outputs[impl.name], built.reference())
        except Unavailable as e:
            entries.append(dict(base, status="unavailable", reason=str(e)))
            print(f"   {row.name}: {impl.name} unavailable: {e}", flush=True)
            continue
        except Exception as e:  # noqa: BLE001 (one failing implementation must not stop the rest)
            entries.append(dict(base, status="error", reason=short(e)))
            print(f"!! {row.name}: {impl.name}: {short(e)}", flush=True)
            traceback.print_exc(limit=4)
            continue
        for mode in row.modes:
            entry = dict(base, mode=mode, label=built.label, **built.extra)
            fn = built.calls.get(mode)
            try:
                if fn is None:
                    raise Unavailable(f"{impl.name} has no {mode}")
                t0 = time.perf_counter()
                fn()  # compile and tune outside the timing (do_bench sizes its loop by it)
                if cuda:
                    torch.cuda.synchronize()
                entry["warmup_s"] = round(time.perf_counter() - t0, 2)
                entry["us"] = round(wall_us(fn, cuda), 1)
                entry["status"] = "ok"
            except Exception as e:  # noqa: BLE001 (fla's backward refuses some Tritons)
                entry.update(status="unavailable" if isinstance(e, Unavailable) else "error",
                             reason=short(e))
            if cuda and entry["status"] == "ok":
                try:  # a profiler detail must not lose the row's time
                    entry["gpu_us"] = gpu_us(fn)
                    if mode == "fwdbwd":
                        entry["peak_MiB"] = peak_mib(fn)
                except Exception as e:  # noqa: BLE001
                    entry["gpu_us_error"] = short(e)
            entries.append(entry)
        del built
    check_lrc(row, entries, outputs, lrc_ref, device, tiny)
    return entries


def check_lrc(row: Row, entries: list[dict], outputs: dict, lrc_ref: float | None,
              device: str, tiny: bool) -> None:
    """Cross-checks on lrc's entries: relative L2 against each peer that ran, and against the
    float64 reference backend at the tiny shapes (computed here when the run is not tiny)."""
    if "lrc" not in outputs:
        return
    check = {f"rel_l2_vs_{name}": float(f"{rel_l2(outputs['lrc'], out):.2e}")
             for name, out in outputs.items() if name != "lrc"}
    if lrc_ref is None:
        try:  # the same layer's spec at the tiny shapes, against the reference backend
            torch.manual_seed(0)
            small = row.inputs(row.tiny, device)
            lrc_impl = next(i for i in row.impls if i.kind == "lrc")
            built = lrc_impl.build(small, row.tiny)
            lrc_ref = rel_l2(built.output(), built.reference())
        except Exception as e:  # noqa: BLE001
            check["reference_error"] = short(e)
    if lrc_ref is not None:
        check["rel_l2_vs_reference"] = float(f"{lrc_ref:.2e}")
    for e in entries:
        if e["impl"] == "lrc":
            e["check"] = check
    # ratios: each peer's time over lrc's, per mode
    lrc_us = {e["mode"]: e["us"] for e in entries if e["impl"] == "lrc" and "us" in e}
    for e in entries:
        if e["kind"] == "peer" and "us" in e and e["mode"] in lrc_us:
            e["speedup"] = round(e["us"] / lrc_us[e["mode"]], 3)


def summarize(rows: list[Row], entries: list[dict]) -> list[dict]:
    """One line per (row, mode): lrc's time, the first peer that ran, and peer / lrc."""
    out = []
    for row in rows:
        for mode in row.modes:
            mine = [e for e in entries if e["row"] == row.name and e.get("mode") == mode]
            lrc_e = next((e for e in mine if e["impl"] == "lrc"), None)
            peer_e = next((e for e in mine if e["kind"] == "peer" and "us" in e), None)
            if lrc_e is None and peer_e is None:
                continue
            line = dict(row=row.name, case=(lrc_e or peer_e)["case"], mode=mode,
                        lrc_us=lrc_e.get("us") if lrc_e else None,
                        lrc_gpu_us=lrc_e.get("gpu_us") if lrc_e else None,
                        peer=peer_e["impl"] if peer_e else None,
                        peer_us=peer_e["us"] if peer_e else None,
                        peer_gpu_us=peer_e.get("gpu_us") if peer_e else None)
            if line["lrc_us"] and line["peer_us"]:
                line["speedup"] = round(line["peer_us"] / line["lrc_us"], 3)
                line["lrc_over_peer"] = round(line["lrc_us"] / line["peer_us"], 3)
            if lrc_e and "check" in lrc_e:
                line["check"] = lrc_e["check"]
            unavailable = [f"{e['impl']}: {e['reason']}" for e in mine if "reason" in e]
            if unavailable:
                line["unavailable"] = unavailable
            out.append(line)
    return out


def fmt(x: Any, spec: str = ".1f") -> str:
    """A number for the table, or '-'."""
    return "-" if x is None else format(x, spec)


def table(summary: list[dict]) -> str:
    """The summary as a fixed-width text table."""
    head = (f"{'row':14s} {'case':40s} {'mode':7s} {'lrc us':>9s} {'(gpu)':>9s} "
            f"{'peer':18s} {'peer us':>9s} {'(gpu)':>9s} {'peer/lrc':>8s}  check")
    lines = [head, "-" * len(head)]
    for s in summary:
        chk = " ".join(f"{k.replace('rel_l2_vs_', '')} {v:.1e}"
                       for k, v in (s.get("check") or {}).items() if isinstance(v, float))
        lines.append(f"{s['row']:14s} {s['case'][:40]:40s} {s['mode']:7s} "
                     f"{fmt(s['lrc_us']):>9s} {fmt(s['lrc_gpu_us']):>9s} "
                     f"{(s['peer'] or '-')[:18]:18s} {fmt(s['peer_us']):>9s} "
                     f"{fmt(s['peer_gpu_us']):>9s} {fmt(s.get('speedup'), '.2f'):>8s}  {chk}")
    return "\n".join(lines)


# ---- metadata and output

def card_name(device: str) -> str:
    """The card's name as torch reports it (the CPU's for a CPU run)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()})"


def slug(text: str) -> str:
    """A file-name form of a card name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def lrc_commit() -> str | None:
    """The commit of the checkout lrc was imported from (and '+dirty' with local changes)."""
    where = os.path.dirname(os.path.dirname(os.path.abspath(lrc.__file__)))
    try:
        top = subprocess.run(["git", "-C", where, "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if not top or os.path.realpath(top) != os.path.realpath(where):
            return None  # a copy of lrc inside another repository (an A/B side): unknown
        rev = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--", "lrc"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def meta(device: str, tiny: bool, knobs: dict) -> dict:
    """What the numbers depend on: card, versions, the command, lrc's checkout and knobs."""
    import triton

    return dict(card=card_name(device), device=device, tiny=tiny,
                torch=torch.__version__, triton=triton.__version__,
                python=platform.python_version(), lrc_file=lrc.__file__,
                lrc_commit=lrc_commit(), knobs=knobs,
                command="python " + " ".join(sys.argv))


def parse_knobs(pairs: list[str]) -> dict:
    """'name=value' pairs as lrc.config overrides (ints, floats, on/off, none parsed)."""
    out = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        low = text.strip().lower()
        if low in ("none", ""):
            value: Any = None
        elif low in ("true", "on", "yes"):
            value = True
        elif low in ("false", "off", "no"):
            value = False
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
        out[name] = value
    return out


def write(path: str, doc: dict, merge: bool) -> None:
    """The JSON at `path`; with merge, the other rows of the file already there are kept."""
    if merge and os.path.exists(path):
        with open(path) as fh:
            old = json.load(fh)
        done = {e["row"] for e in doc["results"]}
        doc["results"] = [e for e in old.get("results", []) if e["row"] not in done] + \
            doc["results"]
        doc["summary"] = [s for s in old.get("summary", []) if s["row"] not in done] + \
            doc["summary"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1, default=str)


# ---- A/B

def ab(args, rows: list[Row]) -> dict:
    """lrc's rows from this checkout (A) and from args.ab (B, the baseline), each round one
    fresh process per side running every row, sides alternating, for args.rounds rounds;
    A/B of the median wall and GPU times per row and mode, flagged where A is slower than
    the baseline by more than 3% of GPU time."""
    sides = {"A": ROOT, "B": os.path.abspath(args.ab)}
    tmp = tempfile.mkdtemp(prefix="lrc-ab-")
    times: dict = {}
    commits = {}
    names = ",".join(r.name for r in rows)
    for rnd in range(args.rounds):
        for side, root in (sides.items() if rnd % 2 == 0 else reversed(sides.items())):
            out = os.path.join(tmp, f"{side}_{rnd}.json")
            # each side has its own lrc cache: both may key one spec the same way
            env = dict(os.environ, LRC_CACHE_DIR=os.path.join(tmp, f"cache_{side}"),
                       PYTHONPATH=os.pathsep.join(
                           [root] + [p for p in os.environ.get("PYTHONPATH", "").split(
                               os.pathsep) if p and os.path.abspath(p) != ROOT]))
            cmd = [sys.executable, os.path.abspath(__file__), "--rows", names,
                   "--impl", "lrc", "--out", out]
            cmd += (["--tiny"] if args.tiny else []) + sum((["--knob", k] for k in
                                                            args.knob), [])
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode:
                raise RuntimeError(f"A/B {side}: {res.stderr[-1500:]}")
            with open(out) as fh:
                doc = json.load(fh)
            where = os.path.dirname(os.path.dirname(doc["meta"]["lrc_file"]))
            if os.path.realpath(where) != os.path.realpath(root):
                raise RuntimeError(f"A/B {side} imported lrc from {where}, not {root}")
            commits[side] = doc["meta"]["lrc_commit"]
            for e in doc["results"]:
                if e["impl"] == "lrc" and "us" in e:
                    times.setdefault((e["row"], e["mode"], side), []).append(
                        (e["us"], e.get("gpu_us")))
            print(f"   round {rnd} {side}: " + ", ".join(
                f"{e['row']} {e['mode']} {e['us']:.1f}" for e in doc["results"] if "us" in e),
                flush=True)
    lines = []
    for row in rows:
        for mode in row.modes:
            a, b = times.get((row.name, mode, "A")), times.get((row.name, mode, "B"))
            if not a or not b:
                continue
            wall = statistics.median(x for x, _ in a) / statistics.median(x for x, _ in b)
            ga, gb = [g for _, g in a if g], [g for _, g in b if g]
            gpu = statistics.median(ga) / statistics.median(gb) if ga and gb else None
            lines.append(dict(row=row.name, mode=mode, a=a, b=b, a_over_b_wall=round(wall, 4),
                              a_over_b_gpu=None if gpu is None else round(gpu, 4),
                              slower=(gpu if gpu is not None else wall) > SLOWER))
    print(f"\nA = {sides['A']} ({commits.get('A')}), B (baseline) = {sides['B']} "
          f"({commits.get('B')})")
    print(f"{'row':14s} {'mode':7s} {'A us':>10s} {'B us':>10s} {'A/B wall':>9s} "
          f"{'A/B GPU':>8s}")
    for s in lines:
        flag = "  A SLOWER (> 3% of GPU time)" if s["slower"] else ""
        gpu = "-" if s["a_over_b_gpu"] is None else f"{s['a_over_b_gpu']:.3f}"
        print(f"{s['row']:14s} {s['mode']:7s} {statistics.median(x for x, _ in s['a']):10.1f} "
              f"{statistics.median(x for x, _ in s['b']):10.1f} {s['a_over_b_wall']:9.3f} "
              f"{gpu:>8s}{flag}")
    return dict(sides=sides, commits=commits, rounds=args.rounds, rows=lines)


# ---- main

def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, run the rows (or the A/B), print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    p.add_argument("--impl", default="lrc,peer",
                   help="comma list of kinds (lrc, peer) or implementation names")
    p.add_argument("--out", default=None, help="JSON path (default results/<card>.json)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (smoke run)")
    p.add_argument("--merge", action="store_true", help="keep other rows of an existing --out")
    p.add_argument("--knob", action="append", default=[], help="lrc.config override name=value")
    p.add_argument("--ab", default=None, help="another checkout: A/B of lrc's rows")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    args = p.parse_args(argv)

    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; rows: {', '.join(ROWS)}")
    rows = [ROWS[n] for n in names]
    knobs = parse_knobs(args.knob)
    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    if not cuda and not args.tiny:
        p.error("no CUDA device here: the reference shapes need a GPU (use --tiny)")
    card = card_name(device)
    out = args.out or os.path.join(HERE, "results",
                                   ("tiny-" if args.tiny else "") + slug(card) + ".json")
    doc = dict(meta=meta(device, args.tiny, knobs))
    print(f"{doc['meta']['card']}  torch {torch.__version__}  triton "
          f"{doc['meta']['triton']}  lrc {doc['meta']['lrc_commit']}", flush=True)
    if args.ab:
        doc["ab"] = ab(args, rows)
        doc["results"], doc["summary"] = [], []
        write(out, doc, merge=False)
        print("wrote", out)
        return doc

    from lrc import config

    entries: list[dict] = []
    with config.override(**knobs) if knobs else contextlib.nullcontext():
        for row in rows:
            t0 = time.time()
            print(f"== {row.name}: {row.describe(row.tiny if args.tiny else row.sizes)}",
                  flush=True)
            entries += run_row(row, set(args.impl.split(",")), args.tiny, device)
            print(f"   {row.name} took {time.time() - t0:.0f} s", flush=True)
            doc["results"], doc["summary"] = entries, summarize(rows, entries)
            write(out, dict(doc), args.merge)  # after every row: a time limit keeps some
    print()
    print(table(doc["summary"]))
    bad = [s for s in doc["summary"] if s.get("lrc_us") is None
           or not math.isfinite(s["lrc_us"])]
    if bad:
        print("\nlrc rows without a time:", ", ".join(f"{s['row']}/{s['mode']}" for s in bad))
    print("wrote", out)
    return doc


if __name__ == "__main__":
    main()
