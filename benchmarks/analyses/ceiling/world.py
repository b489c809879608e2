"""The data of the decoding ceiling: each world's scenes, and its EEG as noise-free signal and per-repetition noise.

The default world (:func:`simulate`) comes from one
:meth:`~regionaldiff.data.synthetic.SyntheticDataModule.generate_components`, a realistic preset's
(:func:`simulate_preset`) from one ``generate_arrays`` at ``snr=0`` (the noise) and ``simulate_signal`` on the same
scenes; both are configured by composing ``regionaldiff``'s own config, and a condition's EEG is mixed by the
library's :func:`~regionaldiff.data.synthetic.datamodule.noisy_eeg`, as the datamodules mix it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from regionaldiff.config import compose_config
from regionaldiff.data.synthetic.datamodule import noisy_eeg

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Splits:
    """Sizes of the train, validation and test splits (images, in this order in every array)."""

    n_train: int
    n_val: int
    n_test: int

    @property
    def val(self) -> slice:
        return slice(self.n_train, self.n_train + self.n_val)

    @property
    def test(self) -> slice:
        return slice(self.n_train + self.n_val, self.n_train + self.n_val + self.n_test)


@dataclass
class Scenes:
    """What every world has besides its EEG: the scenes' true maps and labels, the splits, and the label counts.

    Attributes
    ----------
    maps : np.ndarray
        ``[N, S, S]`` true region maps in the labels the pipeline scores (0 = background).
    labels : np.ndarray
        int64 ``[N]`` scene labels (the class covering the most pixels, or the concept).
    splits : Splits
        Images per split (train, validation, test, in this order in every array).
    n_labels : int
        Map labels, background included (the datamodule's ``num_region_labels``).
    n_classes : int or None
        Classes of the closed set; None for a zero-shot preset (no class probe: its test concepts are unseen).
    grid : int
        Side of the coarse map the probes predict (the region head's ``encoder.net.region_grid``).
    """

    maps: np.ndarray
    labels: np.ndarray
    splits: Splits
    n_labels: int
    n_classes: int | None
    grid: int


@dataclass
class Components(Scenes):
    """Binned noise-free signal and noise of one montage's dataset.

    Attributes
    ----------
    signal : np.ndarray
        float32 ``[N, C, T']``: the EEG at ``snr=1`` without noise (``T'`` time bins).
    noise : np.ndarray
        float32 ``[N, R, C, T']``: the noise of each of the ``R`` repetitions.
    """

    signal: np.ndarray
    noise: np.ndarray


def bin_time(eeg: np.ndarray, width: int) -> np.ndarray:
    """Average ``eeg [..., T]`` in consecutive bins of ``width`` samples (a remainder at the end is dropped)."""
    if width <= 1:
        return eeg
    n_bins = eeg.shape[-1] // width
    return eeg[..., : n_bins * width].reshape(*eeg.shape[:-1], n_bins, width).mean(-1)


def compose(overrides: Sequence[str]) -> DictConfig:
    """The config ``regionaldiff OVERRIDES`` runs (:func:`regionaldiff.config.compose_config`, paths under the
    repository)."""
    return compose_config([f"paths.root_dir={ROOT}", *overrides])


def simulate(
    montage: str, splits: Splits, seed: int = 0, n_repetitions: int = 4, time_bin: int = 4, verbose: bool = True
) -> Components:
    """Signal and per-repetition noise of ``montage``'s dataset (``dataset=synthetic`` with these sizes, seed and
    repetitions) from one :meth:`SyntheticDataModule.generate_components`.

    Parameters
    ----------
    montage : str
        ``things17``, ``things63`` or ``biosemi128``.
    splits : Splits
        Images per split (the dataset's ``n_train``, ``n_val``, ``n_test``).
    seed : int
        Dataset seed.
    n_repetitions : int
        Repetitions per image.
    time_bin : int
        Samples per time bin (:func:`bin_time`; binning is linear, so it commutes with scaling and averaging).
    verbose : bool
        Print the generation time.

    Returns
    -------
    Components
        Binned signal and noise, maps and labels.
    """
    t0 = time.perf_counter()
    cfg = compose(
        [f"dataset.montage={montage}", f"dataset.seed={seed}", f"dataset.n_repetitions={n_repetitions}"]
        + [f"dataset.n_{split}={getattr(splits, f'n_{split}')}" for split in ("train", "val", "test")]
    )
    dm = hydra.utils.instantiate(cfg.dataset, average_repetitions=False, cache_dir=None)
    parts = dm.generate_components()
    signal = bin_time(parts["signal"], time_bin)
    noise = bin_time(parts["noise"], time_bin)
    if verbose:
        print(f"[{montage}] generated {len(signal)} images x {n_repetitions} reps in {time.perf_counter() - t0:.0f} s")
    return Components(
        maps=parts["maps"],
        labels=parts["labels"],
        splits=splits,
        n_labels=dm.num_region_labels,
        n_classes=dm.num_classes,
        grid=int(cfg.encoder.net.region_grid),
        signal=signal.astype(np.float32),
        noise=noise.astype(np.float32),
    )


def condition_eeg(components: Components, snr: float, averaged: bool) -> np.ndarray:
    """The EEG ``[N, C, T']`` of one condition: averaged repetitions or repetition 0 (single trial)."""
    noise = components.noise.mean(axis=1) if averaged else components.noise[:, 0]
    return noisy_eeg(snr, components.signal, noise)


@dataclass
class PresetWorld(Scenes):
    """A realistic preset's data split into noise-free signal and per-repetition noise (one subject).

    Attributes
    ----------
    signal : np.ndarray
        float32 ``[N, C, T']``: the binned EEG at ``snr=1`` without noise, train, validation and test images in order.
    noise : dict
        split -> float32 ``[n, R, C, T']``, the noise of each of the split's ``R`` repetitions.
    snr : float
        The preset's ``dataset.snr``.

    Its maps are in the labels the pipeline scores (object / background layouts, or classes); its labels are the
    concept (class) of each image.
    """

    signal: np.ndarray
    noise: dict[str, np.ndarray]
    snr: float

    def eeg(self, snr: float, test_repetitions: int | None = None) -> np.ndarray:
        """``[N, C, T']``: ``snr * signal`` plus each split's noise averaged over its repetitions, as the pipeline
        reads the preset (``test_repetitions``: average only the first ones of the test split)."""
        noise = [
            self.noise[split][:, :test_repetitions].mean(axis=1) if split == "test" else self.noise[split].mean(axis=1)
            for split in ("train", "val", "test")
        ]
        return noisy_eeg(snr, self.signal, np.concatenate(noise))


def simulate_preset(
    preset: str, overrides: Sequence[str] = (), images_factor: int = 1, time_bin: int = 4, verbose: bool = True
) -> PresetWorld:
    """The preset's data (``regionaldiff dataset=<preset> <overrides>``) as signal and noise, from one
    :meth:`~regionaldiff.data.synthetic.concept_world.ConceptWorldDataModule.generate_arrays` at ``snr=0`` (the
    noise, every repetition kept) and its ``simulate_signal`` on the same scenes.

    Parameters
    ----------
    preset : str
        ``synthetic_things`` or ``synthetic_imagenet``.
    overrides : sequence of str
        Hydra overrides of the dataset (``dataset.KEY=VALUE``), e.g. smaller sizes in tests.
    images_factor : int
        Training images per concept multiplied by this (more data than the preset; other scenes are drawn).
    time_bin, verbose
        Samples per time bin (:func:`bin_time`), and print the generation time.

    Returns
    -------
    PresetWorld
    """
    t0 = time.perf_counter()
    cfg = compose([f"dataset={preset}", *overrides])
    if cfg.dataset.n_subjects != 1:
        raise ValueError(f"--preset reads one subject; dataset.n_subjects is {cfg.dataset.n_subjects}.")
    images = int(cfg.dataset.images_per_concept) * images_factor
    dm = hydra.utils.instantiate(
        cfg.dataset, snr=0.0, average_repetitions=False, images_per_concept=images, cache_dir=None
    )
    arrays = dm.generate_arrays()
    splits = Splits(*(len(arrays[f"{s}_labels"]) for s in ("train", "val", "test")))
    maps = np.concatenate([arrays[f"{s}_maps"] for s in ("train", "val", "test")])
    signal = bin_time(dm.simulate_signal(maps, dm.head_model(0)), time_bin)
    noise = {s: bin_time(arrays[f"{s}_eeg_s0"], time_bin).astype(np.float32) for s in ("train", "val", "test")}
    if verbose:
        print(f"[{preset}] generated {len(maps)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    return PresetWorld(
        signal=signal.astype(np.float32),
        noise=noise,
        maps=dm.region_labels.relabel(maps).astype(np.int64),
        labels=np.concatenate([arrays[f"{s}_labels"] for s in ("train", "val", "test")]).astype(np.int64),
        splits=splits,
        snr=float(cfg.dataset.snr),
        n_labels=dm.num_region_labels,
        n_classes=None if cfg.dataset.protocol == "zero_shot" else dm.num_classes,
        grid=int(cfg.encoder.net.region_grid),
    )
