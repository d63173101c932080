"""Open-weight adapters: tiny checkpoints in each family's exact on-disk format load onto our Transformer.

The forward pass is checked against transformers' own Llama / Qwen2 / Qwen3 modules (a dev-only
dependency) given the same weights and an explicit 4-D attention mask (bidirectional, block-causal
or causal), in float32. See tests/foreign_formats.py for the formats and the id scaling.
"""

import json

import pytest
import torch

from unmask.model import CheckpointError, ModelConfig, load_model, save_pretrained
from unmask.model import checkpoint as ckpt
from unmask.model.adapters import SUPPORTED_MODEL_TYPES, adapt

import foreign_formats as ff
from conftest import tiny_model

transformers = pytest.importorskip("transformers")

L = 11  # prompt length: not a multiple of the block size, so a partial block is covered


def _hf_model(kind: str, raw: dict, sd: dict):
    """transformers' reference model for a canonical (Qwen2/LLaMA-named) float32 state dict."""
    keep = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "auto_map")}
    cls_cfg, cls_model = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }[kind]
    config = cls_cfg(**keep)
    config._attn_implementation = "eager"  # plain softmax(QK^T + mask) V: takes our additive 4-D mask as is
    model = cls_model(config).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    if missing:
        assert config.tie_word_embeddings
        model.tie_weights()
    return model


def _llada_as_llama(raw: dict) -> dict:
    """LLaDA's OLMo keys restated as a LlamaConfig (bidirectionality comes from the mask)."""
    return dict(vocab_size=raw["embedding_size"], hidden_size=raw["d_model"], num_hidden_layers=raw["n_layers"],
                num_attention_heads=raw["n_heads"], num_key_value_heads=raw["n_kv_heads"],
                intermediate_size=raw["mlp_hidden_size"], rms_norm_eps=raw["rms_norm_eps"],
                rope_theta=raw["rope_theta"], max_position_embeddings=raw["max_sequence_length"],
                tie_word_embeddings=False, attention_bias=False)


