"""Where S4D's conv forward+backward spends its wall time (bench_conv.py's reference shape,
B8 D2048 L4096 N32 fp32): torch.profiler with CPU and CUDA activity over a few calls, the ops
by their own CPU time, and the GPU's idle time between kernels. Writes $OUT/conv_trace.json.

    PYTHONPATH=$PWD python benchmarks/debug/conv_timeline.py
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import bench_conv as bc  # noqa: E402
import lrc  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")


def main():
    B, D, L, N = 8, 2048, 4096, 32
    bc.SHAPE = (B, D, L)
    layer = lrc.compile(ZOO["s4d_zoh"].spec, backend="triton", lowering="conv")
    args = bc.lrc_args(bc.peer_inputs(B, D, L, N))
    run = bc.fwdbwd(lambda: layer(**args), list(args.values()))
    for _ in range(5):
        run()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        run()
    torch.cuda.synchronize()
    print(f"fwd+bwd wall {(time.perf_counter() - t) / 10 * 1e6:.0f} us a call", flush=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            run()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), flush=True)
    path = os.path.join(OUT, "conv_trace.json")
    prof.export_chrome_trace(path)
    ev = json.load(open(path))["traceEvents"]
    k = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in ev
               if e.get("cat") == "kernel" or e.get("cat") == "gpu_memcpy")
    busy = sum(b - a for a, b, _ in k)
    span = k[-1][1] - k[0][0]
    gaps = sorted(((k[i + 1][0] - k[i][1], k[i][2][:40], k[i + 1][2][:40])
                   for i in range(len(k) - 1)), reverse=True)
    print(f"3 calls: GPU span {span:.0f} us, kernels {busy:.0f} us, idle {span - busy:.0f} us,"
          f" {len(k)} kernels", flush=True)
    for g in gaps[:15]:
        print(f"  idle {g[0]:8.1f} us after {g[1]!r} before {g[2]!r}")


if __name__ == "__main__":
    main()
