"""WAV reading, log-mel and MFCC features, and spoken digits synthesized with espeak-ng."""

import json
import shutil
import sys

import librosa
import numpy as np
import pytest
import scipy.fft
import soundfile

from rnnkit.data import DataError, log_mel, mfcc, read_wav, wav_features
from rnnkit.data.speech import DIGIT_WORDS, SynthesizerMissing, spoken_digits

RATE = 16_000


def tone(frequency, seconds=0.5, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def test_read_wav_mono_and_stereo(tmp_path):
    samples = tone(440)
    soundfile.write(tmp_path / "mono.wav", samples, RATE, subtype="FLOAT")
    read, rate = read_wav(tmp_path / "mono.wav")
    assert rate == RATE
    np.testing.assert_array_equal(read, samples)
    stereo = np.stack([samples, np.zeros_like(samples)], axis=1)
    soundfile.write(tmp_path / "stereo.wav", stereo, RATE, subtype="FLOAT")
    np.testing.assert_allclose(read_wav(tmp_path / "stereo.wav")[0], samples / 2)


def test_log_mel_peaks_at_the_tone(tmp_path):
    features = log_mel(tone(1000), RATE, n_mels=40)
    assert features.shape == (1 + len(tone(1000)) // 160, 40)  # a frame every 10 ms
    centres = librosa.mel_frequencies(n_mels=42, fmax=RATE / 2)[1:-1]  # band centres
    peak = centres[features[10:-10].mean(axis=0).argmax()]
    assert abs(peak - 1000) < 100, peak
    higher = log_mel(tone(3000), RATE, n_mels=40)[10:-10].mean(axis=0).argmax()
    assert abs(centres[higher] - 3000) < 250


def test_mfcc_is_the_dct_of_the_log_mel_power():
    samples = tone(700)
    power = np.exp(log_mel(samples, RATE).T.astype(np.float64)) - 1e-10  # (n_mels, T)
    reference = scipy.fft.dct(librosa.power_to_db(power), axis=0, type=2, norm="ortho")[:13].T
    np.testing.assert_allclose(mfcc(samples, RATE), reference, rtol=1e-3, atol=1e-2)


def test_wav_errors(tmp_path):
    not_wav = tmp_path / "notes.wav"
    not_wav.write_text("hello")
    with pytest.raises(DataError, match="notes.wav: not a readable WAV file"):
        wav_features(not_wav)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match="empty.wav: the file is empty"):
        read_wav(tmp_path / "empty.wav")


FAKE_ESPEAK = """#!{python}
import json, sys
import numpy as np, soundfile
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
t = np.arange(4410) / 22050
soundfile.write(args[args.index("-w") + 1], 0.3 * np.sin(2 * np.pi * 300 * t), 22050)
"""


def test_spoken_digits_drive_espeak_and_label_the_audio(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    program = tmp_path / "espeak-ng"
    program.write_text(FAKE_ESPEAK.format(python=sys.executable, log=str(log)))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    utterances = spoken_digits(3, min_digits=2, max_digits=4, seed=5)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(utterances) == len(calls) == 3
    for (features, digits), args in zip(utterances, calls, strict=True):
        assert features.shape == (1 + 4410 // 220, 40) and features.dtype == np.float32
        assert 2 <= len(digits) <= 4
        assert args[-1] == " ".join(DIGIT_WORDS[int(d)] for d in digits)  # the spoken words
        assert args[args.index("-v") + 1].startswith("en")


def test_spoken_digits_without_espeak_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SynthesizerMissing, match=r"apt-get install espeak-ng"):
        spoken_digits(1)
