"""S4D conv forward at the reference shape: do_bench rounds against the peer, the host time of
a call, and the kernels and the gaps between them over two do_bench-like calls (an L2 flush
before each).

    PYTHONPATH=$PWD python3 benchmarks/debug/conv_fwd_probe.py     # from the repo root
"""
import statistics, sys, time
sys.path.insert(0, "benchmarks")
import torch
import bench_conv as bc
import lrc
from lrc.zoo import ZOO
from torch.profiler import profile, ProfilerActivity

B, D, L, N = 8, 2048, 4096, 32
bc.SHAPE = (B, D, L)
leaves = bc.peer_inputs(B, D, L, N)
layer = lrc.compile(ZOO["s4d_zoh"].spec, backend="triton", lowering="conv")
args = bc.lrc_args(leaves)
fwd = lambda: layer(**args)
for _ in range(3):
    fwd()
torch.cuda.synchronize()
for i in range(4):
    ours, peer = bc.bench(fwd), bc.bench(lambda: bc.peer_fn(*leaves))
    print(f"do_bench fwd lrc {ours * 1e3:.1f} us   peer {peer * 1e3:.1f} us", flush=True)
with torch.no_grad():
    print(f"do_bench fwd lrc no_grad {bc.bench(fwd)*1e3:.1f} us", flush=True)
ts = []
for _ in range(30):
    torch.cuda.synchronize()
    t = time.perf_counter(); fwd(); ts.append(time.perf_counter() - t)
print(f"host us per forward (GPU idle at start): median {statistics.median(ts) * 1e6:.0f}",
      flush=True)
cache = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(2):
        cache.zero_()
        fwd()
    torch.cuda.synchronize()
ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
ev.sort(key=lambda e: e.time_range.start)
prev, tot = None, 0.0
for e in ev:
    s, t = e.time_range.start, e.time_range.end
    gap = (s - prev) if prev is not None else 0
    tot += t - s
    print(f"  {e.name[:60]:60s} {t - s:8.1f} us  gap {gap:7.1f}")
    prev = t
print(f"kernels {tot:.0f} us in two calls (with two L2 flushes)")
