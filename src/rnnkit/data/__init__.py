"""Data: tokenizers and vocabularies, batching, series windows, readers and built-in datasets.

Imports nothing from `rnnkit.models`, `rnnkit.train`, `rnnkit.tasks` or the command line.
"""

from rnnkit.data.batch import Batch

__all__ = ["Batch"]
