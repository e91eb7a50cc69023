"""Lowering choice: which of scan, chunked, conv and dplr can run a spec, and which is cheapest.

Eligibility comes from the structure (a pass); the choice needs shapes, so it is made per call
by `Lowering.choose(sizes, T)` from an explicit cost model: bytes over HBM bandwidth, and
arithmetic over the rate of the unit that does it (fp32 FMA pipes, tensor cores, the SFUs that
compute exp), the larger of the two, plus a penalty when a sequential scan has too few
independent lanes to fill the GPU. The constants describe one H200 (docs/cost-model.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy as sp

from ..errors import LoweringError
from ..ir.dims import Role
from ..ir.functions import Tape
from ..ir.graph import Graph
from ..ir.nodes import Map
from .analysis import expr_dims, params_tape
from .structure import Structure

LOWERINGS = ("scan", "chunked", "conv", "dplr")
# the lowerings the cost model takes by itself; dplr's kernels have run only under Triton's
# interpreter so far, so it is costed and shown, and runs where it is forced (lowering="dplr")
AUTOMATIC = ("scan", "chunked", "conv")


@dataclass(frozen=True)
class Device:
    """Throughputs the cost model divides by (defaults: one H200, Triton 3.6)."""

    name: str = "one NVIDIA H200 GPU"  # what the estimates are for, as the plan says it
    hbm: float = 4.28e12          # bytes/s, copy (read + write)
    fp32: float = 33.5e12         # FMA/s on the CUDA cores
    tensor: float = 790e12        # bf16 dense flop/s (half of it for tf32)
    sfu: float = 4.18e12          # exp2 per second: 132 SMs x 16/clk x 1.98 GHz
    lanes: int = 132 * 2048       # threads resident at full occupancy
    step_latency: float = 8e-9    # one dependent step of a sequential scan, seconds
    # host time (seconds) per call, which no overlap hides at short T; calibrated with tiny
    # shapes, where the host time is all there is: a scan call
    # (one generated kernel), one more generated-kernel launch, a conv call (three generated
    # kernels, the FFTs and the PyTorch ops around them), and per op of the Params' terms
    # (`host_ops`; each becomes several float64 PyTorch ops once complex values are split)
    call: float = 280e-6
    kernel_launch: float = 70e-6
    conv_call: float = 1.4e-3     # per convolution (readout); its Params terms included
    param_op: float = 230e-6      # per op (a mean over S4D, LRU and H3)
    # what lrc's chunked associative scan kernels achieve per state element and step
    # (calibrated on Mamba-1's real states and S4D's complex pairs): the scan is far from
    # the bounds above, so its estimate uses this rate
    scan_step: float = 2.2e-12
    scan_step_pair: float = 2.2e-12
    # one PyTorch op on a whole sequence's tensors (the dplr lowering computes its terms and
    # their layouts with ~30 of them); an estimate, not calibrated on the GPU yet
    torch_op: float = 10e-6


H200 = Device()
_TRANSCENDENTAL = ("exp", "log", "softplus", "sigmoid", "tanh", "phi1", "expm1", "log1p",
                   "sin", "cos", "Pow")


@dataclass(frozen=True)
class Cost:
    """The model's estimate for one lowering at one shape."""

    lowering: str
    bytes: float
    flops: float
    exps: float
    seconds: float
    bound: str

    def __str__(self) -> str:
        return (f"{self.lowering}: about {self.seconds * 1e6:.0f} us, limited by "
                f"{_BOUNDS.get(self.bound, self.bound)} ({self.bytes / 1e6:.1f} MB moved, "
                f"{self.flops / 1e9:.2f} GFLOP, {self.exps / 1e6:.1f} M exp)")


_BOUNDS = {"memory": "memory bandwidth", "exp": "exp throughput", "fp32": "fp32 arithmetic",
           "fp64": "fp64 arithmetic", "tensor": "tensor-core arithmetic",
           "latency": "the latency of T dependent steps",
           "measured scan rate": "the scan kernels' measured rate",
           "host": "host time (Python and launches)"}


