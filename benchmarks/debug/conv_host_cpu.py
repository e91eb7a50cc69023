"""Host time of S4D's conv forward with the kernel launches stubbed (CPU tensors, small
shape): lrc's Python and torch's op dispatch alone, what made the forward host-bound on the
GPU machine (seventeenth session). With arguments, a cProfile sorted by that key.

    TRITON_INTERPRET=1 python benchmarks/debug/conv_host_cpu.py [tottime|cumulative [rows]]
"""
import sys
import time
sys.path.insert(0, "benchmarks")
import torch
import bench_conv as bc
import lrc
from lrc.kernels import module
from lrc.zoo import ZOO
bc.DEV = "cpu"
B, D, L, N = 2, 8, 64, 4
layer = lrc.compile(ZOO["s4d_zoh"].spec, backend="triton", lowering="conv")
args = bc.lrc_args(bc.peer_inputs(B, D, L, N))
y = layer(**args)
module.Launcher.__call__ = lambda self, *a, **k: None
def run(n=300):
    t = time.perf_counter()
    for _ in range(n):
        layer(**args)
    return (time.perf_counter() - t) / n * 1e6
run(50)
print("host us/call (grad):", [round(run()) for _ in range(3)])
with torch.no_grad():
    print("host us/call (no_grad):", [round(run()) for _ in range(3)])
if len(sys.argv) > 1:
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        layer(**args)
    ka = prof.key_averages()
    print("aten ops", sum(e.count for e in ka if e.key.startswith("aten::")))
    import cProfile, pstats
    pr = cProfile.Profile(); pr.enable(); run(200); pr.disable()
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    pstats.Stats(pr).sort_stats(sys.argv[1]).print_stats(rows)
