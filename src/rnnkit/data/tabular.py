"""Readers for delimited text, JSON Lines and plain text files.

- `read_table`: named columns of a CSV/TSV file with a header row (the delimiter follows the
  suffix: .tsv/.tab are tab-separated, anything else comma-separated).
- `read_labelled`: (text, label) pairs for classification; `read_pairs`: (source, target)
  sentence pairs for translation.
- `read_series_csv`: a `Series` from a CSV with an optional time column and numeric columns.
- `read_jsonl`: one JSON object a line; `read_text`: a whole UTF-8 text file.

Every malformed row raises a `DataError` naming the file, the line and the problem. Token-tag
files (CoNLL) live in `rnnkit.data.conll`; music and audio in `rnnkit.data.music` and
`rnnkit.data.audio`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rnnkit.data.files import DataError, read_text_file
from rnnkit.data.series import Series, handle_nan

MISSING = {"", "nan", "NaN", "NA", "N/A", "null", "None"}  # spellings of a missing number


def _delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter is not None:
        return delimiter
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _rows(path: Path, delimiter: str | None) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each non-blank row, the header first; `line` is where the row starts."""
    text = read_text_file(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(path, delimiter))
    line = 1
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                yield line, fields
            line = reader.line_num + 1
    except csv.Error as error:
        raise DataError(path, line, f"malformed row ({error}); check the quotes") from None


def _open_table(path: Path, delimiter: str | None) -> tuple[list[str], Iterator]:
    """The header of a CSV/TSV file and an iterator over its (line, fields) data rows."""
    rows = _rows(path, delimiter)
    first = next(rows, None)
    if first is None:
        raise DataError(path, 1, "no header row; the first row must name the columns")
    return [name.strip() for name in first[1]], rows


def _select(
    path: Path,
    header: list[str],
    rows: Iterator[tuple[int, list[str]]],
    columns: Sequence[str],
    may_be_empty: Sequence[str] = (),
) -> Iterator[tuple[int, list[str]]]:
    """(line, values of `columns`) for each data row, checking every row has every field and
    that no field is empty, except those of `may_be_empty`."""
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            path, 1, f"the header {header} has no column {missing[0]!r}; name the columns to read"
        )
    index = [header.index(c) for c in columns]
    for line, fields in rows:
        if len(fields) != len(header):
            lacking = [header[i] for i in range(len(fields), len(header))]
            problem = f"missing {', '.join(map(repr, lacking))}" if lacking else "too many fields"
            raise DataError(
                path,
                line,
                f"row has {len(fields)} fields, the header has {len(header)}: {problem} "
                "(quote fields that contain the delimiter)",
            )
        values = [fields[i] for i in index]
        empty = [
            c
            for c, v in zip(columns, values, strict=True)
            if not v.strip() and c not in may_be_empty
        ]
        if empty:
            raise DataError(path, line, f"empty {empty[0]!r} field; every row needs one")
        yield line, values


def read_table(
    path: str | os.PathLike, columns: Sequence[str], delimiter: str | None = None
) -> list[tuple[str, ...]]:
    """The values of `columns` in each row of a CSV/TSV file with a header row."""
    path = Path(path)
    header, rows = _open_table(path, delimiter)
    rows = [tuple(values) for _, values in _select(path, header, rows, columns)]
    if not rows:
        raise DataError(path, 2, "no data rows after the header")
    return rows


def read_labelled(
    path: str | os.PathLike,
    text_column: str = "text",
    label_column: str = "label",
    delimiter: str | None = None,
) -> list[tuple[str, str]]:
    """(text, label) pairs from a CSV/TSV file for classification."""
    return read_table(path, [text_column, label_column], delimiter)  # type: ignore[return-value]


def read_pairs(
    path: str | os.PathLike,
    source_column: str,
    target_column: str,
    delimiter: str | None = None,
) -> list[tuple[str, str]]:
    """(source, target) sentence pairs from a CSV/TSV file for translation."""
    return read_table(path, [source_column, target_column], delimiter)  # type: ignore[return-value]


def _number(path: Path, line: int, column: str, text: str) -> float:
    if text.strip() in MISSING:
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise DataError(path, line, f"column {column!r}: {text!r} is not a number") from None


def _time(path: Path, line: int, text: str) -> np.datetime64:
    try:
        return np.datetime64(text.strip(), "s")
    except ValueError:
        raise DataError(
            path, line, f"time {text!r} is not an ISO 8601 date such as 1949-01 or 1949-01-31T12:00"
        ) from None


def read_series_csv(
    path: str | os.PathLike,
    time_column: str | None = None,
    value_columns: Sequence[str] | None = None,
    nan: str = "reject",
    delimiter: str | None = None,
) -> Series:
    """A `Series` from a CSV/TSV file.

    time_column:   the column of ISO 8601 times (increasing), or None when there is none;
    value_columns: the numeric columns to read (default: every other column);
    nan:           "reject" (a `DataError` naming the line of a missing value) or "interpolate".
    """
    path = Path(path)
    header, rows = _open_table(path, delimiter)
    if value_columns is None:
        value_columns = [c for c in header if c != time_column]
    columns = list(value_columns) + ([time_column] if time_column else [])
    lines, values, times = [], [], []
    for line, fields in _select(path, header, rows, columns, may_be_empty=value_columns):
        lines.append(line)
        numbers = zip(value_columns, fields[: len(value_columns)], strict=True)
        values.append([_number(path, line, column, text) for column, text in numbers])
        if time_column:
            times.append(_time(path, line, fields[-1]))
    if not values:
        raise DataError(path, 2, "no data rows after the header")
    time_array = np.array(times, dtype="datetime64[s]") if time_column else None
    if time_array is not None and len(time_array) > 1:
        bad = np.flatnonzero(np.diff(time_array) <= np.timedelta64(0, "s"))
        if len(bad):
            raise DataError(path, lines[bad[0] + 1], "times must increase; sort the file by time")
    series = Series(np.array(values), list(value_columns), time_array, str(path), np.array(lines))
    return handle_nan(series, nan)


def read_jsonl(path: str | os.PathLike, fields: Sequence[str] = ()) -> list[dict]:
    """The JSON object on each non-blank line of a JSON Lines file; every object must hold
    `fields`."""
    path = Path(path)
    records = []
    for line, text in enumerate(read_text_file(path).split("\n"), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                path, line, f"not valid JSON ({error.msg} at column {error.colno})"
            ) from None
        if not isinstance(record, dict):
            raise DataError(path, line, f"expected a JSON object, got {type(record).__name__}")
        missing = [f for f in fields if f not in record]
        if missing:
            raise DataError(
                path, line, f"the object has no {missing[0]!r} field; it has {sorted(record)}"
            )
        records.append(record)
    return records


def read_text(path: str | os.PathLike) -> str:
    """The whole text of a UTF-8 file (e.g. a corpus for a language model), `\n` line ends."""
    return read_text_file(path)
