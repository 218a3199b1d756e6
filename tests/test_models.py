"""models.lock and the model store: pinned revisions, verification, offline behaviour; no network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qvl_label.cli import app
from qvl_label.engine import models
from qvl_label.engine.models import ModelLock, ModelStore, PinnedFile, Preset, load_lock
from qvl_label.errors import ModelDownloadError, ModelMissingError, ModelVerifyError, UsageError

PINS = {
    "qwen3-vl-8b": (
        "Qwen/Qwen3-VL-8B-Instruct-GGUF",
        "f982a07559d4a2f6c8744d840bf6fccab30eea96",
        (
            "Qwen3VL-8B-Instruct-Q4_K_M.gguf",
            5027784800,
            "67d1659bfe71b89d50b45a4ad1a9e5b997e5bb16ce5da66a6a6167abd569e9e2",
        ),
        (
            "mmproj-Qwen3VL-8B-Instruct-F16.gguf",
            1159029824,
            "ca524100ebf825c9a870db1c580d03879e0da0ab2541697e2458e64891cf9d38",
        ),
    ),
    "qwen3-vl-8b-q8proj": (
        "Qwen/Qwen3-VL-8B-Instruct-GGUF",
        "f982a07559d4a2f6c8744d840bf6fccab30eea96",
        (
            "Qwen3VL-8B-Instruct-Q4_K_M.gguf",
            5027784800,
            "67d1659bfe71b89d50b45a4ad1a9e5b997e5bb16ce5da66a6a6167abd569e9e2",
        ),
        (
            "mmproj-Qwen3VL-8B-Instruct-Q8_0.gguf",
            752289728,
            "c6ba85508d82f42590e6eb77d5340369ab6fecf107a7561d809523d8aa5f3bfd",
        ),
    ),
    "qwen3-vl-2b": (
        "Qwen/Qwen3-VL-2B-Instruct-GGUF",
        "52d6c8ffea26cc873ac5ad116f8631268d7eb503",
        (
            "Qwen3VL-2B-Instruct-Q4_K_M.gguf",
            1107409952,
            "089d75c52f4b7ffc56ba998ffc50aae89fcafc755f9e7208aacca281dca6c2ae",
        ),
        (
            "mmproj-Qwen3VL-2B-Instruct-F16.gguf",
            819394848,
            "c3d5afbef5287953acd57b4043d2269456e5761a4eaccb3b71b062996970aea5",
        ),
    ),
}


def test_lock_pins_the_published_files() -> None:
    lock = load_lock()
    assert lock.default == "qwen3-vl-8b"
    assert set(lock.presets) == set(PINS)
    for name, (repo, revision, model, mmproj) in PINS.items():
        preset = lock.presets[name]
        assert (preset.repo, preset.revision) == (repo, revision)
        assert (preset.model.file, preset.model.size, preset.model.sha256) == model
        assert (preset.mmproj.file, preset.mmproj.size, preset.mmproj.sha256) == mmproj


def test_lock_rejects_branches(tmp_path: Path) -> None:
    text = Path(models.default_lock_path()).read_text().replace("f982a07559d4a2f6c8744d840bf6fccab30eea96", "main", 1)
    bad = tmp_path / "models.lock"
    bad.write_text(text)
    with pytest.raises(UsageError, match="40-hex"):
        load_lock(bad)


def _fake_preset(tmp_path: Path, model_bytes: bytes, mmproj_bytes: bytes) -> Preset:
    def pin(name: str, data: bytes) -> PinnedFile:
        return PinnedFile(name, len(data), hashlib.sha256(data).hexdigest())

    return Preset("fake", "", "Org/Fake-GGUF", "a" * 40, pin("m.gguf", model_bytes), pin("p.gguf", mmproj_bytes))


class FakeHub:
    """Stands in for hf_hub_download at the point of use; records every call."""

    def __init__(self, root: Path, files: dict[str, bytes]) -> None:
        self.root = root
        self.files = files
        self.calls: list[dict[str, object]] = []
        self.cached: dict[str, Path] = {}

    def download(self, **kwargs: object) -> str:
        self.calls.append(kwargs)
        name = str(kwargs["filename"])
        target = self.root / "blobs" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.files[name])
        self.cached[name] = target
        return str(target)

    def lookup(self, repo: str, filename: str, cache_dir: object = None, revision: object = None) -> str | None:
        path = self.cached.get(filename)
        return str(path) if path and path.exists() else None


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hub", {"m.gguf": b"model-bytes" * 100, "p.gguf": b"proj-bytes" * 50})
    monkeypatch.setattr(models, "hf_hub_download", fake.download)
    monkeypatch.setattr(models, "try_to_load_from_cache", fake.lookup)
    monkeypatch.setattr(models, "_check_reachable", lambda preset: None)  # the fake hub needs no network
    return fake


def _store(tmp_path: Path, preset: Preset, offline: bool = False) -> ModelStore:
    return ModelStore(ModelLock("fake", {"fake": preset}), tmp_path / "state", offline=offline)


def test_pull_downloads_the_pinned_revision_and_verifies(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = _fake_preset(tmp_path, hub.files["m.gguf"], hub.files["p.gguf"])
    paths = _store(tmp_path, preset).pull(preset)
    assert [c["revision"] for c in hub.calls] == ["a" * 40, "a" * 40]
    assert [c["repo_id"] for c in hub.calls] == ["Org/Fake-GGUF"] * 2
    assert paths["model"].read_bytes() == hub.files["m.gguf"]

    hashed: list[Path] = []
    monkeypatch.setattr(models, "sha256_of", lambda p, progress=None: hashed.append(p) or "")
    store = _store(tmp_path, preset)
    assert all(state.verified for state in store.state(preset))
    store.resolve(preset, allow_download=False)
    assert hashed == [] and len(hub.calls) == 2  # verified once, never rehashed or re-downloaded


def test_checksum_mismatch_is_an_error_and_the_file_is_removed(tmp_path: Path, hub: FakeHub) -> None:
    preset = _fake_preset(tmp_path, hub.files["m.gguf"], b"something else entirely" * 21)
    with pytest.raises(ModelVerifyError, match="does not match"):
        _store(tmp_path, preset).pull(preset)
    assert not hub.cached["p.gguf"].exists()
    wrong_size = _fake_preset(tmp_path, hub.files["m.gguf"] + b"x", hub.files["p.gguf"])
    with pytest.raises(ModelVerifyError, match="size"):
        _store(tmp_path, wrong_size).pull(wrong_size)


def test_offline_and_missing_is_one_clear_error(tmp_path: Path, hub: FakeHub) -> None:
    preset = _fake_preset(tmp_path, hub.files["m.gguf"], hub.files["p.gguf"])
    with pytest.raises(ModelMissingError) as info:
        _store(tmp_path, preset, offline=True).resolve(preset, allow_download=True)
    assert "qvl-label models pull fake" in (info.value.hint or "")
    assert hub.calls == []


def test_network_failure_is_a_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    def refuse(**kwargs: object) -> str:
        raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")

    monkeypatch.setattr(models, "hf_hub_download", refuse)
    preset = _fake_preset(tmp_path, hub.files["m.gguf"], hub.files["p.gguf"])
    with pytest.raises(ModelDownloadError, match="Failed to resolve") as info:
        _store(tmp_path, preset).pull(preset)
    assert "\n" not in str(info.value)


def test_cli_pull_offline_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["models", "pull", "qwen3-vl-2b"])
    assert result.exit_code == 3
    assert "not downloaded" in result.output and "Traceback" not in result.output


def test_cli_models_list_and_path() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "qwen3-vl-8b" in listed.output and "not downloaded" in listed.output
    missing = runner.invoke(app, ["models", "path", "qwen3-vl-2b"])
    assert missing.exit_code == 3
    unknown = runner.invoke(app, ["models", "path", "qwen9"])
    assert unknown.exit_code == 2 and "unknown model preset" in unknown.output


def test_no_network_is_one_line_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without this check the hub client retried for about 24 s, logging each retry."""
    import socket
    import time

    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    called: list[object] = []
    monkeypatch.setattr(models, "hf_hub_download", lambda **kwargs: called.append(kwargs))
    preset = _fake_preset(tmp_path, b"model", b"mmproj")
    started = time.monotonic()
    with pytest.raises(ModelDownloadError, match=r"cannot reach huggingface\.co"):
        _store(tmp_path, preset).pull(preset)
    assert time.monotonic() - started < 2 and called == []


