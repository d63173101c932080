"""The training loop shared by the three objectives, on one process or many (torchrun).

    train(config)                      a fresh run (from scratch, or from init_from's weights)
    train(config, resume=checkpoint)   continue a run exactly where a checkpoint left it

One optimizer step = `data.grad_accum` micro-steps of `data.batch_size` windows on each rank. Every
random draw of a micro-step comes from a generator seeded by (seed, step, micro-step) for the whole
global batch (see objectives.Draws) and the data loader's position is saved, so a resumed run
computes the very same steps as an uninterrupted one (bit for bit on the CPU in float32).

A run stops when it reaches optim.max_steps, or earlier (with a checkpoint) at system.stop_at_step,
after system.time_limit_s, or on SIGINT/SIGTERM (Ctrl-C); a second Ctrl-C aborts at once. Errors
save nothing, so the checkpoints already written stay as they were.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.shards import TokenShards, WindowLoader
from ..errors import ConfigError, UnmaskError
from ..model import ModelConfig, Transformer, load_config
from ..model.checkpoint import CONFIG_FILE, TOKENIZER_FILE, atomic_folder, load_weights_into
from .checkpointing import (CHECKPOINTS_DIR, SHARDED_DIR, TRAINER_STATE_FILE, git_commit, list_checkpoints,
                            load_training_state, read_trainer_state, recorded_context_len, remove_stale_temporaries,
                            save_checkpoint)
from .config import TrainConfig, resolve_model_fields
from .distributed import DistInfo, all_reduce, init_distributed, load_sharded_state, shutdown, wrap_model
from .objectives import Draws, Objective, derive_seed, make_objective
from .optim import make_optimizer, make_scheduler
from .progress import JsonlLog, Progress
from .validation import Validator

EXPORT_DIR = "model"  # OUT_DIR/model: the final weights alone, in the model checkpoint format
STOP_REASONS = {0: None, 1: "stop_at_step", 2: "time_limit", 3: "signal"}


@dataclass
class TrainResult:
    status: str  # "finished", "stopped" (stop_at_step / time_limit) or "interrupted" (signal)
    step: int
    out_dir: Path
    checkpoint: Path | None
    exit_code: int


class StopSignal:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second one aborts at once."""

    def __init__(self):
        self.signum = 0
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _autocast(config: TrainConfig, device: torch.device):
    dtype = config.system.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "float32":
        return contextlib.nullcontext
    if device.type == "cpu" and not _cpu_has_native_bf16():
        # Measured on an AVX2-only 2-core VM: 12.8 s/step in bf16 vs ~0.9 s/step in float32 (d192 L4, 4,096 tokens).
        warnings.warn(f"system.dtype='bfloat16' on a CPU without native bfloat16 "
                      f"({torch.backends.cpu.get_cpu_capability()}): autocast is emulated and can be over 10x "
                      f"slower than system.dtype='float32'", stacklevel=2)
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def _cpu_has_native_bf16() -> bool:
    """Whether torch's CPU kernels reach AVX-512, where bfloat16 ran faster than float32 here (an EPYC VM);
    on AVX2 it is emulated."""
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def _tokenizer_path(config: TrainConfig) -> str | None:
    if config.data.tokenizer:
        path = Path(config.data.tokenizer)
        path = path / TOKENIZER_FILE if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"data.tokenizer {config.data.tokenizer}: no tokenizer.json there")
        return str(path)
    default = Path(config.data.shards) / TOKENIZER_FILE
    if default.is_file():
        return str(default)
    # `unmask corpus tokenize` records the tokenizer it used in the shards' index.json.
    index_file = Path(config.data.shards) / "index.json"
    if index_file.is_file():
        recorded = json.loads(index_file.read_text()).get("tokenizer")
        if recorded:
            path = Path(recorded)
            path = path / TOKENIZER_FILE if path.is_dir() else path
            if path.is_file():
                return str(path)
    return None


def _flops_per_token(model_config: ModelConfig, objective: Objective, window_len: int) -> float:
    """Training FLOPs per data token: 6 x (matmul parameters) + 12 x layers x width x tokens fed (attention)."""
    params = model_config.num_parameters()
    if not model_config.tie_word_embeddings:
        params -= model_config.vocab_size * model_config.hidden_size  # the embedding lookup costs no matmul
    fed = objective.tokens_fed(window_len)
    per_fed_token = 6 * params + 12 * model_config.num_hidden_layers * model_config.hidden_size * fed
    return per_fed_token * fed / window_len


def _build_model(model_config: ModelConfig, weights_from: Path | None, seed: int, device) -> Transformer:
    if weights_from is None:
        model = Transformer(model_config)
        model.init_weights(std=0.02, seed=seed)
        return model.to(device)
    with torch.device("meta"):
        model = Transformer(model_config)
    load_weights_into(model, weights_from, device, torch.float32)
    if model_config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


