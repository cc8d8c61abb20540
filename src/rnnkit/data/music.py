"""Polyphonic music as piano rolls: JSB-style note lists and MIDI files (through `mido`).

A piano roll is a (T, P) uint8 array: row t has a 1 in column p when MIDI pitch `low + p`
sounds at step t. The default range 21-108 is the 88 keys of a piano (P = 88). A note list is
the JSB chorales' format: one list of sounding pitches per step.

MIDI round trip: `roll_to_midi` writes each run of consecutive 1s as one note (note on at its
first step, note off after its last), and an end-of-track event at step T so trailing silence
survives; `midi_to_roll` reads the notes back on the same grid, so roll -> MIDI -> roll is
exact. Held notes and repeated notes look the same in a roll, as in the JSB data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rnnkit.data.files import DataError, read_text_file

LOW, HIGH = 21, 108  # piano range: A0 to C8
TICKS_PER_BEAT = 480
DRUM_CHANNEL = 9  # General MIDI percussion (channel 10): not pitched, skipped when reading


def notes_to_roll(steps: list[list[int]], low: int = LOW, high: int = HIGH) -> np.ndarray:
    """A (T, high - low + 1) uint8 roll from T lists of sounding MIDI pitches."""
    roll = np.zeros((len(steps), high - low + 1), dtype=np.uint8)
    for t, pitches in enumerate(steps):
        for pitch in pitches:
            if not low <= pitch <= high:
                raise ValueError(f"pitch {pitch} at step {t} is outside [{low}, {high}]")
            roll[t, pitch - low] = 1
    return roll


def roll_to_notes(roll: np.ndarray, low: int = LOW) -> list[list[int]]:
    """The T lists of sounding pitches of a (T, P) roll, each sorted upwards."""
    return [[int(p) + low for p in np.flatnonzero(row)] for row in np.asarray(roll)]


def read_jsb_json(path: str | os.PathLike) -> dict[str, list[list[list[int]]]]:
    """Note lists of a JSB chorales JSON file: {"train": [chorale, ...], "valid": ..., ...},
    each chorale a list of steps, each step the list of sounding pitches."""
    path = Path(path)
    try:
        data = json.loads(read_text_file(path))
    except json.JSONDecodeError as error:
        raise DataError(path, error.lineno, f"not valid JSON ({error.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError(path, 1, 'expected {"train": [chorale, ...], ...} with note lists')
    return data


def roll_to_midi(
    roll: np.ndarray,
    path: str | os.PathLike | None = None,
    steps_per_beat: int = 1,
    tempo_bpm: float = 100.0,
    low: int = LOW,
    velocity: int = 80,
):
    """A `mido.MidiFile` (type 0, piano) playing the roll; written to `path` when given.

    `steps_per_beat`: 1 for a quarter-note grid (JSB "quarter"), 2 for eighth notes.
    """
    import mido

    roll = np.asarray(roll, dtype=bool)
    ticks_per_step = _ticks_per_step(TICKS_PER_BEAT, steps_per_beat)
    padded = np.pad(roll, ((1, 1), (0, 0)))  # (T + 2, P): silence around
    change = np.diff(padded.astype(np.int8), axis=0)  # (T + 1, P): +1 note on, -1 note off
    steps, pitches = np.nonzero(change)
    # (step, 0 = off | 1 = on, pitch), sorted: by step, note offs before note ons
    events = sorted(
        (int(t), int(change[t, p] > 0), int(p)) for t, p in zip(steps, pitches, strict=True)
    )
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    previous = 0
    for step, is_on, p in events:
        kind = "note_on" if is_on else "note_off"
        tick = int(step) * ticks_per_step
        track.append(mido.Message(kind, note=int(p) + low, velocity=velocity, time=tick - previous))
        previous = tick
    track.append(mido.MetaMessage("end_of_track", time=len(roll) * ticks_per_step - previous))
    midi = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    if path is not None:
        midi.save(str(path))
    return midi


def _ticks_per_step(ticks_per_beat: int, steps_per_beat: int) -> int:
    if steps_per_beat < 1 or ticks_per_beat % steps_per_beat:
        raise ValueError(f"steps_per_beat must divide {ticks_per_beat}, got {steps_per_beat}")
    return ticks_per_beat // steps_per_beat


def _open_midi(source):
    import mido

    if isinstance(source, mido.MidiFile):
        return source
    path = Path(source)
    if not path.is_file():
        raise DataError(path, None, "no such file; check the path")
    try:
        return mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError) as error:
        raise DataError(path, None, f"not a readable MIDI file ({error})") from None


def _notes(midi) -> tuple[list[tuple[int, int, int]], int]:
    """(start tick, end tick, pitch) of every pitched note, and the last tick of any track."""
    notes, last = [], 0
    for track in midi.tracks:
        tick, sounding = 0, {}
        for message in track:
            tick += message.time
            if message.type not in ("note_on", "note_off") or message.channel == DRUM_CHANNEL:
                continue
            key = (message.channel, message.note)
            if key in sounding:  # a note off, or a new note on that ends the sounding one
                notes.append((sounding.pop(key), tick, message.note))
            if message.type == "note_on" and message.velocity > 0:
                sounding[key] = tick
        notes += [(start, tick, pitch) for (_, pitch), start in sounding.items()]
        last = max(last, tick)
    return notes, last


def midi_to_roll(
    source,
    steps_per_beat: int = 1,
    low: int = LOW,
    high: int = HIGH,
) -> np.ndarray:
    """A (T, high - low + 1) uint8 roll of a MIDI file (a path or a `mido.MidiFile`).

    Notes are snapped to a grid of `steps_per_beat` steps per beat; a note shorter than a
    step still sounds for one. Percussion (channel 10) is skipped.
    """
    midi = _open_midi(source)
    name = getattr(midi, "filename", None) or "<MIDI data>"
    ticks_per_step = midi.ticks_per_beat / steps_per_beat
    notes, last = _notes(midi)
    roll = np.zeros((round(last / ticks_per_step), high - low + 1), dtype=np.uint8)
    for start, end, pitch in notes:
        if not low <= pitch <= high:
            raise DataError(
                name,
                None,
                f"pitch {pitch} at tick {start} is outside [{low}, {high}]; widen low/high",
            )
        first = round(start / ticks_per_step)
        stop = max(round(end / ticks_per_step), first + 1)
        if stop > len(roll):
            roll = np.pad(roll, ((0, stop - len(roll)), (0, 0)))
        roll[first:stop, pitch - low] = 1
    return roll
