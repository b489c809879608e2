"""The synthetic known-truth benchmark: scenes with exact region maps, EEG from an MNE forward model.

``dataset=synthetic`` (the embedded default) builds :class:`SyntheticDataModule`.
"""

from regionaldiff.data.synthetic.datamodule import SyntheticDataModule

__all__ = ["SyntheticDataModule"]
