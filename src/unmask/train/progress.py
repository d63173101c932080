"""What a run reports while it trains: a progress bar (tqdm when installed) and a JSON-lines log.

The log (OUT_DIR/log.jsonl) has one JSON object per line, each with a "kind":
    "start"  the resolved config, model size, world size, git commit (one per invocation)
    "train"  step, loss, learning rate, gradient norm, tokens, tokens/s, ETA, model TFLOP/s [, mfu]
    "val"    step, validation loss, nats per token of the bound (diffusion) or exact NLL (ar),
             bits per byte when the shards record their byte count
    "stop"   why this invocation ended, and where its last checkpoint is
On resume, records past the checkpoint's step (written by the run that was cut short) are dropped,
so the log reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


class JsonlLog:
    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Rewrite the log without the train/val records of steps after `step` (atomically)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if record.get("kind") in ("train", "val") and record.get("step", 0) > step:
                continue
            kept.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)


def read_log(path: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]


class Progress:
    """A tqdm bar on the main rank when tqdm is importable and wanted; else plain log lines."""

    def __init__(self, total: int, initial: int, enabled: bool, is_main: bool):
        self.bar = None
        self.is_main = is_main
        if enabled and is_main:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, record: dict[str, Any] | None) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if record is not None:
                self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:,.0f}",
                                     refresh=False)
        elif record is not None and self.is_main:
            eta = int(record["eta_s"])
            print(f"step {step}: loss {record['loss']:.4f}  lr {record['lr']:.3g}  "
                  f"{record['tokens_per_s']:,.0f} tok/s  eta {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}",
                  file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
