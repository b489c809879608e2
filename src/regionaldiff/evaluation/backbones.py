"""Pretrained backbones of the evaluation suite, loaded from local weights only (or downloaded when allowed).

Every metric that needs a pretrained network gets it from here. A backbone is built with its ``torchvision`` /
``transformers`` / ``clean-fid`` / ``torch-fidelity`` constructor *without* weights and then filled from a local
file (``load_state_dict`` / ``from_pretrained(local_dir)`` / ``torch.jit.load``). When the file is missing and
``eval.allow_download`` is false, :class:`WeightsUnavailable` is raised with a reason that names the path; the
suite turns it into a skipped metric. A network is never used with random weights.

The configuration of one backbone (``eval.backbones.<slot>``) is a mapping with the keys

``arch``
    torchvision builder name (``alexnet``, ``inception_v3``, ``efficientnet_b1``, ``resnet50``, ``vit_h_14``, ...).
``weights``
    torchvision weights enum member (``IMAGENET1K_V1``, ``DEFAULT``, ...): gives the download URL, the builder
    arguments that pretrained weights imply (e.g. ``transform_input`` for Inception) and, for classifiers, the
    preprocessing transform.
``path``
    local weights file (or folder); relative paths are taken under ``eval.weights_dir``.
``kwargs``
    extra builder arguments (rarely needed).
``nodes`` / ``resize`` / ``interpolation``
    feature nodes and preprocessing of the feature extractors (see :mod:`.identification`).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from regionaldiff.config import EvalConfig, config_dir
from regionaldiff.errors import ConfigError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# OpenAI CLIP normalisation (used when the local CLIP folder has no preprocessor_config.json)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

SWAV_URL = "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"

#: The backbone slots and what the code knows of each network: builder, weights enum, feature nodes, preprocessing.
#: Where each slot's weights are read from (``path``, ``lin_path``, the classifier's ``arch`` and ``weights``, CLIP's
#: ``hub_id``) lives in ``conf/eval/default.yaml`` (``eval.backbones``) and nowhere else: :func:`configured_backbones`
#: reads it. Its paths are under ``eval.weights_dir``; the file names are those torchvision, clean-fid and
#: torch-fidelity use in their own caches, so a copied ``~/.cache/torch/hub/checkpoints`` works.
BACKBONE_DEFAULTS: dict[str, dict[str, Any]] = {
    # n-way top-k classifier (Mind-vis / DreamDiffusion: torchvision ViT-H/14, SWAG end-to-end weights)
    "classifier": {},
    # MindEye two-way identification / correlation distance backbones
    "alexnet": {
        "arch": "alexnet",
        "weights": "IMAGENET1K_V1",
        "nodes": {"alexnet2": "features.4", "alexnet5": "features.11"},
        "resize": 256,
        "interpolation": "bilinear",
    },
    "inception": {
        "arch": "inception_v3",
        "weights": "IMAGENET1K_V1",
        "nodes": {"inception": "avgpool"},
        "resize": 342,
        "interpolation": "bilinear",
    },
    "effnet": {
        "arch": "efficientnet_b1",
        "weights": "IMAGENET1K_V2",
        "nodes": {"effnet": "avgpool"},
        "resize": 255,
        "interpolation": "bilinear",
    },
    "swav": {"arch": "resnet50", "nodes": {"swav": "avgpool"}, "resize": 224, "interpolation": "bilinear"},
    # CLIP ViT-L/14 image embedding (a transformers folder; MindEye used OpenAI's clip package, same weights)
    "clip": {"interpolation": "bicubic"},
    # FID: clean-fid's TorchScript port of the TF Inception (folder holding inception-2015-12-05.pt)
    "fid_inception": {},
    # IS: torch-fidelity's port of the same network, as torchmetrics' InceptionScore uses it
    "is_inception": {},
    # LPIPS (DreamDiffusion pairwise identification): AlexNet trunk + the LPIPS v0.1 linear heads shipped with
    # torchmetrics (``lin_path: null``) or a given file
    "lpips": {"arch": "alexnet", "weights": "IMAGENET1K_V1"},
}
#: how ``conf/eval/default.yaml`` writes a path under the weights folder
_WEIGHTS_DIR_PREFIX = "${paths.weights_dir}/"


class WeightsUnavailable(RuntimeError):
    """Raised when a backbone's weights are not on disk (and may not be downloaded); ``str(err)`` is the reason."""