def test_random_model_with_the_real_qwen_tokenizer(tmp_path: Path) -> None:
    """`models make-random --vocab qwen`: the real tokenizer, Qwen3-VL's added tokens at their ids."""
    from qvl_label import tinymodel
    from qvl_label.engine.llama import LlamaCppEngine
    from qvl_label.labeling.config import load_config
    from qvl_label.labeling.prompts import label_prompt
    from qvl_label.settings import EngineSettings

    runner = CliRunner()
    result = runner.invoke(app, ["models", "make-random", str(tmp_path), "--vocab", "qwen"])
    assert result.exit_code == 0, result.output
    made = tinymodel.GeneratedModel(
        model=tmp_path / "qwen3vl-tiny-qwenvocab-random-model.gguf", mmproj=tmp_path / "qwen3vl-tiny-random-mmproj.gguf"
    )
    config = load_config()
    prefix = label_prompt(("zh",), config, config.channel("generic")).prefix
    settings = EngineSettings(model_path=made.model, mmproj_path=made.mmproj, n_ctx=4096, image_max_tokens=64)
    with LlamaCppEngine(settings) as engine:
        assert len(engine.tokenize(prefix)) == 892  # real BPE merges: 3,866 bytes, 3,386 byte-level tokens
        assert engine.tokenize("<|vision_start|><|image_pad|><|vision_end|><|im_end|>") == [
            151652,
            151655,
            151653,
            151645,
        ]
        assert engine.tokenize("<think></think>") == [151667, 151668]
    assert runner.invoke(app, ["models", "make-random", str(tmp_path), "--vocab", "latin"]).exit_code == 2
