"""``regionmap=sam``: segment-anything's automatic mask generator + the semantic rule.

SAM (ViT-H, ViT-L or ViT-B) is built from ``segment_anything.sam_model_registry[model_type]`` and its weights
are read from a local checkpoint (``regionmap.checkpoint``; nothing is downloaded). The checkpoint is checked
when the generator is built, before any work: a missing file, a file that is not a PyTorch state dict, or the
weights of another model type each raise an error naming the file, the model type and the fix.

Each image's class-agnostic masks come from :class:`segment_anything.SamAutomaticMaskGenerator` (a grid of
point prompts, filtered by predicted IoU and stability, de-duplicated by NMS); each mask's quality is
``predicted_iou * stability_score``. :mod:`regionaldiff.maps.semantic` turns them into the map.

Batching: the image encoder (nearly all of SAM's compute) runs on ``batch_size`` images at once on the chosen
device (``device=auto``: the GPU when there is one); the point prompts of each image are then decoded in
batches of ``points_per_batch`` from the precomputed embedding.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regionaldiff.config import SamRegionMapConfig, resolve_device, schema_from_arguments
from regionaldiff.errors import BadInputError, ConfigError, MissingFileError
from regionaldiff.maps.semantic import ProposalRegionMap, Proposals, SemanticRule
from regionaldiff.requirements import RequiredPath

# model type -> (image-encoder width, depth, official checkpoint file) of the released SAM models
SAM_MODELS = {
    "vit_h": (1280, 32, "sam_vit_h_4b8939.pth"),
    "vit_l": (1024, 24, "sam_vit_l_0b3195.pth"),
    "vit_b": (768, 12, "sam_vit_b_01ec64.pth"),
}
RELEASE_URL = "https://github.com/facebookresearch/segment-anything#model-checkpoints"


def _registry() -> dict:
    from segment_anything.build_sam import sam_model_registry

    return sam_model_registry


def _fix_hint(model_type: str) -> str:
    known = SAM_MODELS.get("vit_h" if model_type == "default" else model_type)
    name = known[2] if known else "the checkpoint of that model type"
    return (
        f"Download {name} from {RELEASE_URL} into ${{paths.weights_dir}}/sam/ (or set regionmap.checkpoint=/path/to/{name}), "
        f"or pick the model type of the file you have with regionmap.model_type=vit_h|vit_l|vit_b."
    )


def read_checkpoint(checkpoint: str | Path, model_type: str) -> dict[str, torch.Tensor]:
    """The state dict stored in ``checkpoint`` (memory-mapped where possible, tensors on the CPU).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not a PyTorch state dict.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise MissingFileError(
            f"SAM checkpoint {str(path)!r} (regionmap.checkpoint, model_type={model_type}) does not exist. {_fix_hint(model_type)}"
        )
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling / format errors come in many types
        raise BadInputError(
            f"SAM checkpoint {str(path)!r} (model_type={model_type}) is not a readable PyTorch state dict ({err}). {_fix_hint(model_type)}"
        ) from err
    if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping) or not state:
        raise BadInputError(
            f"SAM checkpoint {str(path)!r} (model_type={model_type}) holds no state dict. {_fix_hint(model_type)}"
        )
    return dict(state)


def infer_model_type(state: Mapping[str, torch.Tensor]) -> str | None:
    """``vit_h``/``vit_l``/``vit_b`` from the image encoder's width and depth, or None when it is none of them."""
    pos = state.get("image_encoder.pos_embed")
    if pos is None:
        return None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    shape = (int(pos.shape[-1]), len(blocks))
    return next((name for name, spec in SAM_MODELS.items() if spec[:2] == shape), None)


def check_model_type(state: Mapping[str, torch.Tensor], checkpoint: str | Path, model_type: str) -> None:
    """Raise when ``state`` is the checkpoint of a released SAM of another model type than ``model_type``."""
    registry = _registry()
    if model_type not in registry:
        raise ConfigError(f"regionmap.model_type must be one of {sorted(SAM_MODELS)}; got {model_type!r}.")
    found = infer_model_type(state)
    wanted = "vit_h" if model_type == "default" else model_type
    if found is not None and wanted in SAM_MODELS and found != wanted:
        raise BadInputError(
            f"SAM checkpoint {str(checkpoint)!r} holds {found} weights (image encoder width {SAM_MODELS[found][0]}, "
            f"{SAM_MODELS[found][1]} blocks) but regionmap.model_type={model_type}. "
            f"Set regionmap.model_type={found}, or point regionmap.checkpoint at {SAM_MODELS[wanted][2]}."
        )


