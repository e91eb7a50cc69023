"""Call-time refusals: every bad call raises lrc.CallError naming the culprit."""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc import CallError, Param, Seq, State
from tests.runtime.test_call import compiled, diag, diag_inputs, rn, two

layer = compiled(diag)    # diag(x, g, Bm, C, A; h): x, g (b t d); Bm, C (b t n); A (d n)


def refused(fn, *args, **kw) -> str:
    with pytest.raises(CallError) as info:
        fn(*args, **kw)
    return str(info.value)


def test_wrong_number_of_arguments():
    x, g, Bm, C, A = diag_inputs()
    msg = refused(layer, x, g, Bm, C, A, A)
    assert "takes 5 arguments (x, g, Bm, C, A), got 6" in msg
    assert "missing argument 'A'" in refused(layer, x, g, Bm, C)
    assert "missing argument 'g'" in refused(layer, x, Bm=Bm, C=C, A=A)
    assert "layer.step" in refused(layer.step, x[:, 0])


def test_unknown_and_repeated_keywords():
    x, g, Bm, C, A = diag_inputs()
    assert "unexpected argument 'B'" in refused(layer, x, g, B=Bm, C=C, A=A)
    msg = refused(layer, x, g, Bm, C, A, h=torch.zeros(3, 5, 4))
    assert "unexpected argument 'h'" in msg and "initial_state=" in msg
    assert "argument 'x' twice" in refused(layer, x, g, Bm, C, A, x=x)


def test_non_tensor_argument():
    x, g, Bm, C, A = diag_inputs()
    assert "argument 'A' must be a torch.Tensor, got list" in refused(layer, x, g, Bm, C,
                                                                       A.tolist())


def test_wrong_ndim():
    x, g, Bm, C, A = diag_inputs()
    msg = refused(layer, x, g[0], Bm, C, A)
    assert "argument 'g'" in msg and "expected 3 dims (b t d)" in msg and "(37, 5)" in msg
    msg = refused(layer.step, x[:, 0], g[:, 0], Bm[:, 0], C, A)
    assert "argument 'C'" in msg and "expected 2 dims (b n)" in msg


def test_size_conflict_names_both_arguments_and_the_dim():
    x, g, Bm, C, A = diag_inputs()
    msg = refused(layer, x, g, Bm, C, A[:, :3])
    assert "argument 'A'" in msg and "dim 'n'" in msg and "argument 'Bm'" in msg
    assert "size 3" in msg and "size 4" in msg
    msg = refused(layer, x, g[:, :, :2], Bm, C, A)
    assert "argument 'g'" in msg and "dim 'd'" in msg and "argument 'x'" in msg
    msg = refused(layer, x, g, Bm[:, :10], C, A)
    assert "argument 'Bm'" in msg and "time dim 't'" in msg and "argument 'x'" in msg


def test_a_transposed_argument_is_named_as_the_likely_culprit():
    """x laid out (b, d, t) for Seq("b t d"): bound first, it makes every later argument
    disagree; the message says what each shape implies and names x, the layout it has and the
    annotation (or permute) that fits."""
    x, g, Bm, C, A = diag_inputs()
    msg = refused(layer, x.transpose(1, 2), g, Bm, C, A)
    assert "argument 'g' (Seq(\"b t d\")), shape (3, 37, 5), makes the time dim 't' 37" in msg
    assert "argument 'x' (Seq(\"b t d\")), shape (3, 5, 37), makes it 5" in msg
    assert "Likely culprit: 'x' (shape (3, 5, 37))" in msg
    assert "laid out (b, d, t)" in msg and 'annotate it Seq("b d t")' in msg
    assert "x.permute(0, 2, 1)" in msg
    # the same for a decode slice and for an initial state
    msg = refused(layer.step, x[:, 0], g[:, 0], Bm[:, 0].T, C[:, 0], A)
    assert "Likely culprit: 'Bm'" in msg and "Bm.permute(1, 0)" in msg
    msg = refused(layer, x, g, Bm, C, A, initial_state=torch.zeros(3, 4, 5))
    assert "Likely culprit: 'h'" in msg and 'State("b n d")' in msg


def test_a_plain_size_conflict_names_no_culprit():
    """No permutation fits (a Param of the wrong length): both sizes, no guess."""
    x, g, Bm, C, A = diag_inputs()
    msg = refused(layer, x, g, Bm, C, A[:, :3])
    assert "culprit" not in msg and "laid out differently" not in msg


