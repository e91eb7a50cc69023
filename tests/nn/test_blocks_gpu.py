"""Every decode block on the GPU with the generated kernels (backend='auto'): forward vs the
plain-PyTorch loops of the CPU tests, step after prefill, packed sequences, and a step with
state_indices captured in a CUDA graph. fp32 and bf16."""
import pytest
import torch

from lrc.nn import S4D, GatedLinearAttention, GriffinRecurrentBlock, Mamba, Mamba2
from tests.conftest import rel_err
from tests.nn.helpers import check_packed, check_state_indices, check_step_after_prefill
from tests.nn.test_gla import gla_loop
from tests.nn.test_mamba import mamba_loop
from tests.nn.test_mamba2 import mamba2_loop
from tests.nn.test_rglru import griffin_loop
from tests.nn.test_s4d import s4d_fft

D = 64
BLOCKS = {
    "mamba": (lambda: Mamba(D, d_state=16), mamba_loop),
    "mamba2": (lambda: Mamba2(D, d_state=32, headdim=16, ngroups=2), mamba2_loop),
    "gla": (lambda: GatedLinearAttention(hidden_size=D, num_heads=4, use_short_conv=True),
            gla_loop),
    "hawk": (lambda: GriffinRecurrentBlock(D), griffin_loop),
    "s4d": (lambda: S4D(D, d_state=16), s4d_fft),
}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_gpu_block_forward_step_packed(name, dtype, tol):
    make, loop = BLOCKS[name]
    block = make().cuda()
    if name != "s4d":   # S4D keeps its SSM parameters in float32, as the S4 repository
        block = block.to(dtype)
    x = torch.randn(2, 300, D, device="cuda").to(dtype)
    with torch.no_grad():
        assert rel_err(block(x), loop(block, x)) <= tol
        step_tol = 1e-4 if dtype == torch.float32 else 3e-2
        check_step_after_prefill(block, x[:, :40], prefix=33, tol=step_tol)
        check_packed(block, [17, 64, 5], D, dtype, tol=step_tol)
        check_state_indices(block, x[:, :20], pool=5, tol=step_tol)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_gpu_block_step_in_cuda_graph(name):
    block = BLOCKS[name][0]().cuda()
    pool = block.allocate_inference_cache(6, device="cuda")
    idx = torch.tensor([4, 1], device="cuda")
    x = torch.randn(2, D, device="cuda")
    eager = block.allocate_inference_cache(6, device="cuda")
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                block.step(x, pool, state_indices=idx)
        torch.cuda.current_stream().wait_stream(side)
        pool.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = block.step(x, pool, state_indices=idx)
        pool.zero_()
        for _ in range(3):
            graph.replay()
            want = block.step(x, eager, state_indices=idx)
            assert rel_err(out, want) <= 1e-5
        for k, t in pool.tensors().items():
            assert rel_err(t, getattr(eager, k)) <= 1e-5, k
