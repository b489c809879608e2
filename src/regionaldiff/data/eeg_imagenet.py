"""EEG-ImageNet (Spampinato et al., CVPR 2017; perceivelab release) in its official format.

Files (``dataset.root`` holds them; names are config options):

- ``eeg_5_95_std.pth`` / ``eeg_14_70_std.pth`` / ``eeg_55_95_std.pth`` / ``eeg_signals_raw_with_mean_std.pth``:
  a ``torch.save``\\ d dict ``{"dataset": [{"eeg": Tensor[128, T], "image": int, "label": int, "subject": int}],
  "labels": [40 WordNet ids], "images": [image names such as "n02951358_31190"]}`` (the raw file adds
  ``means`` and ``stddevs``). ``image`` and ``label`` index ``images`` and ``labels``.
- ``block_splits_by_image_all.pth`` / ``block_splits_by_image_single.pth``: ``{"splits": [{"train": [...],
  "val": [...], "test": [...]}]}``, trial indices; ``split_num`` picks one split.
- images at ``<images_dir>/<wnid>/<name>.JPEG``.

Preprocessing (each step a config option, defaults as in the reference code): keep trials with
``min_length <= T <= max_length`` (450..600), crop samples ``crop`` (20:460), optional MNE band-pass
(``l_freq``/``h_freq``), optional resampling to ``resample`` samples (DreamDiffusion: 512, by linear
interpolation; ``resample_method=fft`` uses ``mne.filter.resample``), subject filter (``subject=0``: all).

Split indices follow the reference code (perceivelab, DreamDiffusion): they index the trial list *after* the
subject filter (``split_index_base=filtered``), which is what ``block_splits_by_image_single.pth`` expects;
``split_index_base=full`` reads them as indices into the whole file, then applies the subject filter.

The first use converts the file into a memory-mapped cache (:mod:`regionaldiff.data.cache`); later runs start
from it. Every run is tagged with the block-design warning (Li et al. 2020, TPAMI; see ``docs/datasets.md``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from regionaldiff.config import EEGImageNetConfig, check_multiple, plain, schema_from_arguments
from regionaldiff.data.base import SPLITS, EEGDataModule, EEGSplit
from regionaldiff.data.cache import ArrayCache, CacheEntry
from regionaldiff.data.common import RowView, image_table, leak_report
from regionaldiff.data.images import ImageTable
from regionaldiff.data.safe_load import DataFormatError, expect_array, expect_keys, load_torch, load_torch_streamed
from regionaldiff.errors import BadInputError, ConfigError
from regionaldiff.requirements import RequiredPath, raise_if_missing

log = logging.getLogger(__name__)

EEG_FILES = ("eeg_5_95_std.pth", "eeg_14_70_std.pth", "eeg_55_95_std.pth", "eeg_signals_raw_with_mean_std.pth")
BLOCK_DESIGN_WARNING = (
    "EEG-ImageNet was recorded in a block design: all images of a class were shown in one continuous block, so "
    "its splits share recording-time (drift/state) signals within each class. Class decoding and class-level "
    "reconstruction scores can exploit that temporal confound instead of visual content (Li et al. 2020, TPAMI "
    "43(1):316-333). Do not read them as evidence of visual decoding; see docs/datasets.md."
)
CONVERT_CHUNK = 256


class EEGImageNetDataModule(EEGDataModule):
    """EEG-ImageNet from its official ``.pth`` files.

    Parameters
    ----------
    root : str
        Folder holding the EEG file, the split file and (by default) the images.
    eeg_file : str
        EEG file name (relative to ``root``, or absolute): one of ``eeg_5_95_std.pth``, ``eeg_14_70_std.pth``,
        ``eeg_55_95_std.pth``, ``eeg_signals_raw_with_mean_std.pth``, or any file in the same format.
    split_file : str
        Split file (relative to ``root``, or absolute), e.g. ``block_splits_by_image_all.pth``.
    split_num : int
        Which split of the file (default 0).
    split_index_base : {"filtered", "full"}
        Whether the split indices index the subject-filtered trial list (reference behaviour) or the file.
    images_dir : str
        Image folder (relative to ``root``, or absolute), with ``<wnid>/<name>.JPEG`` inside.
    subject : int
        0 for all subjects, else keep only this subject's trials (e.g. 4).
    min_length, max_length : int
        Keep trials with ``min_length <= T <= max_length`` samples.
    crop : list of two int
        ``[start, stop)`` samples kept. Without ``resample``, trials shorter than ``stop`` are dropped (counted).
    resample : int or None
        Resample each trial to this many samples (DreamDiffusion: 512); None keeps ``stop - start``.
    resample_method : {"linear", "fft"}
        ``linear``: linear interpolation over the trial (DreamDiffusion); ``fft``: ``mne.filter.resample``.
    l_freq, h_freq : float or None
        Optional extra band-pass (``mne.filter.filter_data``) before resampling; None = off.
    sfreq : float
        Sampling rate of the file (1000 Hz for the release); the output rate follows crop and resampling.
    n_times_multiple : int
        Trailing samples are dropped so that ``n_times`` is a multiple of this (the encoder's patch size).
    on_missing_image : {"skip", "fail"}
        Missing or undecodable images: drop their trials (counted and logged) or stop with their names.
    on_bad_trial : {"drop", "fail"}
        Trials with NaN/Inf samples: drop them (counted) or stop with their indices.
    image_size : int
        Side of the square stimulus images.
    image_resize : {"center_crop", "squash", "pad"}
        How images are brought to ``image_size``.
    cache_dir : str or None
        Cache root (``paths.cache_dir``).
    cache_verify : {"quick", "full"}
        How the source files are compared with the cache manifest.
    batch_size, num_workers : int
        Loader settings.
    region_labels : {"class", "layout"}
        What region-map labels name (:class:`regionaldiff.regions.RegionLabels`; default: the class).
    """

    name = "eeg_imagenet"

    def __init__(
        self,
        root: str,
        eeg_file: str = "eeg_5_95_std.pth",
        split_file: str = "block_splits_by_image_all.pth",
        split_num: int = 0,
        split_index_base: str = "filtered",
        images_dir: str = "imageNet_images",
        subject: int = 0,
        min_length: int = 450,
        max_length: int = 600,
        crop: Any = (20, 460),
        resample: int | None = None,
        resample_method: str = "linear",
        l_freq: float | None = None,
        h_freq: float | None = None,
        sfreq: float = 1000.0,
        n_times_multiple: int = 4,
        on_missing_image: str = "skip",
        on_bad_trial: str = "drop",
        image_size: int = 64,
        image_resize: str = "center_crop",
        cache_dir: str | None = None,
        cache_verify: str = "quick",
        batch_size: int = 32,
        num_workers: int = 0,
        region_labels: str = "class",
    ) -> None:
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, image_size=image_size, region_labels=region_labels
        )
        schema_from_arguments(EEGImageNetConfig, locals())  # every value checked by the config's schema
        crop = plain(crop)
        self.root = Path(root)
        self.eeg_path = self._path(eeg_file)
        self.split_path = self._path(split_file)
        self.images_root = self._path(images_dir)
        self.split_num = int(split_num)
        self.split_index_base = split_index_base
        self.subject = int(subject)
        self.min_length, self.max_length = int(min_length), int(max_length)
        self.crop = (int(crop[0]), int(crop[1]))
        self.resample = None if resample is None else int(resample)
        self.resample_method = resample_method
        self.l_freq, self.h_freq = l_freq, h_freq
        self.file_sfreq = float(sfreq)
        self.n_times_multiple = int(n_times_multiple)
        self.on_missing_image = on_missing_image
        self.on_bad_trial = on_bad_trial
        self.image_resize = image_resize
        self.cache_dir = cache_dir
        self.cache_verify = cache_verify
        self.run_tags: dict[str, str] = {"data.warning": BLOCK_DESIGN_WARNING}
        self.data_report: dict[str, float] = {}
        self.leak_counts: dict[str, int] = {}
        self._entry: CacheEntry | None = None
        self._images: ImageTable | None = None
        self._failed_images: dict[str, str] = {}
        self._split_indices: dict[str, list[int]] | None = None

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    # -- files (checked before any cache is started; `regionaldiff check` lists them) -------
    def required_files(self) -> list[RequiredPath]:
        """The EEG file, the split file and the image folder, with cheap format checks."""
        return [
            RequiredPath(
                "EEG-ImageNet EEG file",
                self.eeg_path,
                "dataset.root, dataset.eeg_file",
                fmt="torch",
                check=self._check_eeg_file,
            ),
            RequiredPath("EEG-ImageNet split file", self.split_path, "dataset.root, dataset.split_file", fmt="torch"),
            RequiredPath(
                "ImageNet images (<wnid>/<name>.JPEG)",
                self.images_root,
                "dataset.root, dataset.images_dir",
                kind="folder",
                check=_check_image_folder,
            ),
        ]

    def _check_eeg_file(self, path: Path) -> str | None:
        """Legacy file: its structure (keys, first trial's EEG shape) from the pickle, without reading any EEG."""
        from regionaldiff.data.torch_legacy import is_legacy_torch_file

        if not is_legacy_torch_file(path):
            return None  # zip format: checked when converted
        try:
            data, close = load_torch_streamed(path, what="EEG-ImageNet EEG file")
        except DataFormatError as err:
            return str(err)
        close()
        if not isinstance(data, dict) or not {"dataset", "labels", "images"} <= set(data):
            found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
            return f"expected a dict with keys ['dataset', 'labels', 'images']; found {found}"
        trials = data["dataset"]
        if not isinstance(trials, (list, tuple)) or not trials or not isinstance(trials[0], dict):
            return "'dataset' must be a non-empty list of trial dicts"
        shape = tuple(getattr(trials[0].get("eeg"), "shape", ()))
        if len(shape) != 2:
            return f"dataset[0]['eeg'] has shape {shape}; expected [channels, T]"
        return None

    def cache_estimate_bytes(self) -> int | None:
        """About how much the cache will take: the EEG file's float32 samples kept after cropping/resampling
        (the release's trials are about 500 samples long), plus the decoded images."""
        if not self.eeg_path.is_file():
            return None
        n_out = self.crop[1] - self.crop[0] if self.resample is None else self.resample
        images = 0
        if self.images_root.is_dir():
            n_images = sum(1 for folder in self.images_root.iterdir() if folder.is_dir() for _ in folder.iterdir())
            images = n_images * self.image_size**2 * 3
        return int(self.eeg_path.stat().st_size * min(n_out / 500, 1.5)) + images

    # -- sizes (read from the cache, converted on first access) ----------------------------
    @property
    def n_chans(self) -> int:
        return int(self._prepared().meta["n_chans"])

    @property
    def n_times(self) -> int:
        return int(self._prepared()["eeg"].shape[2])

    @property
    def sfreq(self) -> float:
        return float(self._prepared().meta["sfreq"])

    @property
    def subject_ids(self) -> list[int]:
        """``dataset.subject`` when one is chosen, else every subject number in the file."""
        if self.subject:
            return [self.subject]
        return sorted(int(s) for s in np.unique(np.asarray(self._prepared()["all_subject"])))

    @property
    def ch_names(self) -> list[str]:
        # the release has no channel names (a 128-channel actiCAP); numbered as in the file's row order
        return [f"EEG{i + 1:03d}" for i in range(self.n_chans)]

    @property
    def class_names(self) -> list[str]:
        return list(self._prepared().meta["labels"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- conversion -------------------------------------------------------------------------
    def cache_config(self) -> dict[str, Any]:
        """Everything the cached EEG arrays depend on (besides the source file)."""
        return {
            "min_length": self.min_length,
            "max_length": self.max_length,
            "crop": list(self.crop),
            "resample": self.resample,
            "resample_method": self.resample_method,
            "l_freq": self.l_freq,
            "h_freq": self.h_freq,
            "sfreq": self.file_sfreq,
            "n_times_multiple": self.n_times_multiple,
            "version": 1,
        }

    def _prepared(self) -> CacheEntry:
        if self._entry is None:
            # every file is there before the cache folder or its lock is created (format checks: `regionaldiff check`)
            raise_if_missing(replace(r, check=None) for r in self.required_files())
            cache = ArrayCache(
                self.cache_dir, self.name, self.cache_config(), {"eeg": self.eeg_path}, verify=self.cache_verify
            )
            self._entry = cache.get_or_build(self._convert)
            self.data_report["cache_hit"] = float(self._entry.status == "hit")
            for key in ("n_trials_file", "n_dropped_length", "n_dropped_short_for_crop", "n_nonfinite_trials"):
                self.data_report[key] = float(self._entry.meta.get(key, 0))
            if self._entry.meta.get("n_nonfinite_trials") and self.on_bad_trial == "fail":
                bad = self._entry.meta["nonfinite_trials"]
                raise DataFormatError(
                    f"{self.eeg_path}: {len(bad)} trial(s) contain NaN or Inf samples (file indices {bad[:20]}). "
                    "Set dataset.on_bad_trial=drop to drop them."
                )
        return self._entry

    def _convert(self, writer) -> dict[str, Any]:
        """Official file -> cache arrays (runs once per config and file)."""
        path = self.eeg_path
        # the release is a legacy torch file: its tensors are read from the file chunk by chunk (memory ~ one chunk)
        data, close = load_torch_streamed(path, what="EEG-ImageNet EEG file")
        try:
            return self._convert_trials(writer, data)
        finally:
            close()

    def _convert_trials(self, writer, data: Any) -> dict[str, Any]:
        path = self.eeg_path
        expect_keys(data, ("dataset", "labels", "images"), path, "the EEG-ImageNet EEG file")
        trials, labels, images = data["dataset"], list(data["labels"]), list(data["images"])
        if not isinstance(trials, (list, tuple)) or not trials:
            raise DataFormatError(
                f"{path}: 'dataset' must be a non-empty list of trial dicts; got {type(trials).__name__}."
            )
        for field, values in (("labels", labels), ("images", images)):
            if not values or not all(isinstance(v, str) for v in values):
                raise DataFormatError(
                    f"{path}: '{field}' must be a non-empty list of strings (WordNet ids / image names)."
                )
        n = len(trials)
        all_subject = np.zeros(n, dtype=np.int64)
        all_label = np.zeros(n, dtype=np.int64)
        all_image = np.zeros(n, dtype=np.int64)
        all_length = np.zeros(n, dtype=np.int64)
        n_chans = None
        for i, trial in enumerate(trials):
            if not isinstance(trial, dict) or not {"eeg", "image", "label", "subject"} <= set(trial):
                found = sorted(trial) if isinstance(trial, dict) else type(trial).__name__
                raise DataFormatError(
                    f"{path}: dataset[{i}] must be a dict with keys ['eeg', 'image', 'label', 'subject']; found {found}."
                )
            eeg = trial["eeg"]
            shape = tuple(getattr(eeg, "shape", ()))
            if len(shape) != 2:
                raise DataFormatError(
                    f"{path}: dataset[{i}]['eeg'] has shape {shape}; expected a 2-D Tensor [channels, T]."
                )
            n_chans = shape[0] if n_chans is None else n_chans
            if shape[0] != n_chans:
                raise DataFormatError(
                    f"{path}: dataset[{i}]['eeg'] has {shape[0]} channels; dataset[0] has {n_chans}."
                )
            all_length[i] = shape[1]
            all_label[i], all_image[i], all_subject[i] = (
                self._int(trial, k, i) for k in ("label", "image", "subject")
            )
        assert n_chans is not None, "trials is not empty: its first trial set n_chans"
        if (all_label < 0).any() or (all_label >= len(labels)).any():
            raise DataFormatError(
                f"{path}: trial labels must index 'labels' (0..{len(labels) - 1}); found {all_label.min()}..{all_label.max()}."
            )
        if (all_image < 0).any() or (all_image >= len(images)).any():
            raise DataFormatError(
                f"{path}: trial 'image' must index 'images' (0..{len(images) - 1}); found {all_image.min()}..{all_image.max()}."
            )

        start, stop = self.crop
        length_ok = (all_length >= self.min_length) & (all_length <= self.max_length)
        fits = all_length >= (stop if self.resample is None else start + 2)
        keep = np.flatnonzero(length_ok & fits)
        if not len(keep):
            raise DataFormatError(
                f"{path}: no trial has {self.min_length} <= T <= {self.max_length} samples and reaches the crop "
                f"{list(self.crop)} (lengths {all_length.min()}..{all_length.max()}). Adjust dataset.min_length/max_length/crop."
            )
        n_out = stop - start if self.resample is None else self.resample
        n_out = check_multiple(n_out, self.n_times_multiple)
        eeg_out = writer.create_stream("eeg", (len(keep), n_chans, n_out), np.float32)
        finite = np.ones(len(keep), dtype=bool)
        for lo in tqdm(range(0, len(keep), CONVERT_CHUNK), desc="EEG-ImageNet -> cache", unit="chunk", leave=False):
            rows = keep[lo : lo + CONVERT_CHUNK]
            chunk = [self._preprocess(trials[int(i)]["eeg"]) for i in rows]
            block = np.stack(chunk)[:, :, :n_out]
            finite[lo : lo + len(rows)] = np.isfinite(block).all(axis=(1, 2))
            eeg_out.write(block)
            del chunk, block
        for name, array in (
            ("kept_index", keep),
            ("finite", finite),
            ("all_subject", all_subject),
            ("all_label", all_label),
            ("all_image", all_image),
            ("all_length", all_length),
        ):
            writer.save(name, array)
        out_sfreq = self.file_sfreq if self.resample is None else self.file_sfreq * self.resample / (stop - start)
        nonfinite = [int(i) for i in keep[~finite]]
        if nonfinite:
            log.warning(
                "EEG-ImageNet: %d trial(s) with NaN/Inf samples (file indices %s)", len(nonfinite), nonfinite[:20]
            )
        return {
            "labels": labels,
            "images": images,
            "n_chans": int(n_chans),
            "sfreq": out_sfreq,
            "n_trials_file": n,
            "n_dropped_length": int((~length_ok).sum()),
            "n_dropped_short_for_crop": int((length_ok & ~fits).sum()),
            "n_nonfinite_trials": len(nonfinite),
            "nonfinite_trials": nonfinite,
        }

    def _int(self, trial: dict, key: str, i: int) -> int:
        value = trial[key]
        try:
            return int(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            raise DataFormatError(f"{self.eeg_path}: dataset[{i}][{key!r}] must be an int; got {value!r}.") from None

    def _preprocess(self, eeg) -> np.ndarray:
        """One trial ``[C, T]`` -> cropped, filtered, resampled float32 ``[C, T_out]``."""
        x = eeg.detach().cpu().numpy() if hasattr(eeg, "detach") else np.asarray(eeg)
        x = np.asarray(x[:, self.crop[0] : self.crop[1]], dtype=np.float64)
        if (self.l_freq or self.h_freq) and np.isfinite(x).all():
            import mne

            x = mne.filter.filter_data(x, self.file_sfreq, self.l_freq, self.h_freq, verbose="error")
        if self.resample is not None and x.shape[1] != self.resample:
            if self.resample_method == "linear":
                from scipy.interpolate import interp1d

                x = interp1d(np.linspace(0, 1, x.shape[1]), x, axis=-1)(np.linspace(0, 1, self.resample))
            else:
                import mne

                x = mne.filter.resample(x, up=self.resample, down=x.shape[1], axis=-1, verbose="error")
        return x.astype(np.float32)

    # -- splits -----------------------------------------------------------------------------
    def _split_file_indices(self) -> dict[str, list[int]]:
        if self._split_indices is None:
            path = self.split_path
            data = load_torch(path, what="EEG-ImageNet split file")
            expect_keys(data, ("splits",), path, "the EEG-ImageNet split file")
            splits = data["splits"]
            if not isinstance(splits, (list, tuple)) or not splits:
                raise DataFormatError(
                    f"{path}: 'splits' must be a non-empty list of {{'train', 'val', 'test'}} dicts."
                )
            if self.split_num >= len(splits):
                raise ConfigError(
                    f"dataset.split_num={self.split_num}, but {path} has {len(splits)} split(s) (0..{len(splits) - 1})."
                )
            chosen = splits[self.split_num]
            expect_keys(chosen, SPLITS, path, f"splits[{self.split_num}]")
            out = {}
            for name in SPLITS:
                idx = expect_array(chosen[name], path, f"splits[{self.split_num}][{name!r}]", ndim=1, kinds="iu")
                out[name] = [int(i) for i in idx]
            self._split_indices = out
        return self._split_indices

    def _image_table(self) -> ImageTable:
        if self._images is None:
            entry = self._prepared()
            names = entry.meta["images"]
            used = sorted({int(i) for i in np.unique(entry["all_image"][entry["kept_index"]])})
            ids = [names[i] for i in used]
            paths = [self.images_root / name.split("_")[0] / f"{name}.JPEG" for name in ids]
            self._images, self._failed_images, status = image_table(
                self.cache_dir,
                self.name,
                ids,
                paths,
                self.image_size,
                self.image_resize,
                self.on_missing_image,
                self.cache_verify,
            )
            self.data_report["n_skipped_images"] = float(len(self._failed_images))
            if self._failed_images:
                self.run_tags["data.skipped_images"] = ", ".join(sorted(self._failed_images))[:500]
        return self._images

    def build_split(self, split: str) -> EEGSplit:
        entry = self._prepared()
        images = self._image_table()
        idx = np.asarray(self._split_file_indices()[split], dtype=np.int64)
        all_subject = np.asarray(entry["all_subject"])
        n_file = len(all_subject)
        if self.subject:
            members = np.flatnonzero(all_subject == self.subject)
            if not len(members):
                raise ConfigError(
                    f"dataset.subject={self.subject}: no trial of this subject in {self.eeg_path} "
                    f"(subjects: {sorted(set(all_subject.tolist()))}; 0 = all)."
                )
        else:
            members = np.arange(n_file)
        if len(idx) and (
            idx.min() < 0 or idx.max() >= (len(members) if self.split_index_base == "filtered" else n_file)
        ):
            limit = len(members) if self.split_index_base == "filtered" else n_file
            hint = (
                " This split file indexes the whole file: set dataset.subject=0, or dataset.split_index_base=full "
                "to read it before the subject filter (or use block_splits_by_image_single.pth)."
                if self.subject and self.split_index_base == "filtered"
                else ""
            )
            raise DataFormatError(
                f"{self.split_path}: {split!r} indices span {idx.min()}..{idx.max()}, but there are {limit} trials to "
                f"index (split_index_base={self.split_index_base}, subject={self.subject}).{hint}"
            )
        if self.split_index_base == "filtered":
            orig = members[idx]
        else:
            orig = idx[all_subject[idx] == self.subject] if self.subject else idx
        row_of = np.full(n_file, -1, dtype=np.int64)
        kept = np.asarray(entry["kept_index"])
        row_of[kept] = np.arange(len(kept))
        rows = row_of[orig]
        n_filtered = int((rows < 0).sum())
        rows = rows[rows >= 0]
        finite = np.asarray(entry["finite"])[rows]
        n_bad = int((~finite).sum())
        rows = rows[finite]
        names = entry.meta["images"]
        image_ids = [names[i] for i in np.asarray(entry["all_image"])[kept[rows]]]
        has_image = np.asarray([i in images for i in image_ids], dtype=bool)
        n_skipped = int((~has_image).sum())
        rows = rows[has_image]
        image_ids = [i for i, ok in zip(image_ids, has_image) if ok]
        self.data_report[f"n_{split}_dropped_preprocessing"] = float(n_filtered)
        self.data_report[f"n_{split}_dropped_nonfinite"] = float(n_bad)
        self.data_report[f"n_{split}_skipped_missing_image"] = float(n_skipped)
        self.data_report["n_skipped_trials_missing_image"] = sum(
            v
            for k, v in self.data_report.items()
            if k.endswith("_skipped_missing_image") and k != "n_skipped_trials_missing_image"
        )
        if not len(rows):
            raise BadInputError(
                f"EEG-ImageNet: the {split!r} split is empty after filtering (subject={self.subject}, split {self.split_num})."
            )
        log.info(
            "EEG-ImageNet %s: %d trials (dropped: %d by length/crop, %d NaN/Inf, %d missing image)",
            split,
            len(rows),
            n_filtered,
            n_bad,
            n_skipped,
        )
        return EEGSplit(
            eeg=RowView.of(entry["eeg"], rows),
            labels=np.asarray(entry["all_label"])[kept[rows]].astype(np.int64),
            image_ids=image_ids,
            subjects=np.asarray(all_subject)[kept[rows]].astype(np.int64),
            images=images,
            extras={"file_index": kept[rows]},
        )

    def setup(self, stage: str | None = None) -> None:
        """Build every split (cheap views of the cache) and run the leak checks, whatever the stage."""
        for split in SPLITS:
            self.get_split(split)
        self.leak_counts = leak_report({s: self._splits_ids(s) for s in SPLITS})
        self.run_tags["data.leak_check_detail"] = "stimulus overlap " + ", ".join(
            f"{k}={v}" for k, v in self.leak_counts.items()
        )
        self.data_report.update({f"leak_{k}": float(v) for k, v in self.leak_counts.items()})
        log.info("EEG-ImageNet leak check passed: %s", self.leak_counts)

    def _splits_ids(self, split: str) -> list[str]:
        return self.get_split(split).image_ids


def _check_image_folder(folder: Path) -> str | None:
    """The image folder holds ``<wnid>/`` sub-folders (the first one is looked at, not every image)."""
    first = next((p for p in folder.iterdir() if p.is_dir()), None)
    if first is None:
        return "no <wnid>/ sub-folders (expected <images_dir>/<wnid>/<name>.JPEG)"
    return None
