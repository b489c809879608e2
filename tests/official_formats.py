"""Fixture writer: small files in exactly the official formats of EEG-ImageNet and THINGS-EEG2.

Sizes are tiny (a few subjects, classes, trials, 16-32 px images), the structure is the release's: the same
file names, folder layout, containers, keys, dtypes and axis order, so the loaders are tested end to end.

- :func:`write_eeg_imagenet`: ``eeg_5_95_std.pth`` (legacy torch serialisation, like the 2017 release),
  ``block_splits_by_image_all.pth``, ``block_splits_by_image_single.pth`` and ``imageNet_images/<wnid>/<name>.JPEG``.
- :func:`write_things_eeg2`: ``image_set/image_metadata.npy`` with the training/test images,
  ``preprocessed_data/sub-XX/preprocessed_eeg_{training,test}.npy`` (17 channels at 100 Hz, or the 63-channel
  250 Hz variant of NICE/ATM) and, optionally, ``raw_data/sub-XX/ses-YY/raw_eeg_{training,test}.npy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WNIDS = ["n02951358", "n03452741", "n07753592", "n02106662", "n03888257"]
THINGS17 = ["O1", "Oz", "O2", "PO7", "PO3", "POz", "PO4", "PO8", "P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8"]
THINGS63 = [
    "Fp1",
    "Fz",
    "F3",
    "F7",
    "FT9",
    "FC5",
    "FC1",
    "C3",
    "T7",
    "TP9",
    "CP5",
    "CP1",
    "Pz",
    "P3",
    "P7",
    "O1",
    "Oz",
    "O2",
    "P4",
    "P8",
    "TP10",
    "CP6",
    "CP2",
    "Cz",
    "C4",
    "T8",
    "FT10",
    "FC6",
    "FC2",
    "F4",
    "F8",
    "Fp2",
    "AF7",
    "AF3",
    "AFz",
    "F1",
    "F5",
    "FT7",
    "FC3",
    "C1",
    "C5",
    "TP7",
    "CP3",
    "P1",
    "P5",
    "PO7",
    "PO3",
    "POz",
    "PO4",
    "PO8",
    "P6",
    "P2",
    "CPz",
    "CP4",
    "TP8",
    "C6",
    "C2",
    "FC4",
    "FT8",
    "F6",
    "AF8",
    "AF4",
    "F2",
]
TRAIN_CONCEPTS = ["aardvark", "abacus", "accordion", "acorn", "air_conditioner", "airbag"]
TEST_CONCEPTS = ["aircraft_carrier", "antelope", "backscratcher", "banana"]


def write_image(path: Path, rng: np.random.Generator, size: tuple[int, int] = (24, 18)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def write_corrupt_image(path: Path) -> None:
    """A file with a JPEG name whose content is not a decodable image (like the known-bad ImageNet file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 truncated, not really a JPEG")


# -- EEG-ImageNet -------------------------------------------------------------------------------
@dataclass
class EEGImageNetFixture:
    root: Path
    eeg_file: Path
    split_all: Path
    split_single: Path
    n_trials: int
    labels: list[str]
    images: list[str]
    lengths: list[int]
    subjects: list[int]
    trial_images: list[int]
    splits_all: dict[str, list[int]] = field(default_factory=dict)


def write_eeg_imagenet(
    root: str | Path,
    n_subjects: int = 2,
    n_classes: int = 3,
    images_per_class: int = 3,
    n_chans: int = 128,
    seed: int = 0,
    lengths: dict[int, int] | None = None,
    nan_trials: tuple[int, ...] = (),
    legacy: bool = True,
    eeg_name: str = "eeg_5_95_std.pth",
) -> EEGImageNetFixture:
    """EEG-ImageNet release layout in ``root``.

    Every subject sees every image once (trial order: subject-major, then class, then image). In each class,
    image 0 is a test image, image 1 a validation image, the rest training images (splits by image, as in
    ``block_splits_by_image_*``). ``lengths`` overrides the sample count of chosen trials (others: 460..560).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = WNIDS[:n_classes]
    images = [f"{w}_{1000 + 37 * k + j}" for k, w in enumerate(labels) for j in range(images_per_class)]
    trials, subjects, trial_images, trial_lengths = [], [], [], []
    for s in range(1, n_subjects + 1):
        for k in range(n_classes):
            for j in range(images_per_class):
                i = len(trials)
                t = (lengths or {}).get(i, int(rng.integers(460, 561)))
                eeg = rng.normal(0, 1, (n_chans, t)).astype(np.float32) + 0.5 * k
                if i in nan_trials:
                    eeg[3, 100] = np.nan
                image = k * images_per_class + j
                trials.append({"eeg": torch.from_numpy(eeg), "image": image, "label": k, "subject": s})
                subjects.append(s)
                trial_images.append(image)
                trial_lengths.append(t)
    root.mkdir(parents=True, exist_ok=True)
    eeg_file = root / eeg_name
    torch.save(
        {"dataset": trials, "labels": labels, "images": images}, eeg_file, _use_new_zipfile_serialization=not legacy
    )

    def role(image: int) -> str:
        j = image % images_per_class
        return "test" if j == 0 else "val" if j == 1 else "train"

    splits_all = {
        name: [i for i, im in enumerate(trial_images) if role(im) == name] for name in ("train", "val", "test")
    }
    split_all = root / "block_splits_by_image_all.pth"
    torch.save({"splits": [splits_all, splits_all]}, split_all, _use_new_zipfile_serialization=not legacy)
    # the "single" file indexes one subject's trials (the list after the subject filter)
    first = [i for i, s in enumerate(subjects) if s == 1]
    single = {name: [first.index(i) for i in idx if i in first] for name, idx in splits_all.items()}
    split_single = root / "block_splits_by_image_single.pth"
    torch.save({"splits": [single]}, split_single, _use_new_zipfile_serialization=not legacy)
    for name in images:
        write_image(root / "imageNet_images" / name.split("_")[0] / f"{name}.JPEG", rng)
    return EEGImageNetFixture(
        root,
        eeg_file,
        split_all,
        split_single,
        len(trials),
        labels,
        images,
        trial_lengths,
        subjects,
        trial_images,
        splits_all,
    )


# -- THINGS-EEG2 --------------------------------------------------------------------------------
@dataclass
class ThingsFixture:
    root: Path
    train_files: list[str]
    train_concepts: list[str]
    test_files: list[str]
    test_concepts: list[str]
    n_chans: int
    n_times: int


def _things_metadata(
    root: Path,
    n_train_concepts: int,
    images_per_concept: int,
    n_test_concepts: int,
    rng: np.random.Generator,
    test_overlap: bool = False,
) -> tuple[list[str], ...]:
    train_c = [*TRAIN_CONCEPTS, *(f"train_concept_{k:04d}" for k in range(len(TRAIN_CONCEPTS), n_train_concepts))]
    test_c = [*TEST_CONCEPTS, *(f"test_concept_{k:04d}" for k in range(len(TEST_CONCEPTS), n_test_concepts))]
    train_c, test_c = train_c[:n_train_concepts], test_c[:n_test_concepts]
    if test_overlap:
        test_c = [train_c[0], *test_c[1:]]
    train_concepts = [f"{k + 1:05d}_{c}" for k, c in enumerate(train_c) for _ in range(images_per_concept)]
    train_files = [f"{c}_{j + 1:02d}b.jpg" for c in train_c for j in range(images_per_concept)]
    test_concepts = [f"{k + 1:05d}_{c}" for k, c in enumerate(test_c)]
    test_files = [f"{c}_{k + 6:02d}s.jpg" for k, c in enumerate(test_c)]
    image_dir = root / "image_set"
    image_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "test_img_concepts": test_concepts,
        "test_img_concepts_THINGS": [f"{100 + k}_{c.split('_', 1)[1]}" for k, c in enumerate(test_concepts)],
        "test_img_files": test_files,
        "train_img_concepts": train_concepts,
        "train_img_concepts_THINGS": [f"{k + 1}_{c.split('_', 1)[1]}" for k, c in enumerate(train_concepts)],
        "train_img_files": train_files,
    }
    np.save(image_dir / "image_metadata.npy", metadata)
    for concept, name in zip(train_concepts, train_files):
        write_image(image_dir / "training_images" / concept / name, rng)
    for concept, name in zip(test_concepts, test_files):
        write_image(image_dir / "test_images" / concept / name, rng)
    return train_files, train_concepts, test_files, test_concepts


def write_things_eeg2(
    root: str | Path,
    subjects: tuple[int, ...] = (1, 2),
    n_train_concepts: int = 4,
    images_per_concept: int = 2,
    n_test_concepts: int = 2,
    train_reps: int = 4,
    test_reps: int = 5,
    variant: str = "17ch",
    seed: int = 0,
    eeg_dir: str = "preprocessed_data",
    test_overlap: bool = False,
    nan_at: tuple[int, int, int] | None = None,
    signal: float = 0.1,
) -> ThingsFixture:
    """THINGS-EEG2 layout in ``root``: metadata, images and preprocessed files of ``subjects``.

    ``variant``: ``"17ch"`` (the official 17 occipito-parietal channels, 100 Hz, 100 samples from -0.2 s) or
    ``"63ch"`` (the NICE/ATM variant: 63 channels, 250 Hz, 250 samples). ``nan_at=(subject, image, rep)`` puts
    a NaN into one training trial. ``test_overlap`` makes a test concept also a training concept (a leak).
    Each image's EEG is noise plus ``signal`` times its index (0: pure noise).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    train_files, train_concepts, test_files, test_concepts = _things_metadata(
        root, n_train_concepts, images_per_concept, n_test_concepts, rng, test_overlap
    )
    ch_names, sfreq, n_times = (THINGS17, 100.0, 100) if variant == "17ch" else (THINGS63, 250.0, 250)
    times = np.round(-0.2 + np.arange(n_times) / sfreq, 6)
    for sub in subjects:
        folder = root / eeg_dir / f"sub-{sub:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for part, n_img, reps in (("training", len(train_files), train_reps), ("test", len(test_files), test_reps)):
            data = rng.normal(0, 1, (n_img, reps, len(ch_names), n_times))  # float64, as released
            data += np.arange(n_img)[:, None, None, None] * signal
            if nan_at is not None and part == "training" and nan_at[0] == sub:
                data[nan_at[1], nan_at[2], 0, 5] = np.nan
            np.save(
                folder / f"preprocessed_eeg_{part}.npy",
                {"preprocessed_eeg_data": data, "ch_names": list(ch_names), "times": times},
            )
    return ThingsFixture(root, train_files, train_concepts, test_files, test_concepts, len(ch_names), n_times)


