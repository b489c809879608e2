"""EEG-RegionalDiff: reconstruct seen images from EEG with semantic region awareness."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RegionalDiffPipeline", "RegionalDiffOutput", "__version__"]

if TYPE_CHECKING:
    from regionaldiff.reconstruction import RegionalDiffOutput, RegionalDiffPipeline


def __getattr__(name: str) -> Any:
    # the pipeline pulls in torch and diffusers: import it on first use, not with every `regionaldiff --help`
    if name in ("RegionalDiffPipeline", "RegionalDiffOutput"):
        from regionaldiff import reconstruction

        return getattr(reconstruction, name)
    raise AttributeError(f"module 'regionaldiff' has no attribute {name!r}")