def test_initial_state_shape_and_count():
    args = diag_inputs()
    msg = refused(layer, *args, initial_state=torch.zeros(3, 5, 7, dtype=torch.float64))
    assert "state 'h'" in msg and "dim 'n'" in msg
    msg = refused(layer, *args, initial_state=(torch.zeros(3, 5, 4), torch.zeros(3, 5, 4)))
    assert "initial_state must hold 1 tensors (h), got 2" in msg
    x, w = rn(2, 9, 5), rn(5)
    msg = refused(compiled(two), x, w, initial_state=torch.zeros(2, 5))
    assert "must hold 2 tensors (num, den), got 1" in msg
    msg = refused(compiled(two), x, w, initial_state=(torch.zeros(2, 5), 0.0))
    assert "state 'den' must be a tensor" in msg
    msg = refused(compiled(two).step, x[:, 0], w, state=torch.zeros(2, 5))
    assert "state= must hold 2 tensors" in msg


def test_integer_and_bool_dtypes():
    x, g, Bm, C, A = diag_inputs()
    msg = refused(layer, x.long(), g, Bm, C, A)
    assert "argument 'x' has dtype torch.int64" in msg
    assert "argument 'A' has dtype torch.bool" in refused(layer, x, g, Bm, C, A > 0)
    msg = refused(layer, x, g, Bm, C, A, initial_state=torch.zeros(3, 5, 4, dtype=torch.int32))
    assert "argument 'h' has dtype torch.int32" in msg


def test_complex_tensor_for_a_real_argument():
    x, g, Bm, C, A = diag_inputs()
    msg = refused(layer, x, g, Bm, C, A.to(torch.complex128))
    assert "argument 'A'" in msg and "complex" in msg and "declared real" in msg
    msg = refused(layer, x, g, Bm, C, A, initial_state=torch.zeros(3, 5, 4, dtype=torch.cfloat))
    assert "argument 'h'" in msg and "declared real" in msg


def test_tensors_on_different_devices():
    x, g, Bm, C, A = diag_inputs()
    msg = refused(layer, x, g, Bm, C, A.to("meta"))
    assert "argument 'A' is on meta" in msg and "'x' is on cpu" in msg
    msg = refused(layer, x, g, Bm, C, A, initial_state=torch.zeros(3, 5, 4, device="meta"))
    assert "initial state is on meta" in msg and "cpu" in msg


@lrc.recurrence
def unsized(x: Seq("b t d"), h: State("b d n")):
    return (h * x).sum("n"), 0.5 * h + x


def test_dim_only_in_a_state_needs_the_initial_state():
    msg = refused(compiled(unsized), rn(2, 5, 3))
    assert "size of dim 'n'" in msg and "initial_state" in msg
    y = compiled(unsized)(rn(2, 5, 3), initial_state=rn(2, 3, 4))
    assert y.shape == (2, 5, 3)


@lrc.recurrence
def grouped(x: Seq("b t (g r)"), y: Seq("b t g"), h: State("b g r")):
    return h, 0.5 * h + x + y


def test_grouped_axis_sizes():
    f = compiled(grouped)
    msg = refused(f, rn(2, 5, 7), rn(2, 5, 3))
    assert "argument 'x'" in msg and "(g r)" in msg and "size 7" in msg and "multiple of 3" in msg
    assert f(rn(2, 5, 6), rn(2, 5, 3)).shape == (2, 5, 6)   # the layout of x: b t (g r)


@lrc.recurrence
def ungroupable(x: Seq("b t (g r)"), h: State("b g r")):
    return h, 0.5 * h + x


def test_grouped_axis_that_cannot_be_split():
    msg = refused(compiled(ungroupable), rn(2, 5, 6))
    assert "argument 'x'" in msg and "cannot split axis (g r)" in msg


