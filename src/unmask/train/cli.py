"""`unmask train`: train a masked-diffusion, block-diffusion or autoregressive model from a TOML config.

    unmask train --config configs/tiny-cpu.toml --set data.shards=data/shards
    unmask train --resume runs/tiny-mdlm                   # continue from the newest checkpoint
    torchrun --nproc_per_node 8 -m unmask.cli train --config configs/gpu-mdlm.toml --set system.parallel=fsdp

The config format is described in unmask/train/config.py and the configs/ folder.
"""

from __future__ import annotations

import argparse


def register(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text,
                                   epilog="Example: unmask train --config configs/tiny-cpu.toml "
                                          "--set data.shards=data/shards --set out_dir=runs/tiny")
    parser.add_argument("--config", metavar="FILE.toml",
                        help="training config (with --resume: replaces the checkpoint's saved config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.lr=3e-4 (repeatable)")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue a run: a run folder (its newest checkpoint) or one checkpoint folder")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config's seed)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..errors import UnmaskError
    from .checkpointing import CHECKPOINTS_DIR, read_trainer_state, resolve_resume
    from .config import load_config
    from .loop import train

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    resume = None
    if args.resume:
        resume = resolve_resume(args.resume)
        config = load_config(args.config, overrides, base=read_trainer_state(resume)["config"])
        # The run continues in the folder that holds the checkpoint, wherever it has been moved to.
        if resume.parent.name == CHECKPOINTS_DIR and not any(o.startswith("out_dir=") for o in overrides):
            config.out_dir = str(resume.parent.parent)
    elif args.config:
        config = load_config(args.config, overrides)
    else:
        raise UnmaskError("pass --config FILE.toml (or --resume DIR to continue a run)")
    result = train(config, resume=resume)
    return result.exit_code
