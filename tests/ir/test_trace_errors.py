"""Trace-time refusals: every bad spec raises lrc.SpecError naming the term and the user's line.

Each spec is defined inside its test so the offending line is right there; `refused` traces it
and returns the message, and the tests assert on the term and on this file's line text.
"""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc import Param, Seq, SpecError, State

HERE = "test_trace_errors.py"


def refused(fn, **kw) -> str:
    """Trace `fn` expecting a SpecError; return its message."""
    with pytest.raises(SpecError) as info:
        lrc.recurrence(fn, **kw)
    return str(info.value)


def at(msg: str, line: str) -> bool:
    """Whether the message points at this file's line `line` (stripped source text)."""
    return f"{HERE}:" in msg and msg.rstrip().endswith(line)


# ---- the state entering nonlinearly


def test_tanh_of_the_state():
    def f(x: Seq("b t d"), h: State("b d")):
        h = lrc.tanh(h) * 0.5 + x
        return h, h

    msg = refused(f)
    assert "state 'h'" in msg and "tanh(h)" in msg and "not affine" in msg
    assert at(msg, "h = lrc.tanh(h) * 0.5 + x")


def test_nonlinearity_on_an_earlier_line_is_the_one_named():
    def f(x: Seq("b t d"), h: State("b d")):
        a = h * x
        b = lrc.exp(a)
        h = b + x
        return h, h

    msg = refused(f)
    assert "exp(h*x)" in msg and at(msg, "b = lrc.exp(a)")


def test_state_times_state():
    def f(x: Seq("b t d"), h: State("b d")):
        h = h * h + x
        return h, h

    msg = refused(f)
    assert "h**2" in msg and "power of the state" in msg and at(msg, "h = h * h + x")


def test_product_of_two_states():
    def f(x: Seq("b t d"), h1: State("b d"), h2: State("b d")):
        h2 = 0.5 * h2 + h1 * (h2 + x)
        return h2, (h1, h2)

    msg = refused(f)
    assert "state 'h2'" in msg and "product of two state terms" in msg
    assert "h1" in msg and at(msg, "h2 = 0.5 * h2 + h1 * (h2 + x)")


def test_product_through_a_sum_node():
    def f(x: Seq("b t n"), h: State("b n")):
        s = h.sum("n")
        h = s * h + x
        return h, h

    msg = refused(f)
    assert "product of two state terms" in msg and at(msg, "h = s * h + x")


def test_division_by_the_state():
    def f(x: Seq("b t d"), h: State("b d")):
        h = x / h
        return h, h

    msg = refused(f)
    assert "1/h" in msg and "division by the state" in msg and at(msg, "h = x / h")


def test_condition_on_the_state():
    def f(x: Seq("b t d"), h: State("b d")):
        h = lrc.where(h > 0, h, 0.5 * h) + x
        return h, h

    msg = refused(f)
    assert "condition on the state" in msg and "h > 0" in msg
    assert at(msg, "h = lrc.where(h > 0, h, 0.5 * h) + x")


@pytest.mark.parametrize("expr,term", [
    ("lrc.exp(h)", "exp(h)"), ("abs(h)", "abs(h)"), ("lrc.maximum(h, 0)", "maximum(0, h)"),
    ("h ** 3", "h**3"), ("lrc.sigmoid(h)", "sigmoid(h)"), ("lrc.sqrt(h)", "sqrt(h)"),
])
def test_other_nonlinear_functions(expr, term):
    ns = {"lrc": lrc, "Seq": Seq, "State": State}
    src = (f"def f(x: Seq('b t d'), h: State('b d')):\n"
           f"    h = {expr} + x\n"
           f"    return h, h\n")
    exec(compile(src, "generated.py", "exec"), ns)
    with pytest.raises(SpecError) as info:
        lrc.recurrence(ns["f"])
    assert term in str(info.value), str(info.value)
    assert "generated.py:2" in str(info.value)


def test_nonlinear_outputs_are_fine():
    def f(x: Seq("b t d"), h: State("b d")):
        h = 0.5 * h + x
        return lrc.tanh(h) * h / (1 + h * h), h

    assert lrc.recurrence(f).graph.outputs == ("y",)


# ---- dims


def test_sum_over_an_unknown_dim():
    def f(x: Seq("b t d"), h: State("b d")):
        y = (x * h).sum("n")
        return y, h

    msg = refused(f)
    assert "unknown dim 'n'" in msg and "(b, d)" in msg and at(msg, 'y = (x * h).sum("n")')


def test_sum_over_the_time_dim():
    def f(x: Seq("b l d"), h: State("b d")):
        return x.sum("l"), h

    msg = refused(f, time="l")
    assert "'l' is the time dim" in msg and at(msg, 'return x.sum("l"), h')


def test_rename_of_an_unknown_dim():
    def f(x: Seq("b t d"), h: State("b d")):
        z = h.rename(n="m")
        return z, h

    msg = refused(f)
    assert "unknown dim 'n'" in msg and at(msg, 'z = h.rename(n="m")')


