"""Task models: `nn.Module`s built from one frozen config dataclass, with `loss(batch)` and
`predict(batch)` (the contract of `rnnkit.train`). They know nothing of files or the command line.

A run's config.json names its model class as `rnnkit.models.<module>.<Class>`; `rnnkit.load`
imports model classes from this package only. Names are imported on first use, so one model
module does not load (or break) the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {  # name -> module in this package
    "TextEncoder": "encoder",
    "copy_encoder_weights": "encoder",
    "Classifier": "classifier",
    "ClassifierConfig": "classifier",
    "CRF": "crf",
    "Tagger": "tagger",
    "TaggerConfig": "tagger",
    "Forecaster": "forecaster",
    "ForecasterConfig": "forecaster",
    "LanguageModel": "language_model",
    "LanguageModelConfig": "language_model",
    "MusicModel": "music",
    "MusicModelConfig": "music",
    "SpeechModel": "speech",
    "SpeechConfig": "speech",
    "Seq2Seq": "seq2seq",
    "Seq2SeqConfig": "seq2seq",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rnnkit.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rnnkit.models.{_EXPORTS[name]}"), name)
