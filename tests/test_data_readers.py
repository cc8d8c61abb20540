"""Readers: CSV/TSV, series CSV, JSONL, plain text, CoNLL-U and column CoNLL; every malformed
input names the file, the line and the problem."""

import re

import numpy as np
import pytest

from rnnkit.data import (
    DataError,
    read_conll,
    read_conllu,
    read_jsonl,
    read_labelled,
    read_pairs,
    read_series_csv,
    read_table,
    read_text,
)

CONLLU = """# sent_id = 1
# text = I can't go.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tcan't\t_\t_\t_\t_\t_\t_\t_\t_
2\tca\tcan\tAUX\tMD\t_\t4\t_\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\t_\t_\t_
4\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tgone\t_\t_\t_\t_\t_\t_\t_\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_at(path, line, problem):
    """A regex for the `path:line: problem` message of a DataError."""
    return re.escape(f"{path}:{line}: ") + problem


def test_labelled_csv_with_quotes_and_multiline_fields(tmp_path):
    path = write(tmp_path, "reviews.csv", 'text,label\n"Good, very good",pos\n"Two\nlines",neg\n')
    assert read_labelled(path) == [("Good, very good", "pos"), ("Two\nlines", "neg")]
    tsv = write(tmp_path, "pairs.tsv", "en\tes\nHello, world\tHola, mundo\n")
    assert read_pairs(tsv, "en", "es") == [("Hello, world", "Hola, mundo")]
    assert read_table(tsv, ["es"]) == [("Hola, mundo",)]


def test_csv_row_without_label(tmp_path):
    path = write(tmp_path, "reviews.csv", 'text,label\ngood film,pos\n"a\nb",neg\nno label here\n')
    with pytest.raises(DataError, match=error_at(path, 5, "row has 1 fields.*missing 'label'")):
        read_labelled(path)
    empty_label = write(tmp_path, "empty.csv", "text,label\ngood,\n")
    with pytest.raises(DataError, match=error_at(empty_label, 2, "empty 'label' field")):
        read_labelled(empty_label)


def test_csv_without_the_named_column(tmp_path):
    path = write(tmp_path, "reviews.csv", "sentence,label\nok,pos\n")
    with pytest.raises(DataError, match=error_at(path, 1, "the header .* has no column 'text'")):
        read_labelled(path)


def test_empty_file(tmp_path):
    for name, reader in [
        ("a.csv", read_labelled),
        ("b.conllu", read_conllu),
        ("c.txt", read_text),
        ("d.jsonl", read_jsonl),
        ("e.csv", read_series_csv),
    ]:
        path = write(tmp_path, name, "\n  \n")
        with pytest.raises(DataError, match=error_at(path, 1, "the file is empty")):
            reader(path)


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncafé,pos\n".encode("latin-1"))
    with pytest.raises(DataError, match=error_at(path, 2, r"not UTF-8 \(byte 0xe9 at column 4\)")):
        read_labelled(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "absent.txt")


def test_plain_text_keeps_the_text(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("\ufeffline one\r\nline two\n".encode())
    assert read_text(path) == "line one\nline two\n"


def test_jsonl(tmp_path):
    path = write(tmp_path, "data.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": 0}\n')
    assert read_jsonl(path, ["text", "label"]) == [
        {"text": "a", "label": 1},
        {"text": "b", "label": 0},
    ]
    bad = write(tmp_path, "bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n[1]\n')
    with pytest.raises(DataError, match=error_at(bad, 2, "the object has no 'label' field")):
        read_jsonl(bad, ["text", "label"])
    broken = write(tmp_path, "broken.jsonl", '{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=error_at(broken, 2, "not valid JSON")):
        read_jsonl(broken)


def test_conllu_words_and_tags(tmp_path):
    path = write(tmp_path, "a.conllu", CONLLU)
    sentences = read_conllu(path)
    assert [s.tokens for s in sentences] == [["I", "ca", "n't", "go", "."], ["Yes"]]
    assert sentences[0].tags == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert read_conllu(path, tag="xpos")[1].tags == ["UH"]


def test_conllu_line_with_too_few_columns(tmp_path):
    lines = CONLLU.split("\n")
    lines[4] = "2\tca\tcan\tAUX"  # line 5 of the file
    path = write(tmp_path, "bad.conllu", "\n".join(lines))
    with pytest.raises(DataError, match=error_at(path, 5, "expected 10 tab-separated columns")):
        read_conllu(path)


def test_column_conll(tmp_path):
    text = "-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\n"
    path = write(tmp_path, "ner.txt", text)
    sentences = read_conll(path)
    assert [s.tokens for s in sentences] == [["EU", "rejects"], ["Peter"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O"], ["B-PER"]]
    assert read_conll(path, tag_column=1)[0].tags == ["NNP", "VBZ"]
    bad = write(tmp_path, "bad.txt", "EU NNP B-ORG\nrejects\n")
    with pytest.raises(
        DataError, match=error_at(bad, 2, "expected 3 columns like the first token line, found 1")
    ):
        read_conll(bad)


def test_column_conll_names_a_column_out_of_range(tmp_path):
    path = write(tmp_path, "chunks.txt", "The DT B-NP O\ncat NN I-NP O\n")
    with pytest.raises(
        DataError, match=error_at(path, 1, r"tag_column=4 is out of range: the line has 4 columns")
    ):
        read_conll(path, tag_column=4)
    with pytest.raises(DataError, match=r"token_column=-5 is out of range.* -4 to -1"):
        read_conll(path, token_column=-5)
    one = write(tmp_path, "one.txt", "The\ncat\n")
    with pytest.raises(DataError, match=error_at(one, 1, "found 1 column; a token line needs")):
        read_conll(one)


@pytest.mark.parametrize("nan", ["reject", "interpolate"])
def test_series_csv_rejects_inf_in_both_modes(tmp_path, nan):
    path = write(tmp_path, "s.csv", "month,a\n2000-01,1\n2000-02,inf\n2000-03,3\n")
    with pytest.raises(DataError, match=error_at(path, 3, r"infinite value \(inf\) in column 'a'")):
        read_series_csv(path, time_column="month", nan=nan)


def test_series_csv_times_values_and_nan(tmp_path):
    path = write(tmp_path, "s.csv", "month,a,b\n2000-01,1,10\n2000-02,,20\n2000-03,3,NaN\n")
    with pytest.raises(DataError, match=error_at(path, 3, r"missing value \(NaN\) in column 'a'")):
        read_series_csv(path, time_column="month")
    series = read_series_csv(path, time_column="month", nan="interpolate")
    assert series.columns == ["a", "b"]
    np.testing.assert_allclose(series.values, [[1, 10], [1 + 2 * 31 / 60, 20], [3, 20]])  # by days
    assert str(series.times[1]) == "2000-02-01T00:00:00"
    np.testing.assert_array_equal(series.lines, [2, 3, 4])
    only_b = read_series_csv(path, time_column="month", value_columns=["b"], nan="interpolate")
    assert only_b.values.shape == (3, 1)


def test_series_csv_bad_number_time_and_order(tmp_path):
    bad_number = write(tmp_path, "n.csv", "t,y\n2000,1\n2001,x\n")
    with pytest.raises(DataError, match=error_at(bad_number, 3, "column 'y': 'x' is not a number")):
        read_series_csv(bad_number, time_column="t")
    bad_time = write(tmp_path, "t.csv", "t,y\n2000,1\nsoon,2\n")
    with pytest.raises(DataError, match=error_at(bad_time, 3, "time 'soon' is not an ISO 8601")):
        read_series_csv(bad_time, time_column="t")
    unsorted = write(tmp_path, "u.csv", "t,y\n2001,1\n2000,2\n")
    with pytest.raises(DataError, match=error_at(unsorted, 3, "times must increase")):
        read_series_csv(unsorted, time_column="t")
