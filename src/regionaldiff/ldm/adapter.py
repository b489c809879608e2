"""Image-embedding adapters: the frozen-diffusion recipe's way into the UNet (``ldm.adapter``, ``ldm/adapter=NAME``).

In the frozen recipe (``ldm=frozen_global|frozen_regional|sd15_frozen_*``; docs/design.md, "Two recipes") the
denoiser is conditioned on an *image embedding* through an adapter, IP-Adapter's way (Ye et al. 2023): the embedding
is projected to a few cross-attention tokens. The UNet and the adapter never see EEG; at generation the EEG enters
only as the embedding the encoder's alignment head predicts (``encoder.align``), in place of the image's.

The context that flows through :class:`~regionaldiff.ldm.model.RegionalLDM` (training loss, condition dropout,
classifier-free guidance) is the prepared embedding ``[B, 1, E]`` (:meth:`EmbeddingAdapter.prepare`): its direction,
rescaled to the mean norm of the training images' embeddings. The alignment head is trained with a contrastive loss,
so only the direction of what it predicts means anything; the true embeddings go through the same preparation when
the UNet and the ControlNet are trained. The null condition is the zero embedding (IP-Adapter's negative image
embedding).

- :class:`ImageTokenAdapter` (``ldm/adapter=tiny``): diffusers' IP-Adapter image projection (linear + layer norm to
  ``n_tokens`` tokens) feeding the UNet's cross-attention; trained together with the tiny UNet, once, on images and
  their embeddings (:mod:`regionaldiff.steps.frozen`).
- :class:`IPAdapter` (``ldm/adapter=sd15``): diffusers' IP-Adapter for SD-1.5 read from a local folder (its image
  projection and decoupled cross-attention loaded into the UNet), the text context being SD-1.5's encoding of the
  empty prompt, computed once from the SD-1.5 folder's text encoder. Nothing is trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import nn

from regionaldiff.errors import BadInputError, ConfigError, MissingFileError
from regionaldiff.requirements import TRANSFORMERS_WEIGHT_FILES, RequiredPath, model_folder_check

IP_ADAPTER_HINT = (
    "Put diffusers' IP-Adapter for SD-1.5 there (`huggingface-cli download h94/IP-Adapter --include 'models/*' "
    "--local-dir <weights_dir>/IP-Adapter`; docs/setup.md)."
)


class EmbeddingAdapter(nn.Module):
    """Base of the adapters: the embedding's preparation and what the UNet and the ControlNet read of it.

    Attributes
    ----------
    embedding_dim : int
        Width of the image embedding it reads (the encoder's ``align_dim``).
    embedding_scale : torch.Tensor
        Buffer: the norm every prepared embedding gets (the mean norm of the training images' embeddings, set by
        :meth:`fit_scale` before anything is trained on them; saved with the model).
    trains_with_unet : bool
        True: the adapter and a new UNet are trained once on images and their embeddings; False: both are
        pretrained and read from folders.
    """

    trains_with_unet: bool = True
    embedding_scale: torch.Tensor

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        if int(embedding_dim) < 1:
            raise ConfigError(
                "ldm.adapter reads the image embedding the encoder's alignment head predicts, but the encoder has "
                "none (align_dim=0): choose encoder/align (pixels for the synthetic worlds, clip for real images)."
            )
        self.embedding_dim = int(embedding_dim)
        self.register_buffer("embedding_scale", torch.ones(()))

    @torch.no_grad()
    def fit_scale(self, embeddings: torch.Tensor) -> float:
        """Set :attr:`embedding_scale` to the mean norm of ``embeddings`` ``[N, E]``; return it."""
        scale = float(embeddings.float().norm(dim=-1).mean().clamp_min(1e-6))
        self.embedding_scale.fill_(scale)
        return scale

    def prepare(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Image (or EEG-predicted) embeddings ``[B, E]`` -> the context ``[B, 1, E]``: unit direction times the
        training images' mean norm."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim:
            raise BadInputError(
                f"the adapter reads embeddings [B, {self.embedding_dim}]; got {list(embeddings.shape)}."
            )
        direction = F.normalize(embeddings.float(), dim=-1)
        return (direction * self.embedding_scale.float())[:, None].to(embeddings.dtype)

    def unet_inputs(self, context: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any] | None]:
        """The UNet's ``encoder_hidden_states`` and ``added_cond_kwargs`` for the context ``[B, 1, E]``."""
        raise NotImplementedError

    def controlnet_context(self, context: torch.Tensor) -> torch.Tensor:
        """The ControlNet's ``encoder_hidden_states`` for the context ``[B, 1, E]``."""
        raise NotImplementedError


class ImageTokenAdapter(EmbeddingAdapter):
    """The tiny recipe's adapter: IP-Adapter's image projection (diffusers' ``ImageProjection``: a linear map to
    ``n_tokens`` tokens of the UNet's context width, then layer norm) as the UNet's whole cross-attention context.

    Parameters
    ----------
    unet : UNet2DConditionModel
        The UNet (its ``cross_attention_dim``); built at build time.
    embedding_dim : int
        Width of the image embedding (the encoder's ``align_dim``); set at build time.
    n_tokens : int
        Context tokens the embedding becomes.
    """

    trains_with_unet = True

    @classmethod
    def check_config(cls, key: str, n_tokens: int) -> None:
        if int(n_tokens) < 1:
            raise ConfigError(f"{key}.n_tokens must be >= 1; got {n_tokens}.")

    def __init__(self, unet: UNet2DConditionModel, embedding_dim: int, n_tokens: int) -> None:
        from diffusers.models.embeddings import ImageProjection

        super().__init__(embedding_dim)
        self.check_config("ldm.adapter", n_tokens=n_tokens)
        self.n_tokens = int(n_tokens)
        self.proj = ImageProjection(
            image_embed_dim=self.embedding_dim,
            cross_attention_dim=int(unet.config["cross_attention_dim"]),
            num_image_text_embeds=self.n_tokens,
        )

    def tokens(self, context: torch.Tensor) -> torch.Tensor:
        return self.proj(context[:, 0])

    def unet_inputs(self, context: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any] | None]:
        return self.tokens(context), None

    def controlnet_context(self, context: torch.Tensor) -> torch.Tensor:
        return self.tokens(context)