@dataclass(frozen=True)
class Lowering:
    """Which lowerings can run this spec (and why not the others); the choice is per shape."""

    eligible: tuple[str, ...]
    reasons: tuple[tuple[str, str], ...]
    forced: str | None = None
    chunk: int = 64
    device: Device = field(default=H200, compare=False)

    def why_not(self, lowering: str) -> str:
        return dict(self.reasons).get(lowering, "")

    def choose(self, g: Graph, sizes: dict[str, int], T: int,
               itemsize: int = 2) -> tuple[str, dict[str, Cost]]:
        """The lowering for these shapes, and the cost of every eligible one."""
        costs = {lw: estimate(g, lw, sizes, T, itemsize, self.chunk, self.device)
                 for lw in self.eligible}
        if self.forced is not None:
            return self.forced, costs
        auto = [lw for lw in costs if lw in AUTOMATIC]
        return min(auto, key=lambda lw: (costs[lw].seconds, LOWERINGS.index(lw))), costs


def choose_lowering(g: Graph, forced: str | None = None) -> Graph:
    """Attach g.meta('lowering'): the eligible lowerings, and the forced one if valid."""
    st: Structure = g.meta("structure")
    if st is None:
        raise ValueError("choose_lowering needs the structure pass first")
    reasons = {"chunked": _chunk_reason(st), "conv": _conv_reason(g, st),
               "dplr": _dplr_reason(st)}
    eligible = ("scan",) + tuple(lw for lw in ("chunked", "conv", "dplr") if not reasons[lw])
    if forced is not None:
        if forced not in LOWERINGS:
            raise LoweringError(f"lowering must be one of {LOWERINGS}, got {forced!r}")
        if forced not in eligible:
            raise LoweringError(f"lowering={forced!r} cannot run {g.name}: {reasons[forced]}")
    why = tuple((lw, r) for lw, r in reasons.items() if r)
    return g.with_meta(lowering=Lowering(eligible, why, forced))


_NOT_DIAGONAL = {"dplr": "mixes its elements through a diagonal plus low-rank matrix",
                 "dense": "mixes its elements through a full matrix",
                 "shift": "shifts its elements along a state dim (a delay line)",
                 "general": "has a linear update of no special form"}


def _chunk_reason(st: Structure) -> str:
    """Why the chunked (tensor-core) form cannot run the spec, in plain words; "" if it can."""
    for s in st.states:
        reads = [r for o in st.outputs for r in o.readouts if r.state == s.name]
        if s.transition != "diagonal":
            return (f"{s.arg} {_NOT_DIAGONAL[s.transition]}: chunked needs every state element "
                    "to decay on its own (a diagonal transition)")
        if s.couples:
            return (f"{s.arg} is fed by state {', '.join(s.couples)}: chunked needs states "
                    "that evolve on their own")
        if s.keys:
            continue
        if any(not o.linear for o in st.outputs if any(r.state == s.name for r in o.readouts)):
            break
        summed = {d for r in reads for d in r.contract}
        if not reads or not all(r.contract for r in reads):
            return (f"an output reads {s.arg} without summing it over a state dim: chunked "
                    "computes outputs as such sums (matrix products over a key dim)")
        own = [d for d in s.dims if d not in st.batch]
        free = [d for d in own if d not in summed and d not in s.decay_dims]
        if not free:
            varying = [d for d in s.decay_dims if d not in st.batch] or own
            return (f"{s.arg}'s decay differs for every ({', '.join(varying)}): no tensor-core "
                    "form (chunked needs a decay shared along a value dim, a state dim the "
                    "outputs do not sum over)")
        return (f"{s.arg}'s input term does not split into a factor along the summed dims "
                f"({', '.join(sorted(summed))}) times one along the others: no tensor-core form")
    if any(not o.linear for o in st.outputs):
        return ("an output is a nonlinear function of the state: chunked needs outputs that "
                "are sums of the state against weights")
    return ""


def _dplr_reason(st: Structure) -> str:
    """Why the chunked DPLR (delta-rule) kernels cannot run this structure ('' if they can):
    one selective rank-1 DPLR state read linearly through a sum over its contracted (key)
    dim. The match of the rank-1 vectors (a = -beta k with b = k, or b = alpha k under a
    per-key decay alpha) is checked when the kernels are built (lowering.dplr.form), which
    falls back to the scan's loop naming what differs."""
    if len(st.states) != 1:
        return "the chunked DPLR kernels take exactly one state"
    s = st.states[0]
    if s.transition != "dplr" or s.rank != 1:
        return f"state {s.arg} has a {s.transition} transition, not a rank-1 DPLR one"
    if not s.selective:
        return f"state {s.arg} is time-invariant (the scan or the convolution runs it)"
    if s.couples:
        return f"state {s.arg} is driven by state {', '.join(s.couples)}"
    reads = [r for o in st.outputs for r in o.readouts if r.state == s.name]
    if len(st.outputs) != 1 or not st.outputs[0].linear or len(reads) != 1 \
            or len(reads[0].contract) != 1:
        return f"the output must read state {s.arg} linearly through one sum over its key dim"
    return ""


