"""Source time courses and noise of the synthetic benchmark.

- :func:`visual_evoked`: a P1/N1-like evoked response of the retinotopic sources (latency grows with
  eccentricity, as the cortical magnification would suggest);
- :func:`class_waveforms`: one evoked time course per class for the category sources (class-specific
  latency, frequency and phase, drawn from the dataset seed);
- :func:`pink_noise`: 1/f activity of the background sources;
- :func:`alpha_rhythm`: an 8-12 Hz posterior rhythm with a random phase and amplitude per trial.
"""

from __future__ import annotations

import numpy as np


def visual_evoked(times: np.ndarray, delay: float = 0.0) -> np.ndarray:
    """P1/N1-like response ``[T]`` (P1 at 100 ms, N1 at 170 ms after onset, shifted by ``delay`` seconds)."""
    t = times - delay
    return np.exp(-(((t - 0.10) / 0.025) ** 2)) - 0.8 * np.exp(-(((t - 0.17) / 0.035) ** 2))


def class_waveforms(times: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``[K, T]`` class-specific evoked time courses, each with its own latency, frequency and phase."""
    waves = []
    for k in range(n_classes):
        latency = 0.15 + 0.25 * k / max(n_classes - 1, 1) + rng.uniform(-0.02, 0.02)
        freq = rng.uniform(4.0, 10.0)
        phase = rng.uniform(0, 2 * np.pi)
        envelope = np.exp(-(((times - latency) / 0.08) ** 2))
        waves.append(envelope * np.sin(2 * np.pi * freq * (times - latency) + phase))
    return np.asarray(waves)


def pink_noise(rng: np.random.Generator, shape: tuple[int, ...], n_times: int) -> np.ndarray:
    """1/f (pink) noise ``[*shape, n_times]`` along the last axis, unit variance overall."""
    n_freqs = n_times // 2 + 1
    spectrum = rng.normal(size=(*shape, n_freqs)) + 1j * rng.normal(size=(*shape, n_freqs))
    freqs = np.arange(n_freqs, dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n=n_times)
    return noise / noise.std()


def alpha_rhythm(rng: np.random.Generator, n_trials: int, n_sources: int, times: np.ndarray) -> np.ndarray:
    """``[N, S, T]`` alpha oscillations (8-12 Hz), random frequency, phase and amplitude per trial and source."""
    freq = rng.uniform(8.0, 12.0, size=(n_trials, n_sources, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_trials, n_sources, 1))
    amplitude = rng.uniform(0.5, 1.5, size=(n_trials, n_sources, 1))
    return amplitude * np.sin(2 * np.pi * freq * times[None, None] + phase)
