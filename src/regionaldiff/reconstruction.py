"""``RegionalDiffPipeline``: reconstruct images (and region maps) from EEG with a trained model, diffusers-style.

::

    from regionaldiff import RegionalDiffPipeline

    pipe = RegionalDiffPipeline.from_pretrained("outputs/runs/<date>_<time>")  # or a finetune artifact folder
    out = pipe(eeg, num_inference_steps=25, guidance_scale=1.0, num_images_per_eeg=2, generator=gen)
    out = pipe(eeg, subject=3)  # a model with a subject layer (encoder.subject_layer): the trials' subject number
    out.images        # uint8 [N, num_images_per_eeg, H, W, 3]
    out.region_probs  # float [N, K + 1, g, g]: the region map predicted from EEG (None without a region head)

The EEG must be preprocessed as the training data was (same channels in the same order, sampling rate, epoch
and scaling): ``check_inputs`` refuses another channel count, number of time samples or sampling rate, and
non-finite values. The pipeline's ``generate`` step samples the test split through this class (one sampling
code path), and ``regionaldiff reconstruct RUN_DIR EEG_FILE OUT_DIR`` wraps it on the command line.

A trained model is a folder (the ``finetune`` step's artifact) holding ``pipeline.json`` (what the model was
trained on and how it is built), ``encoder.pt`` and ``ldm.pt``; a run folder points to it in ``model.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regionaldiff.components import build_codec, build_encoder, build_ldm
from regionaldiff.config import LDMConfig, Sampler, SamplingConfig, with_added_ldm_keys
from regionaldiff.data.base import tensor_to_image
from regionaldiff.encoder.base import EEGEncoder, subject_tensor
from regionaldiff.errors import BadInputError, ConfigError, MissingFileError
from regionaldiff.ldm.latent import LatentCodec
from regionaldiff.ldm.model import RegionalLDM
from regionaldiff.ldm.sampling import denoise, make_sampler
from regionaldiff.regions import fuse_class_into_map, sharpen_map

# The files of a trained-model folder, in one place: what save_pretrained (and the finetune step) writes and
# from_pretrained reads.
ENCODER_WEIGHTS = "encoder.pt"  # {"state_dict": ...} of the EEG encoder (the pretrain step's artifact holds it too)
LDM_WEIGHTS = "ldm.pt"  # {"state_dict": ...} of the LDM (UNet, conditioner, ControlNet)
PIPELINE_FILE = "pipeline.json"  # the model card: what the weights were built from (see model_card)
RUN_POINTER_FILE = "model.json"  # in a run folder: {"model_dir": ..., "sampling": ...}
FORMAT = "regionaldiff-pipeline/1"


class NoTrainedModelError(MissingFileError):
    """A folder given to :meth:`RegionalDiffPipeline.from_pretrained` holds no trained model."""


@dataclass(frozen=True)
class DataSpec:
    """What the model was trained on: the EEG's shape and rate, the classes and the image size."""

    n_chans: int
    n_times: int
    sfreq: float
    num_classes: int
    image_size: int
    class_names: list[str] = field(default_factory=list)
    # labels of the region maps (0: num_classes + 1, as models saved before layouts were read)
    num_region_labels: int = 0


@dataclass
class RegionalDiffOutput:
    """What :meth:`RegionalDiffPipeline.__call__` returns.

    Attributes
    ----------
    images : np.ndarray
        uint8 ``[N, num_images_per_eeg, H, W, 3]``.
    class_logits : np.ndarray
        ``[N, K]`` logits of the EEG classification head (``softmax`` for probabilities).
    region_probs : np.ndarray or None
        ``[N, L, g, g]`` region-label probabilities predicted from EEG (``L = K + 1`` class labels or 2 for object /
        background layouts; class-fused when the sampler says so), None when the model has no trained region head.
    """

    images: np.ndarray
    class_logits: np.ndarray
    region_probs: np.ndarray | None


def sampling_from_dict(values: Mapping[str, Any]) -> SamplingConfig:
    """A :class:`SamplingConfig` from its plain form (``ldm.sampling``), checked by its schema."""
    from omegaconf import OmegaConf

    node = OmegaConf.merge(OmegaConf.structured(SamplingConfig), with_added_ldm_keys(values, under="sampling"))
    obj = OmegaConf.to_object(node)
    assert isinstance(obj, SamplingConfig)
    return obj


