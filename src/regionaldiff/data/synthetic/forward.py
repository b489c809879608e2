"""The head model of the synthetic benchmark: montage, spherical head, sources and MNE forward solution.

Everything is computed offline with MNE (no files are fetched, nothing is cached globally):

1. a standard montage (:data:`MONTAGES`) gives electrode positions in head coordinates;
2. ``mne.make_sphere_model`` fits a four-layer spherical head to the full parent montage
   (brain, CSF, skull, scalp), the same for every channel subset of that montage;
3. ``mne.setup_volume_source_space(pos=dict(rr=..., nn=...))`` makes a discrete source space of:

   - a ``RETINO_GRID x RETINO_GRID`` **retinotopic** grid in occipital cortex (V1-like): visual-field cell
     ``(row, col)`` (row 0 = top, col 0 = left) maps to a dipole in the opposite hemisphere (left field ->
     right hemisphere), upper field -> lower sources, central field -> the occipital pole and periphery ->
     more anterior. The upper/lower field dipoles point in opposite directions (the calcarine banks),
     which flips the polarity of their scalp response, as for the C1 component;
   - one **category** dipole per class in lateral occipito-temporal cortex (alternating hemispheres);
   - two posterior **alpha** generators (parieto-occipital, one per hemisphere);
   - ``N_BACKGROUND`` **background** dipoles spread through the brain (sources of the 1/f noise);

4. ``mne.make_forward_solution`` gives the free-orientation gain, projected here onto each dipole's
   orientation (fixed-orientation gain, volts per ampere-metre), then re-referenced: ``things17`` and
   ``things63`` to FCz (the online reference of THINGS-EEG2's actiCAP recordings), ``biosemi128`` to the
   average of its channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regionaldiff.config import MONTAGES

# The 17 occipito-parietal channels of THINGS-EEG2's official preprocessed files, in their order.
THINGS17 = ("O1", "Oz", "O2", "PO7", "PO3", "POz", "PO4", "PO8", "P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8")
# THINGS-EEG2's 63 recorded channels (the actiCAP 64 layout without its FCz reference).
THINGS63 = (
    "Fp1", "Fz", "F3", "F7", "FT9", "FC5", "FC1", "C3", "T7", "TP9", "CP5", "CP1", "Pz", "P3", "P7", "O1", "Oz", "O2",
    "P4", "P8", "TP10", "CP6", "CP2", "Cz", "C4", "T8", "FT10", "FC6", "FC2", "F4", "F8", "Fp2", "AF7", "AF3", "AFz",
    "F1", "F5", "FT7", "FC3", "C1", "C5", "TP7", "CP3", "P1", "P5", "PO7", "PO3", "POz", "PO4", "PO8", "P6", "P2",
    "CPz", "CP4", "TP8", "C6", "C2", "FC4", "FT8", "F6", "AF8", "AF4", "F2",
)  # fmt: skip
RETINO_GRID = 6
N_BACKGROUND = 60
# Minimum distance (m) of a source from the inner skull; the layout keeps every source well inside.
MIN_DIST_MM = 5.0


@dataclass
class HeadModel:
    """Fixed-orientation gains (``[n_chans, n_sources]``, V / (A m)) of each source group.

    Attributes
    ----------
    ch_names : list of str
        The montage's channels, in the order of the gains' rows.
    retino : np.ndarray
        ``[C, G * G]``; column ``row * G + col`` is visual-field cell ``(row, col)``.
    category : np.ndarray
        ``[C, K]``; column ``k`` is class ``k``'s category source.
    alpha : np.ndarray
        ``[C, 2]`` posterior alpha generators (left, right).
    background : np.ndarray
        ``[C, N_BACKGROUND]`` sources of the 1/f background.
    positions : dict of str to np.ndarray
        Source positions ``[n, 3]`` (m, head coordinates) per group, for plots and tests.
    """

    ch_names: list[str]
    retino: np.ndarray
    category: np.ndarray
    alpha: np.ndarray
    background: np.ndarray
    positions: dict[str, np.ndarray]


def montage_channels(montage: str) -> list[str]:
    """Channel names of ``montage`` (one of :data:`MONTAGES`), without building anything else."""
    if montage == "things17":
        return list(THINGS17)
    if montage == "things63":
        return list(THINGS63)
    if montage == "biosemi128":
        import mne

        return list(mne.channels.make_standard_montage("biosemi128").ch_names)
    raise ValueError(f"dataset.montage must be one of {list(MONTAGES)}; got {montage!r}.")


def _parent_montage(montage: str):
    """The full standard montage the channels come from (10-05 positions, or BioSemi's 128)."""
    import mne

    if montage == "biosemi128":
        return mne.channels.make_standard_montage("biosemi128")
    # MNE 1.13 renamed 'standard_1005' to 'colin27_1005' (same positions); older versions only know the former.
    name = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    return mne.channels.make_standard_montage(name)


def head_sphere(montage: str):
    """Four-layer sphere model fitted to the parent montage's electrodes (``mne.make_sphere_model``)."""
    import mne

    parent = _parent_montage(montage)
    info = mne.create_info(parent.ch_names, 100.0, "eeg")
    info.set_montage(parent)
    radius, origin, _ = mne.bem.fit_sphere_to_headshape(info, dig_kinds=("eeg",), units="m", verbose=False)
    return mne.make_sphere_model(r0=origin, head_radius=radius, info=info, verbose=False)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector from the head centre: azimuth 0 = straight back (-y), > 0 towards the right (+x)."""
    return np.array([np.sin(azimuth) * np.cos(elevation), -np.cos(azimuth) * np.cos(elevation), np.sin(elevation)])


def source_layout(
    n_classes: int,
    brain_radius: float,
    origin: np.ndarray,
    rng: np.random.Generator,
    category_layout: str = "classes",
    jitter: float = 0.0,
    jitter_rng: np.random.Generator | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Positions and unit orientations (``[n, 3]`` each, m, head coordinates) of every source group.

    ``rng`` jitters the category and background sources (a seed is a "subject"). ``category_layout="classes"`` puts
    the ``n_classes`` category dipoles in a row along lateral occipito-temporal cortex (a few classes);
    ``"patch"`` scatters them over that cortex (many sources: the attribute sources of the realistic presets).
    ``jitter`` (a fraction of the brain radius) moves each retinotopic and category dipole and tilts its
    orientation, drawn from ``jitter_rng``: one subject's own cortical folding on a layout that ``rng`` shares
    between subjects (0, the default: the retinotopic map is the same for every seed). A dipole moved past the brain's
    surface is pulled back inside it, along its radius.
    """
    g = RETINO_GRID
    ret_rr, ret_nn = [], []
    for row in range(g):
        for col in range(g):
            fx = (col + 0.5) / g - 0.5  # visual field: -0.5 left .. 0.5 right
            fy = (row + 0.5) / g - 0.5  # -0.5 top .. 0.5 bottom
            eccentricity = np.hypot(fx, fy) / np.hypot(0.5, 0.5)
            azimuth = -np.sign(fx) * (0.06 + 0.55 * abs(fx))  # left field -> right hemisphere (x > 0)
            elevation = 0.05 + 0.7 * fy  # upper field (fy < 0) -> lower sources
            depth = (0.80 - 0.15 * eccentricity) * brain_radius  # periphery -> deeper, more anterior
            direction = _direction(azimuth, elevation)
            ret_rr.append(origin + depth * direction)
            bank = 1.0 if fy > 0 else -1.0  # lower field: upper bank; upper field: lower bank (flipped dipole)
            ret_nn.append(bank * _unit(direction + np.array([0.0, 0.0, 0.8])))
    cat_rr, cat_nn = [], []
    if category_layout not in ("classes", "patch"):
        raise ValueError(f"category_layout must be 'classes' or 'patch'; got {category_layout!r}.")
    for k in range(n_classes):
        side = 1.0 if k % 2 else -1.0
        if category_layout == "patch":  # scattered over lateral occipito-temporal cortex
            azimuth = side * rng.uniform(0.75, 1.25)
            elevation = rng.uniform(-0.3, 0.1)
        else:
            azimuth = side * (0.9 + 0.08 * (k // 2))  # lateral occipito-temporal, spreading anteriorly
            elevation = -0.15 + 0.05 * (k // 2) + rng.normal(0, 0.02)
        direction = _direction(azimuth, elevation)
        cat_rr.append(origin + 0.75 * brain_radius * direction)
        cat_nn.append(_unit(direction + 0.6 * rng.normal(size=3)))
    alpha_rr = [origin + 0.7 * brain_radius * _direction(s * 0.35, 0.45) for s in (-1.0, 1.0)]
    alpha_nn = [_unit(_direction(s * 0.35, 0.45)) for s in (-1.0, 1.0)]
    bg = _unit(rng.normal(size=(N_BACKGROUND, 3)))
    bg_rr = origin + bg * brain_radius * rng.uniform(0.3, 0.8, size=(N_BACKGROUND, 1))
    bg_nn = _unit(rng.normal(size=(N_BACKGROUND, 3)))
    positions = {
        "retino": np.asarray(ret_rr),
        "category": np.asarray(cat_rr).reshape(-1, 3),
        "alpha": np.asarray(alpha_rr),
        "background": bg_rr,
    }
    orientations = {
        "retino": np.asarray(ret_nn),
        "category": np.asarray(cat_nn).reshape(-1, 3),
        "alpha": np.asarray(alpha_nn),
        "background": bg_nn,
    }
    if jitter > 0:  # a subject's own folding
        if jitter_rng is None:
            raise ValueError("source_layout: jitter > 0 needs jitter_rng (the subject's generator).")
        # a moved dipole stays in the brain, MIN_DIST_MM (+1 mm) inside its surface: MNE's forward model leaves out a
        # source beyond it (a large jitter used to end in a reshape error there)
        inside = brain_radius - (MIN_DIST_MM + 1.0) / 1000.0
        for group in ("retino", "category"):
            rr, nn = positions[group], orientations[group]
            moved = rr + jitter_rng.normal(0, jitter * brain_radius, size=rr.shape) - origin
            radius = np.linalg.norm(moved, axis=1, keepdims=True)
            positions[group] = origin + moved * np.minimum(1.0, inside / np.maximum(radius, 1e-12))
            orientations[group] = _unit(nn + jitter_rng.normal(0, 4 * jitter, size=nn.shape))
    return positions, orientations


def build_head_model(
    montage: str,
    n_classes: int,
    rng: np.random.Generator,
    category_layout: str = "classes",
    jitter: float = 0.0,
    jitter_rng: np.random.Generator | None = None,
) -> HeadModel:
    """Forward model of every source group for ``montage`` (see the module docstring); ``n_classes`` category
    sources, laid out and jittered as :func:`source_layout` says."""
    import mne

    ch_names = montage_channels(montage)
    reference = "FCz" if montage in ("things17", "things63") else None
    parent = _parent_montage(montage)
    info = mne.create_info(ch_names + ([reference] if reference else []), 100.0, "eeg")
    info.set_montage(parent, on_missing="raise")
    sphere = head_sphere(montage)
    origin = np.asarray(sphere["r0"], dtype=np.float64)
    brain_radius = float(sphere["layers"][0]["rad"])  # innermost layer (inner skull / brain surface)
    positions, orientations = source_layout(n_classes, brain_radius, origin, rng, category_layout, jitter, jitter_rng)
    groups = list(positions)
    rr = np.concatenate([positions[g] for g in groups])
    nn = np.concatenate([orientations[g] for g in groups])
    src = mne.setup_volume_source_space(pos={"rr": rr, "nn": nn}, sphere=sphere, mindist=MIN_DIST_MM, verbose=False)
    kept = src[0]["vertno"]
    if len(kept) != len(rr):
        raise RuntimeError(
            f"MNE dropped {len(rr) - len(kept)} of the {len(rr)} synthetic sources as outside the head model; "
            "the source layout in regionaldiff.data.synthetic.forward must keep every source inside the brain."
        )
    fwd = mne.make_forward_solution(info, trans=None, src=src, bem=sphere, eeg=True, meg=False, verbose=False)
    free = fwd["sol"]["data"].reshape(len(info["ch_names"]), len(rr), 3)
    # Fixed orientation: project each source's free (x, y, z) gain onto its orientation. MNE's own
    # convert_forward_solution(force_fixed=True) only handles surface source spaces.
    gain = np.einsum("csk,sk->cs", free, nn)
    if reference:
        ref_row = info["ch_names"].index(reference)
        gain = np.delete(gain - gain[ref_row], ref_row, axis=0)
    else:
        gain = gain - gain.mean(axis=0, keepdims=True)
    bounds = np.cumsum([0] + [len(positions[g]) for g in groups])
    parts = {g: gain[:, bounds[i] : bounds[i + 1]] for i, g in enumerate(groups)}
    return HeadModel(ch_names=ch_names, positions=positions, **parts)
