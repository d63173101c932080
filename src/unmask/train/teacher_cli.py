"""`unmask teacher`: a diffusion model's own answers as token shards, the data of self-distillation.

    unmask teacher --model default --shards data/shards4k --out data/teacher4k --prompts 2048
    unmask train --config configs/default-distill.toml          # objective "distill" on that folder

The teacher decodes with the model's generation_config.json defaults unless sampler flags say otherwise.
See train/teacher.py for the record layout and objectives.SelfDistillation for the training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cpu_threads import HELP as THREADS_HELP


def register(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    from ..sampling.cli_args import add_sampler_arguments

    p = subparsers.add_parser(name, help=help_text, description=help_text,
                              epilog="Example: unmask teacher --model default --shards data/shards4k "
                                     "--out data/teacher4k --prompts 2048")
    p.add_argument("--model", default=None,
                   help="the teacher: a checkpoint folder or bundled name (default: 'default')")
    p.add_argument("--shards", type=Path, required=True, help="token shard folder to draw the prompts from")
    p.add_argument("--out", type=Path, required=True, help="output shard folder (written atomically)")
    p.add_argument("--prompts", type=int, default=2048, help="train records (default 2048)")
    p.add_argument("--val-prompts", type=int, default=64, help="val records, from the val split (default 64)")
    p.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per record (default 64)")
    p.add_argument("--answer-len", type=int, default=64, help="answer tokens per record (default 64)")
    p.add_argument("--batch-size", type=int, default=16, help="answers decoded together (default 16)")
    p.add_argument("--seed", type=int, default=0, help="which windows become prompts (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.add_argument("--threads", metavar="N", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sampler_arguments(p.add_argument_group("teacher's sampler (defaults: its generation_config.json)"),
                          exclude=("seed", "max_new_tokens", "stop", "stop_token_ids", "infill_length",
                                   "token_healing", "suffix_healing", "stop_at_block_end"))
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from ..cpu_threads import use_threads
    from ..model import load_model
    from ..sampling.cli_args import sampler_config_from_args
    from .teacher import TeacherSpec, write_teacher_shards

    use_threads(args.threads, args.device)
    spec = TeacherSpec(prompts=args.prompts, val_prompts=args.val_prompts, prompt_len=args.prompt_len,
                       answer_len=args.answer_len, batch_size=args.batch_size, seed=args.seed)
    spec.validate()
    lm = load_model(args.model, device=args.device)
    config = sampler_config_from_args(args, lm.generation_config)
    provenance = write_teacher_shards(lm.model, lm.tokenizer, args.shards, args.out, spec, config,
                                      teacher=str(lm.path), progress=not args.no_progress)
    print(json.dumps({"out": str(args.out), **provenance["teacher"]}, indent=2))
    return 0