def test_rename_onto_an_existing_dim():
    def f(x: Seq("b t d"), h: State("b d")):
        z = h.rename(b="d")
        return z, h

    msg = refused(f)
    assert "dim 'd' would appear twice" in msg and at(msg, 'z = h.rename(b="d")')


def test_shift_along_an_unknown_dim_and_index_of_one():
    def f(x: Seq("b t d"), h: State("b d")):
        h = lrc.shift(h, "n")
        return h, h

    msg = refused(f)
    assert "unknown dim 'n'" in msg and at(msg, 'h = lrc.shift(h, "n")')

    def g(x: Seq("b t d"), h: State("b d")):
        i = lrc.index("q")
        return i * x, h

    assert at(refused(g), 'i = lrc.index("q")')


def test_time_dim_on_a_param():
    def f(x: Seq("b t d"), A: Param("t d"), h: State("b d")):
        return x, h

    msg = refused(f)
    assert "argument 'A'" in msg and "time dim 't'" in msg and "def f(" in msg


def test_seq_without_time_and_grouped_time():
    def f(x: Seq("b d"), h: State("b d")):
        return x, h

    msg = refused(f)
    assert "argument 'x'" in msg and "no time dim 't'" in msg and "def f(" in msg

    def g(x: Seq("b (t d)"), h: State("b d")):
        return x, h

    assert "cannot be grouped" in refused(g)


def test_new_state_with_an_extra_dim():
    def f(x: Seq("b t d n"), h: State("b d")):
        h = 0.5 * h + x
        return h, h

    msg = refused(f)
    assert "new state 'h'" in msg and "dim 'n'" in msg and ".sum('n')" in msg
    assert at(msg, "h = 0.5 * h + x")


def test_new_state_that_is_an_input_with_an_extra_dim():
    def f(x: Seq("b t d n"), h: State("b d")):
        return h, x

    msg = refused(f)
    assert "new state 'h'" in msg and "dim 'n'" in msg and f"{HERE}:" in msg


# ---- arguments and return values


def test_missing_annotation():
    def f(x: Seq("b t d"), w, h: State("b d")):
        return x, h

    msg = refused(f)
    assert "argument 'w' needs an annotation" in msg and "def f(" in msg


def test_star_args_no_seq_no_state():
    def f(x: Seq("b t d"), *rest, h: State("b d")):
        return x, h

    assert "*args" in refused(f)

    def g(w: Param("d"), h: State("d")):
        return w, h

    assert "at least one Seq" in refused(g)

    def k(x: Seq("b t d")):
        return x, x

    assert "at least one State" in refused(k)


def test_complex_output():
    def f(x: Seq("b t d"), c: Param("d", complex=True), h: State("b d", complex=True)):
        h = c * h + x
        y = c * h
        return y, h

    msg = refused(f)
    assert "output 0 is complex" in msg and ".real" in msg and at(msg, "y = c * h")


def test_complex_param_returned_as_output_names_a_line():
    def f(x: Seq("b t d"), c: Param("d", complex=True), h: State("b d")):
        return c, h

    msg = refused(f)
    assert "output 0 is complex" in msg and f"{HERE}:" in msg


def test_complex_value_for_a_real_state():
    def f(x: Seq("b t d"), c: Param("d", complex=True), h: State("b d")):
        h = c * h + x
        return x, h

    msg = refused(f)
    assert "new state 'h' is complex" in msg and at(msg, "h = c * h + x")


def test_wrong_number_of_returned_states():
    def f(x: Seq("b t d"), h1: State("b d"), h2: State("b d")):
        return x, h1

    msg = refused(f)
    assert "1 new states for 2 State arguments (h1, h2)" in msg and "def f(" in msg


def test_bad_return_shapes():
    def f(x: Seq("b t d"), h: State("b d")):
        return x

    assert "must return (outputs, new_states)" in refused(f)

    def g(x: Seq("b t d"), h: State("b d")):
        return (), h

    assert "no outputs" in refused(g)

    def k(x: Seq("b t d"), h: State("b d")):
        return 1.0, h

    assert "output 0 is float" in refused(k)

    def m(x: Seq("b t d"), h: State("b d")):
        return x > 0, h

    assert "output 0 is a comparison" in refused(m)


def test_torch_function_on_a_symbolic_tensor():
    def f(x: Seq("b t d"), h: State("b d")):
        h = torch.exp(x) * h
        return h, h

    msg = refused(f)
    assert "torch.exp" in msg and at(msg, "h = torch.exp(x) * h")

    def g(x: Seq("b t d"), h: State("b d")):
        h = torch.nn.functional.silu(x) * h     # a Python-level torch function
        return h, h

    msg = refused(g)
    assert "silu" in msg and at(msg, "h = torch.nn.functional.silu(x) * h     # a Python-level "
                                     "torch function")


def test_torch_tensor_or_other_object_inside_a_step():
    w = torch.ones(3)

    def f(x: Seq("b t d"), h: State("b d")):
        h = x * w + h
        return h, h

    msg = refused(f)
    assert "a torch.Tensor was used inside a step" in msg and at(msg, "h = x * w + h")

    def g(x: Seq("b t d"), h: State("b d")):
        h = x * "2" + h
        return h, h

    assert "cannot use str" in refused(g)