def write_things_raw(
    root: str | Path,
    subject: int = 1,
    n_sessions: int = 2,
    train_reps_per_session: int = 2,
    test_reps_per_session: int = 3,
    sfreq: float = 250.0,
    n_train_images: int = 8,
    n_test_images: int = 2,
    seed: int = 0,
) -> None:
    """Raw files ``raw_data/sub-XX/ses-YY/raw_eeg_{training,test}.npy``: 63 EEG channels + ``stim``.

    Stimulus onsets carry the image condition (1-based, as in the release) on the stim channel; two target
    events (code 99999) per file are to be rejected. Noise is spatially correlated (MVNN has work to do).
    """
    root = Path(root)
    rng = np.random.default_rng(seed + 100 * subject)
    ch_names = [*THINGS63, "stim"]
    ch_types = ["eeg"] * len(THINGS63) + ["stim"]
    mixing = rng.normal(0, 1, (len(THINGS63), len(THINGS63))) * 0.3 + np.eye(len(THINGS63))
    for ses in range(1, n_sessions + 1):
        folder = root / "raw_data" / f"sub-{subject:02d}" / f"ses-{ses:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for part, n_img, reps in (
            ("training", n_train_images, train_reps_per_session),
            ("test", n_test_images, test_reps_per_session),
        ):
            codes = [c for c in range(1, n_img + 1) for _ in range(reps)] + [99999, 99999]
            codes = list(rng.permutation(codes))
            step = int(0.3 * sfreq)
            n_samples = int(0.5 * sfreq) + step * len(codes) + int(1.0 * sfreq)
            eeg = mixing @ rng.normal(0, 1e-6, (len(THINGS63), n_samples))
            stim = np.zeros(n_samples)
            for e, code in enumerate(codes):
                onset = int(0.5 * sfreq) + e * step
                stim[onset : onset + 3] = code
                if code != 99999:
                    eeg[:10, onset + int(0.1 * sfreq) : onset + int(0.2 * sfreq)] += 2e-6 * (code % 3 + 1)
            raw = np.vstack([eeg, stim[None]])
            np.save(
                folder / f"raw_eeg_{part}.npy",
                {"raw_eeg_data": raw, "ch_names": ch_names, "ch_types": ch_types, "sfreq": sfreq},
            )