def _export(checkpoint: Path, out_dir: Path) -> Path:
    """OUT_DIR/model: the final checkpoint's model files (no optimizer or RNG state), atomically."""
    skip = {"training_state.pt", SHARDED_DIR}
    with atomic_folder(out_dir / EXPORT_DIR) as tmp:
        for path in checkpoint.iterdir():
            if path.name not in skip and not path.name.startswith("rng_state_rank"):
                shutil.copy2(path, tmp / path.name)
    return out_dir / EXPORT_DIR


def train(config: TrainConfig, *, resume: str | Path | None = None) -> TrainResult:
    """Run (or continue) training as `config` says; returns how and where it ended."""
    info = init_distributed(config.system.device)
    threads = torch.get_num_threads()
    try:
        if config.system.threads:
            torch.set_num_threads(config.system.threads)
        return _train(config, Path(resume) if resume else None, info)
    finally:
        torch.set_num_threads(threads)  # a library call leaves the process as it found it
        shutdown(info)


def _train(config: TrainConfig, resume: Path | None, info: DistInfo) -> TrainResult:
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    device = info.device
    out_dir = Path(config.out_dir)
    shards = TokenShards(config.data.shards, "train")
    tokenizer = _tokenizer_path(config)

    # Where the weights and the history come from: a checkpoint of this run, another model, or nothing.
    init_dir, init_state, init_fields = None, {}, None
    if resume is None and config.init_from:
        init_dir = Path(config.init_from)
        init_fields = asdict(load_config(init_dir))
        if (init_dir / TRAINER_STATE_FILE).is_file():
            init_state = read_trainer_state(init_dir)
    model_config = resolve_model_fields(config, shards.vocab_size, init_fields)
    config.model = asdict(model_config)
    state = read_trainer_state(resume) if resume else {}
    if resume is None and list_checkpoints(out_dir / CHECKPOINTS_DIR):
        raise UnmaskError(f"{out_dir} already holds checkpoints of a run; continue it with --resume {out_dir}, "
                          f"or set out_dir to a new folder")
    if resume is not None and load_config(resume) != model_config:
        raise UnmaskError(f"{resume / CONFIG_FILE}: the checkpoint's model differs from the config's [model]")
    sharded = info.distributed and config.system.parallel == "fsdp"
    if info.is_main:
        remove_stale_temporaries(out_dir)

    model = _build_model(model_config, init_dir if resume is None else (None if sharded else resume),
                         config.seed, device)
    if config.system.compile:
        for layer in model.model.layers:
            layer.compile()
    wrapped = wrap_model(model, config.system.parallel, info)
    optimizer = make_optimizer(model, config.optim, device)
    objective = make_objective(config, model_config)
    loader = WindowLoader(shards, config.data.window_len, config.data.batch_size, rank=info.rank,
                          world_size=info.world_size, seed=config.seed)
    # (on resume its position comes from the checkpoint, below)
    anchor_loader = _anchor_loader(config, init_state if resume is None else None, shards.vocab_size, info)
    tokens_per_step = config.data.window_len * loader.global_batch * config.data.grad_accum
    if anchor_loader is not None:
        tokens_per_step += anchor_loader.window_len * anchor_loader.global_batch * config.data.grad_accum
    inherited = int(state.get("inherited_tokens", init_state.get("total_tokens", 0)))
    # The longest window the weights were trained on, this run's or an ancestor's: evaluations fit held-out
    # examples to it (evals/completers.py), so a short fine-tune (e.g. distillation on 192-token records) of a
    # model trained on 256-token windows is still evaluated at 256.
    context_len = max(config.data.window_len, recorded_context_len(state), recorded_context_len(init_state),
                      anchor_loader.window_len if anchor_loader is not None else 0)
    if config.optim.max_tokens:
        config.optim.max_steps = math.ceil((config.optim.max_tokens - inherited) / tokens_per_step)
        if config.optim.max_steps <= 0:
            raise ConfigError(f"optim.max_tokens {config.optim.max_tokens} is already spent by init_from "
                              f"({inherited} tokens)")
    scheduler = make_scheduler(optimizer, config.optim)
    step, tokens = 0, 0
    if resume is not None:
        step, tokens = int(state["step"]), int(state["tokens_seen"])
        loader.load_state_dict(state["loader"])
        if anchor_loader is not None:
            anchor_loader.load_state_dict(state["mdlm_loader"])
        load_training_state(resume, optimizer, scheduler, info)
        if sharded:
            load_sharded_state(model, optimizer, str(resume / SHARDED_DIR))
    elif init_state.get("loader") and config.init_continue_data:
        try:
            loader.load_state_dict(init_state["loader"])
        except UnmaskError as e:
            raise UnmaskError(f"init_from {init_dir}: {e}; set init_continue_data = false to start the data "
                              f"from the beginning") from None

    validator = Validator(config.data.shards, config.data.window_len, config.eval.windows, info)
    log = JsonlLog(out_dir / "log.jsonl", enabled=info.is_main)
    if resume is not None:
        log.truncate_after(step)
    commit = git_commit() if info.is_main else None
    flops_per_token = _flops_per_token(model_config, objective, config.data.window_len)
    log.write({"kind": "start", "step": step, "resumed_from": str(resume) if resume else None,
               "init_from": str(init_dir) if init_dir else None, "inherited_tokens": inherited,
               "num_parameters": model_config.num_parameters(), "world_size": info.world_size,
               "device": str(device), "tokens_per_step": tokens_per_step, "flops_per_token": flops_per_token,
               "git_commit": commit, "config": config.to_dict()})
    autocast = _autocast(config, device)
    rows = slice(info.rank * config.data.batch_size, (info.rank + 1) * config.data.batch_size)

    def trainer_state() -> dict:
        return {"step": step, "tokens_seen": tokens, "inherited_tokens": inherited,
                "total_tokens": inherited + tokens, "context_len": context_len, "loader": loader.state_dict(),
                "world_size": info.world_size, "objective": config.objective, "git_commit": commit,
                "config": config.to_dict(), "val": last_val,
                **({"mdlm_loader": anchor_loader.state_dict()} if anchor_loader is not None else {})}

    def checkpoint() -> Path:
        return save_checkpoint(out_dir=out_dir, step=step, model=wrapped, model_config=model_config,
                               optimizer=optimizer, scheduler=scheduler, trainer_state=trainer_state(), info=info,
                               parallel=config.system.parallel, tokenizer=tokenizer, keep=config.checkpoint.keep)

    def validate() -> dict:
        result = validator.run(model, objective, batch_size=config.data.batch_size,
                               bound_samples=config.eval.bound_samples, seed=config.eval.seed, autocast=autocast())
        record = {"kind": "val", "step": step, "tokens": tokens, "total_tokens": inherited + tokens, **result}
        log.write(record)
        progress.message(f"step {step}: val loss {result['val_loss']:.4f}, {result['val_metric']} "
                         f"{result['val_nats_per_token']:.4f} nats/token"
                         + (f", {result['val_bits_per_byte']:.4f} bits/byte" if "val_bits_per_byte" in result else ""))
        return result

    max_steps = config.optim.max_steps
    progress = Progress(max_steps, step, config.system.progress, info.is_main)
    stopper = StopSignal()
    last_val, last_checkpoint, stop = None, None, None
    start_step, start_time = step, time.perf_counter()
    last_log_time, last_log_tokens = start_time, tokens
    loss_sum, steps_in_log = torch.zeros((), device=device), 0
    try:
        while step < max_steps:
            wrapped.train()
            try:
                for micro in range(config.data.grad_accum):
                    x = loader.next_batch().to(device, non_blocking=True)
                    extra = {} if anchor_loader is None else {"anchor": anchor_loader.next_batch().to(device)}
                    draws = Draws(derive_seed(config.seed, step, micro), loader.global_batch, rows, device)
                    last_micro = micro == config.data.grad_accum - 1
                    with _gradient_sync(wrapped, last_micro, sharded):
                        with autocast():  # the forward only: backward runs in the forward's dtypes
                            loss = objective.loss(wrapped, x, draws, **extra) / config.data.grad_accum
                        loss.backward()
                    loss_sum += loss.detach()
                clip = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            except torch.cuda.OutOfMemoryError:
                raise UnmaskError(_oom_message(config, step, device)) from None
            except RuntimeError as e:
                if "out of memory" in str(e) or "can't allocate memory" in str(e):
                    raise UnmaskError(_oom_message(config, step, device)) from None
                raise
            step += 1
            tokens += tokens_per_step
            steps_in_log += 1

            record = None
            if step % config.system.log_every == 0 or step == max_steps:
                now = time.perf_counter()
                mean_loss = all_reduce(loss_sum.clone()).item() / info.world_size / steps_in_log
                norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
                tokens_per_s = (tokens - last_log_tokens) / max(now - last_log_time, 1e-9)
                record = {"kind": "train", "step": step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                          "grad_norm": norm.item(), "tokens": tokens, "total_tokens": inherited + tokens,
                          "tokens_per_s": tokens_per_s, "elapsed_s": now - start_time,
                          "eta_s": (max_steps - step) * (now - start_time) / (step - start_step),
                          "tflops": flops_per_token * tokens_per_s / 1e12}
                if config.system.peak_tflops:
                    record["mfu"] = record["tflops"] / config.system.peak_tflops
                log.write(record)
                loss_sum.zero_()
                steps_in_log, last_log_time, last_log_tokens = 0, now, tokens
            progress.update(step, record)

            # Signals and the clock differ between ranks, and every rank must agree to stop at the same
            # step (or the collectives below hang): ranks compare them at log steps only, sparing the
            # accelerator a synchronisation every step. stop_at_step is the same on every rank.
            code = 0
            if record is not None or not info.distributed:
                if config.system.time_limit_s and time.perf_counter() - start_time >= config.system.time_limit_s:
                    code = 2
                if stopper.signum:
                    code = 3
                if info.distributed:
                    code = int(all_reduce(torch.tensor([code], device=device), op="max").item())
            if start_step < config.system.stop_at_step <= step:  # a step already passed stops nothing
                code = max(code, 1)
            stop = STOP_REASONS[code]
            if (config.eval.every and step % config.eval.every == 0) or step == max_steps:
                last_val = validate()
            if (config.checkpoint.every and step % config.checkpoint.every == 0) or step == max_steps or stop:
                last_checkpoint = checkpoint()
            if stop:
                break
    finally:
        stopper.restore()
        progress.close()

    if step >= max_steps:
        status, exit_code = "finished", 0
        last_checkpoint = last_checkpoint or (list_checkpoints(out_dir / CHECKPOINTS_DIR) or [(0, None)])[-1][1]
        if info.is_main and last_checkpoint is not None:
            _export(last_checkpoint, out_dir)
    elif stop == "signal":
        status, exit_code = "interrupted", 128 + stopper.signum
    else:
        status, exit_code = "stopped", 0
    log.write({"kind": "stop", "step": step, "status": status, "reason": stop, "checkpoint": str(last_checkpoint)})
    if status != "finished":
        progress.message(f"stopped at step {step} ({stop}); checkpoint {last_checkpoint}; "
                         f"continue with: unmask train --resume {out_dir}")
    return TrainResult(status, step, out_dir, last_checkpoint, exit_code)