# -- config helpers -------------------------------------------------------------------------------------------------
@functools.cache
def _configured_backbones(eval_defaults: Path) -> dict[str, dict[str, Any]]:
    values = OmegaConf.to_container(OmegaConf.load(eval_defaults).backbones, resolve=False)
    assert isinstance(values, dict)
    return {
        str(slot): {
            str(key): value[len(_WEIGHTS_DIR_PREFIX) :]
            if isinstance(value, str) and value.startswith(_WEIGHTS_DIR_PREFIX)
            else value
            for key, value in settings.items()
        }
        for slot, settings in values.items()
    }


def configured_backbones() -> dict[str, dict[str, Any]]:
    """``eval.backbones`` of ``conf/eval/default.yaml`` (the one home of the weight paths), each path relative to
    ``eval.weights_dir`` (the file writes it under ``${paths.weights_dir}``); read once."""
    return copy.deepcopy(_configured_backbones(config_dir() / "eval" / "default.yaml"))


def backbone_config(cfg: EvalConfig, slot: str) -> dict[str, Any]:
    """What the code knows of ``slot`` (:data:`BACKBONE_DEFAULTS`) updated with its settings in
    ``conf/eval/default.yaml`` (:func:`configured_backbones`), then with ``cfg.backbones[slot]``; ``path`` resolved
    against ``cfg.weights_dir``."""
    if slot not in BACKBONE_DEFAULTS:
        raise ConfigError(f"unknown backbone slot {slot!r}; known: {sorted(BACKBONE_DEFAULTS)}.")
    spec = copy.deepcopy(BACKBONE_DEFAULTS[slot])
    spec.update(configured_backbones().get(slot) or {})
    spec.update((cfg.backbones or {}).get(slot) or {})
    for key in ("path", "lin_path"):
        value = spec.get(key)
        if value is None or Path(str(value)).is_absolute():
            continue
        weights_dir = cfg.weights_dir
        # a relative path with no weights_dir is taken relative to the working directory
        spec[key] = str(Path(str(weights_dir)) / str(value)) if weights_dir else str(value)
    spec["allow_download"] = bool(cfg.allow_download)
    return spec


def _missing(what: str, path: Path, hint: str) -> WeightsUnavailable:
    return WeightsUnavailable(f"{what} weights not found at {path}; put {hint} there or set eval.allow_download=true")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise WeightsUnavailable(f"{path} does not hold a state dict (got {type(state).__name__})")
    return {k.removeprefix("module."): v for k, v in state.items()}


