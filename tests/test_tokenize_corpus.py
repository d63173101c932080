"""Corpus -> token shards: documents joined by <|endoftext|>, read back with TokenShards and the window
loader, the same bytes for any worker count, provenance in index.json, and one-line errors."""

import numpy as np
import pytest
from tokenizers import trainers

from corpus_helpers import make_module, write
from unmask.cli import main
from unmask.data.corpus import CorpusConfig, build_corpus, iter_corpus_texts
from unmask.data.shards import TokenShards, WindowLoader, read_index
from unmask.data.special_tokens import ENDOFTEXT_ID
from unmask.data.tokenize_corpus import tokenize_corpus
from unmask.data.tokenizer import load_tokenizer, new_tokenizer, save_tokenizer, tokenizer_sha256, train_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    for i in range(24):
        write(root / f"m{i:02d}.py", make_module(i, num_functions=6))
    write(root / "odd.py", make_module(99) + "\nS = '\u00e9\U0001F600 <|endoftext|>'\r\n\t\n")
    base = tmp_path_factory.mktemp("work")
    corpus = base / "corpus"
    build_corpus([str(root)], corpus, CorpusConfig(val_fraction=0.25, decontaminate=False, progress=False))
    tok = train_tokenizer(iter_corpus_texts(corpus, "train"), 400)
    save_tokenizer(tok, base / "tok")
    shards = base / "shards"
    tokenize_corpus(corpus, base / "tok", shards, workers=2, progress=False)
    return corpus, base / "tok", shards


def documents(shards_dir, split):
    tokens = TokenShards(shards_dir, split).read(0, len(TokenShards(shards_dir, split)))
    assert tokens[-1] == ENDOFTEXT_ID
    return np.split(tokens, np.nonzero(tokens == ENDOFTEXT_ID)[0] + 1)[:-1]


def test_shards_decode_back_to_the_corpus(setup):
    corpus, tok_dir, shards = setup
    tok = load_tokenizer(tok_dir)
    for split in ("train", "val"):
        texts = list(iter_corpus_texts(corpus, split))
        docs = documents(shards, split)
        assert len(docs) == len(texts) > 0
        for doc, text in zip(docs, texts):
            assert tok.decode(doc[:-1].tolist(), skip_special_tokens=False) == text
    assert TokenShards(shards, "train").arrays[0].dtype == np.uint16


def test_index_provenance(setup):
    corpus, tok_dir, shards = setup
    index = read_index(shards)
    for split in ("train", "val"):
        texts = list(iter_corpus_texts(corpus, split))
        assert index["num_bytes"][split] == sum(len(t.encode("utf-8")) for t in texts)
        assert index["num_docs"][split] == len(texts)
        assert index["num_tokens"][split] == len(TokenShards(shards, split))
        assert index["tokens_per_byte"][split] == pytest.approx(
            (index["num_tokens"][split] - len(texts)) / index["num_bytes"][split], abs=1e-5)
    assert index["eos_token_id"] == ENDOFTEXT_ID and index["vocab_size"] == 400
    assert index["tokenizer_sha256"] == tokenizer_sha256(load_tokenizer(tok_dir))
    assert index["corpus"] == str(corpus.resolve())


def test_same_shards_for_any_worker_count_and_tokenizer_object(setup, tmp_path):
    corpus, tok_dir, shards = setup
    tokenize_corpus(corpus, load_tokenizer(tok_dir), tmp_path / "one", workers=1, shard_tokens=1000, progress=False)
    for split in ("train", "val"):
        one = TokenShards(tmp_path / "one", split)
        many = TokenShards(shards, split)
        assert len(one.arrays) > 1 or split == "val"
        assert np.array_equal(one.read(0, len(one)), many.read(0, len(many)))
    assert read_index(tmp_path / "one")["tokenizer"] is None


def test_window_loader_reads_the_shards(setup):
    corpus, tok_dir, shards = setup
    loader = WindowLoader(TokenShards(shards, "train"), window_len=32, batch_size=4, seed=0)
    batch = loader.next_batch()
    assert batch.shape == (4, 32) and int(batch.max()) < 400


def run_tokenize(capsys, *argv):
    code = main(["corpus", "tokenize", *argv, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("unmask corpus: error:"), err
    return err


def test_cli_bad_input_leaves_nothing(setup, tmp_path, capsys):
    corpus, tok_dir, shards = setup
    out = str(tmp_path / "out")
    assert "nope: no such folder" in run_tokenize(capsys, str(tmp_path / "nope"), "--tokenizer", str(tok_dir),
                                                  "--out", out)
    assert "no such tokenizer file" in run_tokenize(capsys, str(corpus), "--tokenizer", str(tmp_path), "--out", out)
    foreign = new_tokenizer()
    foreign.train_from_iterator(["x = 1\n"], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|pad|>"]))
    save_tokenizer(foreign, tmp_path / "foreign")
    assert "special token <|endoftext|> is missing" in run_tokenize(capsys, str(corpus), "--tokenizer",
                                                                     str(tmp_path / "foreign"), "--out", out)
    blocker = write(tmp_path / "blocker", "x")
    assert "cannot write there" in run_tokenize(capsys, str(corpus), "--tokenizer", str(tok_dir),
                                                "--out", str(blocker / "s"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "foreign"]


def test_cli_tokenize_prints_counts(setup, tmp_path, capsys):
    corpus, tok_dir, shards = setup
    code = main(["corpus", "tokenize", str(corpus), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "s"),
                 "--workers", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "tokens/byte" in out and "val" in out
    assert (tmp_path / "s" / "index.json").is_file()
