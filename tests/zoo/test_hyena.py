"""The Hyena operator against an FFT convolution, as Hyena's own fftconv computes it."""
import pytest
import torch

from lrc.zoo import hyena
from tests.zoo.helpers import check_against_loop


def fftconv(a, state):
    """y = x0 * (irfft(rfft(z) rfft(filt))[:T] + bias z), z = x1 v, zero-padded to avoid
    wrap-around; an initial shift state is the history z_{-1}, z_{-2}, ... prepended to z."""
    z = a["x1"] * a["v"]                                              # (b, T, d)
    filt = a["filt"]                                                  # (d, L)
    b, T, d = z.shape
    L = filt.shape[1]
    if state is not None:                                             # state[0][..., j] = z_{-1-j}
        z_ext = torch.cat([state[0][:, :, :L - 1].flip(-1).transpose(1, 2), z], 1)
    else:
        z_ext = torch.cat([torch.zeros(b, L - 1, d, dtype=torch.float64), z], 1)
    n = z_ext.shape[1] + L
    conv = torch.fft.irfft(torch.fft.rfft(z_ext.transpose(1, 2), n) * torch.fft.rfft(filt, n), n)
    y = a["x0"] * (conv[..., L - 1:L - 1 + T].transpose(1, 2) + a["bias"] * z)
    final = z_ext[:, -L:].flip(1).transpose(1, 2)                     # the last L inputs
    return (y,), (final,)


@pytest.mark.parametrize("length", [41, 37, 13])
def test_matches_fftconv(length):
    """A filter longer than, as long as, and shorter than the sequence."""
    check_against_loop(hyena.ENTRY, fftconv, l=length)


def test_window():
    w = hyena.exponential_window(5, 101)
    assert torch.allclose(w[:, 0], torch.ones(5, dtype=torch.float64))
    # channel 0 (fast) reaches the 1e-2 target at 30% of the length, the last (slow) never
    assert abs(w[0, 30].item() - 1e-2) < 1e-12
    assert (w[-1] > 1e-2).all() and (w.diff(dim=-1) < 0).all()
    p = hyena.init_params({"d": 5, "l": 101})
    assert p["filt"].shape == (5, 101)
    # the fast channel's filter has lost almost all its energy by mid-length
    assert (p["filt"][0, 50:] ** 2).sum() < 1e-3 * (p["filt"][0, :50] ** 2).sum()
