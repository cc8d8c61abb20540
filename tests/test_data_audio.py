"""WAV reading, log-mel and MFCC features, and spoken digits synthesized with espeak-ng and
flite (faked here by scripts that log their arguments; the real programs in test_task_speech)."""

import json
import shutil
import sys

import librosa
import numpy as np
import pytest
import scipy.fft
import soundfile

from rnnkit.data import DataError, log_mel, mfcc, read_wav, wav_features
from rnnkit.data.audio import SAMPLE_RATE, features
from rnnkit.data.speech import (
    DIGIT_WORDS,
    ESPEAK_ACCENTS,
    VOICE_SPLITS,
    SynthesizerMissing,
    spoken_digits,
)

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
    soundfile.write(tmp_path / "click.wav", tone(440)[:10], RATE)  # 10 samples: 0.6 ms
    with pytest.raises(DataError, match=r"click.wav: the recording lasts 0.6 ms, less than one"):
        wav_features(tmp_path / "click.wav")
    soundfile.write(tmp_path / "short.wav", tone(440)[:400], RATE)  # one frame: features
    assert wav_features(tmp_path / "short.wav").shape[0] >= 1


def test_features_resample_to_16_khz():
    """8 kHz audio gives the features of the same sound at 16 kHz (librosa's resampling)."""
    low = tone(1000, rate=8000)
    expected = log_mel(librosa.resample(low, orig_sr=8000, target_sr=SAMPLE_RATE), SAMPLE_RATE)
    np.testing.assert_allclose(features(low, 8000), expected, rtol=1e-5, atol=1e-5)
    assert features(low, 8000).shape == features(tone(1000), RATE).shape
    np.testing.assert_array_equal(features(tone(1000), RATE), log_mel(tone(1000), RATE))


FAKE_SYNTHESIZER = """#!{python}
import json, math, struct, sys, wave
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps([{name!r}, *args]) + "\\n")
rate = {rate}
tone = [round(9000 * math.sin(2 * math.pi * 300 * i / rate)) for i in range(rate // 5)]
with wave.open(args[args.index({out!r}) + 1], "wb") as wav:
    wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(rate)
    wav.writeframes(struct.pack(f"<{{len(tone)}}h", *tone))
"""


def fake_synthesizers(folder, monkeypatch):
    """Fake espeak-ng (22.05 kHz) and flite (8 kHz) in `folder`; returns the call log."""
    log = folder / "calls.jsonl"
    for name, rate, out in (("espeak-ng", 22050, "-w"), ("flite", 8000, "-o")):
        program = folder / name
        program.write_text(
            FAKE_SYNTHESIZER.format(
                python=sys.executable, log=str(log), name=name, rate=rate, out=out
            )
        )
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return log


def test_spoken_digits_drive_the_synthesizers_and_label_the_audio(tmp_path, monkeypatch):
    log = fake_synthesizers(tmp_path, monkeypatch)
    utterances = spoken_digits(12, min_digits=2, max_digits=4, seed=5)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(utterances) == len(calls) == 12
    assert {call[0] for call in calls} == {"espeak-ng", "flite"}  # both speak
    for (feats, digits), call in zip(utterances, calls, strict=True):
        assert feats.shape == (1 + SAMPLE_RATE // 5 // 160, 40) and feats.dtype == np.float32
        assert 2 <= len(digits) <= 4
        words = " ".join(DIGIT_WORDS[int(d)] for d in digits)
        if call[0] == "espeak-ng":
            assert call[-1] == words  # the spoken words
        else:
            assert call[call.index("-t") + 1] == words


def _voices(call):
    flag = "-v" if call[0] == "espeak-ng" else "-voice"
    return call[0], call[call.index(flag) + 1]


def test_each_split_speaks_with_its_own_disjoint_voices(tmp_path, monkeypatch):
    log = fake_synthesizers(tmp_path, monkeypatch)
    heard = {}
    for split in ("train", "valid", "test"):
        log.write_text("")
        spoken_digits(30, seed=3, voices=split)
        heard[split] = {_voices(json.loads(line)) for line in log.read_text().splitlines()}
        allowed = {("espeak-ng", v) for v in VOICE_SPLITS[split].espeak_voices()}
        allowed |= {("flite", v) for v in VOICE_SPLITS[split].flite_voices}
        assert heard[split] <= allowed and len(heard[split]) > 5
    assert not heard["train"] & heard["test"] and not heard["train"] & heard["valid"]
    assert not heard["valid"] & heard["test"]
    variants = [set(VOICE_SPLITS[s].espeak_variants) for s in ("train", "valid", "test")]
    assert not (variants[0] & variants[1] or variants[0] & variants[2] or variants[1] & variants[2])
    flite = [set(VOICE_SPLITS[s].flite_voices) for s in ("train", "valid", "test")]
    assert not (flite[0] & flite[1] or flite[0] & flite[2] or flite[1] & flite[2])
    assert len(ESPEAK_ACCENTS) == 5
    with pytest.raises(ValueError, match="voices must be one of"):
        spoken_digits(1, voices="dev")


@pytest.mark.parametrize("missing", ["espeak-ng", "flite"])
def test_spoken_digits_without_a_synthesizer_names_the_package(monkeypatch, missing):
    found = {"espeak-ng": "/usr/bin/espeak-ng", "flite": "/usr/bin/flite", missing: None}
    monkeypatch.setattr(shutil, "which", found.get)
    with pytest.raises(SynthesizerMissing, match=rf"apt-get install {missing}"):
        spoken_digits(1)
