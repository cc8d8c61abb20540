"""Readers for token-tag files: CoNLL-U (Universal Dependencies) and column CoNLL.

Both give a list of `TaggedSentence(tokens, tags)`, one per blank-line separated block.

- CoNLL-U: ten tab-separated columns, ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC;
  `#` lines are comments; multi-word token lines (ID "3-4") and empty nodes (ID "8.1") are
  skipped, so the tokens are the syntactic words that carry the tags.
- Column CoNLL (CoNLL-2000/2003 style): whitespace-separated columns, one token a line, the
  token and the tag in columns you choose; `-DOCSTART-` lines are skipped.

A line with too few columns raises a `DataError` naming the file and the line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.files import DataError, read_text_file

CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


@dataclass
class TaggedSentence:
    """One sentence: its tokens and one tag per token."""

    tokens: list[str]
    tags: list[str]


def _blocks(path: Path) -> Iterator[list[tuple[int, str]]]:
    """Blank-line separated blocks of (line number, line) from a UTF-8 file."""
    block: list[tuple[int, str]] = []
    for number, line in enumerate(read_text_file(path).split("\n"), start=1):
        if line.strip():
            block.append((number, line))
        elif block:
            yield block
            block = []
    if block:
        yield block


def read_conllu(path: str | os.PathLike, tag: str = "upos") -> list[TaggedSentence]:
    """Sentences of a CoNLL-U file with the tag column `tag` ("upos", "xpos", "deprel", ...)."""
    if tag not in CONLLU_COLUMNS[1:]:
        raise ValueError(f"tag must be one of {CONLLU_COLUMNS[1:]}, got {tag!r}")
    path = Path(path)
    tag_index = CONLLU_COLUMNS.index(tag)
    sentences = []
    for block in _blocks(path):
        tokens, tags = [], []
        for number, line in block:
            if line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != len(CONLLU_COLUMNS):
                raise DataError(
                    path,
                    number,
                    f"expected 10 tab-separated columns (CoNLL-U), found {len(fields)}; "
                    "columns are ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC",
                )
            if "-" in fields[0] or "." in fields[0]:
                continue  # multi-word token or empty node: not a tagged word
            tokens.append(fields[1])
            tags.append(fields[tag_index])
        if tokens:
            sentences.append(TaggedSentence(tokens, tags))
    if not sentences:
        raise DataError(path, 1, "no sentences found (only comments?); expected CoNLL-U")
    return sentences


def _check_columns(path: Path, line: int, width: int, token_column: int, tag_column: int) -> None:
    """Raise a `DataError` unless the first token line (`width` columns) has both columns."""
    if width < 2:
        raise DataError(path, line, f"found {width} column; a token line needs a token and a tag")
    for name, column in (("token", token_column), ("tag", tag_column)):
        if not -width <= column < width:
            raise DataError(
                path,
                line,
                f"{name}_column={column} is out of range: the line has {width} columns "
                f"(indices 0 to {width - 1}, or -{width} to -1 from the end)",
            )


def read_conll(
    path: str | os.PathLike,
    token_column: int = 0,
    tag_column: int = -1,
    delimiter: str | None = None,
) -> list[TaggedSentence]:
    """Sentences of a column CoNLL file: tokens from `token_column`, tags from `tag_column`
    (negative counts from the end), columns split on `delimiter` (default: any whitespace).

    Every token line must have as many columns as the first one, and at least two.
    """
    path = Path(path)
    width = None  # the number of columns of the first token line
    sentences = []
    for block in _blocks(path):
        tokens, tags = [], []
        for number, line in block:
            fields = line.split(delimiter)
            if fields[0] == "-DOCSTART-":
                continue
            if width is None:
                width = len(fields)
                _check_columns(path, number, width, token_column, tag_column)
            if len(fields) != width:
                raise DataError(
                    path,
                    number,
                    f"expected {width} columns like the first token line, found {len(fields)}",
                )
            tokens.append(fields[token_column])
            tags.append(fields[tag_column])
        if tokens:
            sentences.append(TaggedSentence(tokens, tags))
    if not sentences:
        raise DataError(path, 1, "no sentences found; expected one token and tag per line")
    return sentences
