"""`unmask bench --shape NAME --random-weights`: the engine's forward-pass speed for a model shape, untrained.

Shape legend: B batch, L context (tokens in the canvas), N tokens fed by a step, V vocabulary.

Step types (the work of one decoder step on an L-token canvas; the LM head runs only where the decoder
needs logits):
- `full`: all L tokens, no cache (the vanilla sampler's step), logits for one block (32 tokens unless --block);
- `dual block`: a block against a dual cache of L slots (Fast-dLLM), logits for the block;
- `block cache`: a block of a block_causal model against the exact cache of the finished blocks;
- `ar step`: one token against an L-slot key/value cache (the autoregressive twin's step).

Each is timed against its floor: the bytes of the weights one forward pass reads (every parameter but the
input embedding table, of which only the fed rows are read) divided by the device's measured copy
bandwidth. Memory needs are estimated before anything is allocated; a shape that does not fit is refused,
or built with only `--layers N` of its layers (every figure then labelled as truncated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import UnmaskError
from ..model import ModelConfig, Transformer
from ..model.kv_cache import KVCache

BLOCK = 32  # the default block length (tokens)
STEP_TYPES = ("full", "dual block", "block cache", "ar step")
# Published shapes (config.json of each family) and ours. Context defaults come from --context.
SHAPES = {
    "llada-8b": dict(vocab_size=126464, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, intermediate_size=12288),
    "dream-7b": dict(vocab_size=152064, hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, intermediate_size=18944, attention_bias=True, shift_logits=True),
    # the bundled models (src/unmask/assets/models); until 2026-12-01 `default` meant d256-l6
    "default": dict(vocab_size=4096, hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                    num_key_value_heads=3, intermediate_size=512, shift_logits=True),
}
_GENERIC = re.compile(r"^d(\d+)-l(\d+)(?:-v(\d+))?$")


def shape_config(name: str, *, layers: int | None, context: int) -> tuple[ModelConfig, int]:
    """(config to build, the shape's full layer count) for a named shape or `dD-lN[-vV]`."""
    if name in SHAPES:
        fields = dict(SHAPES[name])
    else:
        m = _GENERIC.match(name)
        if not m:
            raise UnmaskError(f"--shape {name}: unknown shape (use one of {', '.join(SHAPES)}, or dD-lN[-vV] "
                              "such as d256-l6)")
        d, n, v = int(m.group(1)), int(m.group(2)), int(m.group(3) or 4096)
        if d < 64 or d % 64 or n < 1 or v < 8:
            raise UnmaskError(f"--shape {name}: width must be a multiple of 64, layers >= 1, vocabulary >= 8")
        fields = dict(vocab_size=v, hidden_size=d, num_hidden_layers=n, num_attention_heads=d // 64,
                      num_key_value_heads=d // 64, intermediate_size=64 * round(2.75 * d / 64))
    full_layers = fields["num_hidden_layers"]
    if layers is not None:
        if layers < 1 or layers > full_layers:
            raise UnmaskError(f"--layers must be in [1, {full_layers}] for {name}, got {layers}")
        fields["num_hidden_layers"] = layers
    fields.update(max_position_embeddings=context, mask_token_id=1, eos_token_id=0, pad_token_id=2)
    return ModelConfig(**fields), full_layers


def parameter_bytes(config: ModelConfig, dtype: torch.dtype) -> tuple[int, int]:
    """(all parameter bytes, bytes one forward pass reads) for this config, without allocating it."""
    with torch.device("meta"):
        model = Transformer(config)
    size = torch.empty((), dtype=dtype).element_size()
    total = sum(p.numel() for p in model.parameters()) * size
    embed = model.model.embed_tokens.weight.numel() * size
    read = total if config.tie_word_embeddings else total - embed
    return total, read


def memory_needed(config: ModelConfig, dtype: torch.dtype, batch: int, context: int, block: int = BLOCK) -> int:
    """Bytes for the weights, a context-long cache and the largest step's activations at this batch (an estimate)."""
    size = torch.empty((), dtype=dtype).element_size()
    weights, _ = parameter_bytes(config, dtype)
    hd = config.resolved_head_dim
    cache = 2 * config.num_hidden_layers * batch * config.num_key_value_heads * context * hd * size
    tokens = batch * context  # the full step feeds the whole canvas
    act = tokens * (6 * config.hidden_size + 3 * config.intermediate_size) * size
    scores = batch * config.num_attention_heads * context * context * size  # attention weights with a mask
    logits = batch * block * config.vocab_size * 4
    return weights + cache + act + scores + logits


def check_fits(name: str, config: ModelConfig, full_layers: int, dtype: torch.dtype, batch: int, context: int,
               available: int | None, block: int = BLOCK) -> None:
    """UnmaskError with the memory needed and the --layers that would fit, when the shape does not fit."""
    if available is None:
        return
    need = memory_needed(config, dtype, batch, context, block)
    budget = int(0.8 * available)
    if need <= budget:
        return
    one = ModelConfig(**{**config.__dict__, "num_hidden_layers": 1})
    base = memory_needed(one, dtype, batch, context, block)
    per_layer = (need - base) / max(config.num_hidden_layers - 1, 1) if config.num_hidden_layers > 1 else base
    fit = int((budget - base) // per_layer) + 1 if budget >= base else 0
    hint = (f"pass --layers {min(fit, full_layers)} (of {full_layers}) to build only that many layers; figures "
            "are then labelled truncated" if fit >= 1 else "even one layer does not fit: use smaller --batch-sizes "
            "or --context")
    raise UnmaskError(f"--shape {name} at batch {batch} needs about {need / 2**30:.1f} GiB ({dtype}) but "
                      f"{available / 2**30:.1f} GiB is available; {hint}")


def random_model(config: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int) -> Transformer:
    """The shape with random N(0, 0.02) weights, allocated once, directly on the device in its dtype."""
    with torch.device("meta"):
        model = Transformer(config)
    model = model.to(dtype=dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.eval()


@dataclass
class Step:
    name: str
    attention: str  # the attention mode the step runs under
    block_size: int | None  # the block_causal model's block size
    tokens_fed: int
    keys: int
    run: object  # () -> logits


def check_steps(context: int, block: int) -> None:
    if block < 1 or context < 2 * block:
        raise UnmaskError(f"--context ({context}) must hold at least two blocks of --block ({block}) tokens")


def make_steps(model: Transformer, batch: int, context: int, device: torch.device, gen: torch.Generator,
               block: int = BLOCK) -> list[Step]:
    """The four step types on one set of weights, each with its cache prefilled (prefill is not timed)."""
    cfg = model.config
    L = context
    assert 1 <= block and 2 * block <= L, "checked by check_steps"
    canvas = torch.randint(6, cfg.vocab_size, (batch, L), generator=gen, device=device)
    block_logits = slice(L - block, L)
    s = L - 2 * block  # the dual-cache block: the one before last, with masked keys after it

    def full():
        return model(canvas, logits_slice=block_logits)

    def prefilled(upto: int) -> KVCache:
        kv = KVCache.for_model(model, batch, L)
        model(canvas[:, :upto], cache=kv, cache_start=0, logits_slice=slice(-1, None))
        return kv

    steps = [Step("full", "bidirectional", None, L, L, full)]
    with torch.no_grad():
        dual = prefilled(L)
    steps.append(Step("dual block", "bidirectional", None, block, L,
                      lambda: model(canvas[:, s:s + block], cache=dual, cache_start=s)))
    _set_attention(cfg, "block_causal", block)
    with torch.no_grad():
        exact = prefilled(L - block)
    steps.append(Step("block cache", "block_causal", block, block, L,
                      lambda: model(canvas[:, L - block:], cache=exact, cache_start=L - block)))
    _set_attention(cfg, "causal")
    with torch.no_grad():
        ar = prefilled(L - 1)
    steps.append(Step("ar step", "causal", None, 1, L,
                      lambda: model(canvas[:, L - 1:], cache=ar, cache_start=L - 1)))
    _set_attention(cfg, "bidirectional")
    return steps


def _set_attention(config: ModelConfig, attention: str, block_size: int | None = None) -> None:
    # The same weights serve every step type: only the attention rule differs between them.
    config.attention = attention
    config.block_size = block_size


def run_step(model: Transformer, step: Step):
    _set_attention(model.config, step.attention, step.block_size)
    try:
        with torch.no_grad():
            return step.run()
    finally:
        _set_attention(model.config, "bidirectional")