def _conv_reason(g: Graph, st: Structure) -> str:
    """Why the convolution cannot run the spec, in plain words; "" if it can."""
    for s in st.states:
        if "time-invariant" in s.kind:
            continue
        if s.selective:
            return (f"{s.arg} changes with the inputs at every step (selective: its update "
                    "reads a Seq input): conv needs a recurrence fixed in time (Params only)")
        if s.transition == "general":
            return (f"{s.arg} has a linear update of no special form: conv needs a fixed "
                    "diagonal, low-rank or shift transition")
        readers = [o for o in st.outputs if any(r.state == s.name for r in o.readouts)]
        bad = next((o for o in readers if not o.linear), None)
        if bad is not None or not readers:
            return (f"output {bad.name if bad else '?'} is a nonlinear function of {s.arg}: "
                    "conv needs outputs linear in the state")
        return (f"an output sums {s.arg} against weights that change at every step (a Seq "
                "input inside the sum): conv needs weights fixed in time there")
    return ""


# ---- the cost model


def _size(sizes: dict[str, int], dims) -> int:
    return math.prod(sizes.get(d, 1) for d in dims)


def count_exps(g: Graph, sizes: dict[str, int], nodes=None) -> float:
    """Transcendental calls per time step, each at the size of its own argument's dims."""
    total = 0.0
    for n in nodes if nodes is not None else g.nodes:
        if not isinstance(n, Map):
            continue
        seen: set[sp.Basic] = set()
        for sub in sp.preorder_traversal(n.expr):
            name = type(sub).__name__
            if sub in seen or name not in _TRANSCENDENTAL:
                continue
            if name == "Pow" and (sub.exp.is_Integer or sub.exp == sp.Rational(1, 2)):
                continue
            seen.add(sub)
            total += _size(sizes, expr_dims(g, sub))
    return total


def io_bytes(g: Graph, sizes: dict[str, int], T: int, itemsize: int) -> float:
    from ..ir.dims import Role

    seq = sum(_size(sizes, n.dims) for n in g.inputs(Role.SEQ))
    out = sum(_size(sizes, g[o].dims) for o in g.outputs)
    return float(T * (seq + out) * itemsize)


def estimate(g: Graph, lowering: str, sizes: dict[str, int], T: int, itemsize: int = 2,
             chunk: int = 64, dev: Device = H200) -> Cost:
    """Bytes, arithmetic and time of one forward pass under `lowering`."""
    st: Structure = g.meta("structure")
    io = io_bytes(g, sizes, T, itemsize)
    state = sum(_size(sizes, s.dims) * (2 if g[s.name].complex else 1) for s in st.states)
    if lowering == "scan":
        exps = T * count_exps(g, sizes)
        flops = T * state * 4.0
        lanes = state
        serial = T * dev.step_latency * max(1.0, dev.lanes / max(lanes, 1) / 64) \
            if lanes < dev.lanes else 0.0
        measured = T * sum(_size(sizes, s.dims) * (2 * dev.scan_step_pair if g[s.name].complex
                                                   else dev.scan_step) for s in st.states)
        parts = {"memory": io / dev.hbm, "exp": exps / dev.sfu, "fp32": flops / dev.fp32,
                 "latency": serial, "measured scan rate": measured}
        return _with_host(_cost("scan", io, flops, exps, parts),
                          dev.call + host_ops(g) * dev.param_op)
    if lowering == "chunked":
        flops, extra_bytes = 0.0, 0.0
        for s in st.states:
            K, V = _size(sizes, s.keys), _size(sizes, s.values)
            heads = _size(sizes, s.dims) / (K * V)
            flops += heads * T * (2 * chunk * (K + V) + 4 * K * V) * 2
            extra_bytes += heads * (T / chunk) * K * V * 4 * 2
        exps = T * count_exps(g, sizes)
        rate = dev.tensor if itemsize <= 2 else dev.tensor / 2
        parts = {"memory": (io + extra_bytes) / dev.hbm, "tensor": flops / rate,
                 "exp": exps / dev.sfu}
        return _with_host(_cost("chunked", io + extra_bytes, flops, exps, parts),
                          dev.call + 2 * dev.kernel_launch + host_ops(g) * dev.param_op)
    if lowering == "conv":
        return _conv_cost(g, st, sizes, T, io, itemsize, dev)
    if lowering == "dplr":
        return _dplr_cost(g, st, sizes, T, io, itemsize, chunk, dev)
    raise ValueError(lowering)


