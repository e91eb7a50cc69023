"""Triton plumbing every lowering shares and none of them owns: the printer (sympy ->
Triton), the writer, the kernel-parameter ABI, generated modules, the one launcher, the tuner
policy, host-side pre and post work, and the AOT compile check. Nothing here imports a
lowering."""