# -- torchvision ----------------------------------------------------------------------------------------------------
def torchvision_weights(arch: str, weights: str | None):
    """The torchvision weights enum member ``weights`` of ``arch`` (``None``/``"DEFAULT"`` -> its default)."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    return enum.DEFAULT if weights in (None, "DEFAULT") else enum[str(weights)]


def pretrained_builder_kwargs(arch: str, weights) -> dict[str, Any]:
    """Builder arguments torchvision sets itself when it builds ``arch`` with ``weights``.

    Building with ``weights=None`` and loading the state dict afterwards must give the same network as
    ``builder(weights=weights)``: Inception/GoogLeNet pretrained weights imply ``transform_input=True``, SWAG ViTs
    their larger ``image_size``, every classifier the number of categories of its weights.
    """
    kwargs: dict[str, Any] = {}
    categories = weights.meta.get("categories")
    if categories:
        kwargs["num_classes"] = len(categories)
    if arch in ("inception_v3", "googlenet"):
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    if arch.startswith("vit_") and "min_size" in weights.meta:
        kwargs["image_size"] = weights.meta["min_size"][0]
    return kwargs


def load_torchvision(spec: Mapping[str, Any], what: str) -> tuple[nn.Module, Any]:
    """Build ``spec['arch']`` without weights, load ``spec['path']`` into it; returns ``(model.eval(), weights enum)``.

    Raises
    ------
    WeightsUnavailable
        The file does not exist and downloads are not allowed, or it does not fit the architecture.
    """
    from torchvision.models import get_model

    arch = str(spec["arch"])
    weights = torchvision_weights(arch, spec.get("weights"))
    if not spec.get("path"):
        raise WeightsUnavailable(f"{what}: no weights path configured (eval.backbones / eval.weights_dir)")
    path = Path(str(spec["path"]))
    if not path.is_file():
        if not spec.get("allow_download"):
            raise _missing(what, path, f"the torchvision {arch} {weights} state dict ({Path(weights.url).name})")
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s weights %s -> %s", arch, weights, path)
        torch.save(weights.get_state_dict(progress=True, model_dir=str(path.parent)), path)
    kwargs = pretrained_builder_kwargs(arch, weights)
    kwargs.update(spec.get("kwargs") or {})
    model = get_model(arch, weights=None, **kwargs)
    try:
        model.load_state_dict(_read_state_dict(path), strict=True)
    except RuntimeError as err:
        raise WeightsUnavailable(
            f"{what}: {path} does not fit torchvision {arch} ({str(err).splitlines()[0]})"
        ) from err
    return model.eval(), weights


def load_swav_resnet(spec: Mapping[str, Any]) -> nn.Module:
    """SwAV ResNet-50 (Caron et al. 2020) as MindEye loads it from ``facebookresearch/swav`` torch.hub.

    The checkpoint (``swav_800ep_pretrain.pth.tar``) holds a torchvision ResNet trunk under ``module.`` plus the
    SwAV projection head and prototypes; the head is dropped, the classifier ``fc`` stays absent (it is not used:
    the metric reads ``avgpool``). Every trunk weight must be present.
    """
    from torchvision.models import get_model

    arch = str(spec.get("arch", "resnet50"))
    path = Path(str(spec["path"]))
    if not path.is_file():
        if not spec.get("allow_download"):
            raise _missing("SwAV ResNet-50", path, f"the SwAV checkpoint ({Path(SWAV_URL).name})")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = torch.hub.load_state_dict_from_url(
            SWAV_URL, model_dir=str(path.parent), map_location="cpu", file_name=path.name
        )
    model = get_model(arch, weights=None, **(spec.get("kwargs") or {}))
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith(("projection_head", "prototypes"))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsUnavailable(
            f"SwAV: {path} does not fit torchvision {arch} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


# -- transformers CLIP ----------------------------------------------------------------------------------------------
def load_clip_vision(spec: Mapping[str, Any]) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """CLIP vision tower with its projection (``image_embeds``) from a local transformers folder; plus mean/std."""
    path = Path(str(spec["path"]))
    if not (path / "config.json").is_file() and not spec.get("allow_download"):
        raise _missing("CLIP ViT-L/14", path, f"a transformers save of {spec.get('hub_id')} (config.json + weights)")
    from transformers import CLIPVisionModelWithProjection

    if not (path / "config.json").is_file():
        model = CLIPVisionModelWithProjection.from_pretrained(spec["hub_id"])
        model.save_pretrained(path)
    model = CLIPVisionModelWithProjection.from_pretrained(str(path))
    mean, std = CLIP_MEAN, CLIP_STD
    processor = path / "preprocessor_config.json"
    if processor.is_file():
        pre = json.loads(processor.read_text())
        mean, std = tuple(pre.get("image_mean", mean)), tuple(pre.get("image_std", std))
    return model.eval(), mean, std


# -- FID / IS Inception ---------------------------------------------------------------------------------------------
def load_cleanfid_inception(spec: Mapping[str, Any]) -> nn.Module:
    """clean-fid's ``InceptionV3W`` (TorchScript port of the TF-slim Inception used by the original FID code)."""
    from cleanfid.inception_torchscript import InceptionV3W

    folder = Path(str(spec["path"]))
    if not (folder / "inception-2015-12-05.pt").is_file() and not spec.get("allow_download"):
        raise _missing("FID Inception", folder / "inception-2015-12-05.pt", "clean-fid's inception-2015-12-05.pt")
    folder.mkdir(parents=True, exist_ok=True)
    return InceptionV3W(str(folder), download=bool(spec.get("allow_download")), resize_inside=False).eval()


