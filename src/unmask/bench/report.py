"""Ratios between measured rows, the Markdown tables, and the bench.md / bench.json files.

Every ratio is computed here from the rows' own measured figures (tokens/s of a fast case over tokens/s of
the vanilla case, or of the autoregressive case, at the same batch size), so the table can be checked
against the raw numbers in bench.json.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import UnmaskError


def add_ratios(rows: list[dict]) -> None:
    """Set speedup_vs_vanilla and speedup_vs_ar on each diffusion row (None where there is no reference)."""
    by = {(r["kind"], r["batch_size"]): r for r in rows if r["kind"] in ("vanilla", "ar")}
    for r in rows:
        for key, kind in (("speedup_vs_vanilla", "vanilla"), ("speedup_vs_ar", "ar")):
            ref = by.get((kind, r["batch_size"]))
            ok = r["model"] == "diffusion" and ref is not None and ref["tokens_per_s"] > 0
            r[key] = r["tokens_per_s"] / ref["tokens_per_s"] if ok else None


def _num(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def decode_table(rows: list[dict]) -> str:
    head = ["case", "batch", "tokens", "tokens/s", "tokens/forward", "forwards/s", "first token ms", "latency ms",
            "peak MiB", "exact match vs vanilla", "x vanilla", "x AR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["case"], str(r["batch_size"]), str(r["tokens"]), _num(r["tokens_per_s"], 1),
                 _num(r["tokens_per_forward"]), _num(r["forward_passes_per_s"], 1),
                 _num(1e3 * r["time_to_first_token_s"], 1), _num(1e3 * r["latency_s"], 1),
                 _num(r["peak_memory_bytes"] / 2**20, 0), _num(r["exact_match_vs_vanilla"]),
                 _num(r["speedup_vs_vanilla"]), _num(r["speedup_vs_ar"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shape_table(rows: list[dict]) -> str:
    head = ["step", "batch", "tokens fed", "keys", "ms/forward (measured)", "forwards/s (measured)",
            "floor ms (derived)", "x floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["step"], str(r["batch_size"]), str(r["tokens_fed"]), str(r["keys"]), _num(1e3 * r["seconds"], 3),
                 _num(r["forward_passes_per_s"], 1), _num(1e3 * r["floor_seconds"], 3), _num(r["x_floor"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def derived_table(rows: list[dict]) -> str:
    head = ["case (from --tokens-per-forward run)", "step", "batch", "tokens/forward (measured on a trained model)",
            "exact match vs vanilla", "forwards/s (measured here)", "tokens/s (derived)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["case"], r["step"], str(r["batch_size"]), _num(r["tokens_per_forward"]),
                 _num(r["exact_match_vs_vanilla"]), _num(r["forward_passes_per_s"], 1), _num(r["tokens_per_s"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(out: Path, markdown: str, data: dict) -> None:
    """bench.md and bench.json in `out` (created if needed), each written whole or not at all."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UnmaskError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    write_text_atomic(out / "bench.json", json.dumps(data, indent=2) + "\n")
    write_text_atomic(out / "bench.md", markdown + "\n")
