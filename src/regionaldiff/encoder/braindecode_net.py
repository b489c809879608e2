"""Any braindecode model as the backbone of a :class:`~regionaldiff.encoder.feature.FeatureEncoder`
(``encoder=braindecode encoder.net.model=EEGNet|ShallowFBCSPNet|EEGConformer|ATCNet|...``).

braindecode's models share ``n_chans, n_outputs, n_times, sfreq``; built with ``n_outputs = features`` they map
``[B, C, T]`` to ``[B, features]``, which the residual projector turns into codes. braindecode is imported only when
this option is built.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from regionaldiff.encoder.feature import FeatureEncoder, base_args, own_args
from regionaldiff.errors import ConfigError

__all__ = ["BraindecodeEncoder", "braindecode_model"]


def braindecode_model(name: str) -> type[nn.Module]:
    """The class ``braindecode.models.<name>``; a ConfigError naming the key and the choices otherwise."""
    try:
        with warnings.catch_warnings():  # braindecode 1.8.1's import warns of an MNE montage rename, not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            import braindecode.models as models
    except ImportError as err:  # pragma: no cover - braindecode is a dependency
        raise ConfigError(f"encoder.net.model={name} needs braindecode: pip install braindecode ({err}).") from err
    model = getattr(models, name, None)
    if not (isinstance(model, type) and issubclass(model, nn.Module)):
        choices = sorted(n for n in dir(models) if isinstance(getattr(models, n), type) and n[0].isupper())
        raise ConfigError(f"encoder.net.model={name!r} is not a braindecode model; choices: {', '.join(choices)}.")
    return model


class BraindecodeEncoder(FeatureEncoder):
    """A braindecode model (``model``, built with ``model_kwargs``) as the backbone.

    Parameters
    ----------
    model : str
        The class name in ``braindecode.models`` (e.g. ``EEGNet``, ``ShallowFBCSPNet``, ``EEGConformer``).
    features : int
        The backbone's output width (braindecode's ``n_outputs``).
    model_kwargs : dict
        Further arguments of the braindecode model (e.g. ``{F1: 16}`` for EEGNet).
    (the others: :class:`~regionaldiff.encoder.feature.FeatureEncoder`)
    """

    READS_TIME_COURSE = True

    @classmethod
    def check_config(cls, key: str, **arch: Any) -> None:
        super().check_config(key, **arch)
        a = cls.arch_args(arch)
        braindecode_model(str(a["model"]))
        if int(a["features"]) < 1:
            raise ConfigError(f"{key}.features must be >= 1; got {a['features']}.")

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        sfreq: float,
        num_classes: int,
        num_region_labels: int = 0,
        align_dim: int = 0,
        model: str = "EEGNet",
        features: int = 256,
        model_kwargs: dict[str, Any] | None = None,
        num_tokens: int = 4,
        embed_dim: int = 64,
        projector: str = "residual",
        dropout: float = 0.5,
        region_grid: int = 8,
        region_path: str = "shared",
        input_transform: str | None = None,
        mask_ratio: float = 0.5,
        mask_patch_s: float = 0.1,
    ) -> None:
        arch = own_args(locals(), self.DATA_ARGS)
        self.check_config("encoder.net", **arch)
        self.model_name, self.features = str(model), int(features)
        self.model_kwargs = dict(model_kwargs or {})
        super().__init__(n_chans, n_times, sfreq, num_classes, num_region_labels, align_dim, **base_args(arch))

    def make_backbone(self, n_chans: int, n_times: int) -> tuple[nn.Module, int]:
        model_class = braindecode_model(self.model_name)
        try:
            net = model_class(
                n_chans=n_chans, n_outputs=self.features, n_times=n_times, sfreq=self.sfreq, **self.model_kwargs
            )
        except (TypeError, ValueError, AssertionError) as err:
            raise ConfigError(
                f"encoder.net.model={self.model_name} could not be built for {n_chans} channels x {n_times} samples at "
                f"{self.sfreq:g} Hz with encoder.net.model_kwargs={self.model_kwargs}: {err}"
            ) from err
        return net, self.features
