"""THINGS-EEG2 raw-file preprocessing with MNE, and multivariate noise normalisation (MVNN).

Follows the official pipeline of Gifford et al. (2022), reimplemented with public APIs:

1. ``raw_eeg_{training,test}.npy`` (``{raw_eeg_data, ch_names, ch_types, sfreq}``, a ``stim`` channel) ->
   ``mne.io.RawArray``; events from the stim channel (``mne.find_events``); target trials (code 99999) rejected.
2. Channel selection (regex, default ``^O *|^P *``: the 17 occipito-parietal channels), optional band-pass
   (``raw.filter``), epoching ``[tmin, tmax]`` with baseline correction (``mne.Epochs``), resampling
   (``epochs.resample``).
3. Per image condition, up to ``max_reps`` repetitions per session (random, seeded).
4. MVNN per session: the noise covariance of each condition (Ledoit-Wolf shrinkage, at each time point or
   over each repetition's time course), averaged over conditions; the data are multiplied by its inverse
   square root. ``mvnn="train"`` (default) estimates it on the training partition only, so no test data
   shape the preprocessing; ``mvnn="transductive"`` averages the training and test partitions' covariances
   (the official release's choice); ``mvnn="none"`` skips it.
5. Sessions merged per condition; repetitions shuffled (seeded): ``[conditions, repetitions, channels, times]``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from regionaldiff.data.safe_load import DataFormatError, expect_array, load_numpy_dict

log = logging.getLogger(__name__)

TARGET_CODE = 99999
MVNN_MODES = ("train", "transductive", "none")
MVNN_DIMS = ("time", "epochs")


@dataclass
class RawConfig:
    """``dataset.raw``: preprocessing of the raw files (``dataset.source=raw``)."""

    sessions: Sequence[int] = (1, 2, 3, 4)
    channels: Any = "^O *|^P *"  # regex on channel names, a list of names, or "all"
    l_freq: float | None = None
    h_freq: float | None = None
    tmin: float = -0.2
    tmax: float = 0.8
    baseline: Any = (None, 0)
    sfreq: float = 100.0
    max_reps_training: int = 2
    max_reps_test: int = 20
    mvnn: str = "train"
    mvnn_dim: str = "time"
    seed: int = 20200220

    @classmethod
    def from_mapping(cls, values: Any) -> RawConfig:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"dataset.raw has unknown key(s) {unknown}; allowed: {sorted(known)}.")
        cfg = cls(**values)
        cfg.sessions = [int(s) for s in cfg.sessions]
        if not cfg.sessions:
            raise ValueError("dataset.raw.sessions must list at least one session (e.g. [1, 2, 3, 4]).")
        if cfg.mvnn not in MVNN_MODES:
            raise ValueError(f"dataset.raw.mvnn must be one of {list(MVNN_MODES)}; got {cfg.mvnn!r}.")
        if cfg.mvnn_dim not in MVNN_DIMS:
            raise ValueError(f"dataset.raw.mvnn_dim must be one of {list(MVNN_DIMS)}; got {cfg.mvnn_dim!r}.")
        if not cfg.tmin < cfg.tmax or cfg.sfreq <= 0:
            raise ValueError(f"dataset.raw needs tmin < tmax and sfreq > 0; got {cfg.tmin}, {cfg.tmax}, {cfg.sfreq}.")
        if cfg.max_reps_training < 1 or cfg.max_reps_test < 1:
            raise ValueError("dataset.raw.max_reps_training and max_reps_test must be >= 1.")
        cfg.baseline = None if cfg.baseline is None else tuple(cfg.baseline)
        if not isinstance(cfg.channels, str):
            cfg.channels = [str(c) for c in cfg.channels]
        return cfg

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sessions"] = list(self.sessions)
        out["baseline"] = None if self.baseline is None else list(self.baseline)
        return out


def load_raw_session(path: Path) -> dict[str, Any]:
    """A raw file, checked: ``raw_eeg_data`` ``[channels, samples]``, names, types (with a stim channel), sfreq."""
    what = "THINGS-EEG2 raw EEG file"
    data = load_numpy_dict(path, what=what, required=("raw_eeg_data", "ch_names", "ch_types", "sfreq"))
    eeg = expect_array(data["raw_eeg_data"], path, "raw_eeg_data", ndim=2, kinds="fiu")
    names = [str(c) for c in data["ch_names"]]
    types = [str(t) for t in data["ch_types"]]
    if len(names) != eeg.shape[0] or len(types) != eeg.shape[0]:
        raise DataFormatError(
            f"{path}: raw_eeg_data has {eeg.shape[0]} channels but ch_names has {len(names)} and ch_types {len(types)}; "
            "expected one name and one type per row."
        )
    if "stim" not in types:
        raise DataFormatError(
            f"{path}: ch_types has no 'stim' channel; the raw files carry the image conditions on one."
        )
    try:
        sfreq = float(np.asarray(data["sfreq"]).item())
    except (TypeError, ValueError):
        raise DataFormatError(f"{path}: sfreq must be a number; got {data['sfreq']!r}.") from None
    return {"eeg": eeg, "ch_names": names, "ch_types": types, "sfreq": sfreq}


def epoch_session(path: Path, n_conditions: int, cfg: RawConfig, max_reps: int, rng: np.random.Generator):
    """One raw file -> ``{condition (0-based): [reps, C, T]}``, channel names and times."""
    import mne

    raw_data = load_raw_session(path)
    info = mne.create_info(raw_data["ch_names"], raw_data["sfreq"], raw_data["ch_types"])
    raw = mne.io.RawArray(raw_data["eeg"], info, verbose="error")
    del raw_data
    stim = raw.ch_names[raw.get_channel_types().index("stim")]
    events = mne.find_events(raw, stim_channel=stim, shortest_event=1, verbose="error")
    events = events[events[:, 2] != TARGET_CODE]
    out_of_range = events[(events[:, 2] < 1) | (events[:, 2] > n_conditions), 2]
    if len(out_of_range):
        raise DataFormatError(
            f"{path}: event codes {sorted(set(out_of_range.tolist()))[:10]} are outside 1..{n_conditions} "
            f"(the image conditions of image_metadata.npy) and are not targets ({TARGET_CODE})."
        )
    if not len(events):
        raise DataFormatError(f"{path}: no stimulus events on the stim channel {stim!r}.")
    eeg_names = [n for n, t in zip(raw.ch_names, raw.get_channel_types()) if t == "eeg"]
    if cfg.channels == "all":
        picks = eeg_names
    elif isinstance(cfg.channels, str):
        pattern = re.compile(cfg.channels)
        picks = [n for n in eeg_names if pattern.match(n)]
    else:
        missing = [c for c in cfg.channels if c not in eeg_names]
        if missing:
            raise ValueError(f"dataset.raw.channels: {missing} are not EEG channels of {path} (it has {eeg_names}).")
        picks = list(cfg.channels)
    if not picks:
        raise ValueError(f"dataset.raw.channels={cfg.channels!r} selects no channel of {path}.")
    raw.pick(picks)
    if cfg.l_freq is not None or cfg.h_freq is not None:
        raw.filter(cfg.l_freq, cfg.h_freq, verbose="error")
    epochs = mne.Epochs(
        raw,
        events,
        tmin=cfg.tmin,
        tmax=cfg.tmax,
        baseline=cfg.baseline,
        preload=True,
        reject_by_annotation=False,
        verbose="error",
    )
    if cfg.sfreq < raw.info["sfreq"]:
        epochs.resample(cfg.sfreq, verbose="error")
    data = epochs.get_data(copy=False)
    codes = epochs.events[:, 2]
    by_condition = {}
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        if len(idx) > max_reps:
            idx = np.sort(rng.choice(idx, size=max_reps, replace=False))
        by_condition[int(code) - 1] = data[idx]
    return by_condition, list(epochs.ch_names), np.asarray(epochs.times)


def _shrunk_cov(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf covariance of ``x`` ``[samples, channels]``, estimated on standardised data."""
    from sklearn.covariance import ledoit_wolf

    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    shrunk, _ = ledoit_wolf((x - x.mean(axis=0)) / scale)
    return scale[:, None] * shrunk * scale[None, :]


