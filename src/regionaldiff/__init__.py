"""EEG-RegionalDiff: reconstruct seen images from EEG with semantic region awareness."""

__version__ = "0.1.0"
