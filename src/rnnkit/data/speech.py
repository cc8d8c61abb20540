"""Spoken digit strings synthesized on the fly with the `espeak-ng` speech synthesizer.

Each utterance speaks a random string of digits ("4 0 7" as "four zero seven") with a voice,
speed and pitch drawn at random, so a model must read the digits from sound it has not heard
in that exact form. The result is a list of (features (T, F), digits) pairs for speech
recognition with CTC. espeak-ng is a program, not a Python package: when it is missing the
loader says how to install it (`apt-get install espeak-ng`). Features live in
`rnnkit.data.audio`.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from rnnkit.data.audio import features, read_wav

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp")  # espeak-ng English voices
VARIANTS = ("", "+m1", "+m3", "+m5", "+f1", "+f2", "+f4")  # speaker variants: male, female
SPEEDS = (130, 190)  # words per minute, drawn uniformly
PITCHES = (30, 70)  # espeak-ng pitch 0-99, drawn uniformly


class SynthesizerMissing(RuntimeError):
    """espeak-ng is not installed."""


def find_espeak() -> str:
    """The path of the `espeak-ng` program, or a `SynthesizerMissing` that says how to get it."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise SynthesizerMissing(
            "the spoken digits dataset is synthesized with espeak-ng, which is not installed; "
            "install it with `apt-get install espeak-ng` (Debian/Ubuntu) or your system's "
            "package manager, then load the dataset again"
        )
    return program


def synthesize(
    text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50
) -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng: the samples (N,) float32 and the sample rate."""
    program = find_espeak()
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "utterance.wav"
        command = [program, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"espeak-ng failed on {text!r} ({result.stderr.strip()})")
        return read_wav(wav)


def spoken_digits(
    count: int,
    min_digits: int = 1,
    max_digits: int = 5,
    seed: int = 0,
    kind: str = "log_mel",
) -> list[tuple[np.ndarray, str]]:
    """`count` synthesized utterances as (features (T, F) float32, digit string) pairs."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    find_espeak()
    rng = random.Random(seed)
    utterances = []
    for _ in range(count):
        digits = "".join(
            rng.choice("0123456789") for _ in range(rng.randint(min_digits, max_digits))
        )
        voice = rng.choice(VOICES) + rng.choice(VARIANTS)
        speed, pitch = rng.randint(*SPEEDS), rng.randint(*PITCHES)
        text = " ".join(DIGIT_WORDS[int(d)] for d in digits)
        samples, sample_rate = synthesize(text, voice, speed, pitch)
        utterances.append((features(samples, sample_rate, kind), digits))
    return utterances
