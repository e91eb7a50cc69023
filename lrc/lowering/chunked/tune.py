"""Chunk and block sizes for the chunked kernels: a small config set, timed once per shape.

On the GPU each candidate is compiled and timed (median of a few runs) the first time a shape
is seen, and the fastest is remembered for the process and on disk (`remember`: the next
process on the same kind of GPU compiles only that one); a candidate that fails to compile
(registers, shared memory) is skipped. Under Triton's interpreter one small config runs: 16-step
chunks, so a short test sequence still crosses chunk boundaries.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...kernels import tune as policy


@dataclass(frozen=True)
class Config:
    """BT steps per chunk, BV values per program; num_warps / num_stages for the compiler."""

    BT: int
    BV: int
    num_warps: int = 4
    num_stages: int = 2
    # split over chunks (emit.forward_source, PHASE): 0 not (one program walks a
    # row's chunks, everything in one launch); LOCAL (1, or True): each chunk's own part of
    # the state, the states kernel, the outputs; PASS (2): the state pass alone, then the
    # outputs (or gradients) of every chunk in parallel
    split: int = 0
    # the backward's PASS chunks (PHASE 2) each looping over this many of the heads that
    # share an input, its gradient summed in registers and added once rather than by every
    # head (backward.looped_dim); 0: one program per head
    heads: int = 0
    # the backward's PASS chunks (PHASE 2) each taking a block of this many keys, one
    # program per block: fewer registers, and the parts of the gradients that sum over the
    # keys added atomically (backward.key_partial); 0: all the keys in one program
    bk: int = 0
    # the PASS state passes (PHASE 3, forward and backward) taking a block of this many keys,
    # one program per block (a state's rows pass independently); 0: all the keys
    wk: int = 0
    # the PASS backward's chunks, one program per head, each storing its part of the
    # gradient of an input the heads share into its own slab, the slabs summed after
    # (instead of adding it atomically, or looping over heads); backward.looped_dim
    spread: bool = False


LOCAL, PASS = 1, 2


def pow2(n: int, least: int = 16) -> int:
    """The smallest power of two >= max(n, least) (tl.dot wants 16 or more along each dim)."""
    p = least
    while p < n:
        p *= 2
    return p


def interpreted(V: int) -> Config:
    return Config(16, min(pow2(V), 32), 1, 1)


def candidates(which: str, V: int, per_key: bool, save: bool = False,
               bt: int | None = None, wide: bool = False, looped: bool = False,
               K: int = 0) -> list[Config]:
    """The configs tried on the GPU. The backward keeps the forward's chunk (its checkpoints),
    so a forward that saves them for a backward stays at 64-step chunks; inference alone may
    take 128 (fewer sequential steps) where the decay is scalar. The backward takes all the
    values in one program. `wide`: float32 operands (tf32x3 products), twice the shared
    memory of 16-bit ones: one pipeline stage, and 32-step chunks where a backward follows
    (GLA at K = V = 128: 164 KB; 64-step chunks need 262-328 KB, over sm_90's 227 KB).
    `looped`: the spec has heads sharing an input (backward.looped_dim), so the backward
    also tries its chunks looping over blocks of them. `K`: the keys, which the backward's
    chunks may take in blocks of 64 where there are more."""
    bvs = sorted({min(pow2(V), b) for b in (32, 64, 128)})
    if wide:
        if which == "forward":
            return [Config(32 if save else 64, bv, w, 1) for bv in bvs
                    if bv >= 64 or bv == pow2(V) for w in (4, 8)]
        return [Config(bt or 32, pow2(V), w, 1) for w in (4, 8)]
    if which == "forward":
        out = [Config(64, bv, w, 2) for bv in bvs if bv >= 64 or bv == pow2(V) for w in (4, 8)]
        # one pipeline stage: less shared memory (Mamba-2 P64 N128 bf16: 57 KB against 98),
        # so two programs share an SM and it is ahead at the reference shape; without masks
        # (EVEN) the two-stage one is ahead
        out += [Config(64, bv, 4, 1) for bv in bvs if bv >= 64 or bv == pow2(V)]
        if not per_key and not save:
            out += [Config(128, min(pow2(V), 64), w, 2) for w in (4, 8)]
        # split over chunks (the state pass alone, then every chunk in parallel): after the
        # one-program-per-row configs, so the untimed choice keeps those. LOCAL (each chunk's
        # own part first) stays for an override: at the reference shape it is slower than
        # PASS (Mamba-2, forward and backward). Three stages for the forward's state pass
        # gain nothing, so it keeps two.
        bv = max(b for b in bvs if b >= 64 or b == pow2(V))
        return out + [Config(64, bv, 4, 2, split=PASS, wk=w)
                      for w in sorted({0, 64 if pow2(K) > 64 else 0})]
    # one program per whole value row: with the values split over programs (BV < V) Triton
    # 3.6 on sm_90 gives wrong gradients or an illegal address for some configs (Mamba-2
    # P64 bf16: BV 32 at 4 warps, x's gradient 6e-2 off, right at 8 warps; a forward at BV 32
    # faults; fp32 at T=128 is right and clean under compute-sanitizer; the interpreter runs
    # every split right: tests/lowering/chunked/test_chunked.py::test_split_value_blocks). Upstream
    # reports the same shape of fault (triton-lang/triton#11366: several tl.dot, a 32-wide
    # block, 4 warps, an illegal shared-memory read on sm_90 since Triton 3.6; clean on
    # 3.5.1). With 128 values 4 warps need more shared memory than an sm_90 block may use,
    # so 8 come first there.
    warps = (8, 4) if pow2(V) >= 128 else (4, 8)
    out = [Config(bt or 64, pow2(V), w, 1) for w in warps]
    # split over chunks (see the forward's): after the one-row configs
    # (8 warps, and a 128-register cap on the one-chunk phases, which would let four 4-warp
    # programs share an SM, are slower for Mamba-2's backward; GLA's backward does not fit
    # 128 registers; the PASS backward at 8 warps is slower at every heads block, and blocks
    # of 8 heads lose to 64). Where there are more than 64 keys: the state pass in blocks of
    # 64, and the chunks too. Three pipeline stages for the state pass (the chunks run one):
    # more stages hide more of its loads' latency (Mamba-2's and GLA's state passes gain most)
    keys = [(0, 0)] + ([(0, 64), (64, 64)] if pow2(K) > 64 else [])
    out += [Config(bt or 64, pow2(V), 4, 3, split=PASS, heads=h, bk=b, wk=wk)
            for b, wk in keys for h in ((0, 64) if looped else (0,))]
    if looped:  # each head's part of the shared inputs' gradients in its own slab
        out.append(Config(bt or 64, pow2(V), 4, 3, split=PASS, spread=True, wk=keys[-1][1]))
    return out


def remembered(key: tuple, device: str) -> Config | None:
    """A config tuned for `key` on this kind of GPU by an earlier process (on disk)."""
    return policy.remembered(key, device, "chunked_tuned.json", Config)


def remember(key: tuple, device: str, cfg: Config) -> None:
    """Keep `cfg` for `key` on disk for this kind of GPU."""
    policy.remember(key, device, cfg, "chunked_tuned.json")


# the tables shipped with lrc (tuned/<device slug>.json, made by `python -m lrc tune-tables`)
policy.ship("chunked_tuned.json", Path(__file__).parent / "tuned")