def load_sam(checkpoint: str | Path, model_type: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build ``sam_model_registry[model_type]`` and load ``checkpoint`` into it (strictly), on ``device``.

    This is the only way weights enter SAM here: a user's released checkpoint and the tests' randomly
    initialised one take the same path.
    """
    state = read_checkpoint(checkpoint, model_type)
    check_model_type(state, checkpoint, model_type)
    model = _registry()[model_type](checkpoint=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BadInputError(
            f"SAM checkpoint {str(checkpoint)!r} does not match model_type={model_type}: {str(err)[:600]} {_fix_hint(model_type)}"
        ) from err
    return model.to(device).eval()


def checkpoint_fingerprint(checkpoint: str | Path) -> dict[str, Any]:
    """Name, size and a hash of the first and last MiB of a checkpoint (cheap; part of the cache key)."""
    path = Path(checkpoint)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        digest.update(f.read(1 << 20))
    return {"file": path.name, "size": size, "sha256_ends": digest.hexdigest()[:16]}


def _batched_predictor_class():
    from segment_anything import SamPredictor

    class PrecomputedPredictor(SamPredictor):
        """A SamPredictor that takes an image embedding computed beforehand (in a batch) for the next image."""

        pending: tuple[torch.Tensor, tuple[int, int], tuple[int, int]] | None = None

        def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
            if self.pending is not None and tuple(image.shape[:2]) == self.pending[2]:
                features, input_size, original_size = self.pending
                self.pending = None
                self.reset_image()
                self.features, self.input_size, self.original_size = features, input_size, original_size
                self.is_image_set = True
                return
            super().set_image(image, image_format)

    return PrecomputedPredictor


class SamRegionMap(ProposalRegionMap):
    """SAM automatic masks + the semantic rule.

    Parameters
    ----------
    checkpoint : str
        Local checkpoint file (e.g. ``${paths.weights_dir}/sam/sam_vit_b_01ec64.pth``).
    model_type : str
        ``vit_h``, ``vit_l`` or ``vit_b`` (must match the checkpoint).
    device : str
        ``auto`` (the GPU when available), ``cpu`` or ``cuda[:N]``.
    batch_size : int
        Images per batched image-encoder pass.
    points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh, box_nms_thresh, crop_n_layers,
    min_mask_region_area
        :class:`segment_anything.SamAutomaticMaskGenerator` settings (``min_mask_region_area > 0`` needs opencv).
    mode : str
        ``semantic`` or ``instance`` (:mod:`regionaldiff.maps.semantic`).
    rule : mapping or SemanticRule or None
        The semantic rule's parameters (``regionmap.rule``).
    """

    name = "sam"

    @classmethod
    def required_files(cls, node: Mapping[str, Any], key: str) -> list[RequiredPath]:
        """What it reads: the SAM checkpoint, whose file name must match ``model_type`` (``regionaldiff check``)."""
        model_type = str(node.get("model_type", ""))

        def check(path: Path) -> str | None:
            names = {spec[2]: name for name, spec in SAM_MODELS.items()}
            found = names.get(path.name)
            if found and model_type in SAM_MODELS and found != model_type:
                return f"{path.name} is the {found} checkpoint but {key}.model_type={model_type}"
            return None

        return [
            RequiredPath(
                f"SAM checkpoint ({model_type})",
                Path(str(node["checkpoint"])).expanduser(),
                f"{key}.checkpoint",
                fmt="torch",
                check=check,
            )
        ]

    def __init__(
        self,
        checkpoint: str,
        model_type: str = "vit_b",
        device: str = "auto",
        batch_size: int = 4,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        min_mask_region_area: int = 0,
        mode: str = "semantic",
        rule: SemanticRule | Mapping[str, Any] | None = None,
    ) -> None:
        schema_from_arguments(SamRegionMapConfig, locals())  # every value checked by the config's schema
        super().__init__(mode=mode, rule=rule)
        self.checkpoint = Path(checkpoint).expanduser()
        self.model_type = model_type
        self.device = resolve_device(device, "regionmap.device")
        self.batch_size = int(batch_size)
        self.amg_settings = {
            "points_per_side": int(points_per_side),
            "pred_iou_thresh": float(pred_iou_thresh),
            "stability_score_thresh": float(stability_score_thresh),
            "box_nms_thresh": float(box_nms_thresh),
            "crop_n_layers": int(crop_n_layers),
            "min_mask_region_area": int(min_mask_region_area),
        }
        self.points_per_batch = int(points_per_batch)
        # fail before any work: missing file, not a state dict, or another model type
        check_model_type(read_checkpoint(self.checkpoint, model_type), self.checkpoint, model_type)
        self._fingerprint = checkpoint_fingerprint(self.checkpoint)
        self._amg = None

    @property
    def mask_generator(self):
        """The :class:`segment_anything.SamAutomaticMaskGenerator` (SAM loaded on first use)."""
        if self._amg is None:
            from segment_anything import SamAutomaticMaskGenerator

            model = load_sam(self.checkpoint, self.model_type, self.device)
            amg = SamAutomaticMaskGenerator(
                model, points_per_batch=self.points_per_batch, output_mode="binary_mask", **self.amg_settings
            )
            amg.predictor = _batched_predictor_class()(model)
            self._amg = amg
        return self._amg

    @torch.no_grad()
    def _embed(self, images: Sequence[np.ndarray]) -> list[tuple[torch.Tensor, tuple[int, int], tuple[int, int]]]:
        """Image embeddings of a batch (one encoder pass), with each image's resized and original sizes."""
        predictor = self.mask_generator.predictor
        model = predictor.model
        inputs, sizes = [], []
        for image in images:
            resized = predictor.transform.apply_image(image)
            tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
            inputs.append(model.preprocess(tensor))
            sizes.append((tuple(resized.shape[:2]), tuple(image.shape[:2])))
        features = model.image_encoder(torch.cat(inputs))
        return [(features[i : i + 1], *sizes[i]) for i in range(len(images))]

    def propose_batch(self, images: Sequence[np.ndarray]) -> list[Proposals]:
        amg = self.mask_generator
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            for image, pending in zip(chunk, self._embed(chunk)):
                amg.predictor.pending = pending
                records = amg.generate(image)
                amg.predictor.pending = None
                height, width = image.shape[:2]
                masks = (
                    np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, height, width), bool)
                )
                quality = np.clip([r["predicted_iou"] * r["stability_score"] for r in records], 0.0, 1.0)
                out.append(Proposals(masks, quality))
        return out

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "model_type": self.model_type,
            "checkpoint": self._fingerprint,
            **self.amg_settings,
        }
