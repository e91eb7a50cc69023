"""scan_tune_policy.step_order: the decode step's load order (ORDER), chosen per shape from the
two compiled kernels' registers and spills, with the timing launches on scratch outputs.
The real kernels run in the GPU tests (tests/lowering/scan/test_scan.py::test_gpu_step*); here a
stand-in launch records what it was given and answers with chosen resources."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lrc.kernels import tune as policy
from lrc.lowering.scan import tune as scan_tune_policy


class FakeStep:
    """What step_order touches of a Launch: fires return a kernel's resources per ORDER."""

    def __init__(self, resources: dict, source: str = "k"):
        self.interpret, self.order = False, None
        self.prog = SimpleNamespace(source=source)
        self.sizes = {"b": 3, "d": 5}
        self.x, self.y, self.h = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5, 2)
        self.tensors = {"in:x": (self.x, {"b": 5, "d": 1}), "out:y": (self.y, {"b": 5, "d": 1}),
                        "h0:h": (self.h, {}), "hT:h": (self.h, {})}
        self.resources, self.fired = resources, []

    def arguments(self, consts):
        names = sorted(self.tensors)
        return [self.tensors[n][0] for n in names], dict(consts, ORDER=self.order), (1,)

    def fire(self, params, consts, grid):
        self.fired.append((dict(zip(sorted(self.tensors), params)), consts))
        got = self.resources[consts["ORDER"]]
        if isinstance(got, Exception):
            raise got
        return SimpleNamespace(n_spills=got[0], n_regs=got[1])


@pytest.fixture(autouse=True)
def gpu_like(monkeypatch):
    monkeypatch.setattr(policy, "_CACHE", {})
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)


@pytest.mark.parametrize("on,off,want", [
    ((0, 69), (0, 69), True),     # Mamba-1's D4096 step: the same registers either way
    ((0, 168), (0, 78), False),   # decode_hpn's H80 step: states first costs registers
    ((8, 40), (0, 64), False),    # fewer registers, but spilled
    (RuntimeError("no"), (0, 32), False)])  # ORDER on does not compile
def test_order_from_the_compiled_kernels(on, off, want):
    run = FakeStep({True: on, False: off})
    kept = dict(run.tensors)
    scan_tune_policy.step_order(run)
    assert run.order is want
    assert [c["ORDER"] for _, c in run.fired] == [False, True]
    assert run.tensors == kept  # the caller's tensors back in place
    for args, _ in run.fired:  # inputs as given; outputs and new states on scratch buffers
        assert args["in:x"] is run.x and args["h0:h"] is run.h
        assert args["out:y"] is not run.y and args["hT:h"] is not run.h
        assert args["out:y"].shape == run.y.shape and args["out:y"].stride() == run.y.stride()


def test_order_is_chosen_once_per_shape():
    first = FakeStep({True: (0, 69), False: (0, 69)})
    scan_tune_policy.step_order(first)
    again = FakeStep({True: (0, 69), False: (0, 69)})
    scan_tune_policy.step_order(again)
    assert again.fired == [] and again.order is True
    other = FakeStep({True: (0, 99), False: (0, 69)}, source="another kernel")
    scan_tune_policy.step_order(other)
    assert len(other.fired) == 2 and other.order is False


def test_inside_a_capture_before_any_eager_step(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    run = FakeStep({True: (0, 1), False: (0, 2)})
    scan_tune_policy.step_order(run)
    assert run.fired == [] and run.order is False


def test_interpreter_keeps_order_off():
    run = FakeStep({True: (0, 1), False: (0, 2)})
    run.interpret = True
    scan_tune_policy.step_order(run)
    assert run.fired == [] and run.order is None  # untouched: Launch's default (off) stands
