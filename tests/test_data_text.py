"""Vocab and tokenizers: exact encode/decode round trips (property-based), specials, save/load."""

import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnnkit.data import (
    BPETokenizer,
    CharTokenizer,
    DataError,
    Vocab,
    WordTokenizer,
    load_tokenizer,
)
from rnnkit.data.vocab import SPECIALS

CORPUS = [
    "To be, or not to be, that is the question:\n",
    "Whether 'tis nobler in the mind to suffer\n",
    "The slings and arrows of outrageous fortune,\tor to take arms...  ",
    "¿Qué es la vida? Un frenesí. 漢字 😀",
]


def test_vocab_specials_frequency_order_and_cutoff():
    vocab = Vocab.build([["b", "a", "b", "c", "b", "a"]], min_freq=2)
    assert vocab.tokens == [*SPECIALS, "b", "a"]  # c seen once: cut; b before a (more frequent)
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert vocab.encode(["a", "zzz"], bos=True, eos=True) == [2, 5, 1, 3]
    assert vocab.decode([2, 5, 1, 3, 0, 0]) == ["a", "<unk>"]
    assert vocab.decode([2, 5, 3], skip_specials=False) == ["<bos>", "a", "<eos>"]
    assert Vocab.build([list("aabbbc")], max_size=6).tokens == [*SPECIALS, "b", "a"]


def test_vocab_save_load(tmp_path):
    vocab = Vocab.build([["é", "😀", "\n", "word"]])
    vocab.save(tmp_path / "vocab.json")
    assert Vocab.load(tmp_path / "vocab.json") == vocab
    (tmp_path / "bad.json").write_text('{"kind": "scaler"}')
    with pytest.raises(DataError, match="bad.json:1: not a vocabulary"):
        Vocab.load(tmp_path / "bad.json")


def test_vocab_build_rejects_a_bare_list_of_strings():
    with pytest.raises(TypeError, match="got the string 'NOUN' as one"):
        Vocab.build(["NOUN", "VERB"])  # a sequence of tokens, not a list of sequences
    assert Vocab.build([["NOUN", "VERB"]]).tokens == [*SPECIALS, "NOUN", "VERB"]


def test_vocab_rejects_bad_ids():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Vocab.build([["a"]]).decode([99])


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_char_round_trip_is_exact(text):
    tokenizer = CharTokenizer.fit([text])
    ids = tokenizer.encode(text, bos=True, eos=True)
    assert len(ids) == len(text) + 2
    assert tokenizer.decode(ids) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_word_round_trip_is_exact(text):
    tokenizer = WordTokenizer.fit([text])
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("the cat sat.", ["the", "cat", "sat", "##."]),
        ("don't  stop\n", ["don", "##'", "##t", " ", " ", "stop", "\n"]),
        (" a,b ", [" ", "a", "##,", "##b", " "]),
        ("a##", ["a", "###", "###"]),
    ],
)
def test_word_tokens(text, tokens):
    tokenizer = WordTokenizer.fit([text])
    assert tokenizer.tokenize(text) == tokens
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_word_unknown_and_lowercase():
    tokenizer = WordTokenizer.fit(["the cat"], lowercase=True)
    assert tokenizer.decode(tokenizer.encode("The dog")) == "the <unk>"


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.fit(CORPUS * 5, vocab_size=300, min_freq=2)


def test_bpe_learns_merges_and_keeps_specials(bpe):
    assert 260 < bpe.vocab_size <= 300
    assert [bpe.tokenizer.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    assert len(bpe.encode("the question")) < len(b"the question")  # merges used


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_bpe_round_trip_is_exact(bpe, text):
    ids = bpe.encode(text, bos=True, eos=True)
    assert ids[0] == bpe.bos_id and ids[-1] == bpe.eos_id
    assert bpe.decode(ids) == text


def test_bpe_special_strings_are_plain_text(bpe):
    text = "a <pad> b <eos>"
    ids = bpe.encode(text)
    assert bpe.pad_id not in ids and bpe.eos_id not in ids
    assert bpe.decode(ids) == text


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_tokenizer_save_load_round_trip(tmp_path, kind, bpe):
    tokenizer = {
        "char": CharTokenizer.fit(CORPUS),
        "word": WordTokenizer.fit(CORPUS),
        "bpe": bpe,
    }[kind]
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert type(loaded) is type(tokenizer)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["kind"] == kind
    for text in CORPUS:
        assert loaded.encode(text) == tokenizer.encode(text)
        assert loaded.decode(loaded.encode(text)) == text


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"kind": "bpe"}', r"malformed BPE tokenizer: expected \{\"kind\": \"bpe\""),
        ('{"kind": "bpe", "tokenizer": {"x": 1}}', "its 'tokenizer' is not a Hugging Face"),
        ('{"kind": "bpe", "tokenizer": [1]}', "malformed BPE tokenizer"),
        ('{"kind": "word", "vocab": [1, 2]}', r"malformed word tokenizer, its 'vocab': expected"),
        ('{"kind": "char"}', "malformed char tokenizer, its 'vocab': expected"),
        ('{"kind": "word", "vocab": {"tokens": ["a"]}}', "'vocab': a Vocab's first tokens"),
        ('{"kind": "char", "vocab": {"tokens": [1, 2]}}', "a Vocab's tokens must be strings"),
        ('{"kind": "sentencepiece"}', "not a tokenizer file: kind 'sentencepiece'"),
    ],
)
def test_malformed_tokenizer_files_name_the_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(DataError, match=f"t\\.json:1: .*{problem}"):
        load_tokenizer(path)
    if '"bpe"' in content:
        with pytest.raises(DataError, match=f"t\\.json:1: .*{problem}"):
            BPETokenizer.load(path)


@given(st.lists(st.text(max_size=5), max_size=30))
def test_vocab_json_round_trip(tokens):
    assume(not set(tokens) & set(SPECIALS))
    vocab = Vocab.build([tokens])
    assert Vocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    assert vocab.decode(vocab.encode(tokens)) == tokens
