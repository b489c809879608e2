"""The realistic presets of the synthetic benchmark: many concepts, EEG as weak as real EEG.

``dataset=synthetic_things`` (zero-shot, THINGS-EEG2-like) and ``dataset=synthetic_imagenet`` (closed set,
EEG-ImageNet-like, single trials) build :class:`ConceptWorldDataModule`. The default ``dataset=synthetic`` stays the
fast, easy smoke world.

Stimuli. Concepts are combinations of attributes (:mod:`regionaldiff.data.synthetic.concepts`: shape x colour x
texture, 640 in all). A scene is object-centred, as THINGS and ImageNet photographs are: the named object (the label)
at a random position, over up to ``max_clutter`` smaller clutter objects of concepts of the same split, on a
textured grey background. Zero-shot: the validation and test concepts never appear in training, not even as clutter;
closed set: every split shows the same concepts, split by image. Images are in random order within a split (no block
design, so no slow drift can leak the class).

EEG, through each subject's MNE forward model (:mod:`regionaldiff.data.synthetic.forward`, the layout shared by the
subjects, each subject's dipoles moved and tilted by ``subject_jitter``; optionally each subject's evoked responses
delayed by its own latency, ``subject_latency_jitter``, and its signal stronger or weaker, ``subject_snr_spread``):

- **location** (early): each retinotopic source fires a P1/N1 response (about 100 ms) scaled by the fraction of its
  visual-field cell that objects cover, the clutter's included;
- **category** (later, 150-400 ms): one source per attribute value (30 in all) fires its own time course, scaled by
  the share of object pixels showing that attribute, so a concept's signal is the sum of its attributes' and an
  unseen concept's is predictable from seen ones; plus an **idiosyncratic** part (``idiosyncratic``, its share of
  the category signal's RMS) that is each concept's own (a random mixture of the attribute sources with a time
  course of its own), which no attribute predicts;
- **noise**: as the default world's (1/f background sources, posterior alpha, sensor noise), independent for every
  repetition; ``snr`` is the signal RMS over the noise RMS of a single repetition.

``location_weight`` and ``category_weight`` set the two signal parts' shares (each part is first scaled to unit RMS).
The test split keeps every repetition (``test_repetitions``): its trials are their average, and
:meth:`ConceptWorldDataModule.averaged_split` averages fewer (the retrieval-against-repetitions curve). Training and
validation repetitions are averaged (``average_repetitions``, as NICE and ATM average THINGS-EEG2's four) or kept
as trials. ``subjects`` selects the subjects whose trials make the splits (one model per subject: ``subjects: s``);
``test_subject`` picks the inter-subject protocol: train and validate on the other (selected) subjects, test on that
one. Subject ``s``'s trials carry the subject number ``s + 1`` (:attr:`ConceptWorldDataModule.subject_ids`). The signal levels of the presets are calibrated against real EEG's decoding bands (docs/realistic.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from regionaldiff.config import ConceptWorldConfig, schema_from_arguments, subject_list
from regionaldiff.data.base import EEGDataModule, EEGSplit, check_no_stimulus_leak
from regionaldiff.data.synthetic.concepts import N_ATTRIBUTES, attribute_matrix, draw_concepts
from regionaldiff.data.synthetic.datamodule import (
    GeneratedBenchmark,
    cached_arrays,
    class_shares,
    noisy_eeg,
    retinotopic_signal,
    rms,
    simulate_noise,
)
from regionaldiff.data.synthetic.forward import HeadModel, build_head_model, montage_channels
from regionaldiff.data.synthetic.scenes import class_centroid, render_object_scene
from regionaldiff.data.synthetic.signals import class_waveforms
from regionaldiff.errors import ConfigError

# Bump when the generator changes, so stale caches are never reused.
GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
#: the config key of each split's images per concept
IMAGES_PER_CONCEPT = {
    "train": "images_per_concept",
    "val": "val_images_per_concept",
    "test": "test_images_per_concept",
}
# noise trials simulated at once (memory: chunk x channels x times x 8 bytes per intermediate)
NOISE_CHUNK = 2048


class ConceptWorldDataModule(GeneratedBenchmark, EEGDataModule):
    """The realistic presets of the synthetic benchmark (concepts from attributes, weak single-trial EEG).

    Parameters
    ----------
    seed : int
        Dataset seed (concepts, scenes, forward model, time courses, noise); separate from the training seed.
    protocol : {"zero_shot", "closed_set"}
        ``zero_shot``: validation and test concepts never appear in training (THINGS-EEG2); ``closed_set``: every
        split shows the same concepts (EEG-ImageNet).
    n_concepts : int
        Training concepts (closed set: the classes).
    n_val_concepts, n_test_concepts : int
        Zero-shot only: concepts of the validation and test splits (the classes after the training concepts).
    images_per_concept, val_images_per_concept, test_images_per_concept : int
        Images of each concept in each split.
    n_repetitions : int
        EEG repetitions of each training and validation image.
    average_repetitions : bool
        Average the training and validation repetitions into one trial per image, or keep each as a trial.
    test_repetitions : int
        Repetitions of each test image; its trials are their average (fewer: :meth:`averaged_split`).
    snr : float
        Signal RMS over noise RMS of one repetition (0 removes the signal).
    location_weight, category_weight : float
        Shares of the retinotopic (location) and attribute (category) signal, each scaled to unit RMS first.
    idiosyncratic : float
        Share, in ``[0, 1]``, of the category signal's RMS that is each concept's own (no attribute predicts it).
    n_subjects : int
        Subjects; each sees every image, with a forward model of their own.
    subject_jitter : float
        How far each subject's retinotopic and category dipoles move (a fraction of the brain radius).
    subject_latency_jitter : float
        Standard deviation, in seconds, of each subject's delay of every evoked response (location and category);
        0: every subject responds at the same latencies.
    subject_snr_spread : float
        Standard deviation of the log of each subject's SNR factor (the subject's ``snr`` is ``snr * exp(z *
        spread)``, ``z`` standard normal); 0: every subject at ``snr``. See :meth:`subject_profile`.
    subjects : int, list of int or None
        None: every subject. Else the subjects (0-based, as ``test_subject``) whose trials make the splits; every
        subject is still generated (and cached) as before, only what is read changes.
    test_subject : int or None
        None: every subject in every split (intra-subject). ``s``: train and validate on the other subjects, test
        on subject ``s`` (inter-subject, leave one out).
    max_clutter : int
        Clutter objects per scene, at most.
    montage, sfreq, tmin, tmax, image_size, batch_size, num_workers, region_labels, cache_dir
        As for :class:`~regionaldiff.data.synthetic.SyntheticDataModule`.
    """

    name = "synthetic_concepts"
    n_chans: int
    n_times: int
    sfreq: float
    ch_names: list[str]
    num_classes: int
    class_names: list[str]

    def __init__(
        self,
        seed: int = 0,
        protocol: str = "zero_shot",
        n_concepts: int = 400,
        n_val_concepts: int = 40,
        n_test_concepts: int = 200,
        images_per_concept: int = 4,
        val_images_per_concept: int = 1,
        test_images_per_concept: int = 1,
        n_repetitions: int = 4,
        average_repetitions: bool = True,
        test_repetitions: int = 80,
        snr: float = 0.3,
        location_weight: float = 0.7,
        category_weight: float = 1.0,
        idiosyncratic: float = 0.3,
        n_subjects: int = 1,
        subject_jitter: float = 0.03,
        subject_latency_jitter: float = 0.0,
        subject_snr_spread: float = 0.0,
        subjects: Any = None,
        test_subject: int | None = None,
        max_clutter: int = 2,
        montage: str = "things17",
        sfreq: float = 100.0,
        tmin: float = -0.2,
        tmax: float = 0.8,
        image_size: int = 32,
        batch_size: int = 32,
        num_workers: int = 0,
        region_labels: str = "layout",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, image_size=image_size, region_labels=region_labels
        )
        checked = schema_from_arguments(ConceptWorldConfig, locals())  # every value checked by the config's schema
        n_val_concepts, n_test_concepts = checked.held_out_concepts
        total = n_concepts + n_val_concepts + n_test_concepts
        self.config: dict[str, Any] = {
            "seed": int(seed), "protocol": protocol, "n_concepts": int(n_concepts),
            "n_val_concepts": int(n_val_concepts), "n_test_concepts": int(n_test_concepts),
            "images_per_concept": int(images_per_concept), "val_images_per_concept": int(val_images_per_concept),
            "test_images_per_concept": int(test_images_per_concept), "n_repetitions": int(n_repetitions),
            "test_repetitions": int(test_repetitions), "snr": float(snr), "location_weight": float(location_weight),
            "category_weight": float(category_weight), "idiosyncratic": float(idiosyncratic),
            "n_subjects": int(n_subjects), "subject_jitter": float(subject_jitter), "max_clutter": int(max_clutter),
            "montage": montage, "sfreq": float(sfreq), "tmin": float(tmin), "tmax": float(tmax),
            "image_size": int(image_size), "version": GENERATOR_VERSION,
        }  # fmt: skip
        # the subjects' latency and SNR spread, added after caches were keyed without them: in the key only when they
        # change the data
        self.subject_latency_jitter, self.subject_snr_spread = float(subject_latency_jitter), float(subject_snr_spread)
        differences = {
            "subject_latency_jitter": self.subject_latency_jitter,
            "subject_snr_spread": self.subject_snr_spread,
        }
        self.config.update({key: value for key, value in differences.items() if value != 0})
        # how the splits are read, not what is generated: outside the cache key
        self.average_repetitions = bool(average_repetitions)
        self.test_subject = None if test_subject is None else int(test_subject)
        self.subjects = list(range(int(n_subjects))) if subjects is None else subject_list(subjects)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.ch_names = montage_channels(montage)
        self.n_chans = len(self.ch_names)
        self.n_times = int(round((tmax - tmin) * sfreq))
        self.sfreq = float(sfreq)
        self.num_classes = total
        self.concepts = draw_concepts(total, np.random.default_rng([int(seed), 0]))
        self.styles = [concept.style for concept in self.concepts]
        self.class_names = [style.name for style in self.styles]
        self.class_colours = [style.colours[0] for style in self.styles]
        self._arrays: dict[str, np.ndarray] | None = None

    # -- layout of the benchmark --------------------------------------------------------------
    def split_concepts(self, split: str) -> np.ndarray:
        """The classes whose images make ``split``: training concepts first, then validation, then test."""
        c = self.config
        if c["protocol"] == "closed_set":
            return np.arange(c["n_concepts"])
        bounds = np.cumsum([0, c["n_concepts"], c["n_val_concepts"], c["n_test_concepts"]])
        i = SPLITS.index(split)
        return np.arange(bounds[i], bounds[i + 1])

    def split_labels(self, split: str, rng: np.random.Generator) -> np.ndarray:
        """The class of each image of ``split``, in (random) presentation order."""
        labels = np.repeat(self.split_concepts(split), self.config[IMAGES_PER_CONCEPT[split]])
        return rng.permutation(labels)

    def split_repetitions(self, split: str) -> int:
        return self.config["test_repetitions" if split == "test" else "n_repetitions"]

    def split_subjects(self, split: str) -> list[int]:
        """The subjects whose trials make ``split`` (intra-subject: those of ``subjects``; inter-subject: see
        ``test_subject``)."""
        subjects = list(self.subjects)
        if self.test_subject is None:
            return subjects
        return [self.test_subject] if split == "test" else [s for s in subjects if s != self.test_subject]

    @property
    def subject_ids(self) -> list[int]:
        """The subject numbers of the selected subjects (subject ``s`` is number ``s + 1``), the test subject's too."""
        return [s + 1 for s in sorted(self.subjects)]

    @staticmethod
    def image_id(split: str, index: int) -> str:
        """Stable stimulus id of image ``index`` of ``split``."""
        return f"syc_{split}_{index:05d}"

    # -- generation ---------------------------------------------------------------------------
    def head_model(self, subject: int) -> HeadModel:
        """Subject ``subject``'s forward model: the shared source layout, moved by the subject's own jitter."""
        c = self.config
        return build_head_model(
            c["montage"],
            N_ATTRIBUTES,
            np.random.default_rng([c["seed"], 1]),
            category_layout="patch",
            jitter=c["subject_jitter"],
            jitter_rng=np.random.default_rng([c["seed"], 2, subject]),
        )

    def subject_profile(self, subject: int) -> tuple[float, float]:
        """Subject ``subject``'s delay of its evoked responses (seconds) and its SNR: ``(0, snr)`` unless
        ``subject_latency_jitter`` / ``subject_snr_spread`` are set. Drawn from the subject's own generator, so the
        two settings and the subjects do not change one another's draws."""
        c = self.config
        z_latency, z_snr = np.random.default_rng([c["seed"], 5, subject]).standard_normal(2)
        delay = float(z_latency * self.subject_latency_jitter) if self.subject_latency_jitter else 0.0  # never -0.0
        return delay, float(c["snr"] * np.exp(z_snr * self.subject_snr_spread))

    def simulate_signal(self, maps: np.ndarray, head: HeadModel, delay: float = 0.0) -> np.ndarray:
        """Noise-free scalp signal ``[N, C, T]`` of the scenes whose class-labelled region maps are ``maps``, every
        evoked response delayed by ``delay`` seconds."""
        c = self.config
        times = self.times - delay
        rng = np.random.default_rng([c["seed"], 3])  # the neural code: the same for every subject
        attribute_waves = class_waveforms(times, N_ATTRIBUTES, rng)  # [A, T]
        concept_waves = class_waveforms(times, self.num_classes, rng)  # [K, T]
        concept_mixing = rng.normal(size=(N_ATTRIBUTES, self.num_classes)) / np.sqrt(N_ATTRIBUTES)
        location = retinotopic_signal(maps, head, times)
        shares = class_shares(maps, self.num_classes)  # [N, K]
        attributes = shares @ attribute_matrix(self.concepts)  # [N, A]
        by_attribute = np.einsum("ca,na,at->nct", head.category, attributes, attribute_waves, optimize=True)
        own_patterns = head.category @ concept_mixing  # [C, K]
        own = np.einsum("ck,nk,kt->nct", own_patterns, shares, concept_waves, optimize=True)
        idio = c["idiosyncratic"]
        category = (1 - idio) * by_attribute / rms(by_attribute) + idio * own / rms(own)
        signal = c["location_weight"] * location / rms(location) + c["category_weight"] * category / rms(category)
        return (signal / rms(signal)).astype(np.float32)

    def _noisy_repetitions(
        self,
        signal: np.ndarray,
        head: HeadModel,
        repetitions: int,
        average: bool,
        rng: np.random.Generator,
        snr: float,
    ) -> np.ndarray:
        """``[N, R, C, T]`` repetitions of ``snr * signal`` plus independent noise (``R = 1`` when averaged)."""
        n = len(signal)
        out = np.zeros((n, 1 if average else repetitions, self.n_chans, self.n_times), dtype=np.float32)
        for r in range(repetitions):
            for lo in range(0, n, NOISE_CHUNK):
                hi = min(lo + NOISE_CHUNK, n)
                trial = noisy_eeg(snr, signal[lo:hi], simulate_noise(head, hi - lo, self.times, rng))
                if average:
                    out[lo:hi, 0] += trial / repetitions
                else:
                    out[lo:hi, r] = trial
        return out

    def generate_arrays(self) -> dict[str, np.ndarray]:
        """Render every scene and simulate every subject's EEG (no cache). Training and validation repetitions are
        stored averaged with ``average_repetitions`` (one trial per image), else one by one; the test repetitions
        always one by one. The noise is drawn in the same order either way, so the averaged trials are the means of
        the kept ones."""
        c = self.config
        rng = np.random.default_rng([c["seed"], 4])
        size = c["image_size"]
        arrays: dict[str, np.ndarray] = {}
        for split in SPLITS:
            labels = self.split_labels(split, rng)
            pool = self.split_concepts(split)
            images = np.zeros((len(labels), size, size, 3), dtype=np.uint8)
            maps = np.zeros((len(labels), size, size), dtype=np.int16)
            centroids = np.zeros((len(labels), 2), dtype=np.float32)
            for i, concept in enumerate(tqdm(labels, desc=f"synthetic {split} scenes", leave=False)):
                scene = render_object_scene(rng, int(concept), self.styles, pool, size, c["max_clutter"])
                images[i], maps[i] = scene.image, scene.region_map
                centroids[i] = class_centroid(scene.region_map, int(concept))
            arrays.update(
                {f"{split}_images": images, f"{split}_maps": maps, f"{split}_labels": labels,
                 f"{split}_centroids": centroids}
            )  # fmt: skip
        all_maps = np.concatenate([arrays[f"{s}_maps"] for s in SPLITS])
        ends = np.cumsum([len(arrays[f"{s}_labels"]) for s in SPLITS])
        for subject in tqdm(range(c["n_subjects"]), desc="synthetic EEG (subjects)", leave=False):
            head = self.head_model(subject)
            delay, snr = self.subject_profile(subject)
            signal = self.simulate_signal(all_maps, head, delay)
            for i, split in enumerate(SPLITS):
                part = signal[(ends[i - 1] if i else 0) : ends[i]]
                keep = split == "test" or not self.average_repetitions
                eeg = self._noisy_repetitions(part, head, self.split_repetitions(split), not keep, rng, snr)
                arrays[f"{split}_eeg_s{subject}"] = eeg
        return arrays

    def cache_estimate_bytes(self) -> int:
        """Size of the cached arrays, for ``regionaldiff check``."""
        c = self.config
        trial = self.n_chans * self.n_times * 4
        total = 0
        for split in SPLITS:
            n_images = len(self.split_concepts(split)) * c[IMAGES_PER_CONCEPT[split]]
            reps = self.split_repetitions(split) if (split == "test" or not self.average_repetitions) else 1
            total += n_images * (c["n_subjects"] * reps * trial + c["image_size"] ** 2 * 5 + 16)
        return int(total)

    def _load(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            stem = f"synthetic_concepts_{self.config_hash}_{'avg' if self.average_repetitions else 'reps'}"
            self._arrays = cached_arrays(self.cache_dir, stem, self.config, self.generate_arrays)
        return self._arrays

    # -- the data contract --------------------------------------------------------------------
    def _split_from(self, split: str, eeg_of: Any) -> EEGSplit:
        a = self._load()
        ids = [self.image_id(split, i) for i in range(len(a[f"{split}_labels"]))]
        check_no_stimulus_leak(
            {s: [self.image_id(s, i) for i in range(len(a[f"{s}_labels"]))] for s in SPLITS},
            pairs=(("train", "test"), ("val", "test"), ("train", "val")),
        )
        eegs, index, subjects = [], [], []
        for subject in self.split_subjects(split):
            eeg = eeg_of(a[f"{split}_eeg_s{subject}"])  # [N, R, C, T]
            eegs.append(eeg.reshape(-1, self.n_chans, self.n_times))
            index.append(np.repeat(np.arange(len(ids)), eeg.shape[1]))
            subjects.append(np.full(eeg.shape[0] * eeg.shape[1], subject + 1, dtype=np.int64))
        rows = np.concatenate(index)
        return EEGSplit(
            eeg=np.concatenate(eegs),
            labels=a[f"{split}_labels"][rows].astype(np.int64),
            image_ids=[ids[i] for i in rows],
            subjects=np.concatenate(subjects),
            images={image_id: a[f"{split}_images"][i] for i, image_id in enumerate(ids)},
            extras={"centroid": a[f"{split}_centroids"][rows]},
        )

    def build_split(self, split: str) -> EEGSplit:
        """Training and validation: each image's trials as generated (averaged or each repetition); test: each image's
        repetitions averaged, one trial per image and subject (THINGS-EEG2's test split as the field reads it)."""
        if split == "test":
            return self._split_from(split, lambda eeg: eeg.mean(axis=1, keepdims=True))
        return self._split_from(split, lambda eeg: eeg)

    def averaged_split(self, split: str, n_repetitions: int) -> EEGSplit:
        """The test split with each image's EEG the average of its first ``n_repetitions`` repetitions."""
        if split != "test":
            raise NotImplementedError(
                f"the synthetic concepts keep the repetitions of the test split only (not {split!r})"
            )
        if not 1 <= n_repetitions <= self.config["test_repetitions"]:
            raise ConfigError(
                f"eval.retrieval.repetitions: {n_repetitions} is not in [1, {self.config['test_repetitions']}], the "
                "test repetitions of dataset.test_repetitions."
            )
        return self._split_from(split, lambda eeg: eeg[:, :n_repetitions].mean(axis=1, keepdims=True))

    def ground_truth_region_maps(self) -> Mapping[str, np.ndarray]:
        a = self._load()
        return {
            self.image_id(split, i): region.astype(np.int64)
            for split in SPLITS
            for i, region in enumerate(a[f"{split}_maps"])
        }

    def describe(self) -> dict:
        c = self.config
        described = {
            **super().describe(),
            "protocol": c["protocol"],
            "montage": c["montage"],
            "snr": c["snr"],
            "n_subjects": c["n_subjects"],
            "test_subject": self.test_subject,
        }
        if self.subject_latency_jitter or self.subject_snr_spread:  # each subject's draw, for the run's tags
            profiles = (self.subject_profile(s) for s in range(c["n_subjects"]))
            described["subject_profiles"] = "; ".join(
                f"subject {s + 1}: {1000 * delay:+.1f} ms, snr {snr:.3f}" for s, (delay, snr) in enumerate(profiles)
            )
        return described