def test_python_if_on_a_symbolic_tensor():
    def f(x: Seq("b t d"), h: State("b d")):
        if x > 0:
            h = h + x
        return h, h

    msg = refused(f)
    assert "no truth value" in msg and "lrc.where" in msg and at(msg, "if x > 0:")

    def g(x: Seq("b t d"), h: State("b d")):
        h = max(h, x)
        return h, h

    assert at(refused(g), "h = max(h, x)")


def test_indexing_and_iterating():
    def f(x: Seq("b t d"), h: State("b d")):
        return x[0], h

    assert at(refused(f), "return x[0], h")

    def g(x: Seq("b t d"), h: State("b d")):
        a, b = x
        return a, h

    assert at(refused(g), "a, b = x")


def test_misused_where_and_booleans():
    def f(x: Seq("b t d"), h: State("b d")):
        return lrc.where(x, x, 0), h

    assert "cond must be a comparison" in refused(f)

    def g(x: Seq("b t d"), h: State("b d")):
        return (x > 0) * x, h

    msg = refused(g)
    assert "of a boolean" in msg and at(msg, "return (x > 0) * x, h")


def test_real_only_function_of_a_complex_tensor():
    def f(x: Seq("b t d"), c: Param("d", complex=True), h: State("b d")):
        return lrc.sigmoid(c * x), h

    msg = refused(f)
    assert "sigmoid(...) of a complex tensor" in msg and at(msg, "return lrc.sigmoid(c * x), h")


def test_structured_helper_errors():
    def f(x: Seq("b t d"), L: Param("d n", complex=True), h: State("b d n", complex=True)):
        Abar, _ = lrc.zoh(0.1, lrc.dplr(L, L, L))
        return x, h

    assert at(refused(f), "Abar, _ = lrc.zoh(0.1, lrc.dplr(L, L, L))")

    def g(x: Seq("b t d"), A: Param("d"), h: State("b d")):
        Abar, Bbar = lrc.discretize("rk4", 0.1, A)
        return x, h

    assert "unknown discretization 'rk4'" in refused(g)


# ---- Python's and numpy's numbers instead of lrc's functions


def test_math_and_numpy_functions_and_conversions():
    import math

    import numpy as np

    def f(x: Seq("b t d"), h: State("b d")):
        h = math.exp(x) * h
        return h, h

    msg = refused(f)
    assert "not a number inside a step" in msg and "lrc.exp" in msg
    assert at(msg, "h = math.exp(x) * h")

    def g(x: Seq("b t d"), h: State("b d")):
        h = np.exp(x) * h
        return h, h

    msg = refused(g)
    assert "numpy function" in msg and at(msg, "h = np.exp(x) * h")

    def k(x: Seq("b t d"), h: State("b d")):
        h = float(x) * h + int(x)
        return h, h

    msg = refused(k)
    assert "float(...)" in msg and at(msg, "h = float(x) * h + int(x)")

    def r(x: Seq("b t d"), h: State("b d")):
        h = h + sum(range(x))
        return h, h

    assert at(refused(r), "h = h + sum(range(x))")


def test_numpy_scalars_are_still_constants():
    import numpy as np

    def f(x: Seq("b t d"), h: State("b d")):
        h = np.float32(0.5) * h + x * np.float64(2.0)
        return h, h

    g = lrc.recurrence(f).graph
    assert "0.5" in str(g) and "2.0" in str(g)


def test_shape_of_a_symbolic_tensor():
    def f(x: Seq("b t d"), h: State("b d")):
        h = h * x.shape[-1]
        return h, h

    msg = refused(f)
    assert ".shape" in msg and "(b, d)" in msg and at(msg, "h = h * x.shape[-1]")


def test_nan_constants_and_undefined_terms():
    def f(x: Seq("b t d"), h: State("b d")):
        h = 0.5 * h + x * float("nan")
        return h, h

    msg = refused(f)
    assert "NaN constant" in msg and at(msg, 'h = 0.5 * h + x * float("nan")')

    def g(x: Seq("b t d"), h: State("b d")):
        h = 0.5 * h + lrc.where(x > 0, complex(float("nan"), 1.0), 0.0).real
        return h, h

    assert "NaN constant" in refused(g)

    def k(x: Seq("b t d"), h: State("b d")):
        inf = float("inf")
        y = x * inf
        z = y * 0
        h = 0.5 * h + z
        return h, h

    msg = refused(k)
    assert "undefined value" in msg and "nan" in msg and at(msg, "z = y * 0")

    def m(x: Seq("b t d"), h: State("b d")):
        h = 0.5 * h + lrc.log(x * 0)
        return h, h

    msg = refused(m)
    assert "undefined value" in msg and at(msg, "h = 0.5 * h + lrc.log(x * 0)")

    def ok(x: Seq("b t d"), h: State("b d")):  # an infinite constant is a value
        h = 0.5 * h + lrc.where(x > 0, x, -float("inf"))
        return h, h

    lrc.recurrence(ok)
