"""qvl-label: label e-commerce product photos with a local Qwen3-VL model."""

from __future__ import annotations

__version__ = "0.1.0"

from .labeler import Labeler  # noqa: E402
from .settings import EngineSettings, LabelSettings, ModelRef, Settings  # noqa: E402

__all__ = ["EngineSettings", "LabelSettings", "Labeler", "ModelRef", "Settings", "__version__"]