def noise_covariance(conditions: dict[int, np.ndarray], dim: str, desc: str = "MVNN covariance") -> np.ndarray:
    """Average over conditions of the within-condition noise covariance ``[C, C]``.

    ``dim="time"``: covariance across repetitions at each time point, averaged over time points;
    ``dim="epochs"``: covariance across time points of each repetition, averaged over repetitions.
    """
    sigmas = []
    for data in tqdm(list(conditions.values()), desc=desc, leave=False):  # data: [reps, C, T]
        if dim == "time":
            if data.shape[0] < 2:
                continue
            sigmas.append(np.mean([_shrunk_cov(data[:, :, t]) for t in range(data.shape[2])], axis=0))
        else:
            sigmas.append(np.mean([_shrunk_cov(rep.T) for rep in data], axis=0))
    if not sigmas:
        raise ValueError(
            "MVNN needs at least 2 repetitions of some condition per session (mvnn_dim=time); use mvnn_dim=epochs."
        )
    return np.mean(sigmas, axis=0)


def whitener(sigma: np.ndarray) -> np.ndarray:
    """``sigma ** -1/2`` (symmetric), by ``scipy.linalg.fractional_matrix_power``."""
    from scipy.linalg import fractional_matrix_power

    return np.real(fractional_matrix_power(sigma, -0.5))