def test_bad_cu_seqlens():
    args = diag_inputs(b=1, t=10)
    assert "1-D int32/int64" in refused(layer, *args, cu_seqlens=torch.tensor([0., 10.]))
    assert "1-D int32/int64" in refused(layer, *args, cu_seqlens=torch.tensor([[0, 10]]))
    assert "1-D int32/int64" in refused(layer, *args, cu_seqlens=torch.tensor([10]))
    assert "1-D int32/int64" in refused(layer, *args, cu_seqlens=[0, 10])
    assert "start at 0" in refused(layer, *args, cu_seqlens=torch.tensor([1, 10]))
    assert "never decrease" in refused(layer, *args, cu_seqlens=torch.tensor([0, 6, 4, 10]))
    assert "ends at 8" in refused(layer, *args, cu_seqlens=torch.tensor([0, 4, 8]))
    msg = refused(layer, *diag_inputs(b=2, t=10), cu_seqlens=torch.tensor([0, 10]))
    assert "argument 'x'" in msg and "dim 'b'" in msg and "cu_seqlens" in msg
    msg = refused(layer, *args, cu_seqlens=torch.tensor([0, 4, 10]), initial_state=rn(3, 5, 4))
    assert "state 'h'" in msg and "dim 'b'" in msg
    msg = refused(layer, *args, cu_seqlens=torch.tensor([0, 4, 10], device="meta"))
    assert "cu_seqlens" in msg and "meta device" in msg
    tok = [a[:, 0] if a.dim() == 3 else a for a in args]
    msg = refused(layer.step, *tok, cu_seqlens=torch.tensor([0, 1]))
    assert "unexpected argument 'cu_seqlens'" in msg


@lrc.recurrence
def no_batch(x: Seq("t d"), h: State("d")):
    return h, 0.5 * h + x


def test_cu_seqlens_needs_a_batch_dim():
    msg = refused(compiled(no_batch), rn(10, 3), cu_seqlens=torch.tensor([0, 4, 10]))
    assert "cu_seqlens needs a batch dim" in msg


def test_step_inplace_without_state():
    tok = [a[:, 0] if a.dim() == 3 else a for a in diag_inputs()]
    assert "inplace=True" in refused(layer.step, *tok, inplace=True)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_step_inplace_refuses_a_half_precision_state_on_every_backend(backend, dtype):
    """inplace=True writes float32 states: a float16 / bfloat16 one is refused (naming it) by
    both backends, and left as it was."""
    tok = [(a[:, 0] if a.dim() == 3 else a).float() for a in diag_inputs()]
    h = torch.zeros(3, 5, 4, dtype=dtype)
    msg = refused(lrc.compile(diag, backend=backend).step, *tok, state=h, inplace=True)
    assert "state 'h'" in msg and str(dtype) in msg and "float32" in msg
    assert torch.equal(h, torch.zeros_like(h))


def test_compile_refuses_non_specs_and_unknown_backends():
    with pytest.raises(TypeError):
        lrc.compile(lambda x: x)
    with pytest.raises(ValueError, match="backend"):
        lrc.compile(diag, backend="cuda-magic")
    with pytest.raises(TypeError, match="not callable"):
        diag(*diag_inputs())


@lrc.recurrence
def with_param_only_dim(x: Seq("b t"), w: Param("k"), h: State("b")):
    return h * w.sum("k"), 0.5 * h + x


def test_scalar_and_reduced_dims():
    f = compiled(with_param_only_dim)
    y = f(rn(2, 5), rn(4))
    assert y.shape == (2, 5)
    assert "argument 'w'" in refused(f, rn(2, 5), rn(4, 1))


@lrc.recurrence
def two_renames(x: Seq("b t n"), z: Seq("b t d"), h: State("b n")):
    a, c = x.rename(n="m"), z.rename(d="m")     # so n and d must have one size
    return (a * c).sum("m") + h, 0.5 * h + x


def test_renames_onto_one_dim_need_equal_sizes():
    f = compiled(two_renames)
    for d in (3, 1):      # size 1 must not broadcast silently
        msg = refused(f, rn(2, 5, 4), rn(2, 5, d))
        assert "'m'" in msg and "'n'" in msg and "'d'" in msg and "size 4" in msg
    x, z = rn(2, 5, 4), rn(2, 5, 4)
    want = (x * z).sum(-1)[..., None] + _two_renames_states(x)
    assert torch.allclose(f(x, z), want, rtol=1e-12, atol=1e-12)


def _two_renames_states(x):
    h, hs = torch.zeros(2, 4, dtype=x.dtype), []
    for t in range(x.shape[1]):
        hs.append(h)
        h = 0.5 * h + x[:, t]
    return torch.stack(hs, 1)
