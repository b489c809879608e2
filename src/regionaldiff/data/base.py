"""The data contract shared by every dataset (how each dataset fills it: ``docs/datasets.md``).

A dataset is a :class:`EEGDataModule`: a ``lightning.LightningDataModule`` whose loaders yield dict
batches with the keys ``eeg``, ``image``, ``label``, ``image_id``, ``subject`` and, once region maps
are attached with :meth:`EEGDataModule.set_region_maps`, ``region_map``.

Subclasses implement :meth:`EEGDataModule.build_split`, returning an :class:`EEGSplit` of arrays
(in memory or memory-mapped). Everything else (tensors, normalisation of images to [-1, 1],
collation, region maps, loaders) lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from regionaldiff.config import check_loader
from regionaldiff.errors import BadInputError
from regionaldiff.regions import RegionLabels

SPLITS = ("train", "val", "test")

#: the colour of the background label in map figures (the synthetic scenes' background is this grey)
BACKGROUND_COLOUR = (128, 128, 128)
#: the colour of the ``object`` label of a layout map in figures
LAYOUT_OBJECT_COLOUR = (245, 245, 245)


class LayoutMaps(Mapping[str, np.ndarray]):
    """Class-labelled region maps seen as object (1) / background (0) layouts, converted on access."""

    def __init__(self, maps: Mapping[str, np.ndarray]) -> None:
        self.maps = maps

    def __getitem__(self, key: str) -> np.ndarray:
        return RegionLabels.LAYOUT.relabel(self.maps[key])

    def __iter__(self):
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)

    def __contains__(self, key: object) -> bool:
        return key in self.maps


@dataclass
class EEGSplit:
    """One split's arrays.

    Parameters
    ----------
    eeg : np.ndarray or array-like
        float32 ``[N, C, T]`` preprocessed EEG: an array, a ``np.memmap`` or a lazy row view (anything with
        ``ndim``, ``shape``, ``len`` and ``[i]``). Index it trial by trial: ``np.asarray(split.eeg)`` would read
        a whole (possibly multi-GB) split into memory.
    labels : np.ndarray
        int64 ``[N]`` class / concept index in ``[0, num_classes)``.
    image_ids : list of str
        ``[N]`` stable id of each trial's stimulus (the image file stem).
    subjects : np.ndarray
        int64 ``[N]`` subject number.
    images : Mapping[str, np.ndarray]
        stimulus id -> uint8 ``[H, W, 3]`` image at the datamodule's ``image_size``. Every id in
        ``image_ids`` must be a key. Lazy mappings (loading on access) are fine.
    """

    eeg: Any  # np.ndarray, np.memmap or a lazy row view (see above)
    labels: np.ndarray
    image_ids: list[str]
    subjects: np.ndarray
    images: Mapping[str, np.ndarray]
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.eeg)
        if self.eeg.ndim != 3:
            raise ValueError(f"EEGSplit.eeg must be [N, C, T]; got shape {tuple(self.eeg.shape)}.")
        for name, value in (("labels", self.labels), ("image_ids", self.image_ids), ("subjects", self.subjects)):
            if len(value) != n:
                raise ValueError(f"EEGSplit.{name} has {len(value)} entries but eeg has {n} trials.")

    def __len__(self) -> int:
        return len(self.eeg)

    def unique_image_ids(self) -> list[str]:
        """Stimulus ids in first-seen order, each once."""
        return list(dict.fromkeys(self.image_ids))


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """float ``[..., 3, H, W]`` in [-1, 1] -> uint8 ``[..., H, W, 3]``."""
    array = ((tensor.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return array.movedim(-3, -1).cpu().numpy()


class EEGImageDataset(Dataset):
    """Map-style dataset over an :class:`EEGSplit` yielding contract dicts."""

    def __init__(self, split: EEGSplit, region_maps: Mapping[str, np.ndarray] | None = None) -> None:
        self.split = split
        self.region_maps = region_maps
        if region_maps is not None:
            missing = [i for i in split.unique_image_ids() if i not in region_maps]
            if missing:
                raise KeyError(
                    f"{len(missing)} stimuli have no region map (first: {missing[:3]}). "
                    "Re-run the 'prepare' step for this regionmap config."
                )

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        split = self.split
        image_id = split.image_ids[index]
        item: dict[str, Any] = {
            "eeg": torch.from_numpy(np.asarray(split.eeg[index], dtype=np.float32)),
            "image": image_to_tensor(split.images[image_id]),
            "label": torch.tensor(int(split.labels[index]), dtype=torch.int64),
            "image_id": image_id,
            "subject": torch.tensor(int(split.subjects[index]), dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.region_maps is not None:
            item["region_map"] = torch.from_numpy(np.asarray(self.region_maps[image_id], dtype=np.int64))
        return item


class EEGDataModule(L.LightningDataModule):
    """Base datamodule of the data contract.

    Subclasses provide ``n_chans``, ``n_times``, ``sfreq``, ``ch_names``, ``num_classes`` and ``class_names``
    (attributes set in ``__init__``, or properties read from the prepared cache as the real datasets do) and
    implement :meth:`build_split`. They may fill :attr:`run_tags` and :attr:`data_report`, which the pipeline's
    ``prepare`` step logs to MLflow.

    Parameters
    ----------
    batch_size : int
        Batch size of all loaders.
    num_workers : int
        DataLoader workers (0 = load in the main process).
    image_size : int
        Side of the square stimulus images, in pixels.
    region_labels : {"class", "layout"} or RegionLabels
        What region-map labels name (:class:`~regionaldiff.regions.RegionLabels`): the object's class, or object vs
        background. Parsed here, once: the attribute ``region_labels`` is the :class:`RegionLabels`.

    Attributes
    ----------
    run_tags : dict of str to str
        Facts about the data to record with the run (MLflow tags, e.g. ``data.warning``); empty by default.
    data_report : dict of str to float
        Counts from loading (dropped trials, skipped images, cache hits, leak checks), logged as ``data/<key>``
        metrics; empty by default.
    """

    name: str = "dataset"
    #: the RGB colour of each class's objects, where the dataset draws them (the synthetic worlds); None for
    #: photographs. Figures paint region maps with it (:attr:`region_label_colours`).
    class_colours: list[tuple[int, int, int]] | None = None

    if TYPE_CHECKING:
        # The sizes every subclass provides, declared read-only: a subclass sets them as instance attributes
        # (declaring them at class level, e.g. ``n_chans: int``) or overrides them with properties. Declared for
        # the type checker only, so that at run time neither way is shadowed by a base-class property.
        @property
        def n_chans(self) -> int: ...

        @property
        def n_times(self) -> int: ...

        @property
        def sfreq(self) -> float: ...

        @property
        def ch_names(self) -> list[str]: ...

        @property
        def num_classes(self) -> int: ...

        @property
        def class_names(self) -> list[str]: ...

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        image_size: int = 64,
        region_labels: str | RegionLabels = "class",
    ) -> None:
        super().__init__()
        self.region_labels = RegionLabels.parse(region_labels)
        check_loader(batch_size, num_workers, image_size)  # a dataset without a schema of its own is checked too
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.run_tags: dict[str, str] = {}
        self.data_report: dict[str, float] = {}
        self._splits: dict[str, EEGSplit] = {}
        self._region_maps: Mapping[str, np.ndarray] | None = None

    # -- to implement -------------------------------------------------------------------------
    def build_split(self, split: str) -> EEGSplit:
        """Return the arrays of ``split`` (one of ``train``, ``val``, ``test``)."""
        raise NotImplementedError

    def averaged_split(self, split: str, n_repetitions: int) -> EEGSplit:
        """``split`` with each stimulus's EEG the average of its first ``n_repetitions`` repetitions (the curve of
        retrieval against repetitions); datasets that keep their repetitions implement it. Raises
        ``NotImplementedError`` (its message is the reason) otherwise."""
        raise NotImplementedError(f"dataset {self.name!r} cannot average a chosen number of repetitions")

    def ground_truth_region_maps(self) -> Mapping[str, np.ndarray] | None:
        """Known-truth region maps by stimulus id, where the dataset has them (synthetic only)."""
        return None

    # -- shared -----------------------------------------------------------------------------
    def get_split(self, split: str) -> EEGSplit:
        """The arrays of ``split``, built once and kept."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
        if split not in self._splits:
            self._splits[split] = self.build_split(split)
        return self._splits[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage, SPLITS) if stage else SPLITS:
            self.get_split(split)

    def set_region_maps(self, region_maps: Mapping[str, np.ndarray] | None) -> None:
        """Attach region maps (stimulus id -> int64 ``[H, W]``, 0 = background, ``c + 1`` = class ``c``), or detach
        with None. With ``region_labels="layout"`` the loaders see them as object / background layouts."""
        if region_maps is not None and self.region_labels is RegionLabels.LAYOUT:
            region_maps = LayoutMaps(region_maps)
        self._region_maps = region_maps

    @property
    def num_region_labels(self) -> int:
        """Labels of a region map as models see it: ``num_classes + 1`` (class), or 2 (layout)."""
        return self.region_labels.count(self.num_classes)

    @property
    def region_label_names(self) -> list[str]:
        """Name of each region-map label, background first."""
        return self.region_labels.names(self.class_names)

    @property
    def class_map_colours(self) -> np.ndarray | None:
        """uint8 ``[num_classes + 1, 3]``: the colours figures paint a class-labelled map with (label 0 background
        grey, label ``c + 1`` the colour of class ``c``'s objects from :attr:`class_colours`); None when the
        dataset has no colours of its own (photographs: a categorical palette is used)."""
        colours = self.class_colours
        if colours is None:
            return None
        if len(colours) != self.num_classes:
            raise ValueError(
                f"{type(self).__name__}.class_colours has {len(colours)} colours for {self.num_classes} classes."
            )
        return np.array([BACKGROUND_COLOUR, *colours], dtype=np.uint8)

    @property
    def region_label_colours(self) -> np.ndarray | None:
        """uint8 ``[num_region_labels, 3]``: the colours of the maps as models see them (:attr:`region_labels`):
        layouts paint the background grey and ``object`` white; class maps use :attr:`class_map_colours`."""
        if self.region_labels is RegionLabels.LAYOUT:
            return np.array([BACKGROUND_COLOUR, LAYOUT_OBJECT_COLOUR], dtype=np.uint8)
        return self.class_map_colours

    @property
    def subject_ids(self) -> list[int]:
        """The subject numbers the dataset can hold (the ``subject`` of its batches), sorted: the rows of an encoder's
        subject conditioning (``encoder.subject_layer``), given at build time as ``n_chans`` is. A leave-one-out
        test subject is among them. The shipped datasets declare them from their settings; this default reads
        every split's ``subjects``."""
        return sorted({int(s) for split in SPLITS for s in np.unique(self.get_split(split).subjects)})

    @property
    def has_region_maps(self) -> bool:
        return self._region_maps is not None

    def stimulus_region_maps(self, ids: Sequence[str]) -> list[np.ndarray]:
        """The attached region maps of the stimuli ``ids``, as models see them (object / background layouts with
        ``region_labels="layout"``); a ValueError when none are attached."""
        if self._region_maps is None:
            raise ValueError(
                "No region maps are attached to this dataset: set a regionmap (regionmap=oracle|slic|sam)."
            )
        return [np.asarray(self._region_maps[i]) for i in ids]

    def stimuli(self, split: str) -> tuple[list[str], list[np.ndarray], list[int]]:
        """Unique stimuli of ``split``: ids, uint8 images and the label of each."""
        data = self.get_split(split)
        first_index: dict[str, int] = {}
        for i, image_id in enumerate(data.image_ids):
            first_index.setdefault(image_id, i)
        ids = list(first_index)
        return ids, [data.images[i] for i in ids], [int(data.labels[first_index[i]]) for i in ids]

    def dataset(self, split: str) -> EEGImageDataset:
        return EEGImageDataset(self.get_split(split), self._region_maps)

    def loader(self, split: str, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        """A loader over ``split`` (``batch_size`` None = the datamodule's own)."""
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test", shuffle=False)

    def describe(self) -> dict[str, Any]:
        """Input sizes that models read (never hard-coded)."""
        return {
            "n_chans": self.n_chans,
            "n_times": self.n_times,
            "sfreq": float(self.sfreq),
            "num_classes": self.num_classes,
            "num_region_labels": self.num_region_labels,
            "image_size": self.image_size,
        }


def check_no_stimulus_leak(
    splits: Mapping[str, Sequence[str]], pairs: Sequence[tuple[str, str]] = (("train", "test"), ("val", "test"))
) -> dict[str, int]:
    """Raise if a stimulus id is in two splits that must be disjoint; return the overlap counts (all 0)."""
    counts = {}
    for a, b in pairs:
        if a not in splits or b not in splits:
            continue
        shared = set(splits[a]) & set(splits[b])
        counts[f"{a}_{b}"] = len(shared)
        if shared:
            raise BadInputError(
                f"Stimulus leak: {len(shared)} images are in both {a!r} and {b!r} "
                f"(e.g. {sorted(shared)[:3]}). Fix the split definition."
            )
    return counts
