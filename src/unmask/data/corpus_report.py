"""The counts a corpus build keeps (report.json) and the short summary it prints at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import filters


@dataclass
class BuildStats:
    files_seen: int = 0
    bytes_seen: int = 0
    files_kept: int = 0
    bytes_kept: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=lambda: {s: {"files": 0, "bytes": 0}
                                                                        for s in ("train", "val")})
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    contaminated: list[dict[str, Any]] = field(default_factory=list)

    def see(self, num_bytes: int) -> None:
        self.files_seen += 1
        self.bytes_seen += num_bytes

    def keep(self, split: str, num_bytes: int) -> None:
        self.files_kept += 1
        self.bytes_kept += num_bytes
        self.splits[split]["files"] += 1
        self.splits[split]["bytes"] += num_bytes

    def drop(self, reason: str, num_bytes: int) -> None:
        entry = self.dropped.setdefault(reason, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += num_bytes

    def to_report(self, sources: list[str], settings: dict, lsh: tuple[int, int], elapsed_s: float,
                  eval_set: str | None) -> dict[str, Any]:
        order = {reason: i for i, reason in enumerate(filters.DROP_REASONS)}
        dropped = dict(sorted(self.dropped.items(), key=lambda kv: order.get(kv[0], len(order))))
        return {
            "sources": sources,
            "files_seen": self.files_seen, "bytes_seen": self.bytes_seen,
            "files_kept": self.files_kept, "bytes_kept": self.bytes_kept,
            "splits": self.splits,
            "dropped": dropped,
            "decontamination": {"eval_set": eval_set, "ngram": settings["ngram"], "files": self.contaminated},
            "near_dedup": {"threshold": settings["near_dup_threshold"], "num_perm": settings["num_perm"],
                           "bands": lsh[0], "rows": lsh[1]},
            "elapsed_s": round(elapsed_s, 2),
            "config": settings,
        }


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:,.1f} MB"


def format_summary(report: dict[str, Any], out: str) -> str:
    """A few human-readable lines: what went in, what came out, and why the rest was dropped."""
    lines = [
        f"corpus: {out}  ({report['elapsed_s']:.0f} s)",
        f"  seen     {report['files_seen']:>9,} files  {_size(report['bytes_seen']):>12}",
        f"  kept     {report['files_kept']:>9,} files  {_size(report['bytes_kept']):>12}",
    ]
    for split, counts in report["splits"].items():
        lines.append(f"    {split:<6} {counts['files']:>9,} files  {_size(counts['bytes']):>12}")
    for reason, counts in report["dropped"].items():
        lines.append(f"  dropped  {counts['files']:>9,} files  {_size(counts['bytes']):>12}  {reason}")
    decontamination = report["decontamination"]
    contaminated = decontamination["files"]
    if decontamination["eval_set"] is None:
        lines.append("  decontamination: off")
    else:
        lines.append(f"  decontamination against {decontamination['eval_set']} ({decontamination['ngram']}-grams): "
                     f"{len(contaminated)} files dropped")
    for entry in contaminated[:10]:
        lines.append(f"    contaminated: {entry['path']} ~ {entry['task_id']} ({entry['num_ngrams']} shared "
                     f"{report['decontamination']['ngram']}-grams)")
    if len(contaminated) > 10:
        lines.append(f"    ... {len(contaminated) - 10} more in report.json")
    if report["splits"]["val"]["files"] == 0:
        lines.append("  note: the validation split is empty; raise --val-fraction for a corpus this small")
    return "\n".join(lines)
