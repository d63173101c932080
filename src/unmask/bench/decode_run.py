"""Decode mode of `unmask bench`: load the models, run every case at every batch size, report.

The vanilla case runs first at each batch size: its outputs are the reference for every fast case's
exact-match rate, and its tokens/s the denominator of `x vanilla`; the autoregressive case is the
denominator of `x AR`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..errors import UnmaskError
from ..model import load_model
from .cases import build_cases, exact_match, summarize, timed_pass, warm_up
from .cli import parse_batch_sizes
from .hardware import PeakMemory, device_info, software_info
from .prompts import encode_prompts, load_prompts
from .report import add_ratios, decode_table, write_outputs

NOTES = [
    "tokens: generated tokens up to each answer's end-of-text (all cases decode greedily from the same prompt "
    "ids with the same new-token budget; prompts are cut to their last tokens to fit the context)",
    "forward_passes: every model call of the batch (a forward hook); tokens_per_forward: tokens / each "
    "request's own forward passes (passes in which it had a position to decide)",
    "time_to_first_token_s: from the batch's start to the request's first streamed final text; latency_s: to "
    "its completion; both the median over requests, then over repeats",
    "exact_match_vs_vanilla: fraction of requests whose tokens equal the vanilla (one token per step, no "
    "cache) decode at the same batch size; null for the autoregressive twin (a different model)",
    "speedup_vs_vanilla / speedup_vs_ar: this row's tokens_per_s over the vanilla / ar row's at the same batch",
    "wall times: median of the repeats after the warm-up, synchronised with the device; the repeats run in "
    "rounds, one pass of every case per round in alternating order",
]


def _dtype(name: str, device: torch.device) -> torch.dtype | None:
    if name == "float32":
        return torch.float32
    if name == "bfloat16" or device.type == "cuda":
        return torch.bfloat16
    return None  # a CPU keeps the stored dtype


def _load(name: str, role: str, device: torch.device, dtype) -> object:
    lm = load_model(name, device=device, dtype=dtype)
    causal = lm.model.config.attention == "causal"
    flag = "--ar-model" if role == "ar" else "--model"
    if role == "ar" and not causal:
        raise UnmaskError(f"{flag} {name}: not an autoregressive model (attention {lm.model.config.attention})")
    if role == "diffusion" and causal:
        raise UnmaskError(f"{flag} {name}: an autoregressive model; give a diffusion model (and this one as "
                          "--ar-model)")
    return lm


def _model_info(lm) -> dict:
    cfg = lm.model.config
    p = next(lm.model.parameters())
    return {"name": lm.name, "path": str(lm.path), "attention": cfg.attention, "block_size": cfg.block_size,
            "shift_logits": cfg.shift_logits, "parameters": sum(x.numel() for x in lm.model.parameters()),
            "dtype": str(p.dtype).replace("torch.", ""), "context": cfg.max_position_embeddings,
            "generation_config": lm.generation_config}


def _progress(total: int, disable: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="bench", unit="pass", file=sys.stderr, disable=disable)


def _measure_batch(cases, models, ids, batch: int, device: torch.device, args, peak: PeakMemory, bar) -> list[dict]:
    """Every case at one batch size: warm-ups first, then the timed passes in rounds, one pass of each case
    per round, alternating the order, so that a machine whose speed drifts (a shared VM) biases no case."""
    def tick(text: str) -> None:
        if bar is not None:
            bar.set_postfix_str(text)
            bar.update(1)

    if args.warmup:
        for case in cases:
            m = models[case.model]
            torch.manual_seed(args.seed)
            warm_up(m.model, m.tokenizer, case, ids[case.model], batch, device, args.warmup)
            tick(f"warm-up {case.name} batch {batch}")
    passes = {case.name: [] for case in cases}
    peaks = {case.name: 0 for case in cases}
    for r in range(args.repeats):
        for case in (cases if r % 2 == 0 else cases[::-1]):
            m = models[case.model]
            torch.manual_seed(args.seed)
            peak.reset()
            passes[case.name].append(timed_pass(m.model, m.tokenizer, case, ids[case.model], batch, device))
            peaks[case.name] = max(peaks[case.name], peak.read())
            tick(f"{case.name} batch {batch}, round {r + 1}")
    reference = next(passes[c.name][0].outputs for c in cases if c.kind == "vanilla")
    rows = []
    for case in cases:
        row = summarize(case, batch, passes[case.name], peaks[case.name])
        outputs = passes[case.name][0].outputs
        row["exact_match_vs_vanilla"] = exact_match(outputs, reference) if case.model == "diffusion" else None
        row["config"] = case.config.to_dict()
        rows.append(row)
    return rows


def run_decode(args: argparse.Namespace, device: torch.device) -> int:
    batch_sizes = parse_batch_sizes(args.batch_sizes, [1, 8])
    dtype = _dtype(args.dtype, device)
    model_name = args.model or "default"
    ar_name = args.ar_model
    if ar_name is None:
        ar_name = "default-ar" if model_name == "default" else "none"
    lm = _load(model_name, "diffusion", device, dtype)
    ar = _load(ar_name, "ar", device, dtype) if ar_name != "none" else None
    prompts = load_prompts(args.prompts, args.limit or None)
    ids = {"diffusion": encode_prompts(prompts, lm.tokenizer, lm.model.config.max_position_embeddings,
                                       args.max_new_tokens, "--model")}
    if ar is not None:
        ids["ar"] = encode_prompts(prompts, ar.tokenizer, ar.model.config.max_position_embeddings,
                                   args.max_new_tokens, "--ar-model")
    cases = build_cases(lm.model.config.attention, lm.generation_config, has_ar=ar is not None,
                        ar_generation_config=ar.generation_config if ar is not None else None,
                        max_new_tokens=args.max_new_tokens, seed=args.seed, threshold=args.threshold,
                        entropy_bound=args.entropy_bound)
    models = {"diffusion": lm, "ar": ar}
    peak = PeakMemory(device)
    rows = []
    bar = _progress(len(cases) * len(batch_sizes) * (args.repeats + (1 if args.warmup else 0)), args.no_progress)
    try:
        for batch in batch_sizes:
            rows += _measure_batch(cases, models, ids, batch, device, args, peak, bar)
    finally:
        if bar is not None:
            bar.close()
    add_ratios(rows)
    hardware = device_info(device)
    data = {
        "mode": "decode",
        "settings": {"model": model_name, "ar_model": ar_name, "prompts": args.prompts, "num_prompts": len(prompts),
                     "limit": args.limit, "max_new_tokens": args.max_new_tokens, "batch_sizes": batch_sizes,
                     "device": str(device), "dtype": args.dtype, "repeats": args.repeats, "warmup": args.warmup,
                     "seed": args.seed, "threshold": args.threshold, "entropy_bound": args.entropy_bound},
        "hardware": hardware, "software": software_info(), "peak_memory": peak.kind,
        "models": {"diffusion": _model_info(lm), "ar": _model_info(ar) if ar is not None else None},
        "rows": rows, "notes": NOTES,
    }
    title = (f"unmask bench: {model_name} vs vanilla" + (f" vs {ar_name}" if ar is not None else "") +
             f", {len(prompts)} prompts ({args.prompts}), {args.max_new_tokens} new tokens, greedy")
    where = (f"{hardware['gpu']['name']}" if hardware["gpu"] else
             f"{hardware['cpu_model']}, {hardware['cpu_cores']} cores, {hardware['torch_threads']} torch threads"
             + (f", OMP_WAIT_POLICY={hardware['omp_wait_policy']}" if hardware.get("omp_wait_policy") else ""))
    markdown = "\n\n".join([f"## {title}", f"Device: {where}; median of {args.repeats} runs after {args.warmup} "
                            f"warm-up; peak memory: {peak.kind}.", decode_table(rows)])
    print(markdown)
    if args.out is not None:
        write_outputs(args.out, markdown, data)
        print(f"\nwrote {args.out / 'bench.md'} and {args.out / 'bench.json'}", file=sys.stderr)
    return 0
