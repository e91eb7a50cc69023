"""Where a kernel's warps stall, from an ncu report's source page (`ncu -i REP --page source
--csv --print-source sass > FILE.csv`): the share of each stall reason over all samples, then
the instructions with the most samples and their two largest reasons.

    python benchmarks/debug/ncu_stalls.py FILE.csv [top]
"""
import collections
import csv
import sys


def num(s: str) -> float:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return 0.0


def main():
    rows = list(csv.reader(open(sys.argv[1])))
    hi = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    hdr = rows[hi]
    data = [r for r in rows[hi + 1:] if len(r) == len(hdr)]
    ix = {h: i for i, h in enumerate(hdr)}
    stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
    tot = collections.Counter()
    for r in data:
        for s in stalls:
            tot[s] += num(r[ix[s]])
    total = sum(tot.values())
    print("total samples", total)
    for s, v in tot.most_common(12):
        print(f"  {s:24s} {v / total * 100:5.1f}%")
    samples = "Warp Stall Sampling (All Samples)"
    top = sorted(data, key=lambda r: -num(r[ix[samples]]))
    for r in top[:int(sys.argv[2]) if len(sys.argv) > 2 else 30]:
        most = sorted(((num(r[ix[s]]), s) for s in stalls), reverse=True)[:2]
        print(f"{r[ix['Address']]:>16} {num(r[ix[samples]]) / total * 100:5.2f}% "
              f"{r[ix['Source']][:70]:70s} {[(s[6:], int(v)) for v, s in most]}")


if __name__ == "__main__":
    main()
