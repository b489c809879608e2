"""The EEG encoder contract, in code: :class:`EEGEncoder`, the base every ``encoder.net`` subclasses.

As braindecode's ``EEGModuleMixin`` does for its models, the base declares what the rest of the pipeline relies on,
so that a new encoder is one subclass and one YAML (``docs/extending.md``):

- the data's sizes, given at build time (:attr:`DATA_ARGS`: ``n_chans``, ``n_times``, ``sfreq``, ``num_classes``,
  ``num_region_labels``, ``align_dim``), checked here and kept as attributes;
- the sizes a subclass sets: ``num_patches`` (L, the code length), ``embed_dim`` (D) and ``region_grid`` (g, 0 =
  no region head);
- the ``region_background_bias`` buffer, registered here: calibration on the validation split writes it
  (:mod:`regionaldiff.encoder.calibration`) and :meth:`add_background_bias` applies it;
- the methods a subclass implements: :meth:`forward_features` (codes), :meth:`classify`, :meth:`predict_regions`,
  :meth:`embed` (the alignment head) and :meth:`masked_reconstruction_loss` (pretraining); :meth:`forward`
  composes them;
- the subject conditioning (``encoder.subject_layer``), here once for every encoder, so that a subclass never sees
  it: :meth:`set_subject_layer` adds it after the constructor (the pipeline calls it with the data's subject
  numbers), and :meth:`encode` / :meth:`forward` take the batch's subject numbers beside the EEG.

  - ``none``: no subject conditioning (the subject argument is ignored);
  - ``token``: a learned embedding per subject (ATM's subject token), ``[embed_dim]``, added to every code token
    (so the heads and the LDM's conditioner read it); zero at first;
  - ``linear``: a learned ``n_chans x n_chans`` map per subject applied to the EEG's channels before the backbone
    (a "subject layer"); the identity at first.

  A subject the encoder was not trained on (leave-one-subject-out's test subject, a number it was never built with,
  or no subject given) gets the mean of the trained subjects' embeddings / maps: the average subject. The encoder
  logs this once. Which subjects were trained on is recorded as the encoder trains (the ``subject_trained`` buffer,
  saved with the weights). The masked-recovery objective reads the EEG as recorded (no subject layer).

:func:`check_encoder` verifies a built encoder against the contract; the pipeline calls it on every encoder it
builds, and ``tests/test_contracts.py`` builds every ``conf/encoder`` option and checks outputs, shapes and gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from regionaldiff.errors import ConfigError
from regionaldiff.regions import RegionLabels

__all__ = ["EEGEncoder", "SUBJECT_LAYERS", "check_encoder", "subject_tensor"]

log = logging.getLogger(__name__)

#: the choices of ``encoder.subject_layer`` (module docstring)
SUBJECT_LAYERS = ("none", "token", "linear")


def subject_tensor(subject: Any, batch_size: int, device: Any = None) -> torch.Tensor | None:
    """The subject numbers of a batch as an int64 tensor ``[batch_size]``: from one number (every trial), a sequence
    or a tensor; None stays None (no subject known)."""
    if subject is None:
        return None
    numbers = torch.as_tensor(subject, dtype=torch.int64, device=device).reshape(-1)
    if numbers.numel() == 1 and batch_size != 1:
        numbers = numbers.expand(batch_size)
    if numbers.numel() != batch_size:
        raise ValueError(f"subject: {numbers.numel()} subject numbers for {batch_size} EEG trials.")
    return numbers


class EEGEncoder(nn.Module):
    """Base of every EEG encoder: EEG ``[B, n_chans, n_times]`` -> codes ``[B, num_patches, embed_dim]`` and heads.

    Parameters
    ----------
    n_chans : int
        Number of EEG channels C.
    n_times : int
        Number of time samples T.
    sfreq : float
        Sampling frequency in Hz (kept so a checkpoint can be checked against new data).
    num_classes : int
        Number of visual classes K (>= 2).
    num_region_labels : int
        Labels of the region map (0 = ``num_classes + 1``: background and one per class; 2 for object /
        background layouts).
    align_dim : int
        Width of the image embedding the alignment head projects onto (0 = no alignment head).
    """

    #: the constructor's arguments that come from the data (and the image embedder), not from ``encoder.net``
    DATA_ARGS = ("n_chans", "n_times", "sfreq", "num_classes", "num_region_labels", "align_dim")

    region_background_bias: torch.Tensor
    #: the subject conditioning (set_subject_layer): none | token | linear, and the subject numbers it knows
    subject_layer: str = "none"
    subject_numbers: torch.Tensor
    subject_trained: torch.Tensor
    #: the code length L, the code width D and the region grid's side g (0 = no region head): set by the subclass
    num_patches: int
    embed_dim: int
    region_grid: int

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        sfreq: float,
        num_classes: int,
        num_region_labels: int = 0,
        align_dim: int = 0,
    ) -> None:
        super().__init__()
        if n_chans < 1 or n_times < 1 or sfreq <= 0:
            raise ValueError(f"n_chans, n_times and sfreq must be positive; got {n_chans}, {n_times}, {sfreq}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}.")
        if num_region_labels == 0:
            num_region_labels = RegionLabels.CLASS.count(num_classes)
        if num_region_labels < 2 or align_dim < 0:
            raise ValueError(
                f"num_region_labels must be >= 2 (or 0 = num_classes + 1) and align_dim >= 0; got {num_region_labels}, "
                f"{align_dim}."
            )
        self.n_chans, self.n_times, self.sfreq = int(n_chans), int(n_times), float(sfreq)
        self.num_classes = int(num_classes)
        self.num_region_labels = int(num_region_labels)
        self.align_dim = int(align_dim)
        # added to the background logit of every cell; fitted on the validation split after training
        # (regionaldiff.encoder.calibration), 0 until then
        self.register_buffer("region_background_bias", torch.zeros(()))

    # -- what a subclass implements --------------------------------------------------------------------------------
    def forward_features(self, eeg: torch.Tensor) -> torch.Tensor:
        """Latent EEG codes of the whole (unmasked) signal, ``[B, num_patches, embed_dim]``."""
        raise NotImplementedError

    def classify(self, codes: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, num_classes]`` from codes."""
        raise NotImplementedError

    def predict_regions(self, codes: torch.Tensor) -> torch.Tensor:
        """Region logits ``[B, num_region_labels, region_grid, region_grid]`` from codes (label 0 = background),
        with :meth:`add_background_bias` applied."""
        raise NotImplementedError

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """The EEG embedding ``[B, align_dim]`` aligned to the image embedding (not normalised)."""
        raise NotImplementedError

    def masked_reconstruction_loss(self, eeg: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The pretraining objective on ``eeg``: a scalar loss (masked signal recovery)."""
        raise NotImplementedError

    # -- subject conditioning ----------------------------------------------------------------------------------------
    @property
    def subject_ids(self) -> tuple[int, ...]:
        """The subject numbers the subject conditioning knows (empty with ``subject_layer`` none)."""
        return tuple(int(s) for s in self.subject_numbers.tolist()) if self.subject_layer != "none" else ()

    def set_subject_layer(self, layer: str, subject_ids: Sequence[int] = ()) -> EEGEncoder:
        """Add the subject conditioning ``layer`` (``none``, ``token`` or ``linear``) for the subject numbers
        ``subject_ids`` (the data's); called once, after the constructor. Returns the encoder."""
        if layer not in SUBJECT_LAYERS:
            raise ConfigError(f"encoder.subject_layer must be one of {', '.join(SUBJECT_LAYERS)}; got {layer!r}.")
        if self.subject_layer != "none":
            raise RuntimeError(f"this encoder already has a subject layer ({self.subject_layer}).")
        if layer == "none":
            return self
        ids = tuple(sorted({int(s) for s in subject_ids}))
        if not ids:
            raise ConfigError(
                f"encoder.subject_layer={layer} needs the data's subject numbers; the dataset declares none."
            )
        self.subject_layer = layer
        self.register_buffer("subject_numbers", torch.tensor(ids, dtype=torch.int64))
        self.register_buffer("subject_trained", torch.zeros(len(ids), dtype=torch.bool))
        if layer == "token":
            self.subject_token = nn.Parameter(torch.zeros(len(ids), self.embed_dim))
        else:
            self.subject_channels = nn.Parameter(torch.eye(self.n_chans).repeat(len(ids), 1, 1))
        self._reported_unknown = False
        return self

    def _per_subject(self, table: torch.Tensor, subject: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """Each trial's row of ``table`` (``[n_subjects, ...]``); the mean of the trained subjects' rows for a subject
        the encoder was not trained on (or none given), logged once. Training marks its subjects as trained."""
        numbers = subject_tensor(subject, batch_size, table.device)
        if numbers is None:
            match = torch.zeros(batch_size, len(table), dtype=torch.bool, device=table.device)
        else:
            match = numbers[:, None] == self.subject_numbers[None]
        rows = match.int().argmax(dim=1)
        if self.training:
            self.subject_trained |= match.any(dim=0)
            known = match.any(dim=1)
        else:
            trained = (
                self.subject_trained if bool(self.subject_trained.any()) else torch.ones_like(self.subject_trained)
            )
            known = (match & trained[None]).any(dim=1)
        out = table[rows]
        if bool(known.all()):
            return out
        trained = self.subject_trained if bool(self.subject_trained.any()) else torch.ones_like(self.subject_trained)
        mean = table[trained].mean(dim=0, keepdim=True)
        if not self._reported_unknown:
            self._reported_unknown = True
            unknown = "none given" if numbers is None else sorted(set(numbers[~known].tolist()))
            log.warning(
                "encoder.subject_layer=%s: %d trial(s) of subjects the encoder was not trained on (%s; trained on %s) "
                "get the mean of the trained subjects' %s (reported once).",
                self.subject_layer,
                int((~known).sum()),
                unknown,
                [s for s, t in zip(self.subject_ids, self.subject_trained.tolist()) if t] or "none recorded",
                "tokens" if self.subject_layer == "token" else "channel maps",
            )
        shape = (batch_size,) + (1,) * (table.ndim - 1)
        return torch.where(known.reshape(shape), out, mean.expand_as(out))

    def encode(self, eeg: torch.Tensor, subject: Any = None) -> torch.Tensor:
        """Codes ``[B, num_patches, embed_dim]`` of ``eeg`` recorded from ``subject`` (the batch's subject numbers:
        a tensor ``[B]``, a sequence or one number; None: not known), with the subject conditioning applied."""
        if self.subject_layer == "linear":
            self.check_input(eeg)
            eeg = torch.einsum("bij,bjt->bit", self._per_subject(self.subject_channels, subject, len(eeg)), eeg)
        codes = self.forward_features(eeg)
        if self.subject_layer == "token":
            codes = codes + self._per_subject(self.subject_token, subject, len(eeg))[:, None].to(codes.dtype)
        return codes

    # -- shared ------------------------------------------------------------------------------------------------------
    def check_input(self, eeg: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``eeg`` is not ``[B, n_chans, n_times]``."""
        if eeg.ndim != 3 or eeg.shape[1] != self.n_chans or eeg.shape[2] != self.n_times:
            raise ValueError(
                f"EEG encoder expects [batch, n_chans={self.n_chans}, n_times={self.n_times}] at {self.sfreq:g} Hz; "
                f"got {tuple(eeg.shape)}. Was the encoder trained on another dataset or preprocessing?"
            )

    @property
    def region_labels_are_classes(self) -> bool:
        """Whether region label ``c + 1`` is class ``c`` (else the labels are object / background layouts): read from
        the label count, all a saved encoder records, which tells them apart since ``num_classes >= 2``."""
        return self.num_region_labels == RegionLabels.CLASS.count(self.num_classes)

    def add_background_bias(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits [B, L, g, g]`` with the calibrated :attr:`region_background_bias` added to label 0."""
        background = torch.zeros_like(logits[:1, :, :1, :1])
        background[:, 0] = self.region_background_bias
        return logits + background

    def forward(self, eeg: torch.Tensor, subject: Any = None) -> dict[str, torch.Tensor]:
        """Codes, class logits and (when those heads exist) region logits and the aligned embedding of ``eeg``
        (recorded from ``subject``, read by the subject conditioning only: :meth:`encode`)."""
        return self.heads(self.encode(eeg, subject))

    def heads(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """What :meth:`forward` returns, from codes already computed."""
        out = {"codes": codes, "class_logits": self.classify(codes)}
        if self.region_grid > 0:
            out["region_logits"] = self.predict_regions(codes)
        if self.align_dim > 0:
            out["embedding"] = self.embed(codes)
        return out

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # encoders saved before the background bias existed load as uncalibrated (bias 0)
        state_dict.setdefault(prefix + "region_background_bias", torch.zeros(()))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def check_encoder(encoder: Any, key: str = "encoder.net") -> EEGEncoder:
    """``encoder`` if it keeps the contract of :class:`EEGEncoder` (a subclass, with the sizes it must set); a
    ConfigError naming ``key._target_`` and what is missing otherwise."""
    if not isinstance(encoder, EEGEncoder):
        raise ConfigError(
            f"{key}._target_ built a {type(encoder).__name__}, not an EEG encoder: subclass "
            "regionaldiff.encoder.base.EEGEncoder (docs/extending.md, 'An EEG encoder')."
        )
    missing = [
        name
        for name in ("num_patches", "embed_dim", "region_grid")
        if not isinstance(getattr(encoder, name, None), int) or getattr(encoder, name) < 0
    ]
    if missing or encoder.num_patches < 1 or encoder.embed_dim < 1:
        raise ConfigError(
            f"{key}._target_ {type(encoder).__name__} does not set {missing or ['num_patches', 'embed_dim']} "
            "(positive ints; region_grid >= 0) in its constructor, which EEGEncoder requires."
        )
    return encoder
