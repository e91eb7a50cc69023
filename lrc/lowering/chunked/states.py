"""The chunked lowering's states kernel: the state entering each chunk, passed from chunk to
chunk (front to back; back to front for the gradient) when the chunks ran split (LOCAL)."""
from __future__ import annotations

from .emit import Kernel, dec_offset
from .form import ChunkForm


def states_source(form: ChunkForm, name: str) -> tuple[str, list[tuple]]:
    """The state passing of the forward split over chunks: per (grid index, value block),
    from the initial state, the state entering each chunk (checkpoint) and after the last
    (final state): S <- decay_c * S + local_c, in float32. With BACK the backward's: the
    state's gradient from the final one, back to front, leaving each chunk, then the
    initial state's."""
    k = Kernel(form, name)
    w = k.w
    k.state_head("chk", "loc")
    w("S = tl.zeros([BK, BV], tl.float32)")
    w("if HAS_H0:")
    w(f"    S += tl.load(h0_ptr + {k.state_offset('h0')}, mask=m_s, other=0.0)"
      ".to(tl.float32)", "initial state")
    w("for cc in range(0, n_c):")
    w("    c = cc")
    w("    if BACK:  # the backward's: the state's gradient, passed from the last chunk")
    w("        c = n_c - 1 - cc")
    w(f"    tl.store(chk_ptr + {k.state_offset('chk', chunk=True)}, "
      "_cast(S, chk_ptr.dtype.element_ty, EMU), mask=m_s)", "state entering the chunk")
    w(f"    d = tl.load(dec_ptr + {dec_offset(k)} + ZERO, mask=m_kr, other=1.0)")
    w(f"    S = S * d + tl.load(loc_ptr + {k.state_offset('loc', chunk=True)}, mask=m_s, "
      "other=0.0).to(tl.float32)")
    w(f"tl.store(hT_ptr + {k.state_offset('hT')}, S, mask=m_s)", "final state")
    return k.source(["HAS_H0", "BACK", "BT", "BK", "BV", "EMU", "VARLEN", "EVEN"]), k.params
