"""Character and word tokenizers over a `Vocab`, and `load_tokenizer` for any saved tokenizer.

A tokenizer turns text into token ids and back; `decode(encode(text)) == text` exactly whenever
every token of `text` is in the vocabulary (unknown tokens come back as `<unk>`).

- `CharTokenizer`: one token per Unicode character.
- `WordTokenizer`: words (`\\w+`), single punctuation marks and whitespace. The single space
  between two tokens is implied, so "the cat sat." is `the cat sat ##.`: a piece written right
  after the one before, with no space between, carries the glue mark `##` (as WordPiece does).
  Any other whitespace (newlines, tabs, runs of spaces) is kept as tokens of its own.

Subword tokenization (byte-level BPE) lives in `rnnkit.data.bpe`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Protocol

from rnnkit.data.files import DataError, read_json, write_json
from rnnkit.data.vocab import Vocab

GLUE = "##"  # prefix of a token written right after the previous one, with no space between
_PIECES = re.compile(r"\w+|[^\w\s]|\s")  # words, single punctuation marks, single spaces


class Tokenizer(Protocol):
    """What every tokenizer offers (char, word and BPE alike)."""

    vocab_size: int  # ids are 0 .. vocab_size - 1
    pad_id: int  # always 0

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, path: str | os.PathLike) -> None: ...


class VocabTokenizer:
    """Shared base of the tokenizers that split text themselves and map tokens with a `Vocab`.

    Subclasses define `kind`, `split(text) -> tokens` and `join(tokens) -> text`.
    """

    kind = ""

    def __init__(self, vocab: Vocab, lowercase: bool = False):
        self.vocab = vocab
        self.lowercase = lowercase  # lower-case text before splitting (round trips up to case)

    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        min_freq: int = 1,
        max_size: int | None = None,
        lowercase: bool = False,
    ) -> VocabTokenizer:
        """A tokenizer whose vocabulary holds the tokens of `texts` seen `min_freq` times."""
        tokenizer = cls(Vocab.build([]), lowercase=lowercase)
        tokens = (tokenizer.tokenize(text) for text in texts)
        tokenizer.vocab = Vocab.build(tokens, min_freq=min_freq, max_size=max_size)
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.vocab.pad_id

    def tokenize(self, text: str) -> list[str]:
        """The tokens of `text` (strings, before the vocabulary)."""
        return self.split(text.lower() if self.lowercase else text)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`, with `<bos>`/`<eos>` around when asked."""
        return self.vocab.encode(self.tokenize(text), bos=bos, eos=eos)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; pad, bos and eos are dropped."""
        return self.join(self.vocab.decode(ids))

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def join(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"kind": self.kind, "lowercase": self.lowercase, "vocab": self.vocab.to_dict()}

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically); `load_tokenizer(path)` reads it back."""
        write_json(path, self.to_dict())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(VocabTokenizer):
    """One token per Unicode character: exact round trips for any text of known characters."""

    kind = "char"

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, tokens: list[str]) -> str:
        return "".join(tokens)


class WordTokenizer(VocabTokenizer):
    """Words, punctuation marks and whitespace, with implied single spaces (see the module)."""

    kind = "word"

    def split(self, text: str) -> list[str]:
        pieces = _PIECES.findall(text)
        tokens = []
        for i, piece in enumerate(pieces):
            before = pieces[i - 1] if i > 0 else " "
            after = pieces[i + 1] if i + 1 < len(pieces) else " "
            if piece == " " and i > 0 and not before.isspace() and not after.isspace():
                continue  # the single space between two tokens is implied
            if i > 0 and not piece.isspace() and not before.isspace():
                piece = GLUE + piece  # written right after the previous piece
            tokens.append(piece)
        return tokens

    def join(self, tokens: list[str]) -> str:
        out = []
        after_word = False  # the previous token was not whitespace
        for token in tokens:
            if len(token) > len(GLUE) and token.startswith(GLUE):
                out.append(token[len(GLUE) :])
            elif token.isspace():
                out.append(token)
            else:
                out.append(" " + token if after_word else token)
            after_word = not token.isspace()
        return "".join(out)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read any tokenizer written by `save` (char, word or BPE); a malformed file raises a
    `DataError` naming the file and the problem."""
    obj = read_json(path, "tokenizer")
    kind = obj.get("kind")
    if kind == "bpe":
        from rnnkit.data.bpe import BPETokenizer

        return BPETokenizer.from_file_dict(path, obj)
    classes = {"char": CharTokenizer, "word": WordTokenizer}
    if kind not in classes:
        raise DataError(path, 1, f"not a tokenizer file: kind {kind!r}, expected char|word|bpe")
    try:
        vocab = Vocab.from_dict(obj.get("vocab"))
    except ValueError as error:
        raise DataError(path, 1, f"malformed {kind} tokenizer, its 'vocab': {error}") from None
    return classes[kind](vocab, lowercase=bool(obj.get("lowercase")))
