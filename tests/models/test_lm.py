"""lrc.models.LM: greedy generation with the decode caches equals recomputing the whole
sequence for every token; attention vs a plain loop; packed prefill; sampling filters."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.models import LM, Attention, LMConfig, sample
from lrc.nn import param_groups
from tests.conftest import rel_err
from tests.nn.helpers import check_packed, check_state_indices, check_step_after_prefill

SMALL = {"M": {"d_state": 3, "d_conv": 3}, "2": {"headdim": 4, "d_state": 3, "d_conv": 3},
         "G": {"expand_k": 1.0, "gate_low_rank_dim": 3, "use_short_conv": True, "conv_size": 3},
         "H": {"conv_width": 3}, "S": {"d_state": 4}, "4": {"d_state": 4},
         "W": {"head_size": 4, "d_mix_lora": 3, "d_decay_lora": 3}, "L": {"d_hidden": 5},
         "3": {"d_state": 4}, "Y": {"filter_order": 8}}


def tiny(pattern: str, dtype=torch.float32, device="cpu", backend="reference",
         tie: bool = True) -> LM:
    cfg = LMConfig(vocab_size=11, d_model=8, pattern=pattern, d_intermediate=12, num_heads=2,
                   max_seqlen=32, backend=backend, block_args=SMALL, tie_embeddings=tie)
    return LM(cfg).to(device=device, dtype=dtype)


def greedy_by_recompute(model: LM, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Each new token: argmax of the last logits of a full forward over everything so far."""
    for _ in range(n):
        nxt = model(ids)[:, -1].argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], 1)
    return ids


def attention_loop(m: Attention, x: torch.Tensor) -> torch.Tensor:
    """Causal attention with rotary embeddings, one query at a time, in float64."""
    x = x.double()
    H, hd = m.num_heads, m.head_dim
    q, k, v = (x @ m.in_proj.weight.double().T).unflatten(-1, (3, H, hd)).unbind(-3)
    half = hd // 2
    freq = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)

    def rot(z):
        ang = torch.arange(z.shape[1], dtype=torch.float64)[:, None, None] * freq
        z1, z2 = z[..., :half], z[..., half:]
        return torch.cat([z1 * ang.cos() - z2 * ang.sin(), z1 * ang.sin() + z2 * ang.cos()], -1)

    q, k = rot(q), rot(k)
    outs = []
    for t in range(x.shape[1]):
        s = torch.einsum("bhd,bshd->bhs", q[:, t], k[:, :t + 1]) / hd ** 0.5
        outs.append(torch.einsum("bhs,bshd->bhd", s.softmax(-1), v[:, :t + 1]).flatten(-2))
    return torch.stack(outs, 1) @ m.out_proj.weight.double().T


def test_attention_matches_loop():
    m = Attention(8, num_heads=2, max_seqlen=16)
    x = torch.randn(2, 7, 8)
    assert rel_err(m(x), attention_loop(m, x)) <= 1e-5


def test_attention_decode_and_packing():
    m = Attention(8, num_heads=2, max_seqlen=16)
    check_step_after_prefill(m, torch.randn(2, 9, 8), prefix=4, tol=1e-5)
    check_packed(m, [3, 5], 8, torch.float32, tol=1e-5)
    check_state_indices(m, torch.randn(2, 5, 8), pool=3, tol=1e-6)


@pytest.mark.parametrize("pattern", ["MA", "2G", "HS", "MA2GHS", "4RWL3Y"])
def test_greedy_generate_equals_recompute(pattern):
    model = tiny(pattern, tie=False)   # a tied random head mostly repeats the last token
    prompt = torch.randint(0, 11, (2, 5))
    got = model.generate(prompt, 6, temperature=0)
    assert got.shape == (2, 11) and torch.equal(got[:, :5], prompt)
    with torch.no_grad():
        want = greedy_by_recompute(model, prompt, 6)
    assert torch.equal(got, want), f"{got}\n{want}"


@pytest.mark.parametrize("pattern", ["MA2GHS", "4RWL3Y"])
def test_step_logits_equal_forward_logits(pattern):
    model = tiny(pattern)
    ids = torch.randint(0, 11, (2, 7))
    with torch.no_grad():
        full = model(ids)
        cache = model.allocate_inference_cache(2, 32)
        pre = model(ids[:, :4], cache=cache)
        steps = [model.step(ids[:, s], cache) for s in range(4, 7)]
    got = torch.cat([pre, torch.stack(steps, 1)], 1)
    assert rel_err(got, full) <= 1e-5


@pytest.mark.parametrize("pattern", ["MA2GHS", "4RWL3Y"])
def test_packed_prefill_equals_separate(pattern):
    model = tiny(pattern)
    a, b = torch.randint(0, 11, (1, 4)), torch.randint(0, 11, (1, 6))
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    with torch.no_grad():
        packed = model(torch.cat([a, b], 1), cu_seqlens=cu)
        assert rel_err(packed[:, :4], model(a)) <= 1e-5
        assert rel_err(packed[:, 4:], model(b)) <= 1e-5


def test_tied_head_and_param_groups():
    model = tiny("MA")
    assert model.lm_head.weight is model.embedding.weight
    groups = param_groups(model, weight_decay=0.1)
    counted = [p for g in groups for p in g["params"]]
    assert len(counted) == len({id(p) for p in model.parameters()})
    decayed = {id(p) for p in groups[0]["params"]}
    mamba = model.layers[0].mixer
    assert id(mamba.A_log) not in decayed and id(mamba.in_proj.weight) in decayed
    opt = torch.optim.AdamW(groups, lr=1e-3)
    loss = F.cross_entropy(model(torch.randint(0, 11, (2, 6))).flatten(0, 1),
                           torch.randint(0, 11, (12,)))
    loss.backward()
    opt.step()


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample(logits, 1.0, top_k=2, generator=g).tolist()) <= {2, 3}
    # top_p=0.5: token 3 alone holds 0.64 of the mass
    assert set(sample(logits, 1.0, top_p=0.5, generator=g).tolist()) == {3}
    assert torch.equal(sample(logits, 0.0), torch.full((200,), 3))
    drawn = sample(logits, 1.0, generator=g)
    assert len(set(drawn.tolist())) > 1


def test_generate_checks():
    model = tiny("MA")
    with pytest.raises(ValueError, match="max_seqlen"):
        model.generate(torch.zeros(1, 30, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="unknown layer"):
        tiny("MX")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pattern", ["MA2G", "HS"])
def test_gpu_generate_graph_equals_eager_equals_recompute(pattern, dtype):
    torch.manual_seed(0)
    model = tiny(pattern, dtype=dtype, device="cuda", backend="auto", tie=False)
    prompt = torch.randint(0, 11, (3, 6), device="cuda")
    eager = model.generate(prompt, 8, temperature=0, cuda_graph=False)
    graph = model.generate(prompt, 8, temperature=0, cuda_graph=True)
    again = model.generate(prompt, 8, temperature=0, cuda_graph=True)   # replayed graph
    assert torch.equal(eager, graph) and torch.equal(graph, again)
    if dtype == torch.float32:
        with torch.no_grad():
            assert torch.equal(eager, greedy_by_recompute(model, prompt, 8))
