

@pytest.mark.gpu
def test_gpu_max_seqlen_reads_nothing_on_the_host():
    """With max_seqlen, a packed call on CUDA makes no host sync once its shape has run."""
    layer = lrc.compile(ema2, backend="triton")
    x, a = torch.randn(1, 300, 64, device="cuda"), torch.randn(64, device="cuda")
    cu = torch.tensor([0, 100, 130, 300], device="cuda", dtype=torch.int32)
    want = torch.cat([loop(x[:, s:e].cpu(), a.cpu())[0] for s, e in [(0, 100), (100, 130),
                                                                      (130, 300)]], 1)
    layer(x, a, cu_seqlens=cu, max_seqlen=170)  # tunes and builds
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = layer(x, a, cu_seqlens=cu, max_seqlen=170)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert rel_err(y, want) <= 1e-4


@pytest.mark.gpu
def test_gpu_inductor_training_and_cudagraph_decode():
    """Inductor on CUDA: a training step's gradients (the tape must survive Inductor's buffer
    reuse) and a decode loop under mode='reduce-overhead' (CUDA graphs)."""
    layer = lrc.compile(ema2, backend="triton")
    proj = torch.nn.Linear(64, 64, device="cuda")
    f = torch.compile(lambda x, a: torch.tanh(layer(proj(x).relu(), a)).sum(), fullgraph=True)
    for b, t in [(2, 128), (3, 100)]:
        x = torch.randn(b, t, 64, device="cuda", requires_grad=True)
        a = torch.randn(64, device="cuda", requires_grad=True)
        f(x, a).backward()
        x64, a64 = x.detach().cpu().double().requires_grad_(), a.detach().cpu().double()
        a64.requires_grad_()
        w, bias = proj.weight.detach().cpu().double(), proj.bias.detach().cpu().double()
        torch.tanh(loop((x64 @ w.T + bias).relu(), a64)[0]).sum().backward()
        assert rel_err(x.grad, x64.grad) <= 1e-3 and rel_err(a.grad, a64.grad) <= 1e-3

    def decode(xs, a, h):
        return torch.stack([layer.step(xs[:, i], a, state=h, inplace=True)[0]
                            for i in range(xs.shape[1])], 1)

    g = torch.compile(decode, mode="reduce-overhead", fullgraph=True)
    xs, a = torch.randn(4, 8, 64, device="cuda"), torch.randn(64, device="cuda")
    for _ in range(3):
        h = torch.zeros(4, 64, device="cuda")
        ys = g(xs, a, h).clone()
    want_y, want_h = loop(xs.cpu(), a.cpu())
    assert rel_err(ys, want_y) <= 1e-4 and rel_err(h, want_h) <= 1e-4