def _additive(allowed: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.zeros(batch, 1, *allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)


def _mask(kind: str, n: int, block: int = ff.BLOCK) -> torch.Tensor | None:
    pos = torch.arange(n)
    if kind == "bidirectional":
        allowed = torch.ones(n, n, dtype=torch.bool)
    elif kind == "block_causal":
        allowed = (pos[None, :] // block) <= (pos[:, None] // block)
    else:
        return None  # transformers' own causal mask
    return _additive(allowed, 2)


FAMILIES = {
    # name: (writer, reference class, attention, family, shift)
    "llada": (ff.write_llada, "llama", "bidirectional", "llada", False),
    "dream": (ff.write_dream, "qwen2", "bidirectional", "dream", True),
    "diffucoder": (lambda p: ff.write_dream(p, diffucoder=True), "qwen2", "bidirectional", "diffucoder", True),
    "fast_dllm_v2": (ff.write_fast_dllm_v2, "qwen2", "block_causal", "fast_dllm_v2", True),
    "sdar": (ff.write_sdar, "qwen3", "block_causal", "sdar", False),
    "open_dcoder": (ff.write_open_dcoder, "qwen2", "bidirectional", "open_dcoder", True),
    "qwen2": (ff.write_qwen_ar, "qwen2", "causal", "qwen2", True),
    "qwen3": (lambda p: ff.write_qwen_ar(p, "qwen3"), "qwen3", "causal", "qwen3", True),
    "llama": (ff.write_llama, "llama", "causal", "llama", True),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_forward_matches_transformers(tmp_path, name):
    writer, ref_kind, attention, family, shift = FAMILIES[name]
    folder, sd = writer(tmp_path / name)
    loaded = load_model(folder, dtype=torch.float32)
    model, cfg = loaded.model, loaded.model.config
    assert (loaded.family, cfg.attention, cfg.shift_logits) == (family, attention, shift)
    if attention == "block_causal":
        assert cfg.block_size == ff.BLOCK
    raw = json.loads((folder / "config.json").read_text())
    ref = _hf_model(ref_kind, _llada_as_llama(raw) if name == "llada" else raw, sd)
    ids = torch.randint(0, cfg.vocab_size, (2, L), generator=torch.Generator().manual_seed(1))
    # LLaMA 3.1's rope scaling only shows at long range: start the positions far out.
    positions = (torch.arange(L) + (1000 if name == "llama" else 0)).expand(2, L)
    with torch.no_grad():
        ours = model(ids, position_ids=positions)
        theirs = ref(input_ids=ids, attention_mask=_mask(attention, L), position_ids=positions).logits
    assert ours.dtype == torch.float32 and ours.abs().max() > 1.0  # not a trivially small output
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_attention_mode_matters_to_the_reference(tmp_path):
    """Guard for the test above: the reference really changes with the mask it is given."""
    folder, sd = ff.write_dream(tmp_path / "d")
    ref = _hf_model("qwen2", json.loads((folder / "config.json").read_text()), sd)
    ids = torch.randint(0, 500, (2, L), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs = [ref(input_ids=ids, attention_mask=_mask(k, L)).logits for k in ("bidirectional", "block_causal")]
        outs.append(ref(input_ids=ids).logits)
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


def test_llama3_rope_scaling_moves_the_frequencies():
    from unmask.model.transformer import rope_inverse_frequencies

    scaling = ff.llama_config()["rope_scaling"]
    plain = rope_inverse_frequencies(8, 500000.0)
    scaled = rope_inverse_frequencies(8, 500000.0, scaling)
    wavelength = 2 * torch.pi / plain
    original = scaling["original_max_position_embeddings"]
    high = wavelength < original / scaling["high_freq_factor"]
    low = wavelength > original / scaling["low_freq_factor"]
    assert high.any() and low.any() and (~high & ~low).any(), "the tiny config must cover all three bands"
    torch.testing.assert_close(scaled[high], plain[high])
    torch.testing.assert_close(scaled[low], plain[low] / scaling["factor"])
    middle = ~high & ~low
    assert ((scaled[middle] < plain[middle]) & (scaled[middle] > plain[middle] / scaling["factor"])).all()


# ---- special tokens, sampler defaults, chat template --------------------------------------------

def test_llada_ids_defaults_and_template(tmp_path):
    folder, _ = ff.write_llada(tmp_path / "llada")
    loaded = load_model(folder)
    cfg, gen = loaded.model.config, loaded.generation_config
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id) == (336, 81, 81, 80)
    assert gen["mask_token_id"] == 336 and gen["stop_token_ids"] == [81, 348]  # EOS, then <|eot_id|>
    assert (gen["policy"], gen["block_size"], gen["steps_per_block"], gen["temperature"]) == ("steps", 32, 32, 0.0)
    assert loaded.chat_template == ff.LLADA_TEMPLATE
    assert loaded.tokenizer.token_to_id("<|mdm_mask|>") == 336
    assert loaded.model.lm_head.weight.dtype == torch.bfloat16  # dtype None keeps the stored dtype


def test_dream_family_ids_and_defaults(tmp_path):
    dream = load_model(ff.write_dream(tmp_path / "dream")[0])
    coder = load_model(ff.write_dream(tmp_path / "coder", diffucoder=True)[0])
    for loaded in (dream, coder):
        cfg = loaded.model.config
        assert (cfg.mask_token_id, cfg.eos_token_id, cfg.bos_token_id) == (166, 143, 165)
        assert loaded.generation_config["policy"] == "steps" and loaded.generation_config["top_p"] == 0.95
    assert dream.model.config.pad_token_id == 143 and dream.generation_config["stop_token_ids"] == [143, 145]
    # DiffuCoder pads (and ends) answers with <|dlm_pad|> rather than the config's pad id.
    assert coder.model.config.pad_token_id == 167 and coder.generation_config["stop_token_ids"] == [143, 145, 167]
    assert dream.generation_config["max_new_tokens"] == 512 and coder.generation_config["max_new_tokens"] == 256
    assert dream.chat_template == ff.CHATML_TEMPLATE


def test_block_diffusion_ids_and_defaults(tmp_path):
    fast = load_model(ff.write_fast_dllm_v2(tmp_path / "fast")[0])
    sdar = load_model(ff.write_sdar(tmp_path / "sdar")[0])
    assert fast.model.config.mask_token_id == 165 and fast.model.config.eos_token_id == 145
    assert fast.generation_config["policy"] == "threshold" and fast.generation_config["threshold"] == 0.9
    assert fast.generation_config["block_size"] == ff.BLOCK and fast.generation_config["stop_token_ids"] == [145]
    assert sdar.model.config.mask_token_id == 169 and sdar.model.config.qk_norm
    assert sdar.generation_config["steps_per_block"] == ff.BLOCK == sdar.generation_config["block_size"]
    assert sdar.generation_config["stop_token_ids"] == [143, 145]


def test_autoregressive_baselines_take_the_authors_sampling(tmp_path):
    qwen = load_model(ff.write_qwen_ar(tmp_path / "qwen")[0])
    llama = load_model(ff.write_llama(tmp_path / "llama")[0])
    assert qwen.model.config.mask_token_id is None
    assert {k: qwen.generation_config[k] for k in ("temperature", "top_p", "top_k")} == \
        {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
    assert qwen.generation_config["stop_token_ids"] == [143, 145]  # config eos first, then the instruct list
    assert llama.model.config.eos_token_id == 201 and llama.generation_config["stop_token_ids"] == [201, 209]
    assert llama.model.config.rope_scaling["rope_type"] == "llama3"


def test_tied_checkpoint_with_a_stored_head_loads(tmp_path):
    folder, sd = ff.write_qwen_ar(tmp_path / "q", tied=True, store_tied_head=True)
    model = load_model(folder, dtype=torch.float32).model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    torch.testing.assert_close(model.lm_head.weight, sd["model.embed_tokens.weight"])


def test_generation_config_feeds_the_sampler_config(tmp_path):
    sampler_config = pytest.importorskip("unmask.sampling.config")
    for writer in (ff.write_llada, ff.write_dream, ff.write_fast_dllm_v2, ff.write_sdar, ff.write_qwen_ar):
        gen = load_model(writer(tmp_path / writer.__name__)[0]).generation_config
        cfg = sampler_config.SamplerConfig.from_generation_config(gen)
        if "block_size" in gen:
            assert cfg.block_length == gen["block_size"]
        assert cfg.max_new_tokens == gen["max_new_tokens"] and cfg.temperature == gen["temperature"]


def test_real_release_configs_map_to_their_published_sizes():
    """The released 8B/7B configs (key sets and values from shared/reference §1) need no weights to check."""
    llada = ff.llada_config(vocab=126464, layers=32)
    llada.update(d_model=4096, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288, mask_token_id=126336,
                 eos_token_id=126081, pad_token_id=126081)
    cfg = adapt("/nonexistent", llada).config
    assert cfg.num_parameters() == pytest.approx(8.02e9, rel=0.005)  # LLaDA 8B: 8.02B parameters
    assert cfg.rope_theta == 500000.0 and cfg.resolved_head_dim == 128 and cfg.mask_token_id == 126336
    dream = ff.qwen2_config("Dream", vocab=152064, hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                            num_key_value_heads=4, intermediate_size=18944, mask_token_id=151666,
                            bos_token_id=151643, eos_token_id=151643, pad_token_id=151643)
    cfg = adapt("/nonexistent", dream).config
    assert cfg.num_parameters() == pytest.approx(7.62e9, rel=0.005)  # Qwen2.5-7B's 7.62B
    assert cfg.shift_logits and cfg.attention_bias and cfg.mask_token_id == 151666
    # Without a tokenizer, Fast-dLLM v2's mask id is the one its code hard-codes.
    fast = ff.qwen2_config("Fast_dLLM_Qwen", vocab=152064, bd_size=32, eos_token_id=151645)
    adapted = adapt("/nonexistent", fast)
    assert adapted.config.mask_token_id == 151665 and adapted.config.block_size == 32


# ---- the shift convention, planted ---------------------------------------------------------------

SUCCESSOR_WORDS = 8  # words 0..7: the planted model predicts word k + 1 from word k
GUESS = 12  # what the planted model says about a masked position from the mask token itself

# name: (writer, mask id in the tiny format, stored-name mapping, authors' convention: shifted?)
PLANTED = {
    "llada": (ff.write_llada, 336, ff.to_llada_names, False),
    "dream": (ff.write_dream, 166, dict, True),
    "fast_dllm_v2": (ff.write_fast_dllm_v2, 165, dict, True),
    "sdar": (ff.write_sdar, 169, dict, False),
    "qwen2": (ff.write_qwen_ar, None, dict, True),
}


def _plant(sd: dict, mask_id: int | None) -> dict:
    """Attention and MLP outputs zeroed, so position i's logits depend on token i alone: word k gives a
    confident k + 1, the mask token a weak GUESS (probability ~0.3), any other token a flat row."""
    sd = dict(sd)
    for name in sd:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            sd[name] = torch.zeros_like(sd[name])
        elif "norm" in name:
            sd[name] = torch.ones_like(sd[name])
    vocab, d = sd["model.embed_tokens.weight"].shape
    emb, head = torch.zeros(vocab, d), torch.zeros(vocab, d)
    for k in range(SUCCESSOR_WORDS):
        emb[k, k] = 1.0
        head[k + 1, k] = 4.0
    if mask_id is not None:
        emb[mask_id, SUCCESSOR_WORDS] = 1.0
        head[GUESS, SUCCESSOR_WORDS] = 1.0
    sd["model.embed_tokens.weight"], sd["lm_head.weight"] = emb, head
    return sd


def _planted_folder(tmp_path, name):
    writer, mask_id, stored_names, shifted = PLANTED[name]
    folder, sd = writer(tmp_path / name)
    ff.write_weights(folder, stored_names(_plant(sd, mask_id)))
    return folder, mask_id, shifted


def _prediction_at(logits: torch.Tensor, position: int, shift: bool) -> int:
    """The token proposed for `position`, read as the authors read it: shifted models from the logit one
    to the left (Dream's cat(logits[:, :1], logits[:, :-1])), the others from its own."""
    return int(logits[0, position - 1 if shift else position].argmax())


@pytest.mark.parametrize("name", [n for n in PLANTED if PLANTED[n][1] is not None])
def test_shift_convention_planted(tmp_path, name):
    folder, mask, shifted = _planted_folder(tmp_path, name)
    model = load_model(folder, dtype=torch.float32).model
    assert model.config.shift_logits == shifted
    with torch.no_grad():
        logits = model(torch.tensor([[0, 1, 2, 3, mask, mask]]))
    # The first masked position: a shifted model proposes word 3's successor, an unshifted one GUESS.
    expected = 4 if shifted else GUESS
    assert _prediction_at(logits, 4, model.config.shift_logits) == expected
    assert _prediction_at(logits, 4, not model.config.shift_logits) != expected


@pytest.mark.parametrize("name", list(PLANTED))
def test_generation_end_to_end_with_every_policy(tmp_path, name):
    """The sampler (unmask.sampling) on each family's planted stand-in, greedy, with every policy."""
    sampling = pytest.importorskip("unmask.sampling.generate")
    from unmask.sampling.config import POLICIES, SamplerConfig

    folder, mask, shifted = _planted_folder(tmp_path, name)
    loaded = load_model(folder, dtype=torch.float32)
    chain = [3, 4, 5, 6, 7]  # the planted successors of the prompt's last word, 2
    for policy in POLICIES:
        config = SamplerConfig.from_generation_config(loaded.generation_config, policy=policy,
                                                      max_new_tokens=len(chain), temperature=0.0)
        [result] = sampling.generate(loaded.model, loaded.tokenizer, [sampling.Request(prompt_ids=[0, 1, 2])], config)
        answer = result.token_ids
        assert len(answer) == len(chain) and result.stats.forward_passes >= 1, (policy, answer)
        # The first answer position is the model's most confident proposal under its own convention.
        assert answer[0] == (chain[0] if shifted else GUESS), (policy, answer)
        if shifted and policy != "entropy":  # "entropy" may reveal a second, unsure position at once
            assert answer == chain, (policy, answer)


# ---- memory: shard by shard ----------------------------------------------------------------------

def test_loading_assigns_each_shard_before_reading_the_next(tmp_path, monkeypatch):
    """At every shard opening, the earlier shards must already sit in the model and no tensor read
    from them may still be alive outside it: a read-everything-then-copy loader fails both checks."""
    import weakref

    folder, _ = ff.write_llada(tmp_path / "big", shards=6, layers=4)
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    real_open = ckpt.safe_open
    read: list[weakref.ref] = []
    sizes: dict[int, int] = {}
    openings = []
    box = {}

    class Handle:
        def __init__(self, inner):
            self.inner = inner

        def __enter__(self):
            self.f = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.f.keys()

        def get_tensor(self, name):
            t = self.f.get_tensor(name)
            read.append(weakref.ref(t))
            sizes[id(read[-1])] = t.numel() * t.element_size()
            return t

    def spying_open(path, *args, **kwargs):
        model = box.get("model")
        loaded = 0 if model is None else sum(p.numel() for p in model.parameters() if not p.is_meta)
        alive = sum(sizes[id(r)] for r in read if r() is not None)
        openings.append((path, loaded, alive))
        return Handle(real_open(path, *args, **kwargs))

    real_load = ckpt.load_weights_into

    def remember_model(model, *args, **kwargs):
        box["model"] = model
        return real_load(model, *args, **kwargs)

    monkeypatch.setattr(ckpt, "safe_open", spying_open)
    monkeypatch.setattr(ckpt, "load_weights_into", remember_model)
    monkeypatch.setattr(ckpt, "META_BUILD_MIN_PARAMETERS", 0)  # built on the meta device, as a large model is
    loaded = load_model(folder)
    files = sorted(set(index.values()))
    assert [p.rsplit("/", 1)[-1] for p, _, _ in openings] == files
    from safetensors import safe_open

    numel_before = 0
    largest_tensor = 0
    for (path, loaded_numel, alive), file in zip(openings, files):
        assert loaded_numel == numel_before, f"{file}: earlier shards not assigned yet"
        assert alive <= largest_tensor, f"{file}: {alive} bytes of earlier shards still held outside the model"
        with safe_open(str(folder / file), framework="pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                numel_before += t.numel()
                largest_tensor = max(largest_tensor, t.numel() * t.element_size())
    assert numel_before == sum(p.numel() for p in loaded.model.parameters())


# ---- errors --------------------------------------------------------------------------------------

def test_unsupported_model_type_lists_the_supported_ones(tmp_path):
    folder, _ = ff.write_dream(tmp_path / "d")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(raw, model_type="dream")))
    with pytest.raises(CheckpointError, match=r"model_type 'dream' is not supported \(did you mean 'Dream'\?\).*"
                                              r"unmask, llada, Dream, Fast_dLLM_Qwen, sdar, qwen2, qwen3, llama"):
        load_model(folder)
    assert SUPPORTED_MODEL_TYPES[0] == "unmask"


@pytest.mark.parametrize("change, message", [
    ({"d_model": None}, "missing key 'd_model'"),
    ({"n_heads": "32"}, "'n_heads' must be a positive integer"),
    ({"block_type": "sequential"}, "block_type 'sequential' is not supported"),
    ({"attention_layer_norm": True}, "attention_layer_norm True is not supported"),
    ({"mask_token_id": 5}, r"mask_token_id is 5 but tokenizer.json maps '<\|mdm_mask\|>' to 336"),
    ({"n_kv_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
])
def test_malformed_llada_configs(tmp_path, change, message):
    folder, _ = ff.write_llada(tmp_path / "l")
    raw = json.loads((folder / "config.json").read_text())
    raw.update(change)
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(folder)
    assert str(folder / "config.json") in str(info.value)


@pytest.mark.parametrize("change, message", [
    ({"use_sliding_window": True}, "use_sliding_window"),
    ({"num_experts": 64}, "mixture-of-experts"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope scaling 'yarn' is not supported"),
])
def test_malformed_qwen_configs(tmp_path, change, message):
    folder, _ = ff.write_dream(tmp_path / "d")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(raw, **change)))
    with pytest.raises(CheckpointError, match=message):
        load_model(folder)


def test_foreign_tensor_errors_name_both_names(tmp_path):
    folder, sd = ff.write_llada(tmp_path / "l")
    names = ff.to_llada_names(sd)
    names["model.transformer.blocks.0.q_proj.weight"] = names["model.transformer.blocks.0.q_proj.weight"][:, :8]
    ff.write_weights(folder, names)
    with pytest.raises(CheckpointError, match=r"'model.transformer.blocks.0.q_proj.weight' \(read as "
                                              r"'model.layers.0.self_attn.q_proj.weight'\) has shape \(32, 8\)"):
        load_model(folder)
    names = ff.to_llada_names(sd)
    names["model.transformer.blocks.0.att_proj.weight"] = names.pop("model.transformer.blocks.0.q_proj.weight")
    ff.write_weights(folder, names)
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.transformer.blocks.0.att_proj.weight'"):
        load_model(folder)


def test_unmask_format_still_loads_through_load_model(tmp_path):
    model = tiny_model()
    save_pretrained(model, tmp_path / "ck", generation_config={"policy": "threshold"})
    loaded = load_model(tmp_path / "ck")
    assert loaded.family == "unmask" and loaded.generation_config["policy"] == "threshold"
    assert isinstance(loaded.model.config, ModelConfig) and loaded.model.config == model.config
