"""Which dims of a kernel's index space go in registers, and how big the blocks are."""
from __future__ import annotations

import networkx as nx

from ...errors import Unsupported
from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Rename, Shift, Sum
from ...layout import next_pow2
from .emit import Tiling
from .partition import Partition

MAX_TILE = 4096  # register elements per value and chunk (TC x blocks), a budget per program



def choose_tiling(k: Graph, part: Partition, adjoint: Graph | None = None) -> Tiling:
    """Reduced dims whole in the tile; the innermost dim of the first Seq input split across
    programs (coalesced loads); the other dims one index per program.

    `adjoint`, the backward step: a dim its state gradients sum over must be whole too (a
    state broadcast along a dim in the forward gathers its gradient along it), for a carried
    gradient cannot be split across programs the way a Seq or Param gradient can."""
    space = part.space
    reduced = {n.dim for n in k.nodes if isinstance(n, (Sum, Shift)) and n.dim in space}
    if adjoint is not None:
        feeds = set().union(*(nx.ancestors(adjoint.nx, new) for new in adjoint.new_state_names))
        reduced |= {adjoint[a].dim for a in feeds
                    if isinstance(adjoint[a], Sum) and adjoint[a].dim in space}
    for n in k.nodes:  # a rename trades two axes: both must be whole
        if isinstance(n, Rename):
            reduced |= {d for pair in n.mapping for d in pair if d in space}
    tile = set(reduced)
    seqs = [n for n in k.inputs(Role.SEQ) if n.annotation.axes]
    if not tile and seqs and seqs[0].annotation.axes[-1] == (k.time,):
        # time contiguous, nothing whole: one row of time per program, a 1-D block (a
        # [TC, 1] tile holds the same values, but Triton lays it out worse: the elementwise
        # backward's shifts by one step run several times slower)
        return Tiling(space, (), (), tuple(space), False)
    inner = None
    # a Seq input's innermost axis that is not whole yet (coalesced loads); else the innermost
    # such dim of any Seq input, time aside
    for n in seqs:
        last = [d for d in n.annotation.axes[-1] if d in space and d not in tile]
        if last:
            inner = last[-1]
            break
    for n in seqs if inner is None else ():
        dims = [d for d in n.annotation.dims if d in space and d not in tile]
        if dims:
            inner = dims[-1]
            break
    if inner is None and not tile:
        inner = space[-1]
    split = ()
    if inner is not None and inner not in tile:
        tile.add(inner)
        split = (inner,)
    order = tuple(d for d in space if d in tile)
    grid = tuple(d for d in space if d not in tile)
    return Tiling(space, order, split, grid, False)


def block_sizes(t: Tiling, sizes: dict[str, int], chunk: int, budget: int = MAX_TILE,
                programs: int = 1) -> dict[str, int]:
    """BLOCK per tile dim: whole dims at their size (rounded up to a power of two), split dims
    as large as the register budget allows, then smaller (not under 16) until there are at
    least `programs` programs to fill the GPU."""
    blocks = {d: next_pow2(sizes[d]) for d in t.tile if d not in t.split}
    used = chunk
    for b in blocks.values():
        used *= b
    if used > budget * 4:
        raise Unsupported(f"the dims {', '.join(blocks)} that must sit whole in one program "
                          f"hold {used // chunk} elements per step: too many for registers")
    for d in t.split:
        room = max(1, budget // used)
        blocks[d] = max(1, min(next_pow2(sizes[d]), 1 << (room.bit_length() - 1)))
        used *= blocks[d]
    for d in t.split:
        while blocks[d] > 16 and grid_size(t, sizes, blocks) < programs:
            blocks[d] //= 2
    if t.unroll is not None:  # no register axis: a loop's length
        blocks[t.unroll] = next_pow2(sizes[t.unroll])
    return blocks


def grid_size(t: Tiling, sizes: dict[str, int], blocks: dict[str, int]) -> int:
    n = 1
    for d in t.grid:
        n *= sizes[d]
    for d in t.split:
        n *= -(-sizes[d] // blocks[d])
    return n


def unrolled(k: Graph, t: Tiling) -> Tiling | None:
    """A tiling for the forward and backward with the one whole dim unrolled (forward_n,
    backward_n: scan_unrolled.py), where that suits: time the
    contiguous axis of the first Seq input, every state along that dim (Mamba-1's n: the
    state h[b, d, n], y = sum_n C h). Each chunk is then a [BLOCK, TC] tile per index of
    the dim, time last, so a thread holds consecutive steps and the scans over time stay in
    registers and warps (mamba_ssm's CUDA kernel's shape), where
    the [TC, BLOCK_d, BLOCK_n] tile scans across warps. None where it does not apply."""
    whole = [d for d in t.tile if d not in t.split]
    seqs = [n for n in k.inputs(Role.SEQ) if n.annotation.axes]
    if (len(whole) != 1 or not seqs or seqs[0].annotation.axes[-1] != (k.time,)
            or any(whole[0] not in k[s].dims for s in k.state_names)):
        return None
    tile = tuple(d for d in t.tile if d != whole[0])
    return Tiling(t.space, tile, t.split, t.grid, time_last=True, unroll=whole[0])
