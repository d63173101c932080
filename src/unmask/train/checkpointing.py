"""Training checkpoints: a model checkpoint folder plus everything needed to resume exactly.

    OUT_DIR/checkpoints/step-00000100/
        config.json, model.safetensors, generation_config.json, tokenizer.json   (unmask.model format)
        training_state.pt        optimizer (unless FSDP), scheduler             (rank 0)
        rng_state_rank{R}.pt     Python, NumPy and torch RNG states              (every rank)
        distributed/             FSDP only: sharded model + optimizer (torch.distributed.checkpoint)
        trainer_state.json       step, tokens, data-loader position, full config, git commit;
                                 written last, so a folder without it is not a checkpoint

Every rank writes into `.step-N.tmp` beside the target; rank 0 renames it into place once all
ranks are done, so a crash or kill at any moment leaves the previous checkpoints untouched and
never a half-written `step-N`. Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UnmaskError
from ..model import ModelConfig, Transformer, save_pretrained
from .distributed import DistInfo, barrier, full_model_state, save_sharded_state

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
TRAINING_STATE_FILE = "training_state.pt"
SHARDED_DIR = "distributed"
FORMAT = "unmask-train-v1"


def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS_DIR / f"step-{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with trainer_state.json) directly under `root`, oldest first."""
    found = []
    root = Path(root)
    if root.is_dir():
        for path in root.iterdir():
            name = path.name
            if name.startswith("step-") and name[5:].isdigit() and (path / TRAINER_STATE_FILE).is_file():
                found.append((int(name[5:]), path))
    return sorted(found)


def resolve_resume(path: str | os.PathLike) -> Path:
    """A checkpoint folder from --resume: the folder itself, or the newest checkpoint of a run folder."""
    path = Path(path)
    if not path.is_dir():
        raise UnmaskError(f"--resume {path}: no such folder")
    if (path / TRAINER_STATE_FILE).is_file():
        return path
    for root in (path / CHECKPOINTS_DIR, path):
        found = list_checkpoints(root)
        if found:
            return found[-1][1]
    raise UnmaskError(f"--resume {path}: not a training checkpoint (no {TRAINER_STATE_FILE}, and no "
                      f"{CHECKPOINTS_DIR}/step-N folders with one); to start from a model's weights instead, "
                      f"set init_from")


def read_trainer_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    path = Path(checkpoint) / TRAINER_STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UnmaskError(f"{path}: unreadable ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UnmaskError(f"{path}: not an unmask training state (format {FORMAT!r} expected)")
    return state


def recorded_context_len(trainer_state: dict[str, Any]) -> int:
    """The longest window the weights were trained on, as a trainer_state.json records it: its context_len
    (this run's window or a longer one of the runs it started from), else the run's own data.window_len;
    0 when it records neither."""
    if trainer_state.get("context_len"):
        return int(trainer_state["context_len"])
    return int(((trainer_state.get("config") or {}).get("data") or {}).get("window_len") or 0)


def git_commit() -> str | None:
    """The commit of the source tree that runs, with '-dirty' when it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _model_from_state(config: ModelConfig, weights: dict[str, torch.Tensor]) -> Transformer:
    """A CPU Transformer that uses the gathered tensors in place (no second copy)."""
    with torch.device("meta"):
        model = Transformer(config)
    model.load_state_dict(weights, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


def save_checkpoint(*, out_dir: str | os.PathLike, step: int, model: torch.nn.Module, model_config: ModelConfig,
                    optimizer: torch.optim.Optimizer, scheduler, trainer_state: dict[str, Any], info: DistInfo,
                    parallel: str, tokenizer: str | None, keep: int) -> Path:
    """Write checkpoint `step` atomically (collective: every rank calls it) and prune old ones."""
    final = checkpoint_dir(out_dir, step)
    tmp = final.parent / f".{final.name}.tmp"
    sharded = info.distributed and parallel == "fsdp"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    weights = full_model_state(model, parallel, info)
    if info.is_main:
        save_pretrained(_model_from_state(model_config, weights), tmp, tokenizer=tokenizer)
    del weights
    barrier()
    if sharded:
        save_sharded_state(model, optimizer, str(tmp / SHARDED_DIR))
    torch.save(rng_state(), tmp / f"rng_state_rank{info.rank}.pt")
    if info.is_main:
        torch.save({"optimizer": None if sharded else optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   tmp / TRAINING_STATE_FILE)
        state = {"format": FORMAT, **trainer_state, "sharded": sharded}
        (tmp / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    barrier()
    if info.is_main:
        old = None
        if final.exists():  # the same step saved again (e.g. stopped right after a resume): swap atomically
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for _, path in list_checkpoints(final.parent)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
    barrier()
    return final


def remove_stale_temporaries(out_dir: str | os.PathLike) -> None:
    """Drop `.step-N.tmp` folders a killed run left behind (they never count as checkpoints)."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if root.is_dir():
        for path in root.glob(".step-*"):
            shutil.rmtree(path, ignore_errors=True)


def load_training_state(checkpoint: Path, optimizer: torch.optim.Optimizer, scheduler, info: DistInfo) -> None:
    """Restore optimizer (unless sharded), scheduler and this rank's RNG states from a checkpoint."""
    path = checkpoint / TRAINING_STATE_FILE
    if not path.is_file():
        raise UnmaskError(f"{path}: missing; {checkpoint} is not a complete training checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = checkpoint / f"rng_state_rank{info.rank}.pt"
    if not rng.is_file():  # resumed with more ranks than saved: rank 0's states are the best guess
        rng = checkpoint / "rng_state_rank0.pt"
    set_rng_state(torch.load(rng, map_location="cpu", weights_only=True))