def preprocess_subject(
    raw_dir: Path, subject: int, n_train: int, n_test: int, cfg: RawConfig
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, dict[str, Any]]:
    """All sessions of one subject -> ``(train [n_train, R, C, T], test [n_test, R', C, T], ch_names, times, info)``.

    Conditions without repetitions, or with fewer than the others, are padded with NaN (the bad-trial policy
    of the datamodule then drops them); ``info`` counts them.
    """
    rng = np.random.default_rng(cfg.seed + subject)
    sessions: list[dict[str, dict[int, np.ndarray]]] = []
    ch_names: list[str] | None = None
    times: np.ndarray | None = None
    for ses in tqdm(cfg.sessions, desc=f"THINGS-EEG2 sub-{subject:02d} raw -> epochs", leave=False):
        folder = raw_dir / f"sub-{subject:02d}" / f"ses-{ses:02d}"
        parts = {}
        for part, n_cond, max_reps in (
            ("training", n_train, cfg.max_reps_training),
            ("test", n_test, cfg.max_reps_test),
        ):
            parts[part], names, t = epoch_session(folder / f"raw_eeg_{part}.npy", n_cond, cfg, max_reps, rng)
            if ch_names is None or times is None:  # both set together, from the first session
                ch_names, times = names, t
            elif names != ch_names or len(t) != len(times):
                raise DataFormatError(f"{folder}: channels or epoch length differ from the first session's.")
        if cfg.mvnn != "none":
            sigma = noise_covariance(parts["training"], cfg.mvnn_dim, f"MVNN ses-{ses:02d} (training)")
            if cfg.mvnn == "transductive":
                sigma = (sigma + noise_covariance(parts["test"], cfg.mvnn_dim, f"MVNN ses-{ses:02d} (test)")) / 2
            w = whitener(sigma)
            for part in parts.values():
                for cond, data in part.items():
                    part[cond] = np.einsum("rct,cd->rdt", data, w)
        sessions.append(parts)
    assert ch_names is not None and times is not None, "RawConfig.sessions is not empty (checked in from_mapping)"
    info: dict[str, Any] = {}
    merged = []
    for part, n_cond in (("training", n_train), ("test", n_test)):
        reps = [[s[part][c] for s in sessions if c in s[part]] for c in range(n_cond)]
        counts = np.asarray([sum(len(r) for r in rs) for rs in reps])
        n_rep = int(counts.max())
        out = np.full((n_cond, n_rep, len(ch_names), len(times)), np.nan, dtype=np.float32)
        for c, rs in enumerate(reps):
            if rs:
                stacked = np.concatenate(rs)
                out[c, : len(stacked)] = stacked[rng.permutation(len(stacked))]
        info[f"n_{part}_conditions_short_of_reps"] = int((counts < n_rep).sum())
        merged.append(out)
    return merged[0], merged[1], list(ch_names), np.asarray(times), info