def read_ip_adapter_weights(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """An IP-Adapter checkpoint (``.safetensors`` or ``.bin``) as diffusers reads it: ``{"image_proj": ...,
    "ip_adapter": ...}``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        flat = load_file(str(path))
        state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, value in flat.items():
            head, _, rest = key.partition(".")
            if head in state:
                state[head][rest] = value
        return state
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return {"image_proj": dict(loaded.get("image_proj", {})), "ip_adapter": dict(loaded.get("ip_adapter", {}))}


def empty_prompt_context(folder: Path) -> torch.Tensor:
    """SD-1.5's text encoding of the empty prompt ``[1, 77, 768]`` from its folder's ``tokenizer/`` and
    ``text_encoder/`` (the text context IP-Adapter pairs the image tokens with when there is no prompt)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    for sub in ("tokenizer", "text_encoder"):
        if not (folder / sub).is_dir():
            raise MissingFileError(
                f"No {sub}/ in {folder} (ldm.adapter.text_encoder): the SD-1.5 folder's text encoder encodes the "
                "empty prompt that IP-Adapter's image tokens are paired with. Download the whole SD-1.5 folder "
                "(docs/setup.md)."
            )
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder")).eval()
    ids = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return encoder(ids)[0].float()


class IPAdapter(EmbeddingAdapter):
    """Diffusers' IP-Adapter for SD-1.5, from a local folder, loaded into the (frozen) UNet.

    Parameters
    ----------
    unet : UNet2DConditionModel
        SD-1.5's UNet (built at build time); its cross-attention gets IP-Adapter's decoupled image attention.
    embedding_dim : int
        The encoder's ``align_dim`` (set at build time): it must be the width IP-Adapter's projection reads
        (1024 for ``ip-adapter_sd15``, whose image encoder is OpenCLIP ViT-H/14: ``encoder/align=ip_adapter``).
    pretrained, subfolder, weight_name : str
        The checkpoint ``<pretrained>/<subfolder>/<weight_name>`` (h94/IP-Adapter's layout: ``models/
        ip-adapter_sd15.safetensors``).
    text_encoder : str
        The SD-1.5 folder whose ``tokenizer/`` and ``text_encoder/`` encode the empty prompt.
    scale : float
        Weight of the image attention (diffusers' ``set_ip_adapter_scale``; 1 = as trained).
    """

    trains_with_unet = False
    text_context: torch.Tensor

    @classmethod
    def check_config(cls, key: str, pretrained: str, subfolder: str, weight_name: str, text_encoder: str,
                     scale: float) -> None:  # fmt: skip
        if float(scale) < 0:
            raise ConfigError(f"{key}.scale must be >= 0 (1 = as trained); got {scale}.")
        if not str(weight_name).endswith((".safetensors", ".bin")):
            raise ConfigError(f"{key}.weight_name must be a .safetensors or .bin file; got {weight_name!r}.")

    @classmethod
    def required_files(cls, node: Mapping[str, Any], key: str) -> list[RequiredPath]:
        """What it reads: the IP-Adapter checkpoint and the SD-1.5 text encoder (for ``regionaldiff check``)."""
        folder = Path(str(node["pretrained"])) / str(node.get("subfolder") or "")
        text = Path(str(node["text_encoder"]))
        return [
            RequiredPath("IP-Adapter for SD-1.5", folder / str(node["weight_name"]), f"{key}.pretrained"),
            RequiredPath(
                "SD-1.5 text encoder (empty prompt)",
                text / "text_encoder",
                f"{key}.text_encoder",
                kind="folder",
                check=model_folder_check("text encoder", TRANSFORMERS_WEIGHT_FILES),
            ),
            RequiredPath("SD-1.5 tokenizer", text / "tokenizer", f"{key}.text_encoder", kind="folder"),
        ]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        embedding_dim: int,
        pretrained: str,
        subfolder: str,
        weight_name: str,
        text_encoder: str,
        scale: float,
    ) -> None:
        super().__init__(embedding_dim)
        self.check_config("ldm.adapter", pretrained, subfolder, weight_name, text_encoder, scale)
        path = Path(str(pretrained)) / str(subfolder or "") / str(weight_name)
        if not path.is_file():
            raise MissingFileError(f"No IP-Adapter checkpoint at {path} (ldm.adapter.pretrained). {IP_ADAPTER_HINT}")
        state = read_ip_adapter_weights(path)
        proj = state["image_proj"].get("proj.weight")
        if proj is None or not state["ip_adapter"]:
            raise BadInputError(
                f"{path} is not an IP-Adapter checkpoint with a plain image projection (image_proj.proj.weight and "
                "ip_adapter.*): use ip-adapter_sd15 (the Plus and FaceID variants are not supported)."
            )
        if int(proj.shape[1]) != self.embedding_dim:
            raise ConfigError(
                f"The IP-Adapter at {path} reads {proj.shape[1]}-d image embeddings, but the encoder's alignment head "
                f"predicts {self.embedding_dim}-d ones: align the encoder to IP-Adapter's own image encoder "
                "(encoder/align=ip_adapter)."
            )
        try:
            unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
        except (KeyError, RuntimeError, ValueError) as err:
            raise BadInputError(
                f"The IP-Adapter at {path} does not fit the UNet (ldm.unet): {type(err).__name__}: {str(err)[:300]}"
            ) from err
        for processor in unet.attn_processors.values():
            if hasattr(processor, "scale"):
                processor.scale = [float(scale)] * len(processor.scale)
        self.register_buffer("text_context", empty_prompt_context(Path(str(text_encoder))))

    def unet_inputs(self, context: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any] | None]:
        text = self.text_context.to(context.dtype).expand(context.shape[0], -1, -1)
        return text, {"image_embeds": [context]}

    def controlnet_context(self, context: torch.Tensor) -> torch.Tensor:
        return self.text_context.to(context.dtype).expand(context.shape[0], -1, -1)


