"""Built-in datasets: each loads offline from the package alone, holds what its listing says,
and the listing prints size, source and licence."""

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import Series, TaggedSentence, datasets
from rnnkit.data.speech import SynthesizerMissing

PACKAGE = Path(__file__).parents[1] / "src" / "rnnkit"
BUILTIN = PACKAGE / "data" / "builtin"
STATIC = [entry.name for entry in datasets.list(show=False) if entry.task != "speech"]


def count(entry, data):
    """What the listing's size counts, measured on the loaded data."""
    if entry.task == "forecast":
        return len(data)
    if entry.task == "language_model":
        return sum(len(text) for text in data.values())
    return sum(len(examples) for examples in data.values())


@pytest.mark.parametrize("name", STATIC)
def test_dataset_loads_and_matches_its_listing(name):
    entry = datasets.info(name)
    data = datasets.load(name)
    assert count(entry, data) == entry.count
    if entry.task == "forecast":
        assert isinstance(data, Series) and not np.isnan(data.values).any()
        assert data.times is not None and (np.diff(data.times) > np.timedelta64(0)).all()
        return
    assert set(data) == {"train", "valid", "test"} and all(len(v) for v in data.values())
    example = data["train"][0]
    expected_type = {
        "language_model": str,
        "classify": tuple,
        "tag": TaggedSentence,
        "translate": tuple,
        "music": np.ndarray,
    }[entry.task]
    assert isinstance(data["train"] if entry.task == "language_model" else example, expected_type)


def test_dataset_contents_are_what_the_provenance_says():
    sentiment = datasets.load("rotten_tomatoes")
    labels = [label for split in sentiment.values() for _, label in split]
    assert labels.count("fresh") == labels.count("rotten") == 3000
    tagging = datasets.load("ud_english_ewt")
    assert [len(tagging[s]) for s in ("train", "valid", "test")] == [3000, 500, 500]
    assert all(len(s.tokens) == len(s.tags) for s in tagging["train"])
    passengers = datasets.load("air_passengers")
    assert passengers.values.sum() == 40_363 and str(passengers.times[0])[:7] == "1949-01"
    co2 = datasets.load("co2")
    assert co2.values.shape == (2284, 1)  # the 59 missing weeks are interpolated
    assert datasets.load("us_macro").columns == ["realgdp", "realcons", "realinv", "unemp", "infl"]
    chorales = datasets.load("jsb_chorales")
    assert [len(chorales[s]) for s in ("train", "valid", "test")] == [229, 76, 77]
    assert chorales["train"][0].shape[1] == 88
    text = datasets.load("shakespeare")
    assert text["train"].startswith("HAMLET")
    assert text["train"].endswith("\n") and text["valid"].endswith("\n")  # cut at line starts


def test_limit_keeps_the_first_examples():
    assert [len(v) for v in datasets.load("bible_en_es", limit=3).values()] == [3, 3, 3]
    with pytest.raises(ValueError, match="no built-in dataset 'imagenet'"):
        datasets.load("imagenet")


def test_spoken_digits_load_or_say_how_to_install_the_synthesizers():
    if shutil.which("espeak-ng") and shutil.which("flite"):
        data = datasets.load("spoken_digits", limit=2)
        assert [len(v) for v in data.values()] == [2, 2, 2]
        features, digits = data["train"][0]
        assert features.ndim == 2 and features.shape[1] == 40 and digits.isdigit()
    else:
        with pytest.raises(SynthesizerMissing, match="apt-get install (espeak-ng|flite)"):
            datasets.load("spoken_digits", limit=2)


def test_listing_prints_size_source_and_licence(capsys):
    out = io.StringIO()
    entries = datasets.list(file=out)
    assert datasets.list() == entries
    assert capsys.readouterr().out == out.getvalue()  # stdout by default
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["name", "task", "size", "source", "licence"]
    assert len(lines) == len(entries) + 1
    for entry, line in zip(entries, lines[1:], strict=True):
        assert line.startswith(entry.name)
        for field in (entry.size, entry.source, entry.licence):
            assert field in line
    assert "1,036,489 characters" in out.getvalue() and "CC BY-SA 4.0" in out.getvalue()


def test_every_folder_has_provenance_and_the_data_stays_small():
    folders = [path for path in BUILTIN.iterdir() if path.is_dir()]
    assert {f.name for f in folders} == {
        e.folder.split("/")[0] for e in datasets.REGISTRY.values() if e.folder
    }
    for folder in folders:
        assert (folder / "PROVENANCE.md").is_file(), folder
    total = sum(path.stat().st_size for path in BUILTIN.rglob("*") if path.is_file())
    assert total < 8_000_000  # a few MB once compressed in the wheel


@pytest.mark.slow
def test_datasets_load_from_a_copy_of_the_installed_package(tmp_path):
    """A fresh install holds the Python files and package data only: load from such a copy,
    in a separate interpreter that cannot see the source tree."""
    copy = tmp_path / "site" / "rnnkit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    script = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import rnnkit.data as d\n"
        "assert d.__file__.startswith(sys.argv[1]), d.__file__\n"
        "for e in d.datasets.list(show=False):\n"
        "    if e.task != 'speech':\n"
        "        d.datasets.load(e.name, limit=5)\n"
        "print('loaded', len(d.datasets.REGISTRY))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(tmp_path / "site")],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"loaded {len(datasets.REGISTRY)}"
