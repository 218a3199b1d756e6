"""qvl-label: label e-commerce product photos with a local Qwen3-VL model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .pipeline.labeler import Labeler
    from .settings import EngineSettings, LabelSettings, ModelRef, Settings

__all__ = ["EngineSettings", "LabelSettings", "Labeler", "ModelRef", "Settings", "__version__"]


def __getattr__(name: str) -> Any:
    """The API, imported on first use: the console script starts without numpy and Pillow."""
    if name == "Labeler":
        from .pipeline.labeler import Labeler

        return Labeler
    if name in ("EngineSettings", "LabelSettings", "ModelRef", "Settings"):
        from . import settings

        return getattr(settings, name)
    raise AttributeError(name)
