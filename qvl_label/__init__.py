"""qvl-label: label e-commerce product photos with a local Qwen3-VL model."""

from __future__ import annotations

__version__ = "0.1.0"

from .pipeline.labeler import Labeler
from .settings import EngineSettings, LabelSettings, ModelRef, Settings

__all__ = ["EngineSettings", "LabelSettings", "Labeler", "ModelRef", "Settings", "__version__"]
