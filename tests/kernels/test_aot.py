"""The generated kernels compiled for the H200 (sm_90) on the CPU, with Triton's own compiler
and ptxas (codegen/aot.py), for the launches a GPU run at the GPU tests' size would make
(sized for 132 SMs, untimed config choice). What this catches without a GPU: a kernel Triton
3.6 will not compile for some config, or one over the H200's shared memory, with no config
left that works."""
from __future__ import annotations

import contextlib

import pytest
import torch

import lrc
from lrc.kernels import aot
from lrc.kernels import tune as policy
from lrc.lowering.chunked import tune as chunked_tune
from lrc.lowering.scan import tune as scan_tune_policy
from lrc.lowering.scan.configs import ScanConfig
from lrc.zoo import ZOO
from tests.zoo.test_registry import is_seq, time_axis

pytest.importorskip("triton.backends.nvidia.compiler")

SIZES = {"gla": dict(h=4, k=128, v=128), "retnet": dict(h=4, k=128, v=128)}


def record(name: str, lowering: str, dtype: torch.dtype) -> list[aot.Launch]:
    """Forward and backward of zoo spec `name` at b=2, T=2049, as the GPU would launch them."""
    e = ZOO[name]
    kern = lrc.compile(e.spec, backend="triton", lowering=lowering)
    args = e.example(b=2, t=2049, dtype=torch.float32, **SIZES.get(name, {}))
    leaves = {k: v.to(dtype).requires_grad_(True) for k, v in args.items()}
    with aot.recording(as_gpu=132, compile=True) as launches:
        y = kern(**leaves)
        (y[0] if isinstance(y, tuple) else y).float().sum().backward()
    return launches


def assert_every_kernel_runs(launches: list[aot.Launch]) -> None:
    """Each kernel was launched, and any config that did not compile or fit was followed by
    one of the same kernel that did (the untimed choice moving on)."""
    names = {r.name.rsplit(".", 1)[-1].replace("chunked_", "") for r in launches}
    assert names == {"forward", "backward"}
    for i, r in enumerate(launches):
        if r.compiled.ok:  # ptxas's resource usage read back (registers per thread)
            assert 0 < r.compiled.regs <= 255
        if not r.compiled.fits:
            assert any(q.name == r.name and q.compiled.fits for q in launches[i + 1:]), r


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    monkeypatch.setattr(policy, "_CACHE", {})


def test_mamba1_scan_kernels_compile_for_the_h200():
    """The Mamba-1 backward's default config hits a failed layout pass in Triton 3.6 (seen on
    the H200 too); a later candidate compiles."""
    launches = record("mamba1", "scan", torch.float32)
    assert_every_kernel_runs(launches)


@pytest.mark.parametrize("name", ["gla", "retnet"])
def test_fp32_chunked_kernels_fit_the_h200(name):
    """float32 operands at K = V = 128: 32-step chunks, one pipeline stage, so the forward and
    the backward fit the H200's shared memory (64-step chunks needed 262-328 KB)."""
    launches = record(name, "chunked", torch.float32)
    assert_every_kernel_runs(launches)
    assert all(r.consts["BT"] == 32 for r in launches)
    assert max(r.compiled.shared for r in launches) <= aot.SHARED_LIMIT


@pytest.mark.parametrize("name,dtype", [
    ("mamba2", torch.float32), ("s4d_zoh", torch.float32), ("lru", torch.float32),
    ("rglru", torch.float32), ("rwkv6", torch.float32), ("gla", torch.float32),
    ("retnet", torch.float32), ("rwkv4", torch.float32), ("h3", torch.float32),
    ("mamba1", torch.bfloat16), ("rglru", torch.bfloat16)])
def test_scan_kernels_compile_for_the_h200(name, dtype):
    """Every zoo spec's scan (or one-token loop) kernels: some config of each compiles and
    fits, forward and backward, as the GPU tests launch them."""
    assert_every_kernel_runs(record(name, "scan", dtype))


SPLIT_LAUNCHES = {
    chunked_tune.LOCAL: [("forward", 1), ("states", None), ("forward", 2),
                         ("backward", 1), ("states", None), ("backward", 2)],
    chunked_tune.PASS: [("forward", 3), ("forward", 2), ("backward", 3), ("backward", 2)]}


