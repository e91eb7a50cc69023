"""lrc's scope for Triton's interpreter (`kernels.module.interpreted`): what it changes while
active, on every Triton release lrc supports (3.6 through 3.9)."""
from __future__ import annotations

import warnings

import pytest
import torch

from lrc.kernels.abi import module_source
from lrc.kernels.module import interpreted, load

MASKED = '''
@triton.jit
def last_segment(y_ptr, N_SEG: tl.constexpr):
    seg = tl.program_id(0)
    o = tl.arange(0, 4)
    last = seg == N_SEG - 1
    tl.store(y_ptr + o, (o + 1).to(tl.float32), mask=(o < 3) & last)
'''


def test_a_block_mask_and_a_scalar_condition_store():
    """`block & scalar` of two booleans has int32 data in the interpreter, which Triton 3.9's
    native store refuses ("mask has unsupported dtype"): the scope hands it over as bool."""
    mod = load(module_source([MASKED], "mask test"), interpret=True)
    y = torch.zeros(4)
    with interpreted():
        mod.last_segment[(2,)](y, N_SEG=2)
    assert y.tolist() == [1.0, 2.0, 3.0, 0.0]


def test_the_interpreter_scope_ignores_numpy_warnings_only_inside(recwarn):
    """Inside `interpreted()` NumPy's floating-point flags are off and the NumPy deprecation
    that Triton's interpreter triggers is ignored; outside both are as the user set them."""
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with interpreted():
            np.float32(0) / np.float32(0)                       # a masked lane's 0 / 0
            warnings.warn_explicit("Conversion of an array with ndim > 0 to a scalar is "
                                   "deprecated", DeprecationWarning, "interpreter.py", 1,
                                   module="triton.runtime.interpreter")
        with pytest.raises(RuntimeWarning):
            np.float32(0) / np.float32(0)
        with pytest.raises(DeprecationWarning):
            warnings.warn_explicit("Conversion of an array with ndim > 0 to a scalar is "
                                   "deprecated", DeprecationWarning, "elsewhere.py", 1,
                                   module="user_code")
