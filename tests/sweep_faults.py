"""Faults injected into one job of a sweep, for the sweep tests (imported by the jobs through PYTHONPATH).

``REGIONALDIFF_TEST_FAULT`` = ``user`` (a missing file: a user error), ``crash`` (a program error) or ``nan`` (the
training loss becomes NaN); ``REGIONALDIFF_TEST_FAULT_JOB`` (default 1) is the job number that fails. Unset: no
fault, the components behave as the real ones.
"""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig

from regionaldiff.encoder.mae import EEGMaskedAutoencoder
from regionaldiff.errors import MissingFileError
from regionaldiff.maps.base import OracleRegionMap


def fault_here(kind: str) -> bool:
    if os.environ.get("REGIONALDIFF_TEST_FAULT") != kind or not HydraConfig.initialized():
        return False
    return int(HydraConfig.get().job.num) == int(os.environ.get("REGIONALDIFF_TEST_FAULT_JOB", "1"))


class FaultyOracle(OracleRegionMap):
    """The oracle region maps; fails when built in the faulty job (``user`` or ``crash``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if fault_here("user"):
            raise MissingFileError("the file /nowhere/weights.pth (injected) does not exist.")
        if fault_here("crash"):
            raise RuntimeError("injected crash")


class FaultyEncoder(EEGMaskedAutoencoder):
    """The EEG MAE; its masked-recovery loss is NaN in the faulty job (``nan``)."""

    def masked_reconstruction_loss(self, eeg, generator=None):
        loss = super().masked_reconstruction_loss(eeg, generator)
        return loss * float("nan") if fault_here("nan") else loss
