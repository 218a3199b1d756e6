"""`doctor`: what this install can do, proven by a real inference on a generated tiny model."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from . import tinymodel
from .engine.models import ModelStore
from .pipeline.labeler import Labeler
from .pipeline.records import OK
from .settings import EngineSettings, LabelSettings, Settings


@dataclass
class DoctorReport:
    backend: dict[str, Any] = field(default_factory=dict)
    presets: list[dict[str, Any]] = field(default_factory=list)
    smoke: dict[str, Any] = field(default_factory=dict)


def _sample_photo(path: Path) -> Path:
    """A synthetic 'product shot': a red mug-like shape on white, with a little text."""
    im = Image.new("RGB", (640, 480), "white")
    draw = ImageDraw.Draw(im)
    draw.rounded_rectangle((200, 120, 420, 400), radius=30, fill=(180, 20, 40))
    draw.ellipse((400, 200, 500, 320), outline=(180, 20, 40), width=18)
    draw.text((250, 250), "QVL", fill="white")
    im.save(path, "JPEG", quality=90)
    return path


def smoke_test(engine_settings: EngineSettings) -> dict[str, Any]:
    """Generate the tiny random-weight Qwen3-VL, load it in llama.cpp and label one image."""
    result: dict[str, Any] = {"ok": False}
    with tempfile.TemporaryDirectory(prefix="qvl-doctor-") as tmp:
        t0 = time.perf_counter()
        generated = tinymodel.generate(Path(tmp))
        photo = _sample_photo(Path(tmp) / "sample.jpg")
        settings = Settings(
            engine=EngineSettings(
                model_path=generated.model,
                mmproj_path=generated.mmproj,
                n_gpu_layers=engine_settings.n_gpu_layers,
                threads=engine_settings.threads,
                image_max_tokens=64,
                n_parallel=0,  # sized from free memory, as `--parallel 0` sizes a real run
                verbose=engine_settings.verbose,
            ),
            label=LabelSettings(languages=("en",), max_tokens=64),
        )
        try:
            with Labeler(settings) as labeler:
                info = labeler.engine.info
                record = labeler.label_one(str(photo))
        except Exception as exc:  # doctor reports every failure instead of stopping
            result["error"] = f"{type(exc).__name__}: {exc}"
            return result
        tokens = record.get("tokens") or {}
        result.update(
            # The tiny model's answer is random text; a label is not expected, a real
            # encode + grammar-constrained decode is.
            ok=record["status"] != "engine_error" and tokens.get("image", 0) > 0 and tokens.get("completion", 0) > 0,
            status=record["status"],
            error=record.get("error"),
            image_tokens=tokens.get("image"),
            completion_tokens=tokens.get("completion"),
            forced_tokens=tokens.get("forced"),
            grammar=info.grammar_engine,
            seconds=round(time.perf_counter() - t0, 2),
            n_gpu_layers=info.n_gpu_layers,
            threads=info.threads,
            parallel=info.n_parallel,
            label_ok=record["status"] == OK,
        )
    return result


def run_doctor(store: ModelStore, engine_settings: EngineSettings) -> DoctorReport:
    from .engine.bindings import backend_description

    report = DoctorReport(backend=backend_description())
    for name, preset in store.lock.presets.items():
        files = store.state(preset)
        report.presets.append(
            {
                "name": name,
                "default": name == store.lock.default,
                "present": all(f.path is not None for f in files),
                "verified": all(f.verified for f in files),
                "size_gb": round(sum(f.pinned.size for f in files) / 1e9, 2),
            }
        )
    report.smoke = smoke_test(engine_settings)
    return report