@pytest.mark.parametrize("name", ["mamba2", "gla"])
@pytest.mark.parametrize("mode", [chunked_tune.LOCAL, chunked_tune.PASS])
def test_split_chunked_kernels_compile_for_the_h200(name, mode):
    """The forward and backward split over chunks (LOCAL: two phases each and the state
    passing; PASS: the state pass alone, then the chunks, the backward's looping over the
    heads that share B and C where the spec has them, and taking the keys in blocks),
    bf16 at the reference head sizes,
    compile and fit: each launch as the tuner would try it."""
    e = ZOO[name]
    kern = lrc.compile(e.spec, backend="triton", lowering="chunked")
    prog = kern._lowering("chunked")
    sizes = {"mamba2": dict(g=1, r=4, p=64, n=128), "gla": dict(h=2, k=128, v=128)}[name]
    V = 64 if name == "mamba2" else 128
    for w in (4, 8):  # PASS at 4 warps: the keys in blocks of 64 (the state passes and the
        # backward's chunks) and 8 heads a block; at 8 warps: the shared gradients in slabs
        pas, four = mode == chunked_tune.PASS, w == 4
        keys = dict(wk=64) if pas and four else {}
        stages = 3 if pas else 1  # the tuner's PASS backward: its state pass in three stages
        prog.override = (chunked_tune.Config(64, V, w, 2, split=mode, **keys),
                         chunked_tune.Config(64, V, w, stages, split=mode, **keys,
                                             heads=8 if pas and four else 0,
                                             bk=64 if pas and four else 0,
                                             spread=pas and not four))
        args = e.example(b=2, t=2049, dtype=torch.float32, **sizes)
        leaves = {k: v.to(torch.bfloat16).requires_grad_(True) for k, v in args.items()}
        with aot.recording(as_gpu=132, compile=True) as launches:
            kern(**leaves).float().sum().backward()
        assert [(r.name.rsplit("_", 1)[-1], r.consts.get("PHASE"))
                for r in launches] == SPLIT_LAUNCHES[mode]
        assert all(r.compiled.fits and 0 < r.compiled.regs <= 255 for r in launches)


def test_spills_are_read_from_the_stack_frame():
    """aot reports spills: a kernel holding 8192 float32 values in one warp's registers
    spills them (ptxas puts them in the stack frame), one holding 128 does not."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    @triton.jit
    def reverse(x_ptr, N: tl.constexpr):
        o = tl.arange(0, N)
        x = tl.load(x_ptr + o)
        tl.store(x_ptr + N - 1 - o, tl.cumsum(x, 0) * x)

    def usage(n):
        src = ASTSource(reverse, {"x_ptr": "*fp32", "N": "constexpr"}, constexprs={"N": n})
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 1})
        return aot._usage(k.asm["cubin"])

    regs, spills = usage(8192)
    assert regs > 0 and spills > 0
    assert usage(128)[1] == 0


STEP_SPECS = ["mamba1", "mamba2", "s4d_zoh", "lru", "rglru", "rwkv6", "gla", "retnet", "rwkv4",
              "h3"]


@pytest.mark.parametrize("name", STEP_SPECS)
@pytest.mark.parametrize("order", [False, True])
def test_step_kernels_compile_for_the_h200(name, order, monkeypatch):
    """The decode step as the GPU launches it, in both load orders (ORDER, the tuner's
    choice): on, its inline assembly (the inputs held back until the state has arrived,
    loop._after_state), which the interpreter cannot run, compiles with ptxas for sm_90.
    Mamba-1's per-channel inputs take the dependency."""

    monkeypatch.setattr(scan_tune_policy, "step_order", lambda run: setattr(run, "order", order))
    e = ZOO[name]
    kern = lrc.compile(e.spec, backend="triton")
    args = e.example(b=2, t=3, dtype=torch.float32, **SIZES.get(name, {}))
    _, state = lrc.compile(e.spec, backend="reference")(**args, return_final_state=True)
    state = tuple(x.to(torch.complex64 if x.is_complex() else torch.float32)
                  for x in (state if isinstance(state, tuple) else (state,)))
    tok = {k: (v.select(time_axis(e, k), 0) if is_seq(e, k) else v) for k, v in args.items()}
    with aot.recording(as_gpu=132, compile=True) as launches:
        kern.step(**tok, state=state if len(state) > 1 else state[0])
    steps = [r for r in launches if r.name.endswith(".step")]
    assert steps and all(r.consts["ORDER"] is order and r.consts["HAS_H0"] for r in steps)
    assert all(r.compiled.ok and r.compiled.fits and 0 < r.compiled.regs <= 255 for r in steps)
    if name == "mamba1":
        src = kern.program.source
        for v in ("u", "dt", "D", "dt_bias"):
            assert f"        {v} = _after({v}, h_s_first)" in src


