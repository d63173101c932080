"""TrainConfig: everything a training run needs, read from TOML with `--set key=value` overrides.

A config file has a few top-level keys and one table per concern:

    objective = "mdlm"              # "mdlm" | "block" | "ar" | "distill"
    seed = 0
    out_dir = "runs/tiny"
    init_from = ""                  # start from a checkpoint's weights (e.g. AR -> diffusion adaptation)
    [model]       ModelConfig fields; vocab_size defaults to the shards', attention and shift_logits
                  to the objective's (see `resolve_model_fields`)
    [data]        shards, window_len, batch_size (per rank), grad_accum, tokenizer
    [optim]       AdamW, warm-up + cosine, clipping, the step or token budget
    [diffusion]   eps (smallest t), fim_rate (autoregressive objective)
    [distill]     prompt_len, block_len, entropy_weight, mdlm_weight, mdlm_shards (self-distillation on
                  `unmask teacher` records, with a masked-diffusion term on them or on real code)
    [eval]        validation every N steps on fixed windows with a fixed seed
    [checkpoint]  every N steps, keep the last K
    [system]      device, autocast dtype, compile, ddp|fsdp, logging, planned stops

Overrides use dotted keys (`--set optim.lr=3e-4 --set data.shards=/data/py`); values are parsed as
TOML values, and taken as plain strings when that fails. An unknown key raises ConfigError naming it
and the nearest valid key. Relative paths are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.special_tokens import ENDOFTEXT_ID, MASK_ID, PAD_ID
from ..errors import ConfigError
from ..model.config import ModelConfig

OBJECTIVES = ("mdlm", "block", "ar", "distill")
# The attention each objective trains, and whether its logits are shifted unless the config says.
OBJECTIVE_ATTENTION = {"mdlm": "bidirectional", "block": "block_causal", "ar": "causal", "distill": "bidirectional"}
PARALLEL_MODES = ("ddp", "fsdp")
DTYPES = ("auto", "float32", "bfloat16")
# Fields a run may change when it starts from another checkpoint's weights (init_from).
ADAPTABLE_MODEL_FIELDS = {"attention", "block_size", "shift_logits", "mask_token_id", "eos_token_id",
                          "pad_token_id", "bos_token_id", "max_position_embeddings"}


@dataclass
class DataConfig:
    shards: str = ""  # token shard folder (with index.json), from `unmask corpus tokenize`
    window_len: int = 256  # tokens per training window
    batch_size: int = 16  # windows per rank per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    tokenizer: str = ""  # tokenizer.json (or its folder) copied into checkpoints; "": the shards folder's


@dataclass
class OptimConfig:
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    max_steps: int = 1000
    max_tokens: int = 0  # > 0: the token budget (counting init_from's tokens); sets max_steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping


@dataclass
class DiffusionConfig:
    eps: float = 1e-3  # diffusion times are drawn in [eps, 1]
    fim_rate: float = 0.5  # fraction of autoregressive windows rewritten prefix-suffix-middle


@dataclass
class DistillConfig:
    """Self-distillation (objective "distill"): windows are `unmask teacher` records, a prompt of prompt_len
    tokens then the teacher's answer; the loss trains one answer block at a time as the sampler decodes it."""

    prompt_len: int = 64  # the records' prompt length (the teacher's --prompt-len)
    block_len: int = 16  # the sampler's block length (the model's generation_config block_length)
    entropy_weight: float = 1.0  # certainty forcing: weight of the entropy of positions predicted right
    # Weight of the plain masked-diffusion loss (uniform masks over a whole window, a second forward pass),
    # which keeps the any-order predictions that likelihood and infilling use.
    mdlm_weight: float = 0.0
    # Where that loss's windows come from: "" for the same teacher records, or a shard folder of real code
    # (its train split, windows of mdlm_window_len), so the student keeps learning the data rather than its
    # own answers. Those windows count as training tokens.
    mdlm_shards: str = ""
    mdlm_window_len: int = 256
    # Start the real-code windows where init_from's run stopped reading them (windows it has not trained on);
    # needs init_from's trainer_state to have read the same shards with the same window and global batch.
    mdlm_continue_data: bool = True


