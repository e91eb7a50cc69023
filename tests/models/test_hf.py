"""lrc.models.hf, offline: config round trips, the Auto classes, safetensors save/load, HF
generate vs LM.generate vs recomputing every token, the labels loss vs a float64 shifted
cross-entropy, gradient checkpointing, and lrc importing without transformers."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lrc.models import LM, LMConfig  # noqa: E402
from lrc.models.hf import LrcCache, LrcConfig, LrcForCausalLM  # noqa: E402
from lrc.nn import param_groups  # noqa: E402
from tests.conftest import rel_err  # noqa: E402
from tests.models.test_lm import tiny  # noqa: E402

V = 11     # tiny()'s vocabulary


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the Hub: every model and config comes from a tmp_path folder."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True, raising=False)


def hf_tiny(pattern: str, tie: bool = False) -> LrcForCausalLM:
    """tiny()'s LM wrapped for HF, in eval mode (a tied random head mostly repeats tokens)."""
    return LrcForCausalLM.from_lm(tiny(pattern, tie=tie)).eval()


def greedy_recompute(model: LM, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Each new token: argmax of the last logits of LM.forward over the whole sequence."""
    with torch.no_grad():
        for _ in range(n):
            nxt = model(ids)[:, -1].argmax(-1)
            ids = torch.cat([ids, nxt[:, None]], 1)
    return ids


def test_config_round_trip(tmp_path):
    cfg = LMConfig(vocab_size=13, d_model=16, pattern="M2A", d_intermediate=24, num_heads=2,
                   max_seqlen=64, norm_eps=1e-6, tie_embeddings=False, backend="torch",
                   block_args={"M": {"d_state": 3}, "2": {"headdim": 4, "d_state": 5}})
    default = LMConfig()
    # every field differs from its default, so a field the HF config drops fails the test
    assert all(getattr(cfg, f.name) != getattr(default, f.name)
               for f in dataclasses.fields(LMConfig))
    hf = LrcConfig.from_lm_config(cfg)
    assert hf.model_type == "lrc" and hf.tie_word_embeddings is False
    assert (hf.hidden_size, hf.num_attention_heads, hf.max_position_embeddings) == (16, 2, 64)
    assert hf.to_lm_config() == cfg
    hf.save_pretrained(tmp_path)
    loaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is LrcConfig and loaded.to_lm_config() == cfg
    assert LrcConfig().to_lm_config() == default


def test_auto_classes_build_lrc_with_lrc_init():
    cfg = tiny("MA2GHS").config
    fields = dataclasses.asdict(cfg)
    fields["tie_word_embeddings"] = fields.pop("tie_embeddings")
    hf_cfg = transformers.AutoConfig.for_model("lrc", **fields)
    assert type(hf_cfg) is LrcConfig
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    assert type(model) is LrcForCausalLM and type(model.model) is LM
    assert model.model.config == cfg
    torch.manual_seed(0)
    want = LM(cfg).state_dict()   # HF's generic init must not overwrite lrc's (A_log, ...)
    got = model.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("tie", [False, True])
def test_save_pretrained_from_pretrained_round_trip(tmp_path, tie):
    model = hf_tiny("MA2GHS", tie=tie)
    model.save_pretrained(tmp_path)      # safetensors by default
    assert (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "pytorch_model.bin").exists()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is LrcForCausalLM and loaded.config.to_lm_config() == model.model.config
    want, got = model.state_dict(), loaded.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert (loaded.model.lm_head.weight is loaded.model.embedding.weight) == tie
    ids = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    # lrc's optimizer hints survive loading: the same parameters are left out of decay
    names = {id(p): n for n, p in loaded.named_parameters()}
    names_before = {id(p): n for n, p in model.named_parameters()}
    plain = {names[id(p)] for p in param_groups(loaded)[1]["params"]}
    assert plain == {names_before[id(p)] for p in param_groups(model)[1]["params"]}
    assert "model.layers.0.mixer.A_log" in plain


def test_hf_generate_equals_lm_generate_and_recompute():
    model = hf_tiny("MA2GHS")
    prompt = torch.randint(0, V, (2, 5))
    got = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert got.shape == (2, 11) and torch.equal(got[:, :5], prompt)
    assert torch.equal(got, model.model.generate(prompt, 6, temperature=0))
    assert torch.equal(got, greedy_recompute(model.model, prompt, 6)), got
    # beam search reorders the cache's rows; without a cache it recomputes every sequence
    beams = model.generate(prompt, max_new_tokens=4, num_beams=3, do_sample=False)
    recomputed = model.generate(prompt, max_new_tokens=4, num_beams=3, do_sample=False,
                                use_cache=False)
    assert torch.equal(beams, recomputed)
    # from inputs_embeds HF returns only the new tokens
    embeds = model.get_input_embeddings()(prompt).detach()
    from_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=6, do_sample=False)
    assert torch.equal(from_embeds, got[:, 5:])


def test_cache_steps_equal_full_forward():
    model = hf_tiny("MA2GHS")
    ids = torch.randint(0, V, (3, 8))
    with torch.no_grad():
        full = model(ids).logits
        assert torch.equal(full, model.model(ids))          # LM.forward's logits
        pre = model(ids[:, :4], use_cache=True)
        cache = pre.past_key_values
        assert isinstance(cache, LrcCache) and cache.get_seq_length() == 4
        rest = model(ids[:, 4:7], past_key_values=cache).logits     # three steps in one call
        last = model(ids[:, 7:], past_key_values=cache).logits
    assert cache.get_seq_length() == 8
    assert rel_err(torch.cat([pre.logits, rest, last], 1), full) <= 1e-5
    # beam search's reorder: row i continues sequence order[i]
    order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        cache = model(ids[:, :4], use_cache=True).past_key_values
        cache.reorder_cache(order)
        got = model(ids[order, 4:6], past_key_values=cache).logits
    assert rel_err(got, full[order, 4:6]) <= 1e-5


def test_loss_is_shifted_cross_entropy():
    model = hf_tiny("MA2G").train()
    ids = torch.randint(0, V, (2, 9))
    labels = ids.clone()
    labels[0, 3] = labels[1, 7] = -100
    out = model(ids, labels=labels)
    logp = torch.log_softmax(out.logits.detach().double(), -1)
    terms = [-logp[b, t, labels[b, t + 1]] for b in range(2) for t in range(8)
             if labels[b, t + 1] != -100]
    want = torch.stack(terms)
    assert rel_err(out.loss, want.mean()) <= 1e-6
    # the Trainer's gradient accumulation divides the sum by the batch's count of tokens
    summed = model(ids, labels=labels, num_items_in_batch=torch.tensor(40)).loss
    assert rel_err(summed, want.sum() / 40) <= 1e-6


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_same_gradients(monkeypatch, reentrant):
    import torch.utils.checkpoint

    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    # HF binds `checkpoint` into transformers.modeling_utils at import
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting)
    model = hf_tiny("MA2GHS").train()
    ids = torch.randint(0, V, (2, 7))

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    assert not calls
    model.gradient_checkpointing_enable({"use_reentrant": reentrant})
    assert model.is_gradient_checkpointing
    checkpointed = grads()
    assert len(calls) == len(model.model.layers)
    for name, g in plain.items():
        assert rel_err(checkpointed[name], g) <= 1e-6, name
    with torch.no_grad():
        model(ids)                        # no gradients: nothing to checkpoint
    model.gradient_checkpointing_disable()
    grads()
    assert len(calls) == len(model.model.layers)


def test_inputs_embeds_hidden_states_and_padding():
    model = hf_tiny("MAH")
    ids = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        emb = model.model.embedding(ids)
        assert torch.equal(model(inputs_embeds=emb).logits, out.logits)
        hs = out.hidden_states
        assert len(hs) == len(model.model.layers) + 1 and torch.equal(hs[0], emb)
        assert torch.equal(model.model.lm_head(hs[-1]), out.logits)
        # right padding cannot reach earlier positions; left padding would enter the state
        right = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
        assert torch.equal(model(ids, attention_mask=right).logits, out.logits)
    with pytest.raises(ValueError, match="left"):
        model(ids, attention_mask=right.flip(1))
    with pytest.raises(ValueError, match="padding"):
        model.generate(ids, attention_mask=right.flip(1), max_new_tokens=2)
    with pytest.raises(ValueError, match="max_seqlen"):
        model.generate(torch.zeros(1, 30, dtype=torch.long), max_new_tokens=5)


def test_lrc_imports_without_transformers():
    code = (
        "import sys\n"
        "import lrc, lrc.models, lrc.nn\n"
        "assert 'transformers' not in sys.modules, 'lrc imported transformers'\n"
        "sys.modules['transformers'] = None\n"       # as if the extra were not installed
        "try:\n"
        "    import lrc.models.hf\n"
        "except ImportError as e:\n"
        "    assert 'pip install' in str(e) and 'lrc[hf]' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n")
    root = Path(__file__).resolve().parents[2]        # the checkout's lrc, not another
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stderr
