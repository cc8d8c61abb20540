"""Audio features: WAV files (through `soundfile`) to log-mel spectrograms or MFCCs (`librosa`).

Frames are `frame_ms` long every `hop_ms` (25 ms every 10 ms by default, the usual speech
setting), so one second of audio gives about 100 feature rows. `features` and `wav_features`
first resample to `SAMPLE_RATE` (16 kHz), so that recordings made at any rate give the same
mel bands (0-8 kHz) to a model; `log_mel` and `mfcc` take the rate they are given.

    log_mel: (T, n_mels)  log(mel power + 1e-10)
    mfcc:    (T, n_mfcc)  the DCT of the mel power in decibels (librosa's MFCC)

Synthesizing speech lives in `rnnkit.data.speech`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rnnkit.data.files import DataError

FEATURES = ("log_mel", "mfcc")
SAMPLE_RATE = 16_000  # Hz, the rate `features` resamples to


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """The samples (N,) float32 in [-1, 1] (channels averaged to mono) and the sample rate."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "no such file; check the path")
    if path.stat().st_size == 0:
        raise DataError(path, None, "the file is empty; expected a WAV file")
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as error:
        raise DataError(path, None, f"not a readable WAV file ({error})") from None
    if len(samples) == 0:
        raise DataError(path, None, "the WAV file holds no samples")
    return samples.mean(axis=1), int(sample_rate)


def _mel_power(
    samples: np.ndarray, sample_rate: int, n_mels: int, frame_ms: float, hop_ms: float
) -> np.ndarray:
    """Mel power spectrogram (n_mels, T)."""
    import librosa

    frame = round(sample_rate * frame_ms / 1000)
    hop = round(sample_rate * hop_ms / 1000)
    if frame < 2 or hop < 1:
        raise ValueError(
            f"frame_ms={frame_ms} and hop_ms={hop_ms} are too short at {sample_rate} Hz"
        )
    n_fft = 1 << (frame - 1).bit_length()  # the next power of two
    samples = np.asarray(samples, dtype=np.float32)
    return librosa.feature.melspectrogram(
        y=samples,
        sr=sample_rate,
        n_fft=n_fft,
        win_length=frame,
        hop_length=hop,
        n_mels=n_mels,
        power=2.0,
    )


def log_mel(
    samples: np.ndarray,
    sample_rate: int,
    n_mels: int = 40,
    frame_ms: float = 25.0,
    hop_ms: float = 10.0,
) -> np.ndarray:
    """Log-mel features (T, n_mels) float32 of mono `samples`."""
    power = _mel_power(samples, sample_rate, n_mels, frame_ms, hop_ms)  # (n_mels, T)
    return np.log(power + 1e-10).T.astype(np.float32)


def mfcc(
    samples: np.ndarray,
    sample_rate: int,
    n_mfcc: int = 13,
    n_mels: int = 40,
    frame_ms: float = 25.0,
    hop_ms: float = 10.0,
) -> np.ndarray:
    """MFCC features (T, n_mfcc) float32 of mono `samples`."""
    import librosa

    power = _mel_power(samples, sample_rate, n_mels, frame_ms, hop_ms)  # (n_mels, T)
    coefficients = librosa.feature.mfcc(S=librosa.power_to_db(power), n_mfcc=n_mfcc)
    return coefficients.T.astype(np.float32)  # (T, n_mfcc)


def features(samples: np.ndarray, sample_rate: int, kind: str = "log_mel") -> np.ndarray:
    """`log_mel` or `mfcc` features with the default settings, by name, of `samples`
    resampled to `SAMPLE_RATE`."""
    if kind not in FEATURES:
        raise ValueError(f"feature kind must be one of {FEATURES}, got {kind!r}")
    if sample_rate != SAMPLE_RATE:
        import librosa

        samples = librosa.resample(
            np.asarray(samples, dtype=np.float32), orig_sr=sample_rate, target_sr=SAMPLE_RATE
        )
        sample_rate = SAMPLE_RATE
    return log_mel(samples, sample_rate) if kind == "log_mel" else mfcc(samples, sample_rate)


FRAME_MS = 25.0  # the analysis frame of `log_mel` and `mfcc`: a recording needs one


def wav_features(path: str | os.PathLike, kind: str = "log_mel") -> np.ndarray:
    """Features (T, F) of a WAV file: `read_wav` then `features`; a recording shorter than one
    analysis frame (25 ms) is a DataError (its features would be the padding's)."""
    samples, sample_rate = read_wav(path)
    milliseconds = 1000 * len(samples) / sample_rate
    if milliseconds < FRAME_MS:
        raise DataError(
            path,
            None,
            f"the recording lasts {milliseconds:.1f} ms, less than one {FRAME_MS:g} ms analysis "
            "frame; give a longer recording",
        )
    return features(samples, sample_rate, kind)
