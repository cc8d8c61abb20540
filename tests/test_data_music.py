"""Piano rolls: note lists and MIDI files, round trips exact (property-based)."""

from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rnnkit.data import (
    DataError,
    midi_to_roll,
    notes_to_roll,
    read_jsb_json,
    roll_to_midi,
    roll_to_notes,
)

JSB = Path(__file__).parents[1] / "src" / "rnnkit" / "data" / "builtin" / "jsb_chorales"
rolls = hnp.arrays(np.uint8, st.tuples(st.integers(0, 24), st.just(88)), elements=st.integers(0, 1))


@settings(max_examples=60, deadline=None)
@given(roll=rolls, steps_per_beat=st.sampled_from([1, 2, 4]))
def test_roll_to_midi_to_roll_is_exact(roll, steps_per_beat):
    midi = roll_to_midi(roll, steps_per_beat=steps_per_beat)
    np.testing.assert_array_equal(midi_to_roll(midi, steps_per_beat=steps_per_beat), roll)


def test_roll_round_trip_through_a_file(tmp_path):
    roll = np.zeros((6, 88), dtype=np.uint8)
    roll[1:4, 39] = 1  # middle C held for three steps
    roll[2, [43, 46]] = 1
    roll_to_midi(roll, tmp_path / "song.mid", steps_per_beat=2)
    np.testing.assert_array_equal(midi_to_roll(tmp_path / "song.mid", steps_per_beat=2), roll)
    notes = [m for m in mido.MidiFile(tmp_path / "song.mid") if m.type == "note_on"]
    assert sorted(m.note for m in notes) == [60, 64, 67]  # the held C is one note, not three


@given(st.lists(st.sets(st.integers(21, 108)), max_size=30))
def test_notes_to_roll_round_trip(steps):
    notes = [sorted(step) for step in steps]
    roll = notes_to_roll(notes)
    assert roll.shape == (len(notes), 88)
    assert roll_to_notes(roll) == notes


def test_midi_to_roll_snaps_to_the_grid_and_skips_drums():
    track = mido.MidiTrack(
        [
            mido.Message("note_on", note=60, velocity=90, time=0),
            mido.Message("note_on", channel=9, note=36, velocity=90, time=0),  # a drum
            mido.Message("note_on", note=64, velocity=90, time=470),  # tick 470: step 1
            mido.Message("note_on", note=60, velocity=0, time=490),  # tick 960: 60 ends at 2
            mido.Message("note_off", note=64, velocity=0, time=30),  # tick 990: 64 ends at 2
            mido.Message("note_on", note=67, velocity=90, time=10),  # tick 1000: step 2
            mido.Message("note_off", note=67, velocity=0, time=40),  # shorter than a step
            mido.MetaMessage("end_of_track", time=960),  # tick 2000: 4 steps in all
        ]
    )
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    expected = notes_to_roll([[60], [60, 64], [67], []])
    np.testing.assert_array_equal(midi_to_roll(midi), expected)


def test_midi_errors(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not midi at all")
    with pytest.raises(DataError, match="bad.mid: not a readable MIDI file"):
        midi_to_roll(bad)
    low = notes_to_roll([[30]], low=21)
    with pytest.raises(DataError, match=r"pitch 30 at tick 0 is outside \[40, 108\]"):
        midi_to_roll(roll_to_midi(low), low=40)
    with pytest.raises(ValueError, match="pitch 12 at step 0"):
        notes_to_roll([[12]])


def test_jsb_chorales_note_lists():
    chorales = read_jsb_json(JSB / "jsb-chorales-quarter.json")
    assert {k: len(v) for k, v in chorales.items()} == {"train": 229, "valid": 76, "test": 77}
    first = chorales["test"][0]
    assert first[0] == [72, 76, 79, 84]
    assert roll_to_notes(notes_to_roll(first)) == [sorted(step) for step in first]
