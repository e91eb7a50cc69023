"""Generated modules: what running them under Triton's interpreter leaves behind."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc.zoo import ZOO

pytest.importorskip("triton.backends.nvidia.compiler")


def test_interpreted_kernels_leave_triton_language_as_it_was():
    """An interpreted launch whose kernel calls Triton's jit helpers (tl.cdiv, tl.cumsum)
    leaves triton.language, its core, math and standard modules and its tensor and dtype
    classes as they were (Triton's interpreter patches triton.language.core for a helper and
    does not restore it), and a kernel calling tl.cdiv still compiles for sm_90 after."""
    import triton
    import triton.language as tl
    import triton.language.standard as std
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    owners = (tl, tl.core, tl.math, std, tl.core.tensor, tl.core.dtype)
    before = [dict(vars(o)) for o in owners]
    e = ZOO["mamba2"]
    kern = lrc.compile(e.spec, backend="triton", lowering="chunked")
    args = {k: v.requires_grad_(True)
            for k, v in e.example(b=1, t=19, dtype=torch.float32).items()}
    kern(**args).sum().backward()
    for o, b in zip(owners, before, strict=True):
        now = dict(vars(o))
        changed = sorted(n for n in b if b[n] is not now.get(n))
        assert not changed, (o, changed[:10])

    @triton.jit
    def blocks(x_ptr, n):
        tl.store(x_ptr + tl.program_id(0), tl.cdiv(n, 16))

    src = ASTSource(blocks, {"x_ptr": "*i32", "n": "i32"})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    assert "cubin" in compiled.asm
