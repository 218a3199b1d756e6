"""qvl-label: label e-commerce product photos with a local Qwen3-VL model."""

from __future__ import annotations

# llama.cpp's libraries load before anything imports numpy. On an NVIDIA H200 with a CUDA build,
# loading a model in a process that had imported numpy first (2.4.6 and 2.5.2, scipy-openblas)
# was a segmentation fault; loading llama.cpp first was not (docs/benchmarks.md, "GPU").
try:  # the first statement of qvl-label's own code: an early Ctrl-C is one line, never a traceback
    from .entry import guard_start as _guard_start

    _guard_start()
    from .engine.bindings import load_backend as _load_backend

    _load_backend()
except KeyboardInterrupt:  # Ctrl-C while the libraries load: stop as the CLI does (entry.py)
    import sys as _sys

    print("interrupted", file=_sys.stderr)
    raise SystemExit(130) from None

from typing import TYPE_CHECKING, Any  # after the guarded start-up above

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
