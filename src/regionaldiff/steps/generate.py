"""Step ``generate``: reconstruct the evaluated split (``pipeline.eval_split``, the test split by default) from EEG with :class:`RegionalDiffPipeline` (region maps predicted
from EEG unless ``pipeline.test_maps=oracle``), as arrays, image folders and a grid."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from regionaldiff.config import plain
from regionaldiff.data.base import tensor_to_image
from regionaldiff.errors import ConfigError
from regionaldiff.reconstruction import RegionalDiffPipeline
from regionaldiff.regions import coarse_region_target, upsample_prediction
from regionaldiff.steps.context import PipelineContext
from regionaldiff.visualize import save_reconstruction_grid

log = logging.getLogger(__name__)

GENERATED_FILE = "generated.npz"


def generate(ctx: PipelineContext, train: bool = True) -> None:
    """Reconstruct the evaluated split, or reuse the artifact of the same model, sampler, test maps and split."""
    test_maps = ctx.typed.pipeline.test_maps.value
    split = ctx.typed.pipeline.eval_split.value
    ctx.keys["generate"] = {
        "finetune": ctx.keys["finetune"],
        "sampling": plain(ctx.cfg.ldm.sampling),
        "test_maps": test_maps,
    }
    if split != "test":  # the test split's key stays as it was, so existing artifacts are reused
        ctx.keys["generate"]["split"] = split
    slot = ctx.slots["generate"] = ctx.store.slot("generate", ctx.keys["generate"])
    out_file = slot.path / GENERATED_FILE
    with slot.lock():
        if not slot.done:
            if not train:
                raise RuntimeError(
                    f"No reconstructions for this config at {slot.path}: add 'generate' to pipeline.steps."
                )
            arrays = sample_split(ctx, test_maps, split)
            np.savez_compressed(out_file, **arrays)  # type: ignore[arg-type]
            write_image_folders(slot.path, arrays)
            slot.mark_done({"n": len(arrays["labels"])})
        else:
            log.info("generate: reusing reconstructions %s", slot.path)
    arrays = dict(np.load(out_file))
    n = min(ctx.typed.pipeline.grid_size, len(arrays["labels"]))
    maps, map_title = grid_maps(arrays, test_maps, n, ctx.datamodule.image_size)
    grid = save_reconstruction_grid(
        ctx.output_dir / "reconstructions.png",
        arrays["reference"][:n],
        arrays["generated"][:n, 0],
        maps=maps,
        num_labels=ctx.datamodule.num_region_labels,
        map_title=map_title,
        class_names=ctx.datamodule.region_label_names[1:],
        label_colours=ctx.datamodule.region_label_colours,
    )
    ctx.tracker.log_artifact(grid, "figures")
    ctx.tracker.set_tags({"artifact.generated": str(slot.path)})


def grid_maps(arrays: dict[str, np.ndarray], test_maps: str, n: int, image_size: int) -> tuple[np.ndarray | None, str]:
    """The region maps shown under the first ``n`` reconstructions, and their row title: the reference maps when
    they conditioned generation (``test_maps=oracle``), else the maps predicted from EEG (None if there are none)."""
    if test_maps == "oracle" and arrays.get("region_maps") is not None and len(arrays["region_maps"]):
        return arrays["region_maps"][:n].astype(np.int64), "true map (oracle)"
    if "region_probs" in arrays:
        return upsample_prediction(arrays["region_probs"][:n], image_size), "map from EEG"
    return None, ""


def sample_split(ctx: PipelineContext, test_maps: str, split: str = "test") -> dict[str, np.ndarray]:
    """Reconstructions of every trial of ``split`` with the run's trained model and sampler, seeded by ``seed``."""
    device = ctx.device
    pipe = RegionalDiffPipeline.from_pretrained(ctx.slots["finetune"].path, device=device)
    pipe.sampling = ctx.typed.ldm.sampling
    generator = torch.Generator(device=device).manual_seed(ctx.seed)
    names = ("generated", "reference", "labels", "eeg_pred", "region_probs", "image_ids", "region_maps")
    out: dict[str, list[np.ndarray]] = {k: [] for k in names}
    loader = ctx.datamodule.loader(split, False, ctx.typed.ldm.sampling.batch_size)
    for batch in tqdm(loader, desc=f"generate ({split} split)"):
        oracle = None
        if test_maps == "oracle" and pipe.ldm.uses_regions:
            if "region_map" not in batch:
                raise ConfigError("pipeline.test_maps=oracle needs reference region maps: set a regionmap.")
            encoder = pipe.encoder
            oracle = coarse_region_target(
                batch["region_map"].to(device), encoder.num_region_labels, encoder.region_grid
            )
        result = pipe(batch["eeg"], generator=generator, region_probs=oracle, subject=batch.get("subject"))
        out["generated"].append(to_size(result.images, ctx.datamodule.image_size))
        out["reference"].append(tensor_to_image(batch["image"]))
        out["labels"].append(batch["label"].numpy())
        out["eeg_pred"].append(result.class_logits.argmax(-1))
        out["image_ids"].append(np.asarray(batch["image_id"]))
        if result.region_probs is not None:
            out["region_probs"].append(result.region_probs.astype(np.float16))
        if "region_map" in batch:
            out["region_maps"].append(batch["region_map"].numpy().astype(np.int16))
    return {k: np.concatenate(v) for k, v in out.items() if v}


def to_size(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[N, S, H, W, 3]`` at ``size`` px (the dataset's, for evaluation against its images; unchanged
    when the LDM generates at that size already)."""
    if images.shape[2] == size and images.shape[3] == size:
        return images
    from PIL import Image

    flat = images.reshape(-1, *images.shape[2:])
    resized = [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in flat]
    return np.stack(resized).reshape(*images.shape[:2], size, size, 3)


def write_image_folders(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """PNG files ``generated/<trial>_<id>[_s<k>].png`` and ``reference/<trial>_<id>.png`` (for folder evaluation;
    ``_s<k>`` only with several samples per EEG)."""
    from PIL import Image

    for sub in ("generated", "reference"):
        (folder / sub).mkdir(exist_ok=True)
    for i, image_id in enumerate(arrays["image_ids"]):
        stem = f"{i:05d}_{image_id}"
        Image.fromarray(arrays["reference"][i]).save(folder / "reference" / f"{stem}.png")
        save_samples(folder / "generated", stem, arrays["generated"][i])


def save_samples(folder: Path, stem: str, samples: np.ndarray) -> list[Path]:
    """The samples of one trial as ``<stem>.png``, or ``<stem>_s<k>.png`` when there are several (the names
    ``regionaldiff evaluate`` matches to ``<stem>.<ext>`` in the reference folder)."""
    from PIL import Image

    paths = []
    for k, sample in enumerate(samples):
        path = folder / (f"{stem}.png" if len(samples) == 1 else f"{stem}_s{k}.png")
        Image.fromarray(sample).save(path)
        paths.append(path)
    return paths
