"""`Vocab`: the map between tokens and integer ids, with special tokens and JSON save/load.

The four special tokens come first, at fixed ids: pad 0 (so zero-padding is padding), unk 1,
bos 2, eos 3. The other tokens follow by decreasing frequency, ties broken alphabetically, so
building twice from the same data gives the same ids. Splitting text into tokens is the
tokenizers' job (`rnnkit.data.tokenizer`, `rnnkit.data.bpe`), not this module's.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence

from rnnkit.data.files import DataError, read_json, write_json

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3


class Vocab:
    """Tokens and their ids; `<pad>`=0, `<unk>`=1, `<bos>`=2, `<eos>`=3, then the rest.

    Unknown tokens encode to `<unk>`. Build one with `Vocab.build(token_lists, min_freq=...)`.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        not_text = [t for t in tokens if not isinstance(t, str)]
        if not_text:
            raise ValueError(f"a Vocab's tokens must be strings, got {not_text[0]!r}")
        if tokens[: len(SPECIALS)] != list(SPECIALS):
            raise ValueError(f"a Vocab's first tokens must be {SPECIALS}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            repeated = sorted(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"a Vocab's tokens must be unique, repeated: {repeated[:5]}")
        self.tokens = tokens  # id -> token
        self.ids = {token: i for i, token in enumerate(tokens)}  # token -> id
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = range(len(SPECIALS))

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Iterable[str]],
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocab:
        """A vocabulary of the tokens seen at least `min_freq` times, the `max_size` most
        frequent at most (specials included in the count)."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size <= len(SPECIALS):
            raise ValueError(f"max_size must be > {len(SPECIALS)} (the specials), got {max_size}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            if isinstance(tokens, str):
                raise TypeError(
                    f"Vocab.build takes token sequences, e.g. [['NOUN', 'VERB']], got the "
                    f"string {tokens!r} as one: wrap a single sequence in a list"
                )
            counts.update(tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted(
            (t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            kept = kept[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    def encode(self, tokens: Iterable[str], bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids, `<unk>` for unknown tokens, with `<bos>`/`<eos>` around when asked."""
        ids = [self.ids.get(token, self.unk_id) for token in tokens]
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> list[str]:
        """Tokens of `ids`; pad, bos and eos are dropped unless `skip_specials=False`
        (`<unk>` is always kept: it stands for a real token)."""
        dropped = {self.pad_id, self.bos_id, self.eos_id} if skip_specials else set()
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"id {i} is outside the vocabulary (size {len(self)})")
            if i not in dropped:
                out.append(self.tokens[i])
        return out

    def to_dict(self) -> dict:
        """A JSON-ready description: `{"tokens": [...]}` in id order."""
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, obj: dict) -> Vocab:
        """The inverse of `to_dict`; a ValueError names what is wrong with a malformed `obj`."""
        if not isinstance(obj, dict) or not isinstance(obj.get("tokens"), list):
            raise ValueError(f'expected a vocabulary {{"tokens": [...]}}, got {obj!r:.60}')
        return cls(obj["tokens"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (atomically)."""
        write_json(path, {"kind": "vocab", **self.to_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Read a vocabulary written by `save`."""
        obj = read_json(path, "vocabulary")
        if obj.get("kind") != "vocab":
            raise DataError(path, 1, 'not a vocabulary file (expected {"kind": "vocab", "tokens"})')
        try:
            return cls.from_dict(obj)
        except ValueError as error:
            raise DataError(path, 1, str(error)) from None
