"""Vision Mamba's bidirectional scan (Zhu et al. 2024) with lrc, on the CPU.

1. The backward branch is Mamba-1 run with `reverse=True`: the same as Vim's flip -> scan ->
   flip, without materializing flipped copies.
2. A tiny Vim on a toy dense-prediction task where each patch must report the patch *below*
   it (later in raster order): the bidirectional mixer learns it, a forward-only one cannot.

    python examples/vim_bidirectional.py            # the check, 2 small steps of each mixer
    python examples/vim_bidirectional.py --full     # 120 steps each: bidirectional wins

The default is a smoke run: it checks reverse=True against flip -> scan -> flip and trains
each mixer for 2 steps on batches of 8, too few to learn anything: about 5 s on a 2-core CPU.
The comparison needs `--full`: about 25 s on a 2-core CPU (CPU tensors run on the torch
lowering), where the bidirectional mixer reaches a tenth of the forward-only one's error.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

import lrc
from lrc.nn import BiMamba
from lrc.zoo import vim
from lrc.zoo.mamba1 import mamba1

SIDE, PATCH = 8, 2          # 8x8 images in 2x2 patches: a 4x4 grid, 16 tokens in raster order
GRID = SIDE // PATCH


def reverse_equals_flip() -> None:
    """reverse=True against flipping every Seq input and the output."""
    layer = lrc.compile(mamba1)
    fwd, bwd = vim.example(t=16)
    y = vim.bidirectional(fwd, bwd, layer)
    flip = {k: (v.flip(-1) if k in ("u", "dt", "B", "C") else v) for k, v in bwd.items()}
    manual = layer(**fwd) + layer(**flip).flip(-1)
    print(f"reverse=True vs flip-scan-flip: max |diff| = {(y - manual).abs().max():.1e}")


class ForwardOnly(BiMamba):
    """The same mixer with its backward branch switched off: a causal Mamba."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, -1)
        return self.out_proj(self.fwd(x, reverse=False) * F.silu(z))


class TinyVim(nn.Module):
    """Patch embedding + positions, two residual mixer layers, a per-patch read-out."""

    def __init__(self, mixer: type[nn.Module], d: int = 24):
        super().__init__()
        self.embed = nn.Linear(PATCH * PATCH, d)
        self.pos = nn.Parameter(torch.randn(GRID * GRID, d) * 0.02)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(2))
        self.mixers = nn.ModuleList(mixer(d, d_state=8) for _ in range(2))
        self.head = nn.Linear(d, 1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.embed(patches) + self.pos
        for norm, mix in zip(self.norms, self.mixers, strict=True):
            x = x + mix(norm(x))
        return self.head(x).squeeze(-1)


def batch(b: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random images as patch tokens; target: the mean of the patch below (masked on the last
    row, which has none)."""
    img = torch.rand(b, SIDE, SIDE)
    patches = img.unfold(1, PATCH, PATCH).unfold(2, PATCH, PATCH).reshape(b, GRID * GRID, -1)
    means = patches.mean(-1)
    target = torch.cat([means[:, GRID:], torch.zeros(b, GRID)], 1)
    mask = torch.cat([torch.ones(GRID * (GRID - 1)), torch.zeros(GRID)])
    return patches, target, mask


def train(mixer: type[nn.Module], steps: int = 120, b: int = 32, b_eval: int = 256) -> float:
    """Train a TinyVim for `steps` (batches of `b`) and return its masked MSE on `b_eval`
    fresh images."""
    torch.manual_seed(0)
    model = TinyVim(mixer)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(steps):
        x, target, mask = batch(b)
        loss = ((model(x) - target).square() * mask).sum() / (mask.sum() * x.shape[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, target, mask = batch(b_eval)
        return (((model(x) - target).square() * mask).sum() / (mask.sum() * b_eval)).item()


def main(full: bool = False) -> None:
    reverse_equals_flip()
    _, target, mask = batch(256)
    baseline = target[:, mask.bool()].var().item()
    print(f"predicting the mean everywhere: MSE {baseline:.4f}")
    for name, mixer in (("forward-only Mamba", ForwardOnly), ("bidirectional (Vim)", BiMamba)):
        start = time.time()
        mse = train(mixer, 120) if full else train(mixer, 2, b=8, b_eval=8)
        print(f"{name:20s}: MSE {mse:.4f}  ({time.time() - start:.1f}s)")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="train 120 steps per mixer")
    main(parser.parse_args().full)