def load_is_inception(spec: Mapping[str, Any]) -> nn.Module:
    """torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity ``inception-v3-compat``) giving ``logits_unbiased``."""
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as err:
        raise WeightsUnavailable(
            "IS needs torch-fidelity (pip install torch-fidelity), which is not installed"
        ) from err
    path = Path(str(spec["path"]))
    if not path.is_file():
        if not spec.get("allow_download"):
            raise _missing("IS Inception", path, "torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, model_dir=str(path.parent), file_name=path.name)
    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["logits_unbiased"], feature_extractor_weights_path=str(path)
    )


# -- LPIPS ----------------------------------------------------------------------------------------------------------
def load_lpips(spec: Mapping[str, Any]) -> nn.Module:
    """LPIPS v0.1 with an AlexNet trunk (Zhang et al. 2018), torchmetrics' implementation, local AlexNet weights.

    torchmetrics would download the AlexNet trunk; instead the trunk is built untrained and every layer is
    overwritten from the local torchvision AlexNet file. The linear heads are the LPIPS v0.1 weights that ship
    with torchmetrics (or ``lin_path``).
    """
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    alexnet, _ = load_torchvision(spec, "LPIPS AlexNet")
    lin_path = spec.get("lin_path")
    if lin_path is not None and not Path(str(lin_path)).is_file():
        raise _missing("LPIPS linear-head", Path(str(lin_path)), "the LPIPS v0.1 alex.pth")
    lpips = _NoTrainLpips(net="alex", pretrained=True, pnet_rand=True, model_path=lin_path)
    for slice_module in (lpips.net.slice1, lpips.net.slice2, lpips.net.slice3, lpips.net.slice4, lpips.net.slice5):
        for name, layer in slice_module.named_children():
            layer.load_state_dict(alexnet.features[int(name)].state_dict())  # type: ignore[index,union-attr]
    return lpips.eval()


# -- image preprocessing --------------------------------------------------------------------------------------------
def check_images(images: np.ndarray, name: str, sampled: bool = False) -> np.ndarray:
    """Validate uint8 ``[N, H, W, 3]`` (or ``[N, S, H, W, 3]`` when ``sampled``) and return it as an array."""
    images = np.asarray(images)
    ndim = 5 if sampled else 4
    shape = "[N, S, H, W, 3]" if sampled else "[N, H, W, 3]"
    if images.ndim != ndim or images.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 {shape}, got shape {images.shape}.")
    if images.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8 (pixel values 0..255), got {images.dtype}.")
    return images


def to_unit_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)


def resize_shorter(x: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """``torchvision.transforms.Resize(size)`` on a float batch: shorter side to ``size``, antialiased."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    mode = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[interpolation]
    return resize(x, [int(size)], interpolation=mode, antialias=True)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Channel-wise ``(x - mean) / std`` of ``[N, 3, H, W]``."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - m) / s


def resize_square(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` -> uint8 ``[N, R, R, 3]`` (bilinear, antialiased; identity when already ``R x R``)."""
    if images.shape[1] == resolution and images.shape[2] == resolution:
        return images
    x = F.interpolate(
        to_unit_tensor(images), size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
    )
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
