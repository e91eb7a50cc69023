"""The scan's autograd Function: the forward kernels (saving checkpoints), the backward
kernels, and the gradients laid out as the user's tensors.
"""
from __future__ import annotations

import math

import torch

from ...ir import interpret
from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Input
from ...kernels.launch import deterministic
from ...layout import dim_strides, dims_to_layout, from_canonical, part_view
from ..base import Call
from . import replay as replays
from . import tune
from .configs import ScanConfig
from .launch import Launch, segments, state_strides
from .program import ScanProgram
from .replay import BackReplay, Replay, back_key, keep_replay, replay_key


class ScanFunction(torch.autograd.Function):
    """Kernel inputs (real tensors, one per kernel-graph input node) and initial states ->
    kernel outputs and final states, with the generated backward."""

    @staticmethod
    def forward(ctx, prog: ScanProgram, info: dict, *tensors: torch.Tensor):
        k, sizes, T = prog.kernel, info["sizes"], info["T"]
        n_in = len(info["inputs"])
        ins, h0s = tensors[:n_in], tensors[n_in:]
        device = info["device"]
        has_h0 = bool(h0s) and h0s[0].numel() > 0
        cu, ksizes, kT = _varlen(prog, info)
        loop = prog.mode != "scan"  # the one-token loop saves every state, the scan one per chunk

        def launch(config: ScanConfig | None):
            which = "forward_n" if config is not None and config.unroll else "forward"
            run = Launch(prog, which, ksizes, kT, device, config, cu)
            for name, x in zip(info["inputs"], ins):
                run.add(f"in:{name}", x, dim_strides(x, k[name].annotation.axes, sizes, k.time))
            outs = []
            for o, axes, dtype in zip(k.outputs, k.out_axes, info["out_dtypes"]):
                shape = [T if a == (k.time,) else math.prod(sizes[d] for d in a) for a in axes]
                y = torch.empty(shape, dtype=dtype, device=device)
                run.add(f"out:{o}", y, dim_strides(y, axes, sizes, k.time))
                outs.append(y)
            n_saved = T if loop else -(-kT // run.tc)
            finals, chks = [], []
            for s, h0 in zip(k.state_names, h0s):
                dims = k[s].dims
                shape = [ksizes[d] for d in dims]
                hT = torch.empty(shape, dtype=torch.float32, device=device)
                chk = torch.empty([n_saved] + shape, dtype=torch.float32, device=device)
                if h0.numel():
                    run.add(f"h0:{s}", h0, dim_strides(h0, info["state_axes"][s], ksizes,
                                                       k.time))
                else:
                    run.add(f"h0:{s}", hT, {})
                run.add(f"hT:{s}", hT, state_strides(hT, dims, False))
                st = state_strides(chk, dims, True)
                if loop:
                    st["#t"] = st.pop("#c")
                run.add(f"all:{s}" if loop else f"chk:{s}", chk, st)
                finals.append(hT)
                chks.append(chk)
            if loop:
                run(HAS_H0=has_h0, REVERSE=info["reverse"])
            else:
                run.n_seg, run.seg_len = segments(prog, run, T)
                for s, hT in zip(k.state_names, finals):
                    run.summaries(s, k[s].dims, hT)
                if run.n_seg > 1:
                    run(HAS_H0=has_h0, SAVE=True, REVERSE=info["reverse"], SUMMARY=True)
                run(HAS_H0=has_h0, SAVE=True, REVERSE=info["reverse"], SUMMARY=False)
            return outs, finals, chks, run

        key = replay_key(prog, info, ins, h0s)
        replay = replays.REPLAYS.get(key) if key is not None else None
        if replay is not None and replay.run.prog is prog:
            outs, finals, chks, tc = replay(ins, h0s, device)
        else:
            config = tune.config_for(prog, "forward", info, ins, launch)
            outs, finals, chks, run = launch(config)
            # the outputs the backward reads its states from (ScanProgram.saved) are kept
            # with the checkpoints, after them
            chks = chks + [outs[list(k.outputs).index(o)] for o in prog.saved.values()]
            tc = run.tc
            keep_replay(replays.REPLAYS, key, lambda: Replay(run, ins, h0s, outs, finals, chks, tc))
        ctx.prog, ctx.info, ctx.has_h0 = prog, info, has_h0
        ctx.set_materialize_grads(False)  # an unused output's or final state's: None, not 0
        ctx.tc = tc
        ctx.save_for_backward(*ins, *chks)
        return (*outs, *finals)

    @staticmethod
    def backward(ctx, *grads):
        """The backward's launch, replay and gradient layout in one place: autograd's contract
        is one method, and its steps share the saved tensors and the launch's buffers."""
        prog, info = ctx.prog, ctx.info
        k, bw, sizes, T = prog.kernel, prog.backward, info["sizes"], info["T"]
        saved = ctx.saved_tensors
        n_in = len(info["inputs"])
        ins, chks = saved[:n_in], saved[n_in:]
        device = info["device"]
        loop = prog.mode != "scan"
        n_out = len(k.outputs)
        cots, zeros = [], []  # zeros: the cotangents made here (outputs given no gradient)
        for (_o, cot), axes, gy in zip(bw.cotangents, k.out_axes, grads[:n_out]):
            if gy is None:
                shape = [T if a == (k.time,) else math.prod(sizes[d] for d in a) for a in axes]
                gy = torch.zeros(shape, dtype=torch.float32, device=device)
                zeros.append((gy, True))
            cots.append((cot, gy, axes))
        d_finals = grads[n_out:]
        has_dht = any(gh is not None for gh in d_finals)
        names = list(info["inputs"])
        cu, ksizes, kT = _varlen(prog, info)
        # deterministic: the kernels' fixed-order variants (ScanProgram.fixed_order), tuned
        # and replayed apart from the others
        det = deterministic() and prog.fixed_order("backward") != "backward"

        def launch(config: ScanConfig | None):
            fresh = list(zeros)  # the buffers this launch makes: (tensor, zeroed)

            def made(t: torch.Tensor, zero: bool = False) -> torch.Tensor:
                fresh.append((t, zero))
                return t

            unrolled = config is not None and config.unroll and "backward_n" in prog.sources
            which = "backward_n" if unrolled else "backward"
            which = prog.fixed_order(which) if det else which
            run = Launch(prog, which, ksizes, kT, device, config, cu)
            partials = prog.partials_of(which)
            for name, x in zip(info["inputs"], ins):
                run.add(f"in:{name}", x, dim_strides(x, k[name].annotation.axes, sizes, k.time))
            for cot, gy, axes in cots:
                run.add(f"in:{cot}", gy, dim_strides(gy, axes, sizes, k.time))
            for o, y in zip(prog.saved.values(), chks[len(k.state_names):]):
                axes = k.out_axes[list(k.outputs).index(o)]
                run.add(f"saved:{o}", y, dim_strides(y, axes, sizes, k.time))
            for s, chk in zip(k.state_names, chks):
                st = state_strides(chk, k[s].dims, True)
                if loop:  # the saved states are the adjoint step's Seq inputs
                    st["#t"] = st.pop("#c")
                    run.add(f"in:{dict(bw.forward_states)[s]}", chk, st)
                else:  # a chunk k times the forward's reads every k-th checkpoint
                    assert run.tc % ctx.tc == 0 and (run.tc == ctx.tc or not info["reverse"])
                    st["#c"] *= run.tc // ctx.tc
                    run.add(f"chk:{s}", chk, st)
            dh0s = []
            for (s, adj), gh in zip(bw.adjoints, d_finals):
                dims = k[s].dims
                dh0 = made(torch.empty([ksizes[d] for d in dims], dtype=torch.float32,
                                       device=device))
                if gh is None and not has_dht:  # not read (HAS_DHT, the loop's HAS_H0)
                    gh = dh0
                elif gh is None:  # another state's is given: this one reads as zeros
                    gh = made(torch.zeros([ksizes[d] for d in dims], dtype=torch.float32,
                                          device=device), True)
                if loop:
                    run.add(f"h0:{adj}", gh, state_strides(gh, dims, False))
                    run.add(f"hT:{adj}", dh0, state_strides(dh0, dims, False))
                else:
                    run.add(f"dhT:{adj}", gh, state_strides(gh, dims, False))
                    run.add(f"dh0:{s}", dh0, state_strides(dh0, dims, False))
                dh0s.append(dh0)
            if not loop:
                run.n_seg, run.seg_len = segments(prog, run, T, backward=True)
                for (s, adj), dh0 in zip(bw.adjoints, dh0s):
                    run.summaries(adj, k[s].dims, dh0)
            bufs = {}
            for x, out in bw.seq_grads + bw.param_grads:
                parts, atomic = partials[out]
                timed = k[x].role is Role.SEQ
                slots = [] if timed or loop else [run.n_seg]  # a Param's gradient: per segment
                # one slot per program (per block of a split dim: the fixed-order variant)
                parts_shape = slots + [-(-ksizes[d] // run.blocks[d]) if d in run.tiling.split
                                       else ksizes[d] for d in parts]
                shape = parts_shape + ([T] if timed else []) + [sizes[d] for d in k[x].dims]
                # a Seq gradient stored once per element: in its input's dtype (no float32
                # buffer and cast pass); partial sums and atomic adds stay in float32
                # and laid out like it (no copy to the input's strides afterwards)
                if timed and not parts and not slots and (not atomic or which == "backward_n"):
                    # backward_n adds B's gradient along time per index of n (in float32):
                    # laid out as B, time contiguous, the adds are vectors
                    like = ins[names.index(x)]
                    buf = made(torch.zeros_like(like, dtype=torch.float32) if atomic else
                               torch.empty_like(like), atomic)
                    run.add(f"grad:{x}", buf, dim_strides(buf, k[x].annotation.axes, sizes,
                                                          k.time))
                    bufs[x] = (buf, None)
                    continue
                buf = made((torch.zeros if atomic else torch.empty)(
                    shape, dtype=torch.float32, device=device), atomic)
                st = {"#c": buf.stride(0)} if slots else {}
                st.update({f"#p_{d}": buf.stride(len(slots) + i) for i, d in enumerate(parts)})
                parts = slots + list(parts)
                off = len(parts)
                if timed:
                    st["#t"] = buf.stride(off)
                    off += 1
                st.update({d: buf.stride(off + i) for i, d in enumerate(k[x].dims)})
                run.add(f"grad:{x}", buf, st)
                bufs[x] = (buf, len(parts))
            if loop:
                run(HAS_H0=has_dht, REVERSE=not info["reverse"])
            else:
                if run.n_seg > 1:
                    run(HAS_DHT=has_dht, REVERSE=info["reverse"], BACK=not info["reverse"],
                        SUMMARY=True)
                run(HAS_DHT=has_dht, REVERSE=info["reverse"], BACK=not info["reverse"],
                    SUMMARY=False)
            return bufs, dh0s, run, fresh

        key = back_key(prog, info, ins, chks, grads, ctx.tc)
        replay = replays.BACK_REPLAYS.get(key) if key is not None else None
        if replay is not None and replay.run.prog is prog:
            bufs, dh0s = replay(ins, chks, grads, device)
        else:
            config = tune.config_for(prog, "backward_det" if det else "backward", info, ins,
                                     launch, tc=ctx.tc)
            bufs, dh0s, run, fresh = launch(config)
            keep_replay(replays.BACK_REPLAYS, key,
                  lambda: BackReplay(run, ins, chks, grads, fresh, bufs, dh0s))
        out_grads = input_grads(prog, info, ins, bufs)
        h0_grads = [dims_to_layout(dh0, k[s].dims, info["state_axes"][s], ksizes)
                    if ctx.has_h0 else None for dh0, s in zip(dh0s, k.state_names)]
        return (None, None, *out_grads, *h0_grads)


def input_grads(prog: ScanProgram, info: dict, ins, bufs: dict) -> list[torch.Tensor]:
    """The gradients of the kernel's inputs from the backward's buffers: as written (a Seq
    gradient in its input's layout and dtype), or partial sums added up and laid out."""
    out = []
    for name, x in zip(info["inputs"], ins):
        buf, n_parts = bufs[name]
        if n_parts is None:
            out.append(buf.to(x.dtype))
            continue
        gsum = buf.sum(tuple(range(n_parts))) if n_parts else buf
        out.append(_to_layout(gsum, prog.kernel, name, info["sizes"]).to(x.dtype))
    return out


def _varlen(prog: ScanProgram, info: dict) -> tuple:
    """(cu, sizes, T) of the kernels' launches: for packed sequences (info['varlen'] = cu on
    the device, the longest length, the number of sequences) the batch dim counts sequences
    and T is the longest; else the call's own."""
    if info.get("varlen") is None:
        return None, info["sizes"], info["T"]
    cu, longest, n = info["varlen"]
    return cu, dict(info["sizes"], **{prog.batch: n}), longest


def _to_layout(g: torch.Tensor, k: Graph, name: str, sizes: dict[str, int]) -> torch.Tensor:
    """A gradient held as (time?, *node dims) back in the input's annotated layout."""
    node = k[name]
    flat = ([k.time] if node.role is Role.SEQ else []) + list(node.dims)
    axes = node.annotation.axes
    order = [flat.index(d) for a in axes for d in a]
    T = g.shape[0] if node.role is Role.SEQ else 1
    shape = [T if a == (k.time,) else math.prod(sizes[d] for d in a) for a in axes]
    return g.permute(order).reshape(shape)


def kernel_input(prog: ScanProgram, name: str, call: Call, env, with_time: bool = True
                 ) -> torch.Tensor:
    """The tensor the kernel reads for its input `name`: the user's, or a pre result."""
    g, k = prog.g, prog.kernel
    if name in g and isinstance(g[name], Input):
        return part_view(call.tensors[g[name].arg], g[name].part)
    axes = k[name].annotation.axes
    timed = (g.time,) in axes
    if not with_time:
        axes = tuple(a for a in axes if a != (g.time,))
    x = env[name]
    # a value constant along some of its node's dims (a term that cancelled) is held with
    # size 1 there: broadcast it to the node's dims, which the kernel indexes
    t = x.shape[0] if x.dim() == 1 + len(g.dims) else 1
    x = x.expand(interpret.canonical_shape(g, k[name].dims, call.sizes, t))
    return from_canonical(g, x, axes, call.sizes, timed and with_time).contiguous()
