"""Launching the chunked kernels: parameters from the user's tensors, the autograd Function.

Every tensor reaches the kernels as the user laid it out, with one stride per named dim
(`dim_strides`); outputs and gradients are allocated in the same layouts. Packed sequences
(cu_seqlens) run in one launch: the batch grid index is the sequence, and each program reads
its sequence's rows of the packed inputs.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import torch

from ... import config
from ...bounded import Bounded
from ...errors import Unsupported
from ...ir.dims import Role
from ...kernels import abi
from ...kernels import launch as kernel_launch
from ...kernels import module as modules
from ...kernels import tune as policy
from ...layout import dim_strides
from .backward import atom_flag
from .tune import PASS, Config, candidates, interpreted, pow2


@functools.cache
def _unused(device: torch.device) -> torch.Tensor:
    """What the kernels get for cu_seqlens and chunk offsets when nothing is packed (unread:
    one tensor per device, so an ordinary call copies nothing from the host)."""
    return torch.zeros(1, dtype=torch.int64, device=device)


def _triton_dtype(dt: torch.dtype):
    import triton.language as tl

    return {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}.get(dt, tl.float32)


class Launcher:
    """One call's launches: sizes, sequences, dtypes, and the tensors by parameter key."""

    def __init__(self, prog, call):
        f = prog.form
        g = f.g
        self.prog, self.form, self.g, self.call = prog, f, g, call
        self.T, self.device = call.T, call.device
        self.sizes = dict(call.sizes)           # tensor sizes (batch 1 when packed)
        self.ksizes = dict(call.sizes)          # kernel sizes (batch = number of sequences)
        self.varlen = call.segments is not None
        if self.varlen:
            self.ksizes[f.batch] = len(call.segments)
        self.interpret = call.device.type != "cuda" and config.get("as_gpu") is None
        seq = {call.tensors[n.arg].dtype for n in g.inputs(Role.SEQ)}
        low = [d for d in (torch.bfloat16, torch.float16) if d in seq]
        self.dt = low[0] if low else torch.float32   # the narrowest input sets the dot dtype
        self.chk_dtype = self.dt
        self.V, self.K = self.ksizes[f.value], self.ksizes[f.key]
        # tuned once per shape; packed batches change every step, so they key on the number
        # of sequences and the total length's power of two
        length = pow2(call.T, 1) if self.varlen else call.T
        self.key = (prog.source, tuple(sorted(self.ksizes.items())), length, self.dt,
                    self.varlen, call.reverse)
        seg = call.segments or [(0, call.T)] * self.ksizes.get(f.batch, 1)
        self.lens = [e - s for s, e in seg]
        self.cu = _unused(call.device)
        if self.varlen:
            cu = [s for s, _ in seg] + [seg[-1][1]]
            self.cu = torch.tensor(cu, dtype=torch.int64, device=call.device)

    # ---- pieces

    def strides(self, x: torch.Tensor, axes, sizes) -> dict:
        return dim_strides(x, axes, sizes, self.g.time)

    def chunks(self, bt: int) -> tuple[int, torch.Tensor]:
        """Chunks over all sequences, and each sequence's first chunk index."""
        n = [-(-ln // bt) for ln in self.lens]
        if not self.varlen:
            return max(sum(n), 1), _unused(self.device)
        offs = [sum(n[:i]) for i in range(len(n))]
        return max(sum(n), 1), torch.tensor(offs, dtype=torch.int64, device=self.device)

    def state_like(self, dtype=torch.float32, zero: bool = False) -> torch.Tensor:
        st = self.g[self.form.state]
        shape = [math.prod(self.ksizes[d] for d in a) for a in st.annotation.axes]
        make = torch.zeros if zero else torch.empty
        return make(shape, dtype=dtype, device=self.device)

    def state_strides(self, x: torch.Tensor) -> dict:
        if x.numel() == 0:
            return {}
        return self.strides(x, self.g[self.form.state].annotation.axes, self.ksizes)

    def checkpoints(self, cfg: Config, save: bool) -> tuple[torch.Tensor, dict, torch.Tensor]:
        f = self.form
        dims = [d for d in self.g[f.state].dims if d != f.batch]
        n, offs = self.chunks(cfg.BT)
        shape = [n if save else 1] + [self.ksizes[d] for d in dims]
        chk = torch.empty(shape, dtype=self.chk_dtype, device=self.device)
        st = {"#c": chk.stride(0), **{d: chk.stride(i + 1) for i, d in enumerate(dims)}}
        return chk, st, offs

    def decay_dims(self) -> list[str]:
        f = self.form
        return [d for d in self.g[f.state].dims if d not in (f.batch, f.value)]

    def decays(self, chk: torch.Tensor) -> torch.Tensor:
        """Each chunk's decay per key (the split forward's): (chunks, state dims but the batch
        and the values), float32."""
        return torch.empty([chk.shape[0]] + [self.ksizes[d] for d in self.decay_dims()],
                           dtype=torch.float32, device=self.device)

    def grid(self, cfg: Config) -> tuple[int]:
        n = -(-self.V // cfg.BV)
        for d in self.form.grid:
            n *= self.ksizes[d]
        return (n,)

    def launch(self, which: str, cfg: Config, tensors: dict, chunks: int = 1,
               **consts) -> None:
        """One launch of kernel `which`; `chunks`: programs per grid index (PHASE 1, 2); with
        HEADS, none per index of the looped dim (each program loops over it)."""
        if which == "backward_det":
            self.prog.fixed()  # generated on first use: its parameters
        params = {"forward": self.prog.fparams, "backward": self.prog.bparams,
                  "states": self.prog.sparams}.get(which) or self.prog.dparams
        args = abi.arguments(params, tensors, self.ksizes, {"T": self.T})
        consts["I64"] = abi.needs_int64(args)  # offsets past 2^31: index products in int64
        consts.setdefault("BK", pow2(self.K))
        consts.update(BT=cfg.BT, BV=cfg.BV, DT=_triton_dtype(self.dt),
                      IEEE=self.interpret, EMU=self.interpret,
                      REVERSE=self.call.reverse,
                      VARLEN=self.varlen)
        # no step, key or value past its tile's end: the kernels drop their masks
        consts["EVEN"] = (not self.varlen and self.T % cfg.BT == 0 and self.V % cfg.BV == 0
                          and self.K % consts["BK"] == 0)
        if which == "states":
            for k in ("DT", "IEEE", "REVERSE"):
                consts.pop(k)
        programs = self.grid(cfg)[0] * chunks
        if which != "states":
            consts.setdefault("NKB", 1)
            programs *= consts["NKB"]  # blocks of keys (Config.bk, Config.wk)
        if which.startswith("backward") and self.prog.looped[0]:
            consts.setdefault("HEADS", 0)
            if consts["HEADS"]:  # one program per block of HEADS heads
                n = self.ksizes[self.prog.looped[0]]
                programs = programs // n * -(-n // consts["HEADS"])
        if not self.interpret:
            consts.update(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
            if consts.get("PHASE") in (1, 2):  # one chunk per program: nothing to pipeline
                consts["num_stages"] = 1
        self.fire(which, (programs,), args, consts)

    def fire(self, which: str, grid: tuple, args: list, consts: dict) -> None:
        if which == "sum":  # spread gradients summed over their slabs (a launch, timed too)
            torch.sum(args[0], 0, out=args[1])
            return
        rec = kernel_launch.recorder()
        if rec is not None:  # kernels.aot: reported without the compiler's options
            bare = dict(consts)
            warps, stages = bare.pop("num_warps", 4), bare.pop("num_stages", 2)
            rec(f"{self.g.name}.chunked_{which}", self.prog.kernel(which, False), list(args),
                bare, warps, stages)
            if config.get("as_gpu") is not None:
                return
            if self.interpret:
                consts = bare
        fn = self.prog.kernel(which, self.interpret)
        if self.interpret:
            with modules.interpreted():
                fn[grid](*args, **consts)
            return
        direct = self.prog.__dict__.setdefault("_direct", Bounded(256))
        kernel_launch.launch(direct, which, fn, grid, args, consts)

    def walk_keys(self, cfg: Config) -> dict:
        """BK and NKB of a PASS state pass (Config.wk: its keys in blocks)."""
        wk = cfg.wk if 0 < cfg.wk < pow2(self.K) else pow2(self.K)
        return dict(BK=wk, NKB=-(-self.K // wk))

    def inputs(self, ins) -> dict:
        out = {}
        for n, x in zip(self.form.inputs, ins, strict=False):
            out[f"in:{n}"] = (x, self.strides(x, self.g[n].annotation.axes, self.sizes))
        return out

    # ---- forward and backward

    def forward(self, ins, h0: torch.Tensor, save: bool, cfg: Config | None = None):
        """(y, hT, checkpoints, chunk starts, config) for inputs `ins` and initial state h0."""
        g = self.g
        axes = g.out_axes[0]
        shape = [self.T if a == (g.time,) else math.prod(self.sizes[d] for d in a) for a in axes]

        def go(cfg: Config):
            y = torch.empty(shape, dtype=self.call.out_dtype, device=self.device)
            hT = self.state_like()
            chk, cst, offs = self.checkpoints(cfg, save or cfg.split)
            t = self.inputs(ins)
            t.update(out=(y, self.strides(y, axes, self.sizes)),
                     hT=(hT, self.state_strides(hT)),
                     h0=(h0, self.state_strides(h0)) if h0.numel() else (hT, {}),
                     chk=(chk, cst), loc=(chk, cst), dec=(chk, {}), cu=(self.cu, {}),
                     coff=(offs, {}))
            if not cfg.split:
                self.launch("forward", cfg, t, HAS_H0=h0.numel() > 0, SAVE=save, PHASE=0)
                return y, hT, chk, offs
            chunks = max(-(-ln // cfg.BT) for ln in self.lens) if self.lens else 1
            if cfg.split == PASS:  # the state pass alone, then every chunk's outputs
                self.launch("forward", cfg, t, HAS_H0=h0.numel() > 0, SAVE=False, PHASE=3,
                            **self.walk_keys(cfg))
                self.launch("forward", cfg, t, chunks, HAS_H0=False, SAVE=False, PHASE=2)
                return y, hT, chk, offs
            # split over chunks: each chunk's own state, the state passing, the outputs
            loc = torch.empty_like(chk)
            dec = self.decays(chk)
            t.update(loc=(loc, cst), dec=(dec, {"#c": dec.stride(0), **{
                d: dec.stride(i + 1) for i, d in enumerate(self.decay_dims())}}))
            self.launch("forward", cfg, t, chunks, HAS_H0=False, SAVE=False, PHASE=1)
            self.launch("states", cfg, t, HAS_H0=h0.numel() > 0, BACK=False)
            self.launch("forward", cfg, t, chunks, HAS_H0=False, SAVE=False, PHASE=2)
            return y, hT, chk, offs

        if cfg is None:
            cfg = self.config("forward", go, save)
        return (*go(cfg), cfg)

    def config(self, which: str, go, flag, bt: int | None = None) -> Config:
        """The launch config by kernels.tune's policy: the program's override, the
        interpreter's small config, else the candidates timed once per shape."""
        forced = None
        if self.prog.override is not None:
            forced = self.prog.override[0 if which == "forward" else 1]
        c = interpreted(self.V)
        default = Config(bt or c.BT, c.BV, c.num_warps, c.num_stages)
        kind = "backward" if which == "backward_det" else which

        def tried() -> list[Config]:
            return candidates(kind, self.V, self.form.per_key, bool(flag), bt,
                              wide=self.dt == torch.float32,
                              looped=self.prog.looped[0] is not None, K=self.K)
        if which == "backward_det":  # configs where no two programs add to one element
            fix = self._fixed_order
            forced, default = forced and fix(forced), fix(default)
            plain = tried
            tried = lambda: list(dict.fromkeys(fix(c) for c in plain()))  # noqa: E731
        return policy.pick(
            self.key + (which, flag), device=self.device, forced=forced, default=default,
            candidates=tried, run=self._kernels_only(go) if config.get("tune") else go,
            table="chunked_tuned.json", make=Config)

    def _fixed_order(self, cfg: Config) -> Config:
        """`cfg` without the choices that add a gradient from several programs: all the values
        and keys in one program, one head per program (a shared input's heads into slabs)."""
        return dataclasses.replace(cfg, BV=pow2(self.V), heads=0, bk=0,
                                   spread=self.prog.looped[0] is not None)

    def _kernels_only(self, go):
        """`go` for the tuner's timing runs: once per config in full (buffers, arguments,
        compile), then its kernel launches fired again, so the kernels are timed, not the
        host work around them (the scan's tuner does the same)."""
        done: dict = {}

        def run(cfg: Config) -> None:
            if cfg in done:
                for launch in done[cfg]:
                    self.fire(*launch)
                return
            fired, fire = [], self.fire
            self.fire = lambda *a: fired.append(a) or fire(*a)
            try:
                go(cfg)
            finally:
                del self.fire
            done[cfg] = fired
        return run

    def backward(self, ins, h0: torch.Tensor, chk, offs, dy, dhT, cfg_f: Config):
        """Gradients of the graded inputs (in form.inputs order, None elsewhere) and of h0."""
        f, g = self.form, self.g
        graded = set(self.prog.graded)

        hd, shared = self.prog.looped
        # deterministic: the fixed-order kernel (backward_source's `det`), Params' gradients
        # in one slot per program, summed here in order
        det = kernel_launch.deterministic()
        which = "backward_det" if det else "backward"

        def go(cfg: Config):
            t = self.inputs(ins)
            grads, consts = {}, {}
            nvb = -(-self.V // cfg.BV)
            heads = cfg.heads if hd and cfg.split == PASS and nvb == 1 else 0
            bk = cfg.bk if cfg.split == PASS and 0 < cfg.bk < pow2(self.K) else pow2(self.K)
            nkb = -(-self.K // bk)
            spread = bool(cfg.spread and hd and (cfg.split == PASS or det) and not heads)
            chunks = max(-(-ln // cfg.BT) for ln in self.lens) if self.lens else 1
            slots = self.grid(cfg)[0] * (chunks if cfg.split else 1) * nkb  # programs
            sums = []
            for n, x in zip(f.inputs, ins, strict=False):
                if n not in graded:
                    continue
                node = f.input(n)
                summed = heads and n in shared  # over a block of the looped dim, in registers
                slabs = spread and n in shared  # one per index of the looped dim, summed after
                atomic = node.role is Role.PARAM or (
                    nkb > 1 and n in self.prog.key_partial) or (
                    heads < self.ksizes[hd] if summed else
                    nvb > 1 and f.value not in node.dims or not slabs and any(
                        self.ksizes[d] > 1 for d in f.grid if d not in node.dims))
                if det and node.role is Role.PARAM:  # one slot per program, summed after
                    buf = torch.zeros((slots, *x.shape), dtype=torch.float32,
                                      device=self.device)
                    st = self.strides(buf[0], node.annotation.axes, self.sizes)
                    st["#p_prog"] = buf.stride(0)
                    sums.append((buf, torch.empty_like(buf[0])))
                    t[f"grad:{n}"] = (buf, st)
                    grads[n] = sums[-1][1]
                    continue
                if det and atomic:
                    raise Unsupported(
                        f"deterministic mode: the chunked backward of {self.g.name} has no "
                        f"fixed-order sum for the gradient of {n} (several programs add to "
                        "it); run it with lowering='scan'")
                if node.role is Role.SEQ and not det:
                    consts[atom_flag(n)] = atomic
                shape = ((self.ksizes[hd],) if slabs else ()) + tuple(x.shape)
                buf = (torch.zeros(shape, dtype=torch.float32, device=self.device) if atomic
                       else torch.empty(shape, dtype=x.dtype, device=self.device))
                view = buf[0] if slabs else buf
                st = self.strides(view, node.annotation.axes, self.sizes)
                if slabs:
                    st[hd] = buf.stride(0)
                    sums.append((buf, torch.empty_like(view)))
                    view = sums[-1][1]
                t[f"grad:{n}"] = (buf, st)
                grads[n] = view
            dh0 = self.state_like()
            dhTt = dhT if dhT is not None else dh0
            cst = {"#c": chk.stride(0), **{d: chk.stride(i + 1) for i, d in enumerate(
                [d for d in g[f.state].dims if d != f.batch])}}
            t.update(dy=(dy, self.strides(dy, g.out_axes[0], self.sizes)), chk=(chk, cst),
                     dhT=(dhTt, self.state_strides(dhTt)), dh0=(dh0, self.state_strides(dh0)),
                     dchk=(chk, cst), loc=(chk, cst), dec=(chk, {}),
                     cu=(self.cu, {}), coff=(offs, {}))
            if not cfg.split:
                self.launch(which, cfg, t, HAS_DHT=dhT is not None, PHASE=0, **consts)
                for buf, out in sums:
                    self.fire("sum", None, [buf, out], {})
                return grads, dh0
            dchk = torch.empty_like(chk)
            if cfg.split == PASS:  # the state's gradient passed alone, then every chunk's
                t.update(dchk=(dchk, cst))
                self.launch(which, cfg, t, HAS_DHT=dhT is not None, PHASE=3, **consts,
                            **self.walk_keys(cfg))
                self.launch(which, cfg, t, chunks, HAS_DHT=False, PHASE=2, BK=bk, NKB=nkb,
                            **consts, **({"HEADS": heads} if hd else {}))
                for buf, out in sums:
                    self.fire("sum", None, [buf, out], {})
                return grads, dh0
            # split over chunks: each chunk's own part of the state's gradient, that
            # gradient passed back to front (the states kernel), each chunk's gradients
            loc = torch.empty_like(chk)
            dec = self.decays(chk)
            dst = {"#c": dec.stride(0), **{d: dec.stride(i + 1)
                                           for i, d in enumerate(self.decay_dims())}}
            t.update(dchk=(dchk, cst), loc=(loc, cst), dec=(dec, dst))
            self.launch(which, cfg, t, chunks, HAS_DHT=False, PHASE=1, **consts)
            st = dict(h0=t["dhT"], hT=t["dh0"], chk=(dchk, cst), loc=(loc, cst),
                      dec=(dec, dst), cu=(self.cu, {}), coff=(offs, {}))
            self.launch("states", cfg, st, HAS_H0=dhT is not None, BACK=True)
            self.launch(which, cfg, t, chunks, HAS_DHT=False, PHASE=2, **consts)
            for buf, out in sums:
                self.fire("sum", None, [buf, out], {})
            return grads, dh0

        cfg = self.config(which, go, dhT is not None, bt=cfg_f.BT)
        grads, dh0 = go(cfg)
        out = [grads[n].to(x.dtype) if n in grads else None
               for n, x in zip(f.inputs, ins, strict=True)]
        return out, dh0


class ChunkedFunction(torch.autograd.Function):
    """(initial state or empty, *inputs) -> (output, final state), with the generated backward."""

    @staticmethod
    def forward(ctx, launcher: Launcher, save: bool, h0: torch.Tensor, *ins: torch.Tensor):
        y, hT, chk, offs, cfg = launcher.forward(ins, h0, save)
        ctx.launcher, ctx.cfg, ctx.has_h0 = launcher, cfg, h0.numel() > 0
        ctx.save_for_backward(h0, chk, offs, *ins)
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        h0, chk, offs, *ins = ctx.saved_tensors
        lc = ctx.launcher
        if dy is None:
            g = lc.g
            shape = [lc.T if a == (g.time,) else math.prod(lc.sizes[d] for d in a)
                     for a in g.out_axes[0]]
            dy = torch.zeros(shape, dtype=torch.float32, device=lc.device)
        grads, dh0 = lc.backward(ins, h0, chk, offs, dy, dhT, ctx.cfg)
        dh0 = dh0.to(h0.dtype) if ctx.has_h0 else None
        return (None, None, dh0, *grads)


def run(prog, call) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs and final states of a whole-sequence call (see Program.run)."""
    f, g = prog.form, prog.form.g
    ins = [call.tensors[g[n].arg] for n in f.inputs]
    h0 = call.states[g[f.state].arg] if call.states is not None else None
    save = torch.is_grad_enabled() and (any(x.requires_grad for x in ins) or (
        h0 is not None and h0.requires_grad))
    h0t = h0 if h0 is not None else torch.empty(0, device=call.device)
    y, hT = ChunkedFunction.apply(Launcher(prog, call), save, h0t, *ins)
    return [y], [hT.to(call.state_dtype)]