def _conv_cost(g: Graph, st: Structure, sizes: dict[str, int], T: int, io: float,
               itemsize: int, dev: Device) -> Cost:
    """What lrc.codegen.conv does per readout sum_c(q * state): a zero-padded FFT convolution of
    size NF ~ T + kernel length (rows paired into one complex row), and the kernel's generation.

    Per real row of the convolution: pack (reads the input, writes 4 NF bytes), FFT and its
    inverse (read and write 4 NF each), the product with the kernel's spectrum (the same), and
    unpack (reads 4 T, writes 4 T): 28 NF + 8 T + input bytes, memory-bound (each pass
    over the paired spectrum runs close to HBM bandwidth). A
    diagonal kernel costs 2 FMA per (channel, mode, step); a DPLR one a float64 Cauchy sum per
    (channel, step, mode, pair of low-rank vectors) and log2 T dense N x N products. The
    host time of each convolution (`dev.conv_call`) and of the Params' terms, which no
    overlap hides at short T, is what makes the scan win there.
    """
    byts, flops, flops64, exps, launches = io, 0.0, 0.0, 0.0, 0
    for s in st.states:
        reads = [r for o in st.outputs for r in o.readouts if r.state == s.name]
        fill = [f for f in s.factors if f.varying]
        for r in reads:
            c = set(r.contract)
            rows = _size(sizes, [d for d in s.dims if d not in c])
            lk = T if s.transition != "shift" else min(T, _size(sizes, c))
            nf = 1 << max(0, (T + lk - 2).bit_length())        # 2^k >= T + lk - 1
            if s.transition == "diagonal" and any(c & set(f.dims) for f in fill):
                # the input varies along the contracted dim: convolved per state element
                rows = _size(sizes, s.dims) * (2 if g[s.name].complex else 1)
            byts += rows * (28.0 * nf + 8.0 * T + itemsize * T)
            flops += rows * 2.5 * nf * math.log2(max(nf, 2))     # the butterflies, 2 FFTs
            kr = _size(sizes, [d for d in s.dims if d not in st.batch and d not in c])
            n = _size(sizes, c)
            if s.transition == "diagonal":
                flops += 4.0 * kr * n * T
                exps += kr * n * (64 + T / 64)
            elif s.transition == "dplr":
                flops64 += 8.0 * kr * T * n * (s.rank + 1) ** 2
                flops64 += 8.0 * kr * n ** 3 * math.log2(max(T, 2))
            launches += 1
    parts = {"memory": byts / dev.hbm, "fp32": flops / (2 * dev.fp32),
             "fp64": flops64 / dev.fp32, "exp": exps / dev.sfu}
    host = dev.conv_call * max(1, launches)
    return _with_host(_cost("conv", byts, flops + flops64, exps, parts), host)