@dataclass
class EvalConfig:
    every: int = 0  # validate every N steps (0: only at the end)
    windows: int = 32  # validation windows (the first ones of the val split)
    bound_samples: int = 4  # Monte Carlo samples per window for the diffusion bound
    seed: int = 1234


@dataclass
class CheckpointConfig:
    every: int = 0  # checkpoint every N steps (0: only at the end)
    keep: int = 3  # keep the newest K checkpoints


@dataclass
class SystemConfig:
    device: str = "auto"  # "auto": cuda when available, else cpu
    dtype: str = "auto"  # autocast dtype; "auto": bfloat16 on cuda, float32 on cpu
    compile: bool = False  # torch.compile each transformer layer
    parallel: str = "ddp"  # under torchrun: "ddp" (replicated) or "fsdp" (FSDP2 fully_shard)
    threads: int = 0  # torch CPU threads (0: torch's default)
    log_every: int = 10
    progress: bool = True  # tqdm bar when tqdm is installed
    peak_tflops: float = 0.0  # the accelerator's peak, to log model FLOPs utilisation (0: not logged)
    stop_at_step: int = 0  # end this invocation after this step with a checkpoint (schedule unchanged)
    time_limit_s: float = 0.0  # end this invocation after this wall time with a checkpoint


@dataclass
class TrainConfig:
    objective: str = "mdlm"
    seed: int = 0
    out_dir: str = "runs/train"
    init_from: str = ""  # checkpoint folder whose weights start this run
    init_continue_data: bool = True  # with init_from: continue its data position (same data order)
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, source: str = "config") -> None:
        """Raise ConfigError for values that cannot work, naming the key."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{source}: {key} {why}")

        if self.objective not in OBJECTIVES:
            raise bad("objective", f"must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        positive = {"data.window_len": self.data.window_len, "data.batch_size": self.data.batch_size,
                    "data.grad_accum": self.data.grad_accum, "eval.windows": self.eval.windows,
                    "eval.bound_samples": self.eval.bound_samples, "checkpoint.keep": self.checkpoint.keep,
                    "system.log_every": self.system.log_every, "optim.lr": self.optim.lr}
        for key, value in positive.items():
            if value <= 0:
                raise bad(key, f"must be positive, got {value}")
        non_negative = {"optim.warmup_steps": self.optim.warmup_steps, "optim.max_steps": self.optim.max_steps,
                        "optim.max_tokens": self.optim.max_tokens, "optim.grad_clip": self.optim.grad_clip,
                        "optim.weight_decay": self.optim.weight_decay, "eval.every": self.eval.every,
                        "checkpoint.every": self.checkpoint.every, "system.threads": self.system.threads,
                        "system.stop_at_step": self.system.stop_at_step,
                        "system.time_limit_s": self.system.time_limit_s}
        for key, value in non_negative.items():
            if value < 0:
                raise bad(key, f"must be >= 0, got {value}")
        if self.optim.max_steps == 0 and self.optim.max_tokens == 0:
            raise bad("optim.max_steps", "or optim.max_tokens must be set")
        if not 0.0 <= self.optim.min_lr_ratio <= 1.0:
            raise bad("optim.min_lr_ratio", f"must be in [0, 1], got {self.optim.min_lr_ratio}")
        if not 0.0 <= self.diffusion.eps < 1.0:
            raise bad("diffusion.eps", f"must be in [0, 1), got {self.diffusion.eps}")
        if not 0.0 <= self.diffusion.fim_rate <= 1.0:
            raise bad("diffusion.fim_rate", f"must be in [0, 1], got {self.diffusion.fim_rate}")
        if self.system.parallel not in PARALLEL_MODES:
            raise bad("system.parallel", f"must be one of {', '.join(PARALLEL_MODES)}, got {self.system.parallel!r}")
        if self.system.dtype not in DTYPES:
            raise bad("system.dtype", f"must be one of {', '.join(DTYPES)}, got {self.system.dtype!r}")
        if not self.data.shards:
            raise bad("data.shards", "is not set (a token shard folder from 'unmask corpus tokenize')")
        attention = self.model.get("attention", OBJECTIVE_ATTENTION[self.objective])
        if attention != OBJECTIVE_ATTENTION[self.objective]:
            raise bad("model.attention", f"is {attention!r}, but objective {self.objective!r} trains "
                                         f"{OBJECTIVE_ATTENTION[self.objective]!r} attention")
        if self.objective == "ar" and self.model.get("shift_logits") is False:
            raise bad("model.shift_logits", "must be true for the autoregressive objective")
        block = self.model.get("block_size")
        if self.objective == "block":
            if not isinstance(block, int) or block <= 0:
                raise bad("model.block_size", "must be a positive integer for objective 'block'")
            if self.data.window_len % block:
                raise bad("data.window_len", f"{self.data.window_len} must be a multiple of model.block_size {block}")
        if self.objective == "distill":
            d = self.distill
            if not self.init_from:
                raise bad("init_from", "must name the model to distill (objective 'distill' starts from its weights)")
            if d.prompt_len <= 0 or d.block_len <= 0:
                raise bad("distill.prompt_len", "and distill.block_len must be positive")
            answer = self.data.window_len - d.prompt_len
            if answer <= 0 or answer % d.block_len:
                raise bad("data.window_len", f"{self.data.window_len} must be distill.prompt_len {d.prompt_len} "
                                             f"plus a positive multiple of distill.block_len {d.block_len}")
            for name in ("entropy_weight", "mdlm_weight"):
                if getattr(d, name) < 0:
                    raise bad(f"distill.{name}", f"must be >= 0, got {getattr(d, name)}")
            if d.mdlm_shards and not d.mdlm_weight:
                raise bad("distill.mdlm_shards", "is read only by the MDLM term: set distill.mdlm_weight > 0")
            if d.mdlm_shards and d.mdlm_window_len < 2:
                raise bad("distill.mdlm_window_len", f"must be >= 2, got {d.mdlm_window_len}")
        if self.objective == "ar" and self.data.window_len <= 4 and self.diffusion.fim_rate > 0:
            raise bad("data.window_len", "must exceed 4 tokens for fill-in-the-middle")


def resolve_model_fields(config: TrainConfig, shard_vocab_size: int,
                         init_fields: dict[str, Any] | None = None) -> ModelConfig:
    """The run's ModelConfig: init_from's shapes (if any), overridden by [model], with defaults:
    vocab_size from the shards, attention from the objective, shift_logits true for "ar" (and kept
    from init_from, the Dream-style adaptation), the special-token ids of unmask.data.special_tokens."""
    fields = {k: v for k, v in (init_fields or {}).items() if k not in ("attention", "block_size")}
    fields.update(config.model)
    fields.setdefault("vocab_size", shard_vocab_size)
    fields.setdefault("attention", OBJECTIVE_ATTENTION[config.objective])
    fields.setdefault("shift_logits", config.objective == "ar")
    fields.setdefault("mask_token_id", MASK_ID)
    fields.setdefault("eos_token_id", ENDOFTEXT_ID)
    fields.setdefault("pad_token_id", PAD_ID)
    if config.objective == "ar" and not fields["shift_logits"]:
        raise ConfigError("model.shift_logits must be true for the autoregressive objective "
                          "(init_from's config says false)")
    if fields["vocab_size"] != shard_vocab_size:
        raise ConfigError(f"model.vocab_size {fields['vocab_size']} does not match the shards' vocabulary "
                          f"{shard_vocab_size} ({config.data.shards}); use shards made with the model's tokenizer")
    if init_fields:
        for key, value in init_fields.items():
            if key not in ADAPTABLE_MODEL_FIELDS and fields.get(key) != value:
                raise ConfigError(f"model.{key} {fields.get(key)!r} differs from init_from's {value!r} "
                                  f"({config.init_from}); a run started from weights keeps their shapes")
    try:
        model_config = ModelConfig.from_dict(fields)
    except ValueError as e:
        raise ConfigError(f"[model]: {e}") from None
    if config.data.window_len > model_config.max_position_embeddings:
        raise ConfigError(f"data.window_len {config.data.window_len} exceeds model.max_position_embeddings "
                          f"{model_config.max_position_embeddings}")
    return model_config


# ---------------------------------------------------------------- keys and values


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; tables of TrainConfig's sections and [model] only."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def valid_keys() -> list[str]:
    keys = []
    for name, hint in typing.get_type_hints(TrainConfig).items():
        if name == "model":
            keys += [f"model.{m.name}" for m in dataclasses.fields(ModelConfig)]
        elif dataclasses.is_dataclass(hint):
            keys += [f"{name}.{s.name}" for s in dataclasses.fields(hint)]
        else:
            keys.append(name)
    return keys


def nearest_key(key: str) -> str | None:
    """The valid key the user most likely meant: same last part in another table, else the closest."""
    keys = valid_keys()
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[0]
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if close:
        return close[0]
    close = difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in keys], n=1, cutoff=0.6)
    return next((k for k in keys if close and k.rsplit(".", 1)[-1] == close[0]), None)


def unknown_key_error(key: str, source: str) -> ConfigError:
    hint = nearest_key(key)
    return ConfigError(f"{source}: unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else ""))


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check a value against a field's type; ints are accepted where floats are expected."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{source}: {key} must be {names}, got {value!r}")


def set_key(config: TrainConfig, key: str, value: Any, source: str) -> None:
    """Set one dotted key on `config`, checking that it exists and that the value has its type."""
    parts = key.split(".")
    if parts[0] == "model" and len(parts) == 2:
        hints = typing.get_type_hints(ModelConfig)
        if parts[1] not in hints:
            raise unknown_key_error(key, source)
        config.model[parts[1]] = _coerce(value, hints[parts[1]], key, source)
        return
    hints = typing.get_type_hints(TrainConfig)
    if parts[0] not in hints or parts[0] == "model":
        raise unknown_key_error(key, source)
    if len(parts) == 1:
        if dataclasses.is_dataclass(getattr(config, key)):
            raise ConfigError(f"{source}: {key} is a table; set its keys ({key}.NAME)")
        setattr(config, key, _coerce(value, hints[key], key, source))
        return
    section = getattr(config, parts[0])
    if len(parts) != 2 or not dataclasses.is_dataclass(section):
        raise unknown_key_error(key, source)
    section_hints = typing.get_type_hints(type(section))
    if parts[1] not in section_hints:
        raise unknown_key_error(key, source)
    setattr(section, parts[1], _coerce(value, section_hints[parts[1]], key, source))


def _toml():
    """The standard library's TOML reader (Python 3.11+), or its backport `tomli` on Python 3.10."""
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("reading TOML configs needs Python 3.11+ or the 'tomli' package") from None
    return tomllib


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=3e-4' -> ("optim.lr", 0.0003); a value that is not TOML is a plain string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    tomllib = _toml()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_config(path: str | os.PathLike | None, overrides: list[str] = (), *,
                base: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML file (or start from `base`, a saved config dict), apply `--set` overrides, validate."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        tomllib = _toml()
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        source = str(path)
    else:
        raw, source = dict(base or {}), "saved config"
    config = TrainConfig()
    for key, value in flatten(raw).items():
        set_key(config, key, value, source)
    for text in overrides:
        key, value = parse_override(text)
        set_key(config, key, value, f"--set {key}")
    config.validate(source if not overrides else f"{source} with --set")
    return config