class RegionalDiffPipeline:
    """EEG -> reconstructed images, with the region map predicted from the same EEG.

    Parameters
    ----------
    encoder : EEGEncoder
        The pretrained EEG encoder (codes, class logits, region logits).
    ldm : RegionalLDM
        The fine-tuned denoiser (UNet, EEG conditioner, ControlNet for the regional variants).
    codec : LatentCodec
        The latent space (decodes the sampled latents to images).
    data : DataSpec
        What the model was trained on (checked against new EEG).
    sampling : SamplingConfig
        Default sampler settings (``ldm.sampling`` of the run); each call may override them.
    use_class_head, use_region_head : bool
        Whether those heads were trained (an untrained head's output is never used: ``encoder.w_cls=0`` or
        ``encoder.w_region=0``).
    card : Mapping, optional
        The model card (:func:`model_card`) the parts were built from; :meth:`save_pretrained` writes it.
    """

    def __init__(
        self,
        encoder: EEGEncoder,
        ldm: RegionalLDM,
        codec: LatentCodec,
        data: DataSpec,
        sampling: SamplingConfig,
        use_class_head: bool = True,
        use_region_head: bool = True,
        card: Mapping[str, Any] | None = None,
    ) -> None:
        self.encoder, self.ldm, self.codec = encoder.eval(), ldm.eval(), codec.eval()
        self.card = dict(card) if card is not None else None
        self.data, self.sampling = data, sampling
        self.use_class_head = use_class_head
        self.use_region_head = use_region_head and encoder.region_grid > 0

    # -- loading ---------------------------------------------------------------------------------
    @staticmethod
    def resolve_model_dir(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any] | None]:
        """The trained-model folder behind ``path`` (itself, or the one a run folder's ``model.json`` names),
        and the run's sampling settings when ``path`` is a run folder."""
        folder = Path(path)
        if not folder.is_dir():
            raise NoTrainedModelError(
                f"{folder} is not a folder: give a run folder (outputs/runs/...) or a model folder."
            )
        if (folder / PIPELINE_FILE).is_file():
            return folder, None
        pointer = folder / RUN_POINTER_FILE
        if pointer.is_file():
            info = json.loads(pointer.read_text())
            model_dir = Path(info["model_dir"])
            if not (model_dir / PIPELINE_FILE).is_file():
                raise NoTrainedModelError(
                    f"{pointer} points to {model_dir}, which holds no {PIPELINE_FILE} (was the artifact folder "
                    "moved or deleted?). Run the finetune step again with the same config."
                )
            return model_dir, info.get("sampling")
        raise NoTrainedModelError(
            f"No trained model in {folder}: expected {PIPELINE_FILE} (a finetune artifact folder) or "
            f"{RUN_POINTER_FILE} (a run whose finetune step finished). Run `regionaldiff` with the finetune step first."
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> RegionalDiffPipeline:
        """Load a trained model from a run folder or a trained-model (finetune artifact) folder.

        Raises
        ------
        NoTrainedModelError
            When the folder holds no trained model (the message says what was expected).
        """
        model_dir, run_sampling = cls.resolve_model_dir(path)
        card = json.loads((model_dir / PIPELINE_FILE).read_text())
        if card.get("format") != FORMAT:
            raise NoTrainedModelError(
                f"{model_dir / PIPELINE_FILE} has format {card.get('format')!r}; this version reads {FORMAT!r}."
            )
        for name in (ENCODER_WEIGHTS, LDM_WEIGHTS):
            if not (model_dir / name).is_file():
                raise NoTrainedModelError(f"{model_dir} has {PIPELINE_FILE} but no {name}: the folder is incomplete.")
        data = DataSpec(**card["data"])
        ldm_cfg = ldm_config_from_dict(card["ldm"])
        encoder = build_encoder(
            card["encoder"]["net"],
            n_chans=data.n_chans,
            n_times=data.n_times,
            sfreq=data.sfreq,
            num_classes=data.num_classes,
            with_regions=card["encoder"]["region_grid"] > 0,
            num_region_labels=data.num_region_labels,
            align_dim=int(card["encoder"].get("align_dim", 0)),
            # models saved before the subject conditioning have none
            subject_layer=str(card["encoder"].get("subject_layer", "none")),
            subject_ids=[int(s) for s in card["encoder"].get("subject_ids", [])],
        )
        encoder.load_state_dict(
            torch.load(model_dir / ENCODER_WEIGHTS, map_location="cpu", weights_only=True)["state_dict"]
        )
        ldm, codec = build_ldm_and_codec(ldm_cfg, encoder, data.image_size)
        ldm.load_state_dict(torch.load(model_dir / LDM_WEIGHTS, map_location="cpu", weights_only=True)["state_dict"])
        sampling = sampling_from_dict(run_sampling or card["ldm"]["sampling"])
        pipe = cls(
            encoder,
            ldm,
            codec,
            data,
            sampling,
            use_class_head=bool(card["encoder"]["w_cls"] > 0),
            use_region_head=bool(card["encoder"]["w_region"] > 0),
            card=card,
        )
        return pipe.to(device)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write this model as a trained-model folder (weights and model card) that :meth:`from_pretrained` loads.

        The pipeline must know its card (it does when it came from :meth:`from_pretrained`; build one with
        :func:`model_card` otherwise). Returns the folder.
        """
        if self.card is None:
            raise ValueError(
                "save_pretrained needs the model card the parts were built from: pass card=model_card(...) to "
                "RegionalDiffPipeline, or load the pipeline with from_pretrained."
            )
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(self.encoder, folder / ENCODER_WEIGHTS)
        save_weights(self.ldm, folder / LDM_WEIGHTS)
        write_model_card(folder, self.card)
        return folder

    def to(self, device: str | torch.device) -> RegionalDiffPipeline:
        for module in (self.encoder, self.ldm, self.codec):
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.ldm.parameters()).device

    @property
    def subject_ids(self) -> tuple[int, ...]:
        """The subject numbers the encoder's subject layer knows (empty when it has none: ``subject`` is ignored)."""
        return self.encoder.subject_ids

    # -- inputs ----------------------------------------------------------------------------------
    def check_inputs(
        self,
        eeg: torch.Tensor,
        sfreq: float | None,
        num_inference_steps: int,
        guidance_scale: float,
        num_images_per_eeg: int,
        region_probs: torch.Tensor | None,
    ) -> None:
        """Raise a ValueError naming what is wrong with the inputs and what the model expects."""
        d = self.data
        if eeg.ndim != 3:
            raise BadInputError(
                f"EEG must be [trials, channels, time samples] = [N, {d.n_chans}, {d.n_times}]; got shape "
                f"{tuple(eeg.shape)}."
            )
        if eeg.shape[1] != d.n_chans:
            raise BadInputError(
                f"EEG has {eeg.shape[1]} channels; this model was trained on {d.n_chans} (same channels, same order)."
            )
        if eeg.shape[2] != d.n_times:
            raise BadInputError(
                f"EEG has {eeg.shape[2]} time samples; this model was trained on {d.n_times} ({d.n_times / d.sfreq:g} s "
                f"at {d.sfreq:g} Hz): epoch and resample the EEG as the training data."
            )
        if sfreq is not None and abs(float(sfreq) - d.sfreq) > 1e-6:
            raise BadInputError(f"EEG sampled at {sfreq:g} Hz; this model was trained at {d.sfreq:g} Hz: resample it.")
        if not torch.isfinite(eeg).all():
            bad = int((~torch.isfinite(eeg)).flatten(1).any(dim=1).sum())
            raise BadInputError(f"EEG has NaN or infinite values in {bad} of {len(eeg)} trials: clean or drop them.")
        if num_inference_steps < 1:
            raise BadInputError(f"num_inference_steps must be >= 1; got {num_inference_steps}.")
        if guidance_scale <= 0:
            raise BadInputError(f"guidance_scale must be > 0 (1.0 = no guidance); got {guidance_scale}.")
        if num_images_per_eeg < 1:
            raise BadInputError(f"num_images_per_eeg must be >= 1; got {num_images_per_eeg}.")
        if region_probs is not None:
            g = self.encoder.region_grid
            expected = (len(eeg), self.encoder.num_region_labels, g, g)
            if tuple(region_probs.shape) != expected:
                raise BadInputError(f"region_probs must be {list(expected)}; got {list(region_probs.shape)}.")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.data.image_size // self.codec.downsample
        return (self.codec.latent_channels, side, side)

    def prepare_latents(
        self,
        batch_size: int,
        dtype: torch.dtype,
        generator: torch.Generator | None,
        num_inference_steps: int,
        sampling: SamplingConfig | None = None,
    ) -> torch.Tensor:
        """Initial noise ``[batch_size, *latent_shape]``, scaled as the sampler expects (``init_noise_sigma``)."""
        s = sampling or self.sampling
        sampler = make_sampler(
            self.ldm, s.scheduler, num_inference_steps, self.device, s.clip_sample, s.clip_sample_range
        )
        sigma = sampler.init_noise_sigma
        latents = torch.randn((batch_size, *self.latent_shape), generator=generator, device=self.device, dtype=dtype)
        return latents * sigma

    # -- conditions ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_eeg(
        self, eeg: torch.Tensor, class_fused_maps: bool, subject: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Cross-attention context, class logits and the region map predicted from EEG (None without a trained
        region head; class-fused when ``class_fused_maps`` and the class head was trained); ``subject``: the trials'
        subject numbers (one, a sequence or a tensor; read by an encoder with a subject layer only).

        The frozen recipe's context is the image embedding the alignment head predicts, prepared by the LDM's adapter
        (:mod:`regionaldiff.ldm.adapter`): the only way the EEG reaches its UNet."""
        enc = self.encoder(eeg, subject_tensor(subject, len(eeg), eeg.device))
        if self.ldm.adapter is not None:
            if "embedding" not in enc:
                raise ConfigError(
                    "This frozen-recipe model generates from the image embedding the encoder predicts, but its encoder "
                    "has no alignment head (encoder.align)."
                )
            context = self.ldm.adapter.prepare(enc["embedding"])
        else:
            assert self.ldm.conditioner is not None
            context = self.ldm.conditioner(enc["codes"], enc["class_logits"])
        predicted = None
        if "region_logits" in enc and self.use_region_head:
            predicted = enc["region_logits"].softmax(dim=1)
            if class_fused_maps and self.use_class_head and self.encoder.region_labels_are_classes:
                predicted = fuse_class_into_map(predicted, enc["class_logits"].softmax(dim=-1))
        return context, enc["class_logits"], predicted

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        eeg: torch.Tensor | np.ndarray,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_images_per_eeg: int | None = None,
        generator: torch.Generator | None = None,
        region_probs: torch.Tensor | None = None,
        sfreq: float | None = None,
        sampler: str | None = None,
        subject: Any = None,
    ) -> RegionalDiffOutput:
        """Reconstruct ``num_images_per_eeg`` images per EEG trial.

        Parameters
        ----------
        eeg : torch.Tensor or np.ndarray
            ``[N, n_chans, n_times]``, preprocessed as the training data.
        num_inference_steps, guidance_scale, num_images_per_eeg : optional
            Sampler settings; None takes the run's (``ldm.sampling``).
        generator : torch.Generator, optional
            Seeds the noise (same generator state, same images).
        region_probs : torch.Tensor, optional
            ``[N, K + 1, g, g]`` region maps to condition on instead of the ones predicted from EEG (analysis only,
            e.g. the reference maps: ``pipeline.test_maps=oracle``).
        sfreq : float, optional
            The EEG's sampling rate, checked against the model's when given.
        sampler : str, optional
            ``ddim``, ``dpmpp_2m``, ``unipc``, ``euler`` or ``pndm``; None takes the run's.
        subject : int, sequence of int or torch.Tensor, optional
            The subject number of the trials (one for all, or one per trial), as the training data numbered them
            (:attr:`subject_ids`). Read only by a model with a subject layer (``encoder.subject_layer``); a subject it
            was not trained on, or None, gets the average trained subject (logged once).
        """
        s = self.sampling
        if sampler is not None:
            s = dataclasses.replace(s, scheduler=Sampler(sampler))
        steps = int(num_inference_steps if num_inference_steps is not None else s.num_steps)
        guidance = float(guidance_scale if guidance_scale is not None else s.guidance_scale)
        n_images = int(num_images_per_eeg if num_images_per_eeg is not None else s.samples_per_eeg)
        eeg_t = torch.as_tensor(eeg, dtype=torch.float32)
        self.check_inputs(eeg_t, sfreq, steps, guidance, n_images, region_probs)
        try:
            subjects = subject_tensor(subject, len(eeg_t), self.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise BadInputError(f"subject: {err}") from err
        eeg_t = eeg_t.to(self.device)
        context, class_logits, predicted = self.encode_eeg(eeg_t, s.class_fused_maps, subjects)
        condition = None
        if self.ldm.uses_regions:
            if region_probs is not None:
                condition = region_probs.to(self.device)
            elif predicted is not None:  # the predicted map, sharpened for conditioning only (ldm.sampling)
                condition = sharpen_map(predicted, s.map_temperature)
            if condition is None:
                raise BadInputError(
                    "This regional model needs a region map, but its region head was not trained "
                    "(encoder.w_region=0): pass region_probs."
                )
        samples = []
        for _ in range(n_images):
            latents = self.prepare_latents(len(eeg_t), context.dtype, generator, steps, s)
            latents = denoise(
                self.ldm,
                context,
                condition,
                latents,
                steps,
                guidance,
                generator,
                s.eta,
                clip_sample=s.clip_sample,
                clip_sample_range=s.clip_sample_range,
                sampler=s.scheduler,
                controlnet_scale=s.controlnet_scale,
            )
            samples.append(tensor_to_image(self.codec.decode(latents)))
        return RegionalDiffOutput(
            images=np.stack(samples, axis=1),
            class_logits=class_logits.float().cpu().numpy(),
            region_probs=None if predicted is None else predicted.cpu().numpy(),
        )


def ldm_config_from_dict(values: Mapping[str, Any]) -> LDMConfig:
    """The typed ``ldm`` config from its plain form (as saved in ``pipeline.json``), validated by its schema."""
    from omegaconf import OmegaConf

    # keys added since the model was saved get the value it used; renamed keys their new name
    node = OmegaConf.merge(OmegaConf.structured(LDMConfig), with_added_ldm_keys(values))
    obj = OmegaConf.to_object(node)
    assert isinstance(obj, LDMConfig)
    return obj


def build_ldm_and_codec(
    cfg: LDMConfig, encoder: EEGEncoder, image_size: int, prior: Mapping[str, Any] | None = None
) -> tuple[RegionalLDM, LatentCodec]:
    """The codec and the LDM for ``encoder``'s codes (the frozen recipe: its predicted image embedding, ``align_dim``
    wide) and ``image_size`` images (codec first, as in training); ``prior``: a trained UNet and adapter of the frozen
    recipe (:func:`regionaldiff.components.build_ldm`)."""
    codec = build_codec(cfg.latent)
    if image_size % codec.downsample:
        raise ValueError(
            f"dataset.image_size={image_size} is not divisible by the latent downsampling {codec.downsample}."
        )
    if cfg.regions and encoder.region_grid <= 0:
        raise ConfigError("The regional LDM needs an encoder with a region head: set encoder.net.region_grid > 0.")
    ldm = build_ldm(
        cfg,
        latent_channels=codec.latent_channels,
        code_len=encoder.num_patches,
        code_dim=encoder.embed_dim,
        num_classes=encoder.num_classes,
        image_size=image_size,
        latent_size=image_size // codec.downsample,
        num_region_labels=encoder.num_region_labels,
        embedding_dim=encoder.align_dim if cfg.frozen else 0,
        prior=prior,
    )
    return ldm, codec


def model_card(
    *,
    data: DataSpec,
    encoder_net: Mapping[str, Any],
    region_grid: int,
    w_cls: float,
    w_region: float,
    ldm: Mapping[str, Any],
    align_dim: int = 0,
    subject_layer: str = "none",
    subject_ids: Sequence[int] = (),
) -> dict[str, Any]:
    """The model card (``pipeline.json``): everything :meth:`RegionalDiffPipeline.from_pretrained` needs besides
    the weights: the data's sizes, the encoder's ``net`` node and heads (and its subject conditioning with the subject
    numbers it was built for, when it has one), the ``ldm`` config."""
    subjects = {} if subject_layer == "none" else {"subject_layer": subject_layer, "subject_ids": list(subject_ids)}
    return {
        "format": FORMAT,
        "data": asdict(data),
        "encoder": {
            "net": dict(encoder_net),
            "region_grid": region_grid,
            "w_cls": w_cls,
            "w_region": w_region,
            "align_dim": align_dim,
            **subjects,
        },
        "ldm": dict(ldm),
    }


def write_model_card(folder: Path, card: Mapping[str, Any]) -> Path:
    """Write ``card`` as the folder's ``pipeline.json`` (atomically: a crash leaves no half-written card)."""
    path = Path(folder) / PIPELINE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(card), indent=2))
    tmp.replace(path)
    return path


def save_weights(module: torch.nn.Module, path: Path, **extra: Any) -> Path:
    """``{"state_dict": ..., **extra}`` of ``module`` at ``path``, the format :meth:`from_pretrained` reads."""
    torch.save({"state_dict": module.state_dict(), **extra}, path)
    return path


def write_run_pointer(run_dir: Path, model_dir: Path, sampling: Mapping[str, Any]) -> Path:
    """``model.json`` of a run folder: the trained-model folder it used and its sampler settings."""
    path = run_dir / RUN_POINTER_FILE
    path.write_text(json.dumps({"model_dir": str(Path(model_dir).resolve()), "sampling": dict(sampling)}, indent=2))
    return path
