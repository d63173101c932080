"""The corpus builder behind `unmask corpus build`, and the reader every later stage uses.

    unmask corpus build ~/src/some-repo --out data/corpus       # one or more SRC folders
    unmask corpus build --installed --out data/corpus           # this Python's stdlib + site-packages

Files stream through four stages: workers (a process pool, `--workers`) read each file and run the
quality filters, the decontamination check and the fingerprints; the main process then drops exact
and near duplicates (the first copy in walk order is kept), assigns the split from the file's hash,
and appends the text to the output shards. Memory stays flat except for the dedup indexes.

A corpus folder holds
    corpus.json          {"format": "unmask-corpus-v1", "splits": {"train": [{"file", "num_docs",
                          "num_bytes"}...], "val": [...]}, "config": ..., "sources": [...]}
    train-00000.jsonl    one {"path", "sha256", "text"} per kept file; val-00000.jsonl likewise
    manifest.jsonl       one {"path", "sha256", "bytes", "split"} per kept file
    dropped.jsonl        one {"path", "reason", "bytes", ...detail} per dropped file
    report.json          counts: files and bytes seen, kept, dropped per reason; decontaminated files
so later stages need only this folder, not the source trees. JSON is written ASCII-escaped: file
names that are not valid UTF-8 reach Python as lone surrogates, which only escaped JSON can hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import UnmaskError
from . import filters
from .corpus_report import BuildStats, format_summary
from .decontaminate import DEFAULT_NGRAM, Contamination, EvalNgrams, load_eval_ngrams
from .dedup import MinHasher, NearDupIndex, exact_key
from .ngrams import lexical_tokens, token_hashes
from .output import output_folder
from .parallel import Progress, ordered_map
from .sources import check_sources, installed_roots, iter_source_files

FORMAT = "unmask-corpus-v1"
INDEX_FILE = "corpus.json"
SPLITS = ("train", "val")


@dataclass
class CorpusConfig:
    extensions: tuple[str, ...] = (".py",)
    val_fraction: float = 0.01
    near_dup_threshold: float = 0.85
    num_perm: int = 128
    decontaminate: bool = True
    eval_sets: list[str] | None = None  # JSONL(.gz) problem files; None means HumanEval
    ngram: int = DEFAULT_NGRAM
    shard_bytes: int = 128 * 2**20
    filters: filters.FilterConfig = field(default_factory=filters.FilterConfig)
    workers: int = 1
    seed: int = 0
    progress: bool = True


def in_hash_sample(sha256: str, fraction: float, salt: str) -> bool:
    """Whether a file falls in a `fraction` of file hashes fixed by `salt` (deterministic, order-free)."""
    digest = hashlib.blake2b(f"{salt}:{sha256}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def split_of(sha256: str, val_fraction: float, seed: int) -> str:
    """'val' for a fixed `val_fraction` of file hashes (chosen by `seed`), else 'train'."""
    return "val" if in_hash_sample(sha256, val_fraction, str(seed)) else "train"


# ---- per-file work, run in the worker processes ------------------------------------------------

@dataclass
class FileResult:
    path: str
    num_bytes: int
    reason: str | None = None  # set when a filter dropped the file
    sha256: str = ""
    text: str | None = None
    exact_key: bytes = b""
    signature: np.ndarray | None = None
    contamination: Contamination | None = None


_WORKER: dict[str, Any] = {}


def _init_worker(filter_cfg: filters.FilterConfig, hasher: MinHasher, eval_ngrams: EvalNgrams | None) -> None:
    _WORKER.update(filters=filter_cfg, hasher=hasher, eval_ngrams=eval_ngrams)


def examine_file(path: str) -> FileResult:
    """Filter, decontaminate and fingerprint one file (uses the state set by _init_worker)."""
    cfg: filters.FilterConfig = _WORKER["filters"]
    try:
        size = os.path.getsize(path)
        if size > cfg.max_file_bytes:
            return FileResult(path, size, filters.TOO_LARGE)
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return FileResult(path, 0, filters.UNREADABLE)
    text = filters.decode_source(raw)
    reason = filters.NOT_UTF8 if text is None else filters.check_text(text, cfg)
    if reason:
        return FileResult(path, len(raw), reason)
    result = FileResult(path, len(raw), sha256=hashlib.sha256(raw).hexdigest(), text=text)
    if _WORKER["eval_ngrams"] is not None:
        result.contamination = _WORKER["eval_ngrams"].match(text)
        if result.contamination:
            result.text = None
            return result
    result.exact_key = exact_key(text)
    result.signature = _WORKER["hasher"].signature(token_hashes(lexical_tokens(text)))
    return result


def _examine_batch(paths: list[str]) -> list[FileResult]:
    return [examine_file(p) for p in paths]


def _batches(paths: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for path in paths:
        batch.append(path)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- writing ------------------------------------------------------------------------------------

class _JsonlShards:
    """Append JSON lines to `<split>-NNNNN.jsonl`, starting a new file after `shard_bytes` bytes of text."""

    def __init__(self, directory: Path, split: str, shard_bytes: int):
        self.directory, self.split, self.shard_bytes = directory, split, shard_bytes
        self.entries: list[dict[str, Any]] = []
        self._file = None

    def add(self, record: dict[str, Any], num_bytes: int) -> None:
        if self._file is None or self.entries[-1]["num_bytes"] >= self.shard_bytes:
            self.close()
            name = f"{self.split}-{len(self.entries):05d}.jsonl"
            self._file = open(self.directory / name, "wb")
            self.entries.append({"file": name, "num_docs": 0, "num_bytes": 0})
        self._file.write(json.dumps(record).encode("ascii") + b"\n")
        self.entries[-1]["num_docs"] += 1
        self.entries[-1]["num_bytes"] += num_bytes

    def close(self) -> list[dict[str, Any]]:
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.entries


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="ascii")


# ---- the build ----------------------------------------------------------------------------------

def build_corpus(sources: list[str], out: str | os.PathLike, cfg: CorpusConfig, installed: bool = False) -> dict:
    """Build a corpus folder at `out` from the SRC folders (and the installed Python when asked); returns the report."""
    roots, skip = list(check_sources(sources)), set()
    if installed:
        extra_roots, skip = installed_roots()
        roots += extra_roots
    if not roots:
        raise UnmaskError("no SRC folder given (name one or more, or pass --installed)")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise UnmaskError(f"--val-fraction {cfg.val_fraction}: must be in [0, 1)")
    if not 0.0 < cfg.near_dup_threshold <= 1.0:
        raise UnmaskError(f"--near-dup-threshold {cfg.near_dup_threshold}: must be in (0, 1]")
    for flag, value in (("--num-perm", cfg.num_perm), ("--ngram", cfg.ngram),
                        ("--max-file-bytes", cfg.filters.max_file_bytes)):
        if value < 1:
            raise UnmaskError(f"{flag} {value}: must be at least 1")
    eval_ngrams = load_eval_ngrams(cfg.eval_sets, cfg.ngram) if cfg.decontaminate else None
    with output_folder(out, INDEX_FILE) as tmp:
        return _build_into(tmp, roots, skip, cfg, eval_ngrams)


def _build_into(tmp: Path, roots: list[str], skip: set[str], cfg: CorpusConfig,
                eval_ngrams: EvalNgrams | None) -> dict:
    start = time.time()
    stats = BuildStats()
    exact_seen: set[bytes] = set()
    near = NearDupIndex(cfg.near_dup_threshold, cfg.num_perm)
    kept_paths: list[str] = []  # kept id -> path, to say what a near duplicate duplicates
    shards = {split: _JsonlShards(tmp, split, cfg.shard_bytes) for split in SPLITS}
    paths = iter_source_files(roots, cfg.extensions, skip)
    init = (cfg.filters, MinHasher(cfg.num_perm, cfg.seed), eval_ngrams)
    with open(tmp / "manifest.jsonl", "w", encoding="utf-8") as manifest, \
            open(tmp / "dropped.jsonl", "w", encoding="utf-8") as dropped, \
            Progress("corpus build", unit="file", enabled=cfg.progress) as bar:

        def drop(r: FileResult, reason: str, **detail: Any) -> None:
            stats.drop(reason, r.num_bytes)
            dropped.write(json.dumps({"path": r.path, "reason": reason, "bytes": r.num_bytes, **detail}) + "\n")

        for batch in ordered_map(_examine_batch, _batches(paths, 16), cfg.workers, initializer=_init_worker,
                                 initargs=init):
            for r in batch:
                stats.see(r.num_bytes)
                if r.reason:
                    drop(r, r.reason)
                elif r.contamination:
                    c = r.contamination
                    drop(r, filters.CONTAMINATED, task_id=c.task_id, num_ngrams=c.num_ngrams, example=c.example)
                    stats.contaminated.append({"path": r.path, "sha256": r.sha256, **dataclasses.asdict(c)})
                elif r.exact_key in exact_seen:
                    drop(r, filters.EXACT_DUPLICATE)
                elif match := near.check_and_add(r.signature):
                    exact_seen.add(r.exact_key)
                    drop(r, filters.NEAR_DUPLICATE, duplicate_of=kept_paths[match.kept_id],
                         jaccard=round(match.jaccard, 3))
                else:
                    exact_seen.add(r.exact_key)
                    kept_paths.append(r.path)
                    split = split_of(r.sha256, cfg.val_fraction, cfg.seed)
                    shards[split].add({"path": r.path, "sha256": r.sha256, "text": r.text}, r.num_bytes)
                    manifest.write(json.dumps({"path": r.path, "sha256": r.sha256, "bytes": r.num_bytes,
                                               "split": split}) + "\n")
                    stats.keep(split, r.num_bytes)
                bar.update(1, kept=stats.files_kept, MB=f"{stats.bytes_seen / 1e6:.0f}")
    entries = {split: shards[split].close() for split in SPLITS}
    if stats.files_seen == 0:
        raise UnmaskError(f"no {'/'.join(cfg.extensions)} files found under {', '.join(roots)}")
    if stats.files_kept == 0:
        reasons = ", ".join(f"{reason}: {counts['files']}" for reason, counts in stats.dropped.items())
        raise UnmaskError(f"empty corpus: all {stats.files_seen} files were dropped ({reasons})")
    settings = dataclasses.asdict(cfg)
    settings.pop("progress")
    settings["extensions"] = list(cfg.extensions)  # as JSON reads it back
    _write_json(tmp / INDEX_FILE, {"format": FORMAT, "splits": entries, "sources": roots, "config": settings})
    report = stats.to_report(roots, settings, lsh=(near.bands, near.rows), elapsed_s=time.time() - start,
                             eval_set=eval_ngrams.name if eval_ngrams else None)
    _write_json(tmp / "report.json", report)
    return report


# ---- reading ------------------------------------------------------------------------------------

def read_corpus_index(corpus_dir: str | os.PathLike) -> dict:
    path = Path(corpus_dir) / INDEX_FILE
    if not Path(corpus_dir).is_dir():
        raise UnmaskError(f"CORPUS {corpus_dir}: no such folder")
    if not path.is_file():
        raise UnmaskError(f"{path}: missing (not a corpus folder; make one with 'unmask corpus build')")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnmaskError(f"{path}: not valid JSON ({e})") from None
    if index.get("format") != FORMAT:
        raise UnmaskError(f"{path}: unknown corpus format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def iter_corpus_records(corpus_dir: str | os.PathLike, split: str) -> Iterator[dict]:
    """The {"path", "sha256", "text"} records of one split, in build order, streamed from disk."""
    index = read_corpus_index(corpus_dir)
    if split not in index["splits"]:
        raise UnmaskError(f"{corpus_dir}: no split {split!r} (have {sorted(index['splits'])})")
    for entry in index["splits"][split]:
        path = Path(corpus_dir) / entry["file"]
        try:
            with open(path, "rb") as f:
                for line in f:
                    yield json.loads(line)
        except FileNotFoundError:
            raise UnmaskError(f"{path}: missing, though {INDEX_FILE} lists it") from None


def iter_corpus_texts(corpus_dir: str | os.PathLike, split: str) -> Iterator[str]:
    """The text of every file of one split ("train" or "val")."""
    for record in iter_corpus_records(corpus_dir, split):
        yield record["text"]


__all__ = ["CorpusConfig", "build_corpus", "format_summary", "in_hash_sample", "iter_corpus_records",
           "iter_corpus_texts", "read_corpus_index", "split_of"]
