"""The synthetic known-truth benchmark as a datamodule of the data contract (``dataset=synthetic``).

Stimuli come from :mod:`regionaldiff.data.synthetic.scenes` (scenes of coloured shapes with exact region
maps), EEG from the MNE forward model of :mod:`regionaldiff.data.synthetic.forward`:

- each retinotopic source fires a visual evoked response scaled by the fraction of its visual-field cell
  that objects cover (so *where* objects are changes which sources fire);
- each class's category source fires that class's own time course, scaled by the class's share of the
  scene's object pixels (so *what* is shown changes the signal);
- noise: 1/f background sources and posterior alpha through the same forward model, plus white sensor
  noise. ``snr`` is the RMS of the signal over the RMS of the noise of a single repetition; the EEG is in
  units of that noise RMS. ``snr=0`` removes the signal (a test checks decoders are then at chance).

Everything is deterministic from ``seed``; the arrays are cached under ``cache_dir`` by a hash of the
generating config. Splits are by image: the first ``n_train`` images train, the next ``n_val`` validate,
the last ``n_test`` test.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from regionaldiff.config import SyntheticConfig, schema_from_arguments
from regionaldiff.data.base import EEGDataModule, EEGSplit, check_no_stimulus_leak
from regionaldiff.data.synthetic.forward import RETINO_GRID, HeadModel, build_head_model, montage_channels
from regionaldiff.data.synthetic.scenes import CLASS_STYLES, class_centroid, render_scene
from regionaldiff.data.synthetic.signals import alpha_rhythm, class_waveforms, pink_noise, visual_evoked

log = logging.getLogger(__name__)

# Bump when the generator changes, so stale caches are never reused.
GENERATOR_VERSION = 2
# Relative weights of the two signal parts (each first scaled to unit RMS) and of the three noise parts.
RETINO_WEIGHT, CATEGORY_WEIGHT = 1.0, 0.6
BACKGROUND_WEIGHT, ALPHA_WEIGHT, SENSOR_WEIGHT = 1.0, 0.6, 0.5


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (1 where it is 0, so that dividing by it is safe)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 1.0


def retinotopic_coverage(maps: np.ndarray, grid: int = RETINO_GRID) -> np.ndarray:
    """Fraction of each visual-field cell covered by objects: ``[N, grid * grid]`` (row-major, row 0 = top)."""
    n, size, _ = maps.shape
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    covered = maps > 0
    cells = np.empty((n, grid, grid))
    for i in range(grid):
        for j in range(grid):
            cells[:, i, j] = covered[:, edges[i] : edges[i + 1], edges[j] : edges[j + 1]].mean(axis=(1, 2))
    return cells.reshape(n, -1)


def class_shares(maps: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of a scene's object pixels: ``[N, K]``, rows sum to 1."""
    labels = maps.reshape(len(maps), -1)
    counts = np.stack([np.bincount(row, minlength=n_classes + 1)[1 : n_classes + 1] for row in labels]).astype(float)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


def retinotopic_signal(maps: np.ndarray, head: HeadModel, times: np.ndarray) -> np.ndarray:
    """Scalp signal ``[N, C, T]`` of the retinotopic sources: each fires a P1/N1 response (later with eccentricity)
    scaled by the fraction of its visual-field cell that objects cover."""
    g = RETINO_GRID
    centre = (np.arange(g) + 0.5) / g - 0.5
    eccentricity = np.hypot(centre[:, None], centre[None, :]).ravel() / np.hypot(0.5, 0.5)
    cell_waves = np.stack([visual_evoked(times, delay=0.02 * e) for e in eccentricity])  # [G*G, T]
    return np.einsum("cs,ns,st->nct", head.retino, retinotopic_coverage(maps), cell_waves)


