import torch, triton, json, os
dev = "cuda"
B, D, L, N = 8, 2048, 4096, 32
def bench(fn, warmup=10, rep=50):
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median") * 1e3
u = torch.randn(B, D, L, device=dev, requires_grad=True)
K = torch.randn(D, L, device=dev, requires_grad=True)
res = {}
kf = torch.fft.rfft(K.detach(), n=2 * L)
res["rfft_u"] = bench(lambda: torch.fft.rfft(u.detach(), n=2 * L))
uf = torch.fft.rfft(u.detach(), n=2 * L)
res["mul"] = bench(lambda: uf * kf)
res["irfft"] = bench(lambda: torch.fft.irfft(uf, n=2 * L))
res["irfft_slice_contig"] = bench(lambda: torch.fft.irfft(uf * kf, n=2 * L)[..., :L].contiguous())
def rpath():
    return torch.fft.irfft(torch.fft.rfft(u.detach(), n=2 * L) * torch.fft.rfft(K.detach(), n=2*L), n=2 * L)[..., :L]
res["rfft_path_view"] = bench(rpath)
res["rfft_path_contig"] = bench(lambda: rpath().contiguous())
# pack trick: complex fft of (u0 + i u1) padded
z = torch.zeros(B // 2, D, 2 * L, device=dev, dtype=torch.complex64)
def pack():
    zz = torch.zeros(B // 2, D, 2 * L, device=dev, dtype=torch.complex64)
    zr = torch.view_as_real(zz)
    uu = u.detach().view(B // 2, 2, D, L)
    zr[..., :L, 0] = uu[:, 0]
    zr[..., :L, 1] = uu[:, 1]
    return zz
res["pack_torch"] = bench(pack)
zz = pack()
res["fft_c2c"] = bench(lambda: torch.fft.fft(zz))
kfull = torch.fft.fft(K.detach(), n=2 * L)
Z = torch.fft.fft(zz)
res["mul_c"] = bench(lambda: Z * kfull)
res["ifft_c2c"] = bench(lambda: torch.fft.ifft(Z))
res["ifft_c2c_inplace_out"] = bench(lambda: torch.fft.ifft(Z, out=zz))
def unpack(y):
    r = torch.view_as_real(y[..., :L])  # B/2 D L 2
    return r.permute(0, 3, 1, 2).reshape(B, D, L)
res["unpack"] = bench(lambda: unpack(Z))
# peer
logdt = (torch.rand(D, device=dev) * 4 - 7).requires_grad_(True)
Are = (-0.5 * torch.ones(D, N, device=dev)).requires_grad_(True)
Aim = (3.14159 * torch.arange(N, device=dev).float().expand(D, N)).contiguous().requires_grad_(True)
Cre = torch.randn(D, N, device=dev, requires_grad=True)
Cim = torch.randn(D, N, device=dev, requires_grad=True)
def s4d():
    A = torch.complex(Are, Aim)
    dtA = A * logdt.exp()[:, None]
    C = torch.complex(Cre, Cim) * (dtA.exp() - 1) / A
    Kk = 2 * torch.einsum("dn,dnl->dl", C, torch.exp(dtA[..., None] * torch.arange(L, device=dev))).real
    kf = torch.fft.rfft(Kk, n=2 * L)
    uf = torch.fft.rfft(u, n=2 * L)
    return torch.fft.irfft(uf * kf, n=2 * L)[..., :L]
res["peer_fwd"] = bench(s4d)
def fb():
    for t in [u, logdt, Are, Aim, Cre, Cim]:
        t.grad = None
    s4d().backward(torch.ones(B, D, L, device=dev))
res["peer_fwdbwd"] = bench(fb)
for k, v in res.items():
    print(f"{k:24s} {v:9.1f} us")