def _anchor_loader(config: TrainConfig, init_state: dict | None, vocab_size: int,
                   info: DistInfo) -> WindowLoader | None:
    """The real-code windows of a distillation run's MDLM term (distill.mdlm_shards), or None.

    With distill.mdlm_continue_data they start where init_from's run stopped reading the same shards, so the
    student trains on windows it has not seen; the loader is seeded like that run's (config.seed). When init_from
    is itself a distillation run whose MDLM term read them, they go on from that term's loader (a second round of
    distillation reads the corpus where the first stopped)."""
    d = config.distill
    if config.objective != "distill" or not d.mdlm_shards:
        return None
    shards = TokenShards(d.mdlm_shards, "train")
    if shards.vocab_size != vocab_size:
        raise ConfigError(f"distill.mdlm_shards {d.mdlm_shards}: vocabulary of {shards.vocab_size}, the teacher "
                          f"records' is {vocab_size}")
    loader = WindowLoader(shards, d.mdlm_window_len, config.data.batch_size, rank=info.rank,
                          world_size=info.world_size, seed=config.seed)
    if d.mdlm_continue_data and init_state is not None:
        recorded = init_state.get("config") or {}
        if init_state.get("mdlm_loader") and _same_folder((recorded.get("distill") or {}).get("mdlm_shards"),
                                                          d.mdlm_shards):
            position = init_state["mdlm_loader"]
        elif init_state.get("loader") and _same_folder((recorded.get("data") or {}).get("shards"), d.mdlm_shards):
            position = init_state["loader"]
        else:
            raise ConfigError(f"distill.mdlm_continue_data: init_from {config.init_from} did not record reading "
                              f"{d.mdlm_shards}; set distill.mdlm_continue_data = false to start at its beginning")
        try:
            loader.load_state_dict(position)
        except UnmaskError as e:
            raise ConfigError(f"distill.mdlm_continue_data: {e}; match init_from's data.window_len, batch and seed, "
                              f"or set distill.mdlm_continue_data = false") from None
    return loader


def _same_folder(recorded: str | None, path: str) -> bool:
    return bool(recorded) and Path(recorded).resolve() == Path(path).resolve()


def _gradient_sync(wrapped, last_micro: bool, sharded: bool):
    """Skip the gradient all-reduce on all but the last micro-step of an accumulation."""
    if sharded:
        wrapped.set_requires_gradient_sync(last_micro)
        return contextlib.nullcontext()
    if hasattr(wrapped, "no_sync") and not last_micro:
        return wrapped.no_sync()
    return contextlib.nullcontext()


def _oom_message(config: TrainConfig, step: int, device: torch.device) -> str:
    return (f"out of memory on {device} at step {step} with data.batch_size={config.data.batch_size} and "
            f"data.window_len={config.data.window_len}: lower data.batch_size (raise data.grad_accum to keep the "
            f"same batch), data.window_len or the model size; on GPUs also system.dtype='bfloat16' or "
            f"system.parallel='fsdp'")