def simulate_signal(
    maps: np.ndarray, head: HeadModel, times: np.ndarray, n_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Noise-free scalp signal ``[N, C, T]`` of the scenes whose region maps are ``maps``, unit RMS."""
    retino = retinotopic_signal(maps, head, times)
    category = np.einsum(
        "ck,nk,kt->nct", head.category, class_shares(maps, n_classes), class_waveforms(times, n_classes, rng)
    )
    signal = RETINO_WEIGHT * retino / rms(retino) + CATEGORY_WEIGHT * category / rms(category)
    return (signal / rms(signal)).astype(np.float32)


def simulate_noise(head: HeadModel, n_trials: int, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise ``[N, C, T]``: pink background sources + alpha rhythm (forward-modelled) + sensor noise."""
    n_times = len(times)
    background = np.einsum(
        "cs,nst->nct", head.background, pink_noise(rng, (n_trials, head.background.shape[1]), n_times)
    )
    alpha = np.einsum("cs,nst->nct", head.alpha, alpha_rhythm(rng, n_trials, head.alpha.shape[1], times))
    sensor = rng.normal(size=background.shape)
    noise = (
        BACKGROUND_WEIGHT * background / rms(background) + ALPHA_WEIGHT * alpha / rms(alpha) + SENSOR_WEIGHT * sensor
    )
    return (noise / rms(noise)).astype(np.float32)


def noisy_eeg(snr: float, signal: np.ndarray, noise: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The EEG of the synthetic worlds: ``snr * signal + noise``, float32 (``out``: write it there, which may be
    ``noise``). Signal and noise are each unit RMS, so ``snr`` is the signal RMS over the noise RMS of one repetition;
    ``signal`` broadcasts against ``noise`` (e.g. ``[N, 1, C, T]`` against every repetition ``[N, R, C, T]``)."""
    return np.add(np.float32(snr) * signal, noise, out=out, dtype=np.float32)


def cached_arrays(
    cache_dir: Path | None, stem: str, config: Mapping[str, Any], generate: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays of ``cache_dir/<stem>.npz`` when present and intact, else ``generate()`` saved there (with
    ``config`` and the file's checksum beside them as ``<stem>.json``: :func:`regionaldiff.data.cache.cached_npz`);
    ``cache_dir=None`` generates every time."""
    from regionaldiff.data.cache import cached_npz

    return cached_npz(cache_dir, stem, config, generate)


class GeneratedBenchmark:
    """What the synthetic datamodules share: a generating ``config`` (with ``tmin`` and ``sfreq``) and ``n_times``."""

    config: dict[str, Any]
    n_times: int

    @property
    def config_hash(self) -> str:
        """Hash of the generating config (the cache file's name)."""
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def times(self) -> np.ndarray:
        """Sample times in seconds, onset at 0."""
        return self.config["tmin"] + np.arange(self.n_times) / self.config["sfreq"]


class SyntheticDataModule(GeneratedBenchmark, EEGDataModule):
    """The synthetic benchmark (scenes with known region maps, EEG from an MNE forward model).

    Parameters
    ----------
    seed : int
        Dataset seed (scenes, head-model jitter, class time courses, noise); separate from the training seed.
    n_classes : int
        Number of object classes K, in ``[2, 10]``.
    n_train, n_val, n_test : int
        Number of images per split (splits are by image).
    n_repetitions : int
        EEG repetitions per image, each with independent noise.
    average_repetitions : bool
        Average the repetitions into one trial per image, or keep each repetition as a trial.
    snr : float
        Signal RMS over noise RMS of one repetition (0 removes the signal).
    montage : str
        ``things17`` (THINGS-EEG2's 17 occipito-parietal channels), ``things63`` or ``biosemi128``.
    sfreq, tmin, tmax : float
        Sampling frequency (Hz) and epoch window (s, stimulus onset at 0); ``n_times = round((tmax - tmin) * sfreq)``.
    image_size : int
        Stimulus side in pixels (a multiple of 6, the retinotopic grid, is best but not required).
    min_objects, max_objects : int
        Objects per scene.
    batch_size, num_workers : int
        Loader settings.
    cache_dir : str or None
        Folder of the generated arrays (``synthetic_<hash>.npz``); None generates in memory every time.
    region_labels : {"class", "layout"}
        What region-map labels name (:class:`regionaldiff.regions.RegionLabels`; default: the class).
    """

    name = "synthetic"
    n_chans: int
    n_times: int
    sfreq: float
    ch_names: list[str]
    num_classes: int
    class_names: list[str]

    def __init__(
        self,
        seed: int = 0,
        n_classes: int = 5,
        n_train: int = 1000,
        n_val: int = 100,
        n_test: int = 100,
        n_repetitions: int = 4,
        average_repetitions: bool = True,
        snr: float = 1.0,
        montage: str = "things17",
        sfreq: float = 100.0,
        tmin: float = -0.2,
        tmax: float = 0.8,
        image_size: int = 32,
        min_objects: int = 1,
        max_objects: int = 3,
        batch_size: int = 32,
        num_workers: int = 0,
        region_labels: str = "class",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, image_size=image_size, region_labels=region_labels
        )
        schema_from_arguments(SyntheticConfig, locals())  # every value checked by the config's schema
        self.config: dict[str, Any] = {
            "seed": int(seed), "n_classes": int(n_classes), "n_train": int(n_train), "n_val": int(n_val),
            "n_test": int(n_test), "n_repetitions": int(n_repetitions), "average_repetitions": bool(average_repetitions),
            "snr": float(snr), "montage": montage, "sfreq": float(sfreq), "tmin": float(tmin), "tmax": float(tmax),
            "image_size": int(image_size), "min_objects": int(min_objects), "max_objects": int(max_objects),
            "version": GENERATOR_VERSION,
        }  # fmt: skip
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.ch_names = montage_channels(montage)
        self.n_chans = len(self.ch_names)
        self.n_times = int(round((tmax - tmin) * sfreq))
        self.sfreq = float(sfreq)
        self.num_classes = int(n_classes)
        self.class_names = [style.name for style in CLASS_STYLES[:n_classes]]
        self.class_colours = [style.colours[0] for style in CLASS_STYLES[:n_classes]]
        self._arrays: dict[str, np.ndarray] | None = None

    # -- generation ---------------------------------------------------------------------------
    def generate_arrays(self) -> dict[str, np.ndarray]:
        """Render every scene and simulate its EEG (no cache): :meth:`generate_components` mixed at ``snr``
        (:func:`noisy_eeg`), each repetition kept or their mean."""
        arrays = self.generate_components()
        signal, noise = arrays.pop("signal"), arrays.pop("noise")
        eeg = noisy_eeg(self.config["snr"], signal[:, None], noise, out=noise)
        if self.config["average_repetitions"]:
            eeg = eeg.mean(axis=1, keepdims=True)
        return {"eeg": eeg, **arrays}

    def generate_components(self) -> dict[str, np.ndarray]:
        """The scenes and their EEG's two parts, before :func:`noisy_eeg` mixes them at ``snr``: ``signal``
        float32 ``[N, C, T]`` (noise-free, unit RMS) and ``noise`` float32 ``[N, R, C, T]`` (every repetition's,
        unit RMS), with ``images``, ``maps``, ``labels`` and ``centroids`` as in :meth:`generate_arrays`."""
        c = self.config
        rng = np.random.default_rng(c["seed"])
        n_images = c["n_train"] + c["n_val"] + c["n_test"]
        size, k = c["image_size"], c["n_classes"]
        images = np.zeros((n_images, size, size, 3), dtype=np.uint8)
        maps = np.zeros((n_images, size, size), dtype=np.uint8)
        labels = np.zeros(n_images, dtype=np.int64)
        centroids = np.zeros((n_images, 2), dtype=np.float32)
        for i in tqdm(range(n_images), desc="synthetic scenes", leave=False):
            scene = render_scene(rng, k, size, c["min_objects"], c["max_objects"])
            images[i], maps[i], labels[i] = scene.image, scene.region_map, scene.label
            centroids[i] = class_centroid(scene.region_map, scene.label)
        head = build_head_model(c["montage"], k, np.random.default_rng(c["seed"] + 1))
        signal = simulate_signal(maps, head, self.times, k, np.random.default_rng(c["seed"] + 2))
        noise = np.empty((n_images, c["n_repetitions"], self.n_chans, self.n_times), dtype=np.float32)
        for r in range(c["n_repetitions"]):
            noise[:, r] = simulate_noise(head, n_images, self.times, rng)
        return {
            "signal": signal,
            "noise": noise,
            "images": images,
            "maps": maps,
            "labels": labels,
            "centroids": centroids,
        }

    def cache_estimate_bytes(self) -> int:
        """Size of the cached arrays (EEG float32, images and maps uint8), for ``regionaldiff check``."""
        c = self.config
        n_images = c["n_train"] + c["n_val"] + c["n_test"]
        reps = 1 if c["average_repetitions"] else c["n_repetitions"]
        eeg = n_images * reps * self.n_chans * self.n_times * 4
        return int(eeg + n_images * c["image_size"] ** 2 * 4 + n_images * 16)

    def _load(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = cached_arrays(
                self.cache_dir, f"synthetic_{self.config_hash}", self.config, self.generate_arrays
            )
        return self._arrays

    def _bounds(self) -> dict[str, tuple[int, int]]:
        c = self.config
        val_end = c["n_train"] + c["n_val"]
        return {"train": (0, c["n_train"]), "val": (c["n_train"], val_end), "test": (val_end, val_end + c["n_test"])}

    @staticmethod
    def image_id(index: int) -> str:
        """Stable stimulus id of image ``index``."""
        return f"syn_{index:06d}"

    def build_split(self, split: str) -> EEGSplit:
        a = self._load()
        bounds = self._bounds()
        check_no_stimulus_leak(
            {s: [self.image_id(i) for i in range(*b)] for s, b in bounds.items()},
            pairs=(("train", "test"), ("val", "test"), ("train", "val")),
        )
        lo, hi = bounds[split]
        reps = a["eeg"].shape[1]
        index = np.repeat(np.arange(lo, hi), reps)
        return EEGSplit(
            eeg=a["eeg"][lo:hi].reshape(-1, self.n_chans, self.n_times),
            labels=a["labels"][index],
            image_ids=[self.image_id(int(i)) for i in index],
            subjects=np.ones(len(index), dtype=np.int64),
            images={self.image_id(i): a["images"][i] for i in range(lo, hi)},
            extras={"centroid": a["centroids"][index]},
        )

    def ground_truth_region_maps(self) -> Mapping[str, np.ndarray]:
        a = self._load()
        return {self.image_id(i): a["maps"][i].astype(np.int64) for i in range(len(a["maps"]))}

    @property
    def subject_ids(self) -> list[int]:
        """One subject (number 1): the default world simulates one."""
        return [1]

    def describe(self) -> dict:
        return {**super().describe(), "montage": self.config["montage"], "snr": self.config["snr"]}
