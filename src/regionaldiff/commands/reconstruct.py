"""``regionaldiff reconstruct RUN_DIR EEG_FILE OUT_DIR``: images (and region maps) from new EEG with a trained model.

EEG files:

- ``.npy`` holding an array ``[N, C, T]`` (or ``[C, T]``, one trial);
- ``.npz`` with ``eeg`` ``[N, C, T]`` and optionally ``sfreq`` (checked against the model's) and ``image_ids``
  (used in the file names);
- a THINGS-EEG2 preprocessed file (``preprocessed_eeg_*.npy``, a dict): repetitions are averaged, the rate is
  read from ``times``.

Writes ``OUT_DIR/<trial>[_<id>][_s<k>].png`` (``_s<k>`` with several images per EEG, the names
``regionaldiff evaluate`` matches to ``<trial>[_<id>].png`` in a reference folder), the predicted region maps as
``OUT_DIR/maps/<trial>[_<id>].png`` and ``OUT_DIR/region_probs.npy``, and ``OUT_DIR/class_probs.npy``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from regionaldiff.errors import (
    EXIT_USER_ERROR,
    BadInputError,
    MissingFileError,
    UserError,
    debug_enabled,
    format_user_error,
)

USAGE = "regionaldiff reconstruct RUN_DIR EEG_FILE OUT_DIR [options]"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="regionaldiff reconstruct",
        usage=USAGE,
        description="Reconstruct images from EEG with a trained model (a run folder or a finetune artifact folder).",
    )
    p.add_argument("run_dir", help="run folder (outputs/runs/<date>_<time>) or trained-model folder")
    p.add_argument("eeg_file", help="EEG: .npy [N, C, T], .npz with 'eeg' (and 'sfreq', 'image_ids'), or THINGS-EEG2")
    p.add_argument("out_dir", help="folder for the images (created)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the run's ldm.sampling)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--images-per-eeg", type=int, default=None, help="images per EEG trial")
    p.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same images)")
    p.add_argument("--sfreq", type=float, default=None, help="the EEG's sampling rate in Hz, checked if given")
    p.add_argument("--batch-size", type=int, default=None, help="trials per batch (default: ldm.sampling.batch_size)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument(
        "--subject",
        type=int,
        default=None,
        help="the EEG's subject number, for a model with a subject layer (encoder.subject_layer); default: none "
        "(the average trained subject)",
    )
    return p


def load_eeg_file(path: Path) -> tuple[np.ndarray, float | None, list[str] | None]:
    """EEG ``[N, C, T]`` (float32), its sampling rate when the file says, and trial ids when the file has them.

    Raises
    ------
    MissingFileError
        When the file is not there.
    BadInputError
        When it is not one of the formats above (the message names the file and what was expected).
    """
    from regionaldiff.data.safe_load import load_numpy_dict

    if not path.is_file():
        raise MissingFileError(f"EEG file {path} does not exist.")
    sfreq: float | None = None
    ids: list[str] | None = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "eeg" not in data.files:
                raise BadInputError(f"{path}: an .npz EEG file needs an array 'eeg' [N, C, T]; it has {data.files}.")
            eeg = np.asarray(data["eeg"])
            if "sfreq" in data.files:
                sfreq = float(data["sfreq"])
            if "image_ids" in data.files:
                ids = [str(i) for i in data["image_ids"]]
    elif path.suffix == ".npy":
        try:
            eeg = np.load(path, allow_pickle=False, mmap_mode="r")
        except ValueError:  # an object array: the THINGS-EEG2 dict format
            data = load_numpy_dict(path, what="THINGS-EEG2 preprocessed EEG file", required=("preprocessed_eeg_data",))
            eeg = np.asarray(data["preprocessed_eeg_data"])
            if eeg.ndim == 4:
                eeg = eeg.mean(axis=1)  # [images, repetitions, C, T] -> averaged repetitions
            times = np.asarray(data.get("times", []), dtype=np.float64)
            if times.size > 1:
                sfreq = float(round(1.0 / float(np.median(np.diff(times))), 6))
    else:
        raise BadInputError(f"{path}: EEG files are .npy or .npz; got {path.suffix or 'no suffix'!r}.")
    eeg = np.array(eeg, dtype=np.float32)  # a writable copy (the .npy may be memory-mapped)
    if eeg.ndim == 2:
        eeg = eeg[None]
    if eeg.ndim != 3:
        raise BadInputError(f"{path}: EEG must be [trials, channels, time samples]; got shape {list(eeg.shape)}.")
    if ids is not None and len(ids) != len(eeg):
        raise BadInputError(f"{path}: {len(ids)} image_ids for {len(eeg)} EEG trials.")
    return eeg, sfreq, ids


def save_label_map(path: Path, label_map: np.ndarray, num_labels: int) -> Path:
    """A label map ``[H, W]`` as a colour PNG (the colours of the reconstruction grid; 0 = background)."""
    from PIL import Image

    from regionaldiff.visualize import _label_colormap

    cmap = _label_colormap(num_labels - 1)
    rgb = (np.asarray(cmap(label_map.astype(np.int64)))[..., :3] * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def reconstruct(args: argparse.Namespace) -> Path:
    """Run the reconstruction the arguments describe; returns the output folder."""
    import torch
    from tqdm.auto import tqdm

    from regionaldiff.config import resolve_device
    from regionaldiff.reconstruction import RegionalDiffPipeline
    from regionaldiff.regions import upsample_prediction
    from regionaldiff.steps.generate import save_samples

    eeg, file_sfreq, ids = load_eeg_file(Path(args.eeg_file))
    if args.sfreq is not None and file_sfreq is not None and abs(args.sfreq - file_sfreq) > 1e-6:
        raise BadInputError(f"--sfreq {args.sfreq:g} disagrees with the {file_sfreq:g} Hz of {args.eeg_file}.")
    sfreq = args.sfreq if args.sfreq is not None else file_sfreq
    device = resolve_device(args.device, "--device")
    pipe = RegionalDiffPipeline.from_pretrained(args.run_dir, device=device)
    # check the whole file before the first image is made
    pipe.check_inputs(
        torch.as_tensor(eeg),
        sfreq,
        args.steps or pipe.sampling.num_steps,
        args.guidance if args.guidance is not None else pipe.sampling.guidance_scale,
        args.images_per_eeg or pipe.sampling.samples_per_eeg,
        None,
    )
    out_dir = Path(args.out_dir)
    (out_dir / "maps").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device=device).manual_seed(int(args.seed))
    batch = int(args.batch_size or pipe.sampling.batch_size)
    class_probs, region_probs = [], []
    for start in tqdm(range(0, len(eeg), batch), desc="reconstruct"):
        result = pipe(
            eeg[start : start + batch],
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            num_images_per_eeg=args.images_per_eeg,
            generator=generator,
            sfreq=sfreq,
            subject=args.subject,
        )
        class_probs.append(torch.from_numpy(result.class_logits).softmax(-1).numpy())
        if result.region_probs is not None:
            region_probs.append(result.region_probs)
        maps = (
            upsample_prediction(result.region_probs, pipe.data.image_size) if result.region_probs is not None else None
        )
        for j, samples in enumerate(result.images):
            i = start + j
            stem = f"{i:05d}" if ids is None else f"{i:05d}_{ids[i]}"
            save_samples(out_dir, stem, samples)
            if maps is not None:
                save_label_map(out_dir / "maps" / f"{stem}.png", maps[j], pipe.encoder.num_region_labels)
    np.save(out_dir / "class_probs.npy", np.concatenate(class_probs))
    if region_probs:
        np.save(out_dir / "region_probs.npy", np.concatenate(region_probs))
    return out_dir


def main(argv: list[str]) -> int:
    """Entry point of the subcommand; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        out_dir = reconstruct(args)
    except UserError as err:
        if debug_enabled():
            raise
        print(format_user_error(err, prog="regionaldiff reconstruct"), file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"Done. Images in {out_dir} (region maps in {out_dir / 'maps'})", flush=True)
    return 0