def _dplr_cost(g: Graph, st: Structure, sizes: dict[str, int], T: int, io: float,
               itemsize: int, chunk: int, dev: Device) -> Cost:
    """The chunked delta rule (lowering/dplr): per chunk of C steps and head, with K the key
    (contracted) size and V the value size, the dots K K^T, Q K^T (2 C^2 K each), W = Ti K
    (2 C^2 K), U = Ti U_in and P N (2 C^2 V each), W S, Q S and the state update (2 C K V
    each) on tensor cores (fp32 inputs: tf32's half rate and more; the kernels run exact fp32
    products then, counted at the fp32 FMA rate), and the forward substitution for Ti
    (C^3 FMA on the CUDA cores, serial along its C rows). The terms (q, k, u, beta, the decay)
    are computed in PyTorch first: float32 copies of them are written and read again, and
    the state entering each chunk is stored for the backward. A decay per key channel (KDA,
    RWKV-7) takes chunks of at most 32 whose pair terms are formed a step at a time: about
    6 C^2 K exps and 16 C^2 K FMA-equivalents per chunk on the CUDA cores, forward and
    backward together (the two-vector form's count; the one-vector form's is a little less)."""
    s = st.states[0]
    reads = [r for o in st.outputs for r in o.readouts if r.state == s.name]
    K = _size(sizes, reads[0].contract) if reads else 1
    rest = [d for d in s.dims if d not in (reads[0].contract if reads else ())]
    V = sizes.get(rest[-1], 1) if rest else 1
    heads = _size(sizes, s.dims) / max(K * V, 1)
    per_key = bool(reads) and reads[0].contract[0] in s.decay_dims
    C = min(chunk, 32) if per_key else chunk
    chunks = heads * math.ceil(T / C)
    pair_exps = chunks * 6.0 * C * C * K if per_key else 0.0
    pair_flops = chunks * 16.0 * C * C * K if per_key else 0.0
    flops = chunks * 2.0 * (3 * C * C * K + 2 * C * C * V + 3 * C * K * V)
    subst = chunks * float(C) ** 3
    terms = heads * T * (2 * K + V + 2) * 4.0          # float32 q, k, u, beta, g
    extra = 2 * terms + chunks * K * V * 4.0 * 2
    exps = T * count_exps(g, sizes) + pair_exps
    tensor = flops / dev.tensor if itemsize <= 2 else flops / (2 * dev.fp32)
    parts = {"memory": (io + extra) / dev.hbm, "tensor": tensor,
             "substitution": subst / dev.fp32 * 4, "fp32": pair_flops / (2 * dev.fp32),
             "exp": exps / dev.sfu}
    host = dev.call + dev.kernel_launch + 30 * dev.torch_op + host_ops(g) * dev.param_op
    return _with_host(_cost("dplr", io + extra, flops + subst + pair_flops, exps, parts), host)


def host_ops(g: Graph) -> int:
    """PyTorch ops a call spends on the terms of Params alone, which both lowerings compute
    once per call in float64 (each op a kernel launch of a few elements on a GPU): the
    largest such subexpressions of every Map, shared terms counted once."""
    found = params_tape(g, frozenset(n.name for n in g.nodes if isinstance(n, Map)))
    pure = set(found[0]) if found else set()
    inline = {n: g[n].expr for n in pure}
    params = {n.name for n in g.inputs(Role.PARAM)} | pure
    terms: list[sp.Basic] = [g[n].expr for n in pure]

    def visit(e: sp.Basic) -> None:
        syms = e.free_symbols
        if (isinstance(e, sp.Expr) and syms and not e.is_Symbol
                and all(x.name in params for x in syms)):
            terms.append(e)
        elif isinstance(e, (sp.Add, sp.Mul, sp.Pow, sp.Function)):
            for a in e.args:  # not into conditions and branches: an estimate
                visit(a)

    for n in g.nodes:
        if isinstance(n, Map) and n.name not in pure:
            visit(n.expr)
    return Tape(terms[0], inline, tuple(terms[1:])).ops if terms else 0


def _with_host(cost: Cost, host: float) -> Cost:
    """`cost` with the host time of the call, which overlaps the kernels of the call before
    (calls back to back take the longer of the two); the bound says "host" where it wins."""
    return Cost(cost.lowering, cost.bytes, cost.flops, cost.exps, max(cost.seconds, host),
                "host" if host > cost.seconds else cost.bound)


def _cost(lowering: str, byts: float, flops: float, exps: float, parts: dict) -> Cost:
    bound = max(parts, key=parts.get)
    return Cost(lowering, byts, flops, exps, parts[bound], bound)


def format_choice(g: Graph, sizes: dict[str, int], T: int, itemsize: int,
                  estimates: bool = True) -> str:
    """The choice at one shape, and (with `estimates`) each eligible lowering's estimate."""
    lw: Lowering = g.meta("lowering")
    chosen, costs = lw.choose(g, sizes, T, itemsize)
    shape = " ".join(f"{d}={n}" for d, n in sizes.items()) + f" {g.time}={T}"
    lines = [f"at {shape} ({itemsize}-byte inputs): {chosen}"
             + (" (forced)" if lw.forced else "")]
    if estimates:
        lines += [f"  {c}" for c in sorted(costs.values(), key=lambda c: c.seconds)]
    return "\n".join(lines)
