"""Shape mode of `unmask bench`: forward passes per step type for a model shape with random weights.

Measured: seconds per forward pass of each step type (shapes.py) and the device's copy bandwidth.
Derived: the floor (weight bytes read per pass / bandwidth), and, given a decode-mode bench.json of a
trained model (--tokens-per-forward), tokens/s = measured forwards/s x that model's measured tokens per
forward pass at its measured exact-match rate. The table labels each.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ..errors import UnmaskError
from .cli import parse_batch_sizes
from .hardware import available_memory_bytes, device_info, memory_bandwidth, software_info
from .report import derived_table, shape_table, write_outputs
from .shapes import check_fits, check_steps, make_steps, parameter_bytes, random_model, run_step, shape_config
from .timing import median, seconds_per_call

# Which step type a decode-mode case repeats (prefix-cache steps feed a length that varies with the block).
CASE_STEP = {"none": "full", "dual": "dual block", "dual-lazy": "dual block", "block": "block cache", "kv": "ar step"}


def derive(rows: list[dict], path) -> list[dict]:
    """Tokens/s for each case of a trained model's bench.json, from this run's forwards/s of its step type."""
    try:
        data = json.loads(path.read_text())
        cases = [r for r in data["rows"] if r["batch_size"] == min(x["batch_size"] for x in data["rows"])]
    except (OSError, ValueError, KeyError, TypeError) as e:
        what = e.__class__.__name__
        raise UnmaskError(f"--tokens-per-forward {path}: not a decode-mode bench.json ({what})") from None
    out = []
    for case in cases:
        step = CASE_STEP.get(case.get("config", {}).get("cache"))
        for r in rows:
            if r["step"] == step:
                out.append({"case": case["case"], "step": step, "batch_size": r["batch_size"],
                            "tokens_per_forward": case["tokens_per_forward"],
                            "exact_match_vs_vanilla": case.get("exact_match_vs_vanilla"),
                            "forward_passes_per_s": r["forward_passes_per_s"],
                            "tokens_per_s": r["forward_passes_per_s"] * case["tokens_per_forward"]})
    return out


def run_shape(args: argparse.Namespace, device: torch.device) -> int:
    batch_sizes = parse_batch_sizes(args.batch_sizes, [1, 8, 32])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    config, full_layers = shape_config(args.shape, layers=args.layers, context=args.context)
    check_steps(args.context, args.block)
    check_fits(args.shape, config, full_layers, dtype, max(batch_sizes), args.context, available_memory_bytes(device),
               args.block)
    bandwidth = memory_bandwidth(device)
    model = random_model(config, device, dtype, args.seed)
    total_bytes, read_bytes = parameter_bytes(config, dtype)
    floor = read_bytes / bandwidth
    truncated = config.num_hidden_layers < full_layers
    gen = torch.Generator(device=device).manual_seed(args.seed)
    rows = []
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(batch_sizes) * 4, desc="bench", unit="step", file=sys.stderr, disable=args.no_progress)
    except ImportError:
        bar = None
    for batch in batch_sizes:
        for step in make_steps(model, batch, args.context, device, gen, args.block):
            times = seconds_per_call(lambda: run_step(model, step), device, warmup=args.warmup, repeats=args.repeats)
            t = median(times)
            rows.append({"step": step.name, "batch_size": batch, "tokens_fed": step.tokens_fed * batch,
                         "keys": step.keys, "seconds": t, "seconds_repeats": times, "forward_passes_per_s": 1 / t,
                         "floor_seconds": floor, "x_floor": t / floor})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    derived = derive(rows, args.tokens_per_forward) if args.tokens_per_forward is not None else []
    hardware = device_info(device)
    label = (f"{args.shape} TRUNCATED to {config.num_hidden_layers} of {full_layers} layers (figures are for the "
             "truncated model, not the full shape)" if truncated else args.shape)
    data = {
        "mode": "shape", "shape": args.shape, "truncated": truncated, "layers_built": config.num_hidden_layers,
        "layers_full": full_layers, "config": {k: v for k, v in vars(config).items()},
        "dtype": str(dtype).replace("torch.", ""), "parameter_bytes": total_bytes, "weight_bytes_read": read_bytes,
        "bandwidth_bytes_per_s": bandwidth, "floor_seconds": floor,
        "settings": {"batch_sizes": batch_sizes, "context": args.context, "block": args.block, "device": str(device),
                     "repeats": args.repeats, "warmup": args.warmup, "seed": args.seed, "layers": args.layers,
                     "tokens_per_forward": str(args.tokens_per_forward) if args.tokens_per_forward else None},
        "hardware": hardware, "software": software_info(), "rows": rows, "derived": derived,
        "notes": ["measured: seconds per forward pass (median of repeats after warm-up) and copy bandwidth",
                  "derived: floor = weight bytes read per pass / measured bandwidth (KV-cache and activation "
                  "traffic not counted, so at large batch or long context compute dominates and x floor grows)",
                  "derived: tokens/s = measured forwards/s x tokens per forward measured on a trained model "
                  "(the --tokens-per-forward file), at that model's stated exact match vs one token per step"],
    }
    where = (hardware["gpu"]["name"] if hardware["gpu"] else
             f"{hardware['cpu_model']}, {hardware['cpu_cores']} cores, {hardware['torch_threads']} torch threads"
             + (f", OMP_WAIT_POLICY={hardware['omp_wait_policy']}" if hardware.get("omp_wait_policy") else ""))
    parts = [f"## unmask bench --shape {label}, random weights, {data['dtype']}, context {args.context}, "
             f"block {args.block}",
             f"Device: {where}. Weights read per pass {read_bytes / 2**20:,.1f} MiB; measured copy bandwidth "
             f"{bandwidth / 1e9:.1f} GB/s; floor {1e3 * floor:.3f} ms per pass (derived).", shape_table(rows)]
    if derived:
        parts += ["Derived tokens/s (measured forwards/s here x tokens/forward measured on a trained model):",
                  derived_table(derived)]
    elif args.tokens_per_forward is None:
        parts.append("Tokens/s is not derived: pass --tokens-per-forward BENCH_JSON from a decode-mode run of a "
                     "trained model.")
    markdown = "\n\n".join(parts)
    print(markdown)
    if args.out is not None:
        write_outputs(args.out, markdown, data)
        print(f"\nwrote {args.out / 'bench.md'} and {args.out / 'bench.json'}", file=sys.stderr)
    return 0