def ip_adapter_state(unet: UNet2DConditionModel, embedding_dim: int, n_tokens: int = 4, seed: int = 0) -> dict:
    """A random IP-Adapter checkpoint (``{"image_proj": ..., "ip_adapter": ...}``) that fits ``unet``, in the layout of
    h94/IP-Adapter's ``ip-adapter_sd15``: for tests and dry runs, which load it through the same code as the real
    one."""
    generator = torch.Generator().manual_seed(seed)
    cross = int(unet.config["cross_attention_dim"])

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.02

    state: dict[str, dict[str, torch.Tensor]] = {
        "image_proj": {
            "proj.weight": rand(n_tokens * cross, embedding_dim),
            "proj.bias": torch.zeros(n_tokens * cross),
            "norm.weight": torch.ones(cross),
            "norm.bias": torch.zeros(cross),
        },
        "ip_adapter": {},
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = int(unet.config["block_out_channels"][-1])
        elif name.startswith("up_blocks"):
            block = int(name[len("up_blocks.")])
            hidden = int(list(reversed(unet.config["block_out_channels"]))[block])
        else:
            block = int(name[len("down_blocks.")])
            hidden = int(unet.config["block_out_channels"][block])
        state["ip_adapter"][f"{key_id}.to_k_ip.weight"] = rand(hidden, cross)
        state["ip_adapter"][f"{key_id}.to_v_ip.weight"] = rand(hidden, cross)
        key_id += 2
    return state


def save_ip_adapter_layout(
    folder: str | Path,
    unet: UNet2DConditionModel,
    embedding_dim: int,
    image_encoder: Mapping[str, Any] | None = None,
) -> Path:
    """Write a random IP-Adapter for ``unet`` in h94/IP-Adapter's layout (``models/ip-adapter_sd15.safetensors``,
    and with ``image_encoder``, a ``CLIPVisionConfig``'s keyword arguments, ``models/image_encoder/`` projecting to
    ``embedding_dim``): tests and dry runs load it through the same code as the real one."""
    from safetensors.torch import save_file

    root = Path(folder)
    (root / "models").mkdir(parents=True, exist_ok=True)
    state = ip_adapter_state(unet, embedding_dim)
    flat = {f"{head}.{k}": v.contiguous() for head, part in state.items() for k, v in part.items()}
    save_file(flat, str(root / "models" / "ip-adapter_sd15.safetensors"))
    if image_encoder is not None:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        config = CLIPVisionConfig(**{**dict(image_encoder), "projection_dim": embedding_dim})
        CLIPVisionModelWithProjection(config).save_pretrained(root / "models" / "image_encoder")
    return root
