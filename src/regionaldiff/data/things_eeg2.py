"""THINGS-EEG2 (Gifford et al., NeuroImage 2022) in its official formats.

Layout under ``dataset.root`` (folder names are config options; defaults follow the authors' code)::

    image_set/image_metadata.npy                  {train_img_concepts, train_img_files, test_img_concepts,
                                                   test_img_files, ...} (np.save'd dict)
    image_set/training_images/<concept>/<file>    16540 images of 1654 concepts
    image_set/test_images/<concept>/<file>        200 images of 200 other concepts
    preprocessed_data/sub-XX/preprocessed_eeg_training.npy   {preprocessed_eeg_data [16540, 4, 17, 100],
    preprocessed_data/sub-XX/preprocessed_eeg_test.npy        ch_names, times}; test: [200, 80, 17, 100]
    raw_data/sub-XX/ses-YY/raw_eeg_{training,test}.npy       {raw_eeg_data, ch_names, ch_types, sfreq}

The 63-channel, 250 Hz files used by NICE/ATM/UBP have the same names and keys (point ``eeg_dir`` at them).
With ``source=raw`` the raw files are preprocessed with MNE into the same layout (:mod:`regionaldiff.data.mvnn`).

Trials: image condition ``i`` of a partition is ``{train,test}_img_files[i]``; its label is the index of its
concept in ``class_names`` (training concepts first, then test concepts; names without the numeric prefix).
Repetitions are averaged or kept as separate trials (``train_repetitions``/``test_repetitions``; the test
split is averaged over its 80 repetitions by default).

Splits: ``test`` is the official test partition (200 concepts disjoint from training: checked on every
setup, a violation raises). ``val`` holds out part of the training partition: with ``val_holdout=concepts``
(default) a fraction ``val_fraction`` of the training concepts, drawn with ``val_seed`` from the sorted concept
names, with all their images (a zero-shot validation like the test split); with ``val_holdout=images`` that
fraction of the training images. ``train`` is the rest. Subjects: one or several (``subjects``), or
leave-one-subject-out (``leave_out_subject``: train/val on the others, test on it).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from regionaldiff.config import ThingsEEG2Config, check_multiple, plain, schema_from_arguments, subject_list
from regionaldiff.data.base import SPLITS, EEGDataModule, EEGSplit
from regionaldiff.data.cache import ArrayCache
from regionaldiff.data.common import RowView, image_table, leak_report
from regionaldiff.data.images import ImageTable
from regionaldiff.data.mvnn import RawConfig, preprocess_subject
from regionaldiff.data.safe_load import DataFormatError, expect_array, load_numpy_dict
from regionaldiff.errors import BadInputError, ConfigError, MissingFileError
from regionaldiff.requirements import RequiredPath

log = logging.getLogger(__name__)

METADATA_KEYS = ("train_img_concepts", "train_img_files", "test_img_concepts", "test_img_files")
PARTS = {"training": "train", "test": "test"}


def concept_name(concept: str) -> str:
    """``"00001_aardvark"`` -> ``"aardvark"`` (the numeric prefix differs between partitions)."""
    return re.sub(r"^\d+_", "", str(concept))


class ThingsEEG2DataModule(EEGDataModule):
    """THINGS-EEG2 from its official files.

    Parameters
    ----------
    root : str
        Dataset folder.
    source : {"preprocessed", "raw"}
        Read the preprocessed files, or preprocess the raw files with MNE (see ``raw``).
    eeg_dir, raw_dir, image_dir : str
        Folders (relative to ``root``, or absolute) of the preprocessed files, raw files and image set.
    subjects : list of int
        Subjects to use (1..10).
    leave_out_subject : int or None
        Leave-one-subject-out: train/val on ``subjects`` minus this one, test on this one.
    train_repetitions, test_repetitions : {"average", "separate"}
        Average each image's repetitions into one trial, or keep each repetition as a trial.
    val_holdout : {"concepts", "images"}
        What the validation split holds out of the training partition.
    val_fraction : float
        Fraction of training concepts (or images) held out, in (0, 1).
    val_seed : int
        Seed of the held-out draw.
    channels : list of str or None
        Keep these channels (None: all channels of the files).
    tmin, tmax : float or None
        Keep the samples with ``tmin <= times <= tmax`` (seconds; None: no bound).
    n_times_multiple : int
        Trailing samples are dropped so that ``n_times`` is a multiple of this (the encoder's patch size).
    raw : dict or None
        Raw preprocessing options (:class:`regionaldiff.data.mvnn.RawConfig`): ``sessions``, ``channels``,
        ``l_freq``, ``h_freq``, ``tmin``, ``tmax``, ``baseline``, ``sfreq``, ``max_reps_training``,
        ``max_reps_test``, ``mvnn`` (``train`` | ``transductive`` | ``none``), ``mvnn_dim``, ``seed``.
    on_missing_image : {"skip", "fail"}
        Missing or undecodable images: drop their trials (counted, logged) or stop with their names.
    on_bad_trial : {"drop", "fail"}
        Repetitions with NaN/Inf: drop them (averages use the finite repetitions; counted) or stop.
    image_size, image_resize, cache_dir, cache_verify, batch_size, num_workers
        As for :class:`regionaldiff.data.eeg_imagenet.EEGImageNetDataModule`.
    region_labels : {"layout", "class"}
        What region-map labels name (:class:`regionaldiff.regions.RegionLabels`). ``layout`` (default): object vs
        background, which a model can predict for the 200 test concepts it never saw in training, with 2 map
        channels instead of 1,855.
    """

    name = "things_eeg2"

    def __init__(
        self,
        root: str,
        source: str = "preprocessed",
        eeg_dir: str = "preprocessed_data",
        raw_dir: str = "raw_data",
        image_dir: str = "image_set",
        subjects: Any = (1,),
        leave_out_subject: int | None = None,
        train_repetitions: str = "average",
        test_repetitions: str = "average",
        val_holdout: str = "concepts",
        val_fraction: float = 0.05,
        val_seed: int = 0,
        channels: Any = None,
        tmin: float | None = None,
        tmax: float | None = None,
        n_times_multiple: int = 4,
        raw: Any = None,
        on_missing_image: str = "skip",
        on_bad_trial: str = "drop",
        image_size: int = 64,
        image_resize: str = "center_crop",
        cache_dir: str | None = None,
        cache_verify: str = "quick",
        batch_size: int = 32,
        num_workers: int = 0,
        region_labels: str = "layout",
    ) -> None:
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, image_size=image_size, region_labels=region_labels
        )
        schema_from_arguments(ThingsEEG2Config, locals())  # every value checked by the config's schema
        subjects = subject_list(subjects)
        channels = plain(channels)
        self.root = Path(root)
        self.source = source
        self.eeg_root = self._path(eeg_dir)
        self.raw_root = self._path(raw_dir)
        self.image_root = self._path(image_dir)
        self.subjects = subjects
        self.leave_out_subject = leave_out_subject
        self.train_subjects = [s for s in subjects if s != leave_out_subject]
        self.test_subjects = [leave_out_subject] if leave_out_subject is not None else list(subjects)
        self.repetitions = {"train": train_repetitions, "test": test_repetitions}
        self.val_holdout = val_holdout
        self.val_fraction = float(val_fraction)
        self.val_seed = int(val_seed)
        self.channels = None if channels is None else [str(c) for c in channels]
        self.tmin, self.tmax = tmin, tmax
        self.n_times_multiple = int(n_times_multiple)
        self.raw = RawConfig.from_mapping(plain(raw)) if source == "raw" else None
        self.on_missing_image = on_missing_image
        self.on_bad_trial = on_bad_trial
        self.image_resize = image_resize
        self.cache_dir = cache_dir
        self.cache_verify = cache_verify
        self.run_tags: dict[str, str] = {
            "data.subjects": ",".join(map(str, self.train_subjects)),
            "data.test_subjects": ",".join(map(str, self.test_subjects)),
            "data.source": source,
        }
        if self.raw is not None:
            self.run_tags["data.mvnn"] = {
                "train": "fitted on the training partition only",
                "transductive": "TRANSDUCTIVE: covariance of training and test partitions (as the official release); "
                "test data shaped the preprocessing",
                "none": "off",
            }[self.raw.mvnn]
        self.data_report: dict[str, float] = {}
        self.leak_counts: dict[str, int] = {}
        self._meta: dict[str, Any] | None = None
        self._entries: dict[int, Any] = {}
        self._images: ImageTable | None = None
        self._val_images: set[int] | None = None

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    # -- files (checked before any cache is started; `regionaldiff check` lists them) -------
    def required_files(self) -> list[RequiredPath]:
        """The image metadata, the two image folders and every subject's EEG files (header checks only)."""
        out = [
            RequiredPath(
                "THINGS-EEG2 image metadata",
                self.metadata_path,
                "dataset.root, dataset.image_dir",
                fmt="npy",
                check=_check_npy_dict,
            ),
            RequiredPath(
                "THINGS-EEG2 training images", self.image_root / "training_images", "dataset.image_dir", kind="folder"
            ),
            RequiredPath(
                "THINGS-EEG2 test images", self.image_root / "test_images", "dataset.image_dir", kind="folder"
            ),
        ]
        for subject in self.subjects:
            for role, path in self._source_paths(subject).items():
                if role == "metadata":
                    continue
                key = "dataset.eeg_dir" if self.source == "preprocessed" else "dataset.raw_dir, dataset.raw.sessions"
                out.append(
                    RequiredPath(
                        f"THINGS-EEG2 sub-{subject:02d} {role} EEG",
                        path,
                        f"dataset.root, {key}, dataset.subjects",
                        fmt="npy",
                        check=_check_npy_dict,
                    )
                )
        return out

    def cache_estimate_bytes(self) -> int | None:
        """About how much the cache will take: float32 EEG (the release's float64 files halved, divided by the
        repetitions averaged: 4 training, 80 test), plus the decoded images."""
        total = 0
        reps = {"training": 4, "test": 80}
        for subject in self.subjects:
            for role, path in self._source_paths(subject).items():
                if role == "metadata" or not path.is_file():
                    continue
                part = "training" if role.endswith("training") else "test"
                averaged = self.repetitions[PARTS[part]] == "average" and self.source == "preprocessed"
                total += path.stat().st_size // 2 // (reps[part] if averaged else 1)
        n_images = 16740  # 16,540 training + 200 test images
        return total + n_images * self.image_size**2 * 3

    # -- metadata ---------------------------------------------------------------------------
    @property
    def metadata_path(self) -> Path:
        return self.image_root / "image_metadata.npy"

    def _metadata(self) -> dict[str, Any]:
        if self._meta is None:
            path = self.metadata_path
            data = load_numpy_dict(path, what="THINGS-EEG2 image metadata", required=METADATA_KEYS)
            lists = {}
            for key in METADATA_KEYS:
                value = data[key]
                if isinstance(value, np.ndarray):
                    value = value.tolist()
                if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
                    raise DataFormatError(
                        f"{path}: {key!r} must be a non-empty list of strings; got {type(value).__name__}."
                    )
                lists[key] = list(value)
            for part in ("train", "test"):
                if len(lists[f"{part}_img_concepts"]) != len(lists[f"{part}_img_files"]):
                    raise DataFormatError(
                        f"{path}: {part}_img_concepts has {len(lists[f'{part}_img_concepts'])} entries but "
                        f"{part}_img_files has {len(lists[f'{part}_img_files'])}; expected one concept per image."
                    )
            train_c = [concept_name(c) for c in lists["train_img_concepts"]]
            test_c = [concept_name(c) for c in lists["test_img_concepts"]]
            class_names = list(dict.fromkeys(train_c + test_c))
            index = {c: i for i, c in enumerate(class_names)}
            ids = {part: [Path(f).stem for f in lists[f"{part}_img_files"]] for part in ("train", "test")}
            all_ids = ids["train"] + ids["test"]
            if len(set(all_ids)) != len(all_ids):
                dup = sorted({i for i in all_ids if all_ids.count(i) > 1})[:5]
                raise DataFormatError(f"{path}: image file names must be unique across partitions; repeated: {dup}.")
            self._meta = {
                "class_names": class_names,
                "labels": {
                    "train": np.asarray([index[c] for c in train_c]),
                    "test": np.asarray([index[c] for c in test_c]),
                },
                "concepts": {"train": train_c, "test": test_c},
                "ids": ids,
                "paths": {
                    "train": [
                        self.image_root / "training_images" / c / f
                        for c, f in zip(lists["train_img_concepts"], lists["train_img_files"])
                    ],
                    "test": [
                        self.image_root / "test_images" / c / f
                        for c, f in zip(lists["test_img_concepts"], lists["test_img_files"])
                    ],
                },
            }
            self._check_concepts()
        return self._meta

    def _check_concepts(self) -> None:
        """Test concepts must be disjoint from the training concepts (metadata level): raise otherwise."""
        meta = self._meta
        assert meta is not None, "_check_concepts runs once _metadata() has read the metadata"
        shared = sorted(set(meta["concepts"]["test"]) & set(meta["concepts"]["train"]))
        if shared:
            raise BadInputError(
                f"Concept leak in {self.metadata_path}: {len(shared)} test concept(s) are also training concepts "
                f"(e.g. {shared[:5]}). THINGS-EEG2's test concepts must be disjoint from its training concepts; "
                "check image_metadata.npy."
            )

    @property
    def class_names(self) -> list[str]:
        return list(self._metadata()["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def subject_ids(self) -> list[int]:
        """``dataset.subjects`` (the left-out subject among them)."""
        return sorted(self.subjects)

    # -- per-subject arrays -----------------------------------------------------------------
    def _sources(self, subject: int) -> dict[str, Path]:
        sources = self._source_paths(subject)
        for role, path in sources.items():
            if not path.is_file():
                raise MissingFileError(
                    f"THINGS-EEG2 subject {subject}: {path} not found ({role}). Check dataset.root, "
                    f"dataset.{'eeg_dir' if self.source == 'preprocessed' else 'raw_dir'} and dataset.subjects. "
                    "See docs/setup.md for the files and their layout."
                )
        return sources

    def _source_paths(self, subject: int) -> dict[str, Path]:
        """The files the cache of ``subject`` is built from, by role."""
        sources = {"metadata": self.metadata_path}
        if self.source == "preprocessed":
            folder = self.eeg_root / f"sub-{subject:02d}"
            for part in PARTS:
                sources[part] = folder / f"preprocessed_eeg_{part}.npy"
        else:
            assert self.raw is not None, "source == 'raw' always has a RawConfig"
            for ses in self.raw.sessions:
                for part in PARTS:
                    sources[f"ses-{ses:02d}-{part}"] = (
                        self.raw_root / f"sub-{subject:02d}" / f"ses-{ses:02d}" / f"raw_eeg_{part}.npy"
                    )
        return sources

    def cache_config(self, subject: int) -> dict[str, Any]:
        return {
            "subject": subject,
            "source": self.source,
            "channels": self.channels,
            "tmin": self.tmin,
            "tmax": self.tmax,
            "n_times_multiple": self.n_times_multiple,
            "repetitions": self.repetitions,
            "raw": self.raw.as_dict() if self.raw is not None else None,
            "version": 1,
        }

    def _entry(self, subject: int):
        if subject not in self._entries:
            meta = self._metadata()
            cache = ArrayCache(
                self.cache_dir, self.name, self.cache_config(subject), self._sources(subject), verify=self.cache_verify
            )
            entry = cache.get_or_build(lambda writer: self._convert(writer, subject, meta))
            self._entries[subject] = entry
            self.data_report[f"cache_hit_sub{subject:02d}"] = float(entry.status == "hit")
            bad = entry.meta["nonfinite"]
            if bad and self.on_bad_trial == "fail":
                raise DataFormatError(
                    f"THINGS-EEG2 subject {subject}: {len(bad)} repetition(s) contain NaN or Inf ([partition, image, "
                    f"repetition]: {bad[:10]}). Set dataset.on_bad_trial=drop to drop them."
                )
            self.data_report[f"n_nonfinite_reps_sub{subject:02d}"] = float(entry.meta["n_nonfinite"])
            first = self._entries[next(iter(self._entries))]
            for key in ("ch_names", "times"):
                if entry.meta[key] != first.meta[key]:
                    raise DataFormatError(
                        f"THINGS-EEG2 subject {subject}: {key} differ from those of the first subject loaded."
                    )
        return self._entries[subject]

    def _read_partition(self, subject: int, part: str, n_images: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        path = self.eeg_root / f"sub-{subject:02d}" / f"preprocessed_eeg_{part}.npy"
        data = load_numpy_dict(
            path, what="THINGS-EEG2 preprocessed EEG file", required=("preprocessed_eeg_data", "ch_names", "times")
        )
        eeg = expect_array(
            data["preprocessed_eeg_data"], path, "preprocessed_eeg_data", shape=(n_images, None, None, None), kinds="f"
        )
        names = [str(c) for c in data["ch_names"]]
        times = expect_array(data["times"], path, "times", shape=(eeg.shape[3],), kinds="f")
        if len(names) != eeg.shape[2]:
            raise DataFormatError(
                f"{path}: ch_names has {len(names)} names but preprocessed_eeg_data has {eeg.shape[2]} channels "
                "(expected [images, repetitions, channels, times])."
            )
        return eeg, names, times

    def _convert(self, writer, subject: int, meta: dict[str, Any]) -> dict[str, Any]:
        n = {"training": len(meta["ids"]["train"]), "test": len(meta["ids"]["test"])}
        info: dict[str, Any] = {}
        names: list[str] | None
        times: np.ndarray | None
        if self.source == "raw":
            assert self.raw is not None, "source == 'raw' always has a RawConfig"
            train, test, names, times, info = preprocess_subject(
                self.raw_root, subject, n["training"], n["test"], self.raw
            )
            arrays = {"training": train, "test": test}
        else:
            arrays, names, times = {}, None, None
            for part in PARTS:
                arrays[part], part_names, part_times = self._read_partition(subject, part, n[part])
                if names is not None and times is not None:  # both set together, from the first partition
                    if part_names != names or not np.allclose(part_times, times):
                        raise DataFormatError(
                            f"THINGS-EEG2 subject {subject}: training and test files differ in ch_names or times."
                        )
                names, times = part_names, part_times
        assert names is not None and times is not None, "PARTS is not empty: every branch sets names and times"
        chan_idx, t_idx = self._selection(names, times, subject)
        nonfinite: list[list[int]] = []
        for part, split in PARTS.items():
            data = arrays[part]
            n_img, n_rep = data.shape[:2]
            finite = np.ones((n_img, n_rep), dtype=bool)
            for i in range(n_img):  # one image at a time keeps the float32 conversion's memory small
                finite[i] = np.isfinite(data[i]).reshape(n_rep, -1).all(axis=1)
            nonfinite += [[0 if part == "training" else 1, int(i), int(r)] for i, r in zip(*np.nonzero(~finite))]
            if self.repetitions[split] == "average":
                out = writer.create(f"{split}_eeg", (n_img, len(chan_idx), len(t_idx)), np.float32)
                for i in range(n_img):
                    reps = np.asarray(data[i][:, chan_idx][:, :, t_idx], dtype=np.float64)[finite[i]]
                    out[i] = reps.mean(axis=0) if len(reps) else 0.0
                writer.save(f"{split}_image", np.arange(n_img))
                writer.save(f"{split}_ok", finite.any(axis=1))
            else:
                out = writer.create(f"{split}_eeg", (n_img * n_rep, len(chan_idx), len(t_idx)), np.float32)
                for i in range(n_img):
                    out[i * n_rep : (i + 1) * n_rep] = data[i][:, chan_idx][:, :, t_idx]
                writer.save(f"{split}_image", np.repeat(np.arange(n_img), n_rep))
                writer.save(f"{split}_ok", finite.reshape(-1))
            info[f"n_{split}_repetitions"] = int(n_rep)
        times_kept = [float(t) for t in times[t_idx]]
        sfreq = round(float(1.0 / np.median(np.diff(times))), 6) if len(times) > 1 else 1.0
        if nonfinite:
            log.warning(
                "THINGS-EEG2 subject %d: %d repetition(s) with NaN/Inf: %s", subject, len(nonfinite), nonfinite[:10]
            )
        return {
            "ch_names": [names[c] for c in chan_idx],
            "times": times_kept,
            "sfreq": sfreq,
            "nonfinite": nonfinite[:1000],
            "n_nonfinite": len(nonfinite),
            **info,
        }

    def _selection(self, names: list[str], times: np.ndarray, subject: int) -> tuple[list[int], np.ndarray]:
        """The channels (``dataset.channels``) and samples (``tmin``/``tmax``, cut to ``n_times_multiple``) kept."""
        chan_idx = list(range(len(names)))
        if self.channels is not None:
            missing = [c for c in self.channels if c not in names]
            if missing:
                raise ConfigError(
                    f"dataset.channels: {missing} are not in the files of subject {subject} (channels: {names})."
                )
            chan_idx = [names.index(c) for c in self.channels]
        keep_t = np.ones(len(times), dtype=np.bool_)
        if self.tmin is not None:
            keep_t &= times >= self.tmin - 1e-9
        if self.tmax is not None:
            keep_t &= times <= self.tmax + 1e-9
        t_idx = np.flatnonzero(keep_t)
        if not len(t_idx):
            raise ConfigError(
                f"dataset.tmin/tmax=[{self.tmin}, {self.tmax}] keep no sample of times {times[0]:.3f}..{times[-1]:.3f} s."
            )
        return chan_idx, t_idx[: check_multiple(len(t_idx), self.n_times_multiple)]

    def averaged_split(self, split: str, n_repetitions: int) -> EEGSplit:
        """The test split with each image's EEG the average of its first ``n_repetitions`` finite repetitions (of
        80), read from the preprocessed files: the retrieval-against-repetitions curve NICE and ATM report."""
        if split != "test" or self.source != "preprocessed":
            raise NotImplementedError(
                "THINGS-EEG2 averages a chosen number of repetitions of the test split from the preprocessed files "
                f"only (split {split!r}, dataset.source={self.source})"
            )
        meta = self._metadata()
        images = self._image_table()
        ids_all, labels_all = meta["ids"]["test"], meta["labels"]["test"]
        eegs, labels, ids, subs = [], [], [], []
        for subject in self.test_subjects:
            data, names, times = self._read_partition(subject, "test", len(ids_all))
            if not 1 <= n_repetitions <= data.shape[1]:
                raise ConfigError(
                    f"eval.retrieval.repetitions: {n_repetitions} is not in [1, {data.shape[1]}], the test "
                    f"repetitions of subject {subject}."
                )
            chan_idx, t_idx = self._selection(names, times, subject)
            for i, image_id in enumerate(ids_all):
                reps = np.asarray(data[i, :n_repetitions][:, chan_idx][:, :, t_idx], dtype=np.float64)
                reps = reps[np.isfinite(reps).reshape(len(reps), -1).all(axis=1)]
                if not len(reps) or image_id not in images:
                    continue
                eegs.append(reps.mean(axis=0).astype(np.float32))
                labels.append(labels_all[i])
                ids.append(image_id)
                subs.append(subject)
        return EEGSplit(
            eeg=np.stack(eegs),
            labels=np.asarray(labels, dtype=np.int64),
            image_ids=ids,
            subjects=np.asarray(subs, dtype=np.int64),
            images=images,
        )

    # -- sizes ------------------------------------------------------------------------------
    def _first(self):
        return self._entry(self.train_subjects[0])

    @property
    def n_chans(self) -> int:
        return len(self._first().meta["ch_names"])

    @property
    def n_times(self) -> int:
        return len(self._first().meta["times"])

    @property
    def sfreq(self) -> float:
        return float(self._first().meta["sfreq"])

    @property
    def ch_names(self) -> list[str]:
        return list(self._first().meta["ch_names"])

    # -- splits -----------------------------------------------------------------------------
    def _image_table(self) -> ImageTable:
        if self._images is None:
            meta = self._metadata()
            ids = meta["ids"]["train"] + meta["ids"]["test"]
            paths = meta["paths"]["train"] + meta["paths"]["test"]
            self._images, failed, _ = image_table(
                self.cache_dir,
                self.name,
                ids,
                paths,
                self.image_size,
                self.image_resize,
                self.on_missing_image,
                self.cache_verify,
            )
            self.data_report["n_skipped_images"] = float(len(failed))
            if failed:
                self.run_tags["data.skipped_images"] = ", ".join(sorted(failed))[:500]
        return self._images

    def val_images(self) -> set[int]:
        """Indices (into the training partition) of the images held out for validation (see module docstring)."""
        if self._val_images is None:
            meta = self._metadata()
            rng = np.random.default_rng(self.val_seed)
            if self.val_holdout == "concepts":
                concepts = sorted(set(meta["concepts"]["train"]))
                n_val = min(max(1, round(self.val_fraction * len(concepts))), len(concepts) - 1)
                chosen = {concepts[i] for i in rng.permutation(len(concepts))[:n_val]}
                self._val_images = {i for i, c in enumerate(meta["concepts"]["train"]) if c in chosen}
            else:
                n_img = len(meta["ids"]["train"])
                n_val = min(max(1, round(self.val_fraction * n_img)), n_img - 1)
                self._val_images = {int(i) for i in rng.permutation(n_img)[:n_val]}
            if not self._val_images or len(self._val_images) == len(meta["ids"]["train"]):
                raise ValueError(
                    f"dataset.val_fraction={self.val_fraction} leaves no training or no validation images."
                )
        return self._val_images

    def build_split(self, split: str) -> EEGSplit:
        meta = self._metadata()
        images = self._image_table()
        part = "test" if split == "test" else "train"
        subjects = self.test_subjects if split == "test" else self.train_subjects
        ids_all = meta["ids"][part]
        labels_all = meta["labels"][part]
        val = self.val_images() if part == "train" else set()
        parts, which, rows, labels, ids, subs = [], [], [], [], [], []
        n_bad = n_missing = 0
        for k, subject in enumerate(subjects):
            entry = self._entry(subject)
            image = np.asarray(entry[f"{part}_image"])
            ok = np.asarray(entry[f"{part}_ok"])
            if part == "train":
                in_val = np.isin(image, sorted(val))
                selected = in_val if split == "val" else ~in_val
            else:
                selected = np.ones(len(image), dtype=bool)
            available = np.asarray([ids_all[i] in images for i in image])
            n_bad += int((selected & ~ok).sum())
            n_missing += int((selected & ok & ~available).sum())
            r = np.flatnonzero(selected & ok & available)
            parts.append(entry[f"{part}_eeg"])
            which.append(np.full(len(r), k))
            rows.append(r)
            labels.append(labels_all[image[r]])
            ids += [ids_all[i] for i in image[r]]
            subs.append(np.full(len(r), subject))
        self.data_report[f"n_{split}_dropped_nonfinite"] = float(n_bad)
        self.data_report[f"n_{split}_skipped_missing_image"] = float(n_missing)
        self.data_report["n_skipped_trials_missing_image"] = sum(
            v
            for key, v in self.data_report.items()
            if key.startswith("n_")
            and key.endswith("_skipped_missing_image")
            and key != "n_skipped_trials_missing_image"
        )
        if not ids:
            raise BadInputError(f"THINGS-EEG2: the {split!r} split is empty (subjects {subjects}).")
        log.info(
            "THINGS-EEG2 %s: %d trials of subjects %s (dropped: %d NaN/Inf, %d missing image)",
            split,
            len(ids),
            subjects,
            n_bad,
            n_missing,
        )
        return EEGSplit(
            eeg=RowView(parts, np.concatenate(which), np.concatenate(rows)),
            labels=np.concatenate(labels).astype(np.int64),
            image_ids=ids,
            subjects=np.concatenate(subs).astype(np.int64),
            images=images,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build every split and run the leak checks (stimuli and concepts), whatever the stage."""
        for split in SPLITS:
            self.get_split(split)
        names = self.class_names
        concepts = {s: {names[i] for i in np.unique(self.get_split(s).labels)} for s in SPLITS}
        counts = leak_report({s: self.get_split(s).image_ids for s in SPLITS})
        for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
            counts[f"concepts_{a}_{b}"] = len(concepts[a] & concepts[b])
        for a in ("train", "val"):
            if counts[f"concepts_{a}_test"]:
                shared = sorted(concepts[a] & concepts["test"])[:5]
                raise ValueError(f"THINGS-EEG2 concept leak: {a} and test splits share concepts {shared}.")
        self.leak_counts = counts
        self.run_tags["data.leak_check_detail"] = "overlap " + ", ".join(f"{k}={v}" for k, v in counts.items())
        self.data_report.update({f"leak_{k}": float(v) for k, v in counts.items()})
        log.info("THINGS-EEG2 leak checks passed: %s", counts)


def _check_npy_dict(path: Path) -> str | None:
    """The release's ``.npy`` files hold a dict (``np.save(path, dict)``): a 0-d object array. Header only."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as err:
            return f"unreadable .npy header ({err})"
    if dtype != np.dtype(object) or shape != ():
        return f"holds a plain {dtype} array of shape {shape}; expected a dict saved with np.save"
    return None
