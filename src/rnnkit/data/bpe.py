"""`BPETokenizer`: byte-level byte-pair encoding trained and run by Hugging Face `tokenizers`.

Byte-level BPE starts from the 256 byte values, so every text encodes with no unknown token,
and decoding gives back the exact text. The special tokens have the ids of `Vocab`'s
(pad 0, unk 1, bos 2, eos 3). Text that happens to contain "<pad>" or "<eos>" is encoded as
plain text, not as the special token. Character and word tokenizers live in
`rnnkit.data.tokenizer`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from rnnkit.data.files import DataError, read_json, write_json
from rnnkit.data.vocab import SPECIALS


def _hf():
    import tokenizers  # imported here: `import rnnkit.data` stays fast

    return tokenizers


class BPETokenizer:
    """Byte-level BPE with the specials of `Vocab` at ids 0-3; train with `BPETokenizer.fit`."""

    kind = "bpe"
    pad_id, unk_id, bos_id, eos_id = range(len(SPECIALS))

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer  # a tokenizers.Tokenizer
        self.tokenizer.encode_special_tokens = True  # "<pad>" in text is text, not a special
        found = [tokenizer.token_to_id(token) for token in SPECIALS]
        if found != list(range(len(SPECIALS))):
            raise ValueError(f"the BPE model must hold {SPECIALS} at ids 0-3, found ids {found}")

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int = 1000, min_freq: int = 2) -> BPETokenizer:
        """Learn merges from `texts` until the vocabulary has `vocab_size` tokens (or no pair is
        seen `min_freq` times)."""
        hf = _hf()
        floor = len(SPECIALS) + 256
        if vocab_size < floor:
            raise ValueError(
                f"vocab_size must be >= {floor} (4 specials + 256 bytes), got {vocab_size}"
            )
        tokenizer = hf.Tokenizer(hf.models.BPE())
        tokenizer.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_freq,
            special_tokens=list(SPECIALS),
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def tokenize(self, text: str) -> list[str]:
        """The subword strings of `text` (byte-level symbols, e.g. "Ġthe" for " the")."""
        return self.tokenizer.encode(text).tokens

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`, with `<bos>`/`<eos>` around when asked."""
        ids = self.tokenizer.encode(text).ids
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; pad, bos and eos are dropped."""
        dropped = {self.pad_id, self.bos_id, self.eos_id}
        kept = [int(i) for i in ids if int(i) not in dropped]
        bad = [i for i in kept if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary (size {self.vocab_size})")
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokenizer": json.loads(self.tokenizer.to_str())}

    @classmethod
    def from_dict(cls, obj: dict) -> BPETokenizer:
        """The inverse of `to_dict`; a ValueError names what is wrong with a malformed `obj`."""
        model = obj.get("tokenizer")
        if not isinstance(model, dict):
            raise ValueError('expected {"kind": "bpe", "tokenizer": {...}} (a Hugging Face model)')
        try:
            tokenizer = _hf().Tokenizer.from_str(json.dumps(model))
        except Exception as error:  # `tokenizers` raises a bare Exception for a bad model
            raise ValueError(
                f"its 'tokenizer' is not a Hugging Face tokenizer (tokenizers says: {error})"
            ) from None
        return cls(tokenizer)

    @classmethod
    def from_file_dict(cls, path: str | os.PathLike, obj: dict) -> BPETokenizer:
        """`from_dict` of the JSON object read from `path`, with a `DataError` naming the file
        when it is not a BPE tokenizer."""
        if obj.get("kind") != cls.kind:
            raise DataError(path, 1, f"not a BPE tokenizer file (kind {obj.get('kind')!r})")
        try:
            return cls.from_dict(obj)
        except ValueError as error:
            raise DataError(path, 1, f"malformed BPE tokenizer: {error}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically); `load_tokenizer(path)` reads it back."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a tokenizer written by `save`."""
        return cls.from_file_dict(path, read_json(path, "BPE tokenizer"))

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
