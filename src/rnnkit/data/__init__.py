"""Data: tokenizers and vocabularies, batching, series windows, readers and built-in datasets.

Imports nothing from `rnnkit.models`, `rnnkit.train`, `rnnkit.tasks` or the command line.
The heavy libraries (Hugging Face `tokenizers`, `librosa`, `mido`) are imported only when a
function that needs them runs. `docs/data.md` is the user guide.
"""

from rnnkit.data import datasets
from rnnkit.data.audio import log_mel, mfcc, read_wav, wav_features
from rnnkit.data.batch import Batch
from rnnkit.data.batching import BucketSampler, batch_loader, collate, count_padding, pad_sequences
from rnnkit.data.bpe import BPETokenizer
from rnnkit.data.conll import TaggedSentence, read_conll, read_conllu
from rnnkit.data.files import DataError
from rnnkit.data.music import (
    midi_to_roll,
    notes_to_roll,
    read_jsb_json,
    roll_to_midi,
    roll_to_notes,
)
from rnnkit.data.scalers import MinMaxScaler, RobustScaler, StandardScaler, load_scaler, make_scaler
from rnnkit.data.series import (
    Series,
    TimeSplit,
    calendar_features,
    extend_times,
    handle_nan,
    split_by_time,
)
from rnnkit.data.stream import StreamBatches
from rnnkit.data.tabular import (
    read_jsonl,
    read_labelled,
    read_pairs,
    read_series_csv,
    read_table,
    read_text,
)
from rnnkit.data.tokenizer import CharTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from rnnkit.data.vocab import Vocab
from rnnkit.data.windows import SlidingWindows, collate_windows, latest_window, split_windows

__all__ = [
    "BPETokenizer",
    "Batch",
    "BucketSampler",
    "CharTokenizer",
    "DataError",
    "MinMaxScaler",
    "RobustScaler",
    "Series",
    "SlidingWindows",
    "StandardScaler",
    "StreamBatches",
    "TaggedSentence",
    "TimeSplit",
    "Tokenizer",
    "Vocab",
    "WordTokenizer",
    "batch_loader",
    "calendar_features",
    "collate",
    "collate_windows",
    "count_padding",
    "datasets",
    "extend_times",
    "handle_nan",
    "latest_window",
    "load_scaler",
    "load_tokenizer",
    "log_mel",
    "make_scaler",
    "mfcc",
    "midi_to_roll",
    "notes_to_roll",
    "pad_sequences",
    "read_conll",
    "read_conllu",
    "read_jsb_json",
    "read_jsonl",
    "read_labelled",
    "read_pairs",
    "read_series_csv",
    "read_table",
    "read_text",
    "read_wav",
    "roll_to_midi",
    "roll_to_notes",
    "split_by_time",
    "split_windows",
    "wav_features",
]