@pytest.mark.parametrize("name", ["s4d_zoh", "s4"])
def test_conv_kernels_compile_for_the_h200(name, monkeypatch):
    """The convolution lowering's kernels (Param expressions, Vandermonde or Cauchy sums,
    pack, the half-spectrum product, unpack, and their backward) as a GPU forward and
    backward would launch them: each compiles for sm_90 within the H200's limits."""
    from lrc.kernels import launch, module

    seen: list[aot.Launch] = []
    call = launch.Launcher.__call__

    def spy(self, name, grid, device, args, **consts):
        fn = getattr(module.load(self.source, False), name)
        warps = consts.pop("num_warps", 4)
        seen.append(aot.Launch(name, fn, list(args), dict(consts), warps, 3))
        call(self, name, grid, device, args, **consts)

    monkeypatch.setattr(launch.Launcher, "__call__", spy)
    e = ZOO[name]
    kern = lrc.compile(e.spec, backend="triton", lowering="conv")
    args = e.example(b=3, t=37, dtype=torch.float32)
    leaves = {k: v.requires_grad_(True) for k, v in args.items()}
    kern(**leaves).sum().backward()
    names = {r.name for r in seen}
    assert {"conv_pack", "conv_spectral_product", "conv_unpack",
            "conv_spectral_backward", "params_fwd", "params_bwd"} <= names
    assert ("conv_vander_sum" in names) == (name == "s4d_zoh")
    for rec in {r.name: r for r in seen}.values():
        c = aot.compile_launch(rec)
        assert c.ok and c.fits and 0 < c.regs <= 255, c


INT64_CASES = {  # (spec, lowering, scan config or the chunked configs (forward, backward))
    "mamba1 scan": ("mamba1", "scan", None),
    "mamba1 unrolled": ("mamba1", "scan", ScanConfig(64, 32, 8, 2, unroll=True)),
    "mamba2 chunked": ("mamba2", "chunked", None),
    "gla chunked, local": ("gla", "chunked", (chunked_tune.Config(32, 64, 4, 1, split=1),) * 2),
    "rglru scan": ("rglru", "scan", None),
}


@pytest.mark.parametrize("case", list(INT64_CASES))
def test_int64_kernels_compile_for_the_h200(case, monkeypatch):
    """The kernels a launch with offsets past 2^31 takes (constexpr I64: the tile's index
    vectors in int64), forced on at the GPU tests' size: forward and backward (and the
    chunked states kernel, split LOCAL) compile and fit for sm_90."""
    from lrc.kernels import abi

    monkeypatch.setattr(abi, "needs_int64", lambda args: True)
    name, lowering, cfg = INT64_CASES[case]
    e = ZOO[name]
    kern = lrc.compile(e.spec, backend="triton", lowering=lowering)
    if lowering == "chunked":
        kern._lowering("chunked").override = cfg
    args = e.example(b=2, t=2049, dtype=torch.float32, **SIZES.get(name, {}))
    leaves = {k: v.to(torch.bfloat16).requires_grad_(True) for k, v in args.items()}
    with contextlib.ExitStack() as stack:
        if lowering == "scan" and cfg is not None:
            stack.enter_context(lrc.config.override(scan_config=cfg))
        launches = stack.enter_context(aot.recording(as_gpu=132, compile=True))
        y = kern(**leaves)
        (y[0] if isinstance(y, tuple) else y).float().sum().backward()
    assert launches and all(r.consts["I64"] for r in launches)
    kinds = {r.name.rsplit(".", 1)[-1].replace("chunked_", "") for r in launches}
    want = {"forward_n" if cfg is not None and lowering == "scan" else "forward", "backward"}
    assert want <= {k.replace("backward_n", "backward") for k in kinds}, kinds
    if lowering == "chunked" and cfg is not None:
        assert "states" in kinds
    for r in {r.name: r for r in launches if r.compiled.fits}.values():
        assert 0 < r.compiled.regs <= 255, r.compiled
    for i, r in enumerate(launches):  # a config that did not fit was followed by one that did
        assert r.compiled.fits or any(q.name == r.name and q.compiled.fits
                                      for q in launches[i + 1:]), r.compiled


def test_int64_strides_compile_for_the_h200():
    """A real launch past 2^31: Mamba-1's u and dt with channels 2^31 elements apart (views
    into reserved address space), so Triton passes those strides as int64 and the launcher
    sets I64; forward, backward and the decode step compile for sm_90."""
    from tests.far import far_copy

    e = ZOO["mamba1"]
    kern = lrc.compile(e.spec, backend="triton", lowering="scan")
    args = e.example(b=2, t=2049, dtype=torch.float32)
    for k in ("u", "dt"):
        args[k] = far_copy(args[k], 1, stride=2 ** 31)
    leaves = {k: v.requires_grad_(True) for k, v in args.items()}
    with aot.recording(as_gpu=132, compile=True) as launches:
        kern(**leaves).sum().backward()
        tok = {k: (v.detach().select(time_axis(e, k), 0) if is_seq(e, k) else v.detach())
               for k, v in leaves.items()}
        kern.step(**tok, state=torch.zeros(2, 5, 3))
    assert {r.name.rsplit(".", 1)[-1] for r in launches} >= {"forward", "backward", "step"}
    assert all(r.consts["I64"] for r in launches)
    assert all(any(isinstance(p, int) and p >= 2 ** 31 for p in r.params)  # an i64 stride
               for r in launches if not r.name.endswith(".step"))
    assert_every_kernel_runs([r for r in launches if not r.name.endswith(".step")])
    assert all(r.compiled.ok and r.compiled.fits for r in launches if r.name.endswith(".step"))
