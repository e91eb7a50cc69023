"""lrc in one screen: define Mamba-1's selective scan as one time step, see what lrc made of it
(the IR, the plan, the generated Triton kernel), run it, check it against a plain PyTorch loop,
decode a few tokens, and take gradients. On a GPU the generated kernels run, compiled; on a CPU
the torch lowering runs (vectorized torch ops; backend="triton" runs the kernels under Triton's
interpreter).

Run time on a 2-core CPU: about 4 s."""
import torch

import lrc
from lrc import Param, Seq, State, exp, softplus


@lrc.recurrence
def mamba1(u: Seq("b t d"), dt: Seq("b t d"), B: Seq("b t n"), C: Seq("b t n"),
           A: Param("d n"), D: Param("d"), dt_bias: Param("d"),
           h: State("b d n")):
    delta = softplus(dt + dt_bias)
    h = exp(delta * A) * h + delta * B * u        # must be linear in h
    return (C * h).sum("n") + D * u, h            # (outputs, new states)


def main() -> None:
    print("== the traced step (lrc's IR) ==")
    print(mamba1.graph)

    layer = lrc.compile(mamba1)
    print(f"\n== compiled: {layer} ==")
    print(layer.plan)
    print("\n== the generated forward kernel (first lines of the time loop) ==")
    src = layer.source("forward").splitlines()
    start = next(i for i, line in enumerate(src) if line.lstrip().startswith("for ci in"))
    print("\n".join(src[start:start + 22]))
    print("   ...")
    b, t, d, n = 2, 64, 8, 4
    u, dt = torch.randn(b, t, d), torch.randn(b, t, d) - 1
    B, C = torch.randn(b, t, n), torch.randn(b, t, n)
    A = -torch.rand(d, n) - 0.5
    D, dt_bias = torch.randn(d), torch.randn(d)
    y, h_T = layer(u, dt, B, C, A, D, dt_bias, return_final_state=True)
    print(f"y: {tuple(y.shape)}  final state: {tuple(h_T.shape)}")

    # the same recurrence as a plain PyTorch loop
    h = torch.zeros(b, d, n)
    ys = []
    for i in range(t):
        delta = torch.nn.functional.softplus(dt[:, i] + dt_bias)[..., None]
        h = torch.exp(delta * A) * h + delta * B[:, i, None, :] * u[:, i, :, None]
        ys.append((h * C[:, i, None, :]).sum(-1) + D * u[:, i])
    err = (y - torch.stack(ys, 1)).norm() / y.norm()
    print(f"relative error against a plain PyTorch loop: {err:.2e}")

    # decode: prefill 60 tokens, then step the last 4 one at a time
    _, state = layer(u[:, :60], dt[:, :60], B[:, :60], C[:, :60], A, D, dt_bias,
                     return_final_state=True)
    for i in range(60, t):
        y_i, state = layer.step(u[:, i], dt[:, i], B[:, i], C[:, i], A, D, dt_bias, state=state)
        print(f"step {i}: max |step - forward| = {(y_i - y[:, i]).abs().max():.1e}")

    # gradients flow to every input
    A.requires_grad_(True)
    layer(u, dt, B, C, A, D, dt_bias).square().mean().backward()
    print(f"dL/dA: {tuple(A.grad.shape)}, |dL/dA| = {A.grad.norm():.3f}")


if __name__ == "__main__":
    main()
