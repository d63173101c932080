"""The speed-quality frontier: one task over a grid of sampler settings, and over the autoregressive twin.

    unmask eval sweep humaneval --model DIR --grid threshold=0.5,0.7,0.9,1.0 --grid block_length=8,32 \\
        --ar-model DIR_AR --limit 40 --out runs/sweep-he

Every grid point (and the twin) is an ordinary eval written to OUT/points/NAME.json, so an interrupted
sweep resumes point by point and sample by sample. The sweep then writes OUT/frontier.md (a table),
OUT/frontier.png (pass@1 against tokens/s and against tokens per forward pass, the Pareto-optimal
points joined by a line) and OUT/sweep.json. The plot is what a user reads to choose settings: the
points on the line are the ones no other setting beats on both speed and quality.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UnmaskError

AR_TWIN = "ar-twin"


def parse_grid(specs: list[str], field_types: dict[str, Any]) -> list[dict[str, Any]]:
    """["threshold=0.5,0.9", "block_length=8,32"] -> the 4 combinations as override dicts.

    `field_types` maps each allowed name to its SamplerConfig default (whose type parses the values);
    "none" means None for optional fields.
    """
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise UnmaskError(f"--grid {spec!r}: expected NAME=V1,V2,... (e.g. threshold=0.5,0.9)")
        if name not in field_types:
            raise UnmaskError(f"--grid {spec!r}: {name!r} is not a sampler setting "
                              f"(one of {', '.join(sorted(field_types))})")
        if name in axes:
            raise UnmaskError(f"--grid: {name!r} is given twice")
        axes[name] = [_parse_value(name, v.strip(), field_types[name]) for v in values.split(",")]
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())] or [{}]


def _parse_value(name: str, text: str, default: Any) -> Any:
    if text.lower() == "none":
        return None
    kinds = [type(default)] if default is not None else [int, float, str]
    for kind in kinds:
        try:
            if kind is bool:
                return text.lower() in ("1", "true", "yes")
            return kind(text)
        except ValueError:
            continue
    raise UnmaskError(f"--grid {name}: cannot read {text!r} as a {type(default).__name__}")


def point_name(overrides: dict[str, Any]) -> str:
    text = ",".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"
    return re.sub(r"[^A-Za-z0-9_.,=-]", "_", text)


def run_sweep(points: list[dict[str, Any]], evaluate: Callable[[dict[str, Any], Path], dict],
              out_dir: str | os.PathLike, *, evaluate_ar: Callable[[Path], dict] | None = None,
              log=print) -> list[dict]:
    """Run `evaluate(overrides, results_path)` at every point (and `evaluate_ar` for the twin); write the
    table, plot and summary; return one row per point."""
    out_dir = Path(out_dir)
    if out_dir.suffix == ".json":
        raise UnmaskError(f"--out {out_dir}: a sweep writes a folder; give a folder name")
    (out_dir / "points").mkdir(parents=True, exist_ok=True)
    rows = []
    runs = [(point_name(p), p) for p in points] + ([(AR_TWIN, None)] if evaluate_ar else [])
    for n, (name, overrides) in enumerate(runs, 1):
        log(f"sweep point {n}/{len(runs)}: {name}")
        path = out_dir / "points" / f"{name}.json"
        results = evaluate(overrides, path) if overrides is not None else evaluate_ar(path)
        rows.append(_row(name, overrides, results, path))
    frontier = pareto_front(rows, "tokens_per_second")
    for r in rows:
        r["on_frontier"] = r["name"] in frontier
    (out_dir / "frontier.md").write_text(markdown_table(rows), encoding="utf-8")
    summary = {"points": rows, "frontier_tokens_per_second": frontier,
               "frontier_tokens_per_forward": pareto_front(rows, "tokens_per_forward")}
    (out_dir / "sweep.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plotted = plot_frontier(rows, out_dir / "frontier.png")
    log(f"wrote {out_dir / 'frontier.md'}"
        + (f" and {plotted}" if plotted else " (no plot: matplotlib is not installed)"))
    return rows


def _row(name: str, overrides: dict | None, results: dict, path: Path) -> dict:
    metrics, speed = results["metrics"], results["speed"]
    row = {"name": name, "settings": overrides if overrides is not None else "autoregressive twin",
           "pass@1": metrics.get("pass@1"), "compile_rate": metrics.get("compile_rate"),
           "tokens_per_second": speed["tokens_per_second"], "tokens_per_forward": speed["tokens_per_forward"],
           "results": str(path)}
    for group, scores in results.get("by_group", {}).items():
        row[f"{group} pass@1"] = scores["metrics"].get("pass@1")
    return row


def pareto_front(rows: list[dict], speed_key: str) -> list[str]:
    """Names of the points that no other point beats on both pass@1 and speed (ties kept)."""
    usable = [r for r in rows if r["pass@1"] is not None and r[speed_key] is not None]
    front = []
    for r in usable:
        dominated = any(o is not r and o["pass@1"] >= r["pass@1"] and o[speed_key] >= r[speed_key]
                        and (o["pass@1"] > r["pass@1"] or o[speed_key] > r[speed_key]) for o in usable)
        if not dominated:
            front.append(r["name"])
    return front


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k.endswith(" pass@1")]
    cols = ["name", "pass@1", *extra, "compile_rate", "tokens_per_second", "tokens_per_forward", "on_frontier"]
    lines = ["| " + " | ".join(c.replace("_", " ") for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("yes" if c == "on_frontier" and r.get(c) else
                                       "" if c == "on_frontier" else _fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plot_frontier(rows: list[dict], path: Path) -> Path | None:
    """pass@1 against tokens/s and against tokens per forward pass; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], "tokens_per_second", "tokens / s"),
                           (axes[1], "tokens_per_forward", "tokens per forward pass")):
        pts = [r for r in rows if r["pass@1"] is not None and r[key] is not None]
        for r in pts:
            twin = r["name"] == AR_TWIN
            ax.scatter(r[key], r["pass@1"], marker="s" if twin else "o", color="tab:red" if twin else "tab:blue",
                       zorder=3)
            ax.annotate(r["name"], (r[key], r["pass@1"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        front = sorted((r for r in pts if r["name"] in pareto_front(rows, key)), key=lambda r: r[key])
        if len(front) > 1:
            ax.plot([r[key] for r in front], [r["pass@1"] for r in front], color="tab:blue", alpha=0.5,
                    label="frontier")
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("pass@1")
        ax.grid(alpha=0.3)
    fig.suptitle("speed-quality frontier (square: autoregressive twin)")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def sampler_field_types() -> dict[str, Any]:
    """The SamplerConfig fields a grid may vary, with their defaults."""
    from ..sampling import SamplerConfig

    skip = {"seed", "stop", "stop_token_ids", "infill_candidates"}  # seed and stops: set per sample by the runner
    return {f.name: f.default for f in dataclasses.fields(SamplerConfig) if f.name not in skip}
