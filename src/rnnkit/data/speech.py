"""Spoken digit strings synthesized on the fly with the `espeak-ng` and `flite` synthesizers.

Each utterance speaks a random string of digits ("4 0 7" as "four zero seven") with a voice,
speed and pitch drawn at random, so a model must read the digits from sound it has not heard
in that exact form. The result is a list of (features (T, F), digits) pairs for speech
recognition with CTC.

Voices are split like speakers in a real corpus: the train, valid and test splits draw from
disjoint sets of voices (`VOICE_SPLITS`), so test error rates are measured on voices the
model never heard. An espeak-ng voice is an accent with a speaker variant ("en-gb+f2"); the
variants, which set the formants and pitch of the speaker, are what the splits hold out, and
each split has its own flite voice (flite's voices are recordings of different people). Two
utterances in three are spoken by espeak-ng, one in three by flite.

espeak-ng and flite are programs, not Python packages: when one is missing the loader says how
to install it (`apt-get install espeak-ng flite`). Audio is resampled to 16 kHz by the feature
functions in `rnnkit.data.audio`, whatever rate a synthesizer writes (flite's kal voice: 8 kHz).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.audio import features, read_wav

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp")
ESPEAK_SPEEDS = (130, 190)  # words per minute, drawn uniformly (espeak-ng's default: 175)
ESPEAK_PITCHES = (30, 70)  # espeak-ng pitch 0-99, drawn uniformly (default: 50)
FLITE_STRETCH = (0.85, 1.3)  # flite duration_stretch, drawn uniformly (> 1: slower)
FLITE_PITCH_SCALE = (0.85, 1.2)  # times the voice's usual mean pitch, drawn uniformly
# each voice's usual mean pitch, measured; rms ignores the setting and keeps its own
FLITE_PITCH_HZ = {"kal": 100.0, "awb": 125.0, "slt": 175.0, "rms": 100.0}
FLITE_SHARE = 1 / 3  # of the utterances spoken by flite
PROGRAMS = {"espeak-ng": "espeak-ng", "flite": "flite"}  # synthesizer: its Debian package


@dataclass(frozen=True)
class VoiceSet:
    """The voices of one split: espeak-ng speaker variants (with every accent) and flite
    voices."""

    espeak_variants: tuple[str, ...]  # "" is each accent's own voice, "+m1" a variant
    flite_voices: tuple[str, ...]

    def espeak_voices(self) -> list[str]:
        return [a + v for a in ESPEAK_ACCENTS for v in self.espeak_variants]


VOICE_SPLITS = {
    "train": VoiceSet(("", "+m1", "+m3", "+m4", "+m6", "+f1", "+f2", "+f5"), ("kal", "awb")),
    "valid": VoiceSet(("+m2", "+f3"), ("slt",)),
    "test": VoiceSet(("+m5", "+m7", "+f4"), ("rms",)),
}


class SynthesizerMissing(RuntimeError):
    """A speech synthesizer program (espeak-ng or flite) is not installed."""


def find_program(name: str) -> str:
    """The path of synthesizer `name` ("espeak-ng" or "flite"), or a `SynthesizerMissing`
    that says how to install it."""
    program = shutil.which(name)
    if program is None:
        raise SynthesizerMissing(
            f"the spoken digits dataset is synthesized with espeak-ng and flite; {name} is not "
            f"installed: install it with `apt-get install {PROGRAMS[name]}` (Debian/Ubuntu) or "
            "your system's package manager, then load the dataset again"
        )
    return program


def find_espeak() -> str:
    """The path of the `espeak-ng` program (see `find_program`)."""
    return find_program("espeak-ng")


def _run(command: list[str], wav: Path, text: str) -> tuple[np.ndarray, int]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0 or not wav.is_file():
        raise RuntimeError(f"{command[0]} failed on {text!r} ({result.stderr.strip()})")
    return read_wav(wav)


def synthesize(
    text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50
) -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng: the samples (N,) float32 and the sample rate."""
    program = find_espeak()
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "utterance.wav"
        command = [program, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        return _run(command, wav, text)


def synthesize_flite(
    text: str, voice: str = "slt", stretch: float = 1.0, pitch_hz: float | None = None
) -> tuple[np.ndarray, int]:
    """Speak `text` with flite: the samples (N,) float32 and the sample rate. `stretch` scales
    the durations (> 1: slower); `pitch_hz` sets the mean pitch (None: the voice's own)."""
    program = find_program("flite")
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "utterance.wav"
        command = [program, "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}"]
        if pitch_hz is not None:
            command += ["--setf", f"int_f0_target_mean={pitch_hz:.1f}"]
        return _run([*command, "-t", text, "-o", str(wav)], wav, text)


def spoken_digits(
    count: int,
    min_digits: int = 1,
    max_digits: int = 5,
    seed: int = 0,
    kind: str = "log_mel",
    voices: str = "train",
) -> list[tuple[np.ndarray, str]]:
    """`count` synthesized utterances as (features (T, F) float32, digit string) pairs, spoken
    by the voices of split `voices` ("train", "valid" or "test"; see `VOICE_SPLITS`)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    if voices not in VOICE_SPLITS:
        raise ValueError(f"voices must be one of {sorted(VOICE_SPLITS)}, got {voices!r}")
    for program in PROGRAMS:
        find_program(program)
    voice_set = VOICE_SPLITS[voices]
    espeak_voices = voice_set.espeak_voices()
    rng = random.Random(seed)
    utterances = []
    for _ in range(count):
        digits = "".join(
            rng.choice("0123456789") for _ in range(rng.randint(min_digits, max_digits))
        )
        text = " ".join(DIGIT_WORDS[int(d)] for d in digits)
        if rng.random() < FLITE_SHARE:
            voice = rng.choice(voice_set.flite_voices)
            stretch = rng.uniform(*FLITE_STRETCH)
            pitch_hz = FLITE_PITCH_HZ[voice] * rng.uniform(*FLITE_PITCH_SCALE)
            samples, sample_rate = synthesize_flite(text, voice, stretch, pitch_hz)
        else:
            voice = rng.choice(espeak_voices)
            speed, pitch = rng.randint(*ESPEAK_SPEEDS), rng.randint(*ESPEAK_PITCHES)
            samples, sample_rate = synthesize(text, voice, speed, pitch)
        utterances.append((features(samples, sample_rate, kind), digits))
    return utterances
