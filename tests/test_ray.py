"""`batch --ray` on a real local Ray cluster with the real engine: same records as `batch`, resume, killed actors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import qvl_label.dist
from qvl_label import tinymodel
from qvl_label.cli import app

from .conftest import PRODUCTS

try:
    import ray
except ImportError:  # the hint test below still runs; the cluster tests need the extra
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="the ray extra is not installed")

runner = CliRunner()
# Two actors of one CPU each, and room for the driver's own work: the 2-core CI machine runs them all.
CLUSTER_CPUS = 4
# One sequence at a time on both sides: how many sequences share a decode step changes llama.cpp's
# sums, and a near tie of the random model's logits can then flip (README, "Jump-forward").
LABEL_ARGS = ["--lang", "en", "--image-max-tokens", "64", "--max-tokens", "12000", "--no-cache", "--parallel", "1"]
# What a record may hold that depends on the run rather than on the photo: time, and which of
# two identical files the run happened to meet first (the other says `duplicate_of` it).
RUN_DEPENDENT = ("timings_ms", "tokens", "duplicate_of")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One local Ray cluster for these tests (token auth on, as Ray's default is); its address."""
    ray.init(num_cpus=CLUSTER_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _cli(model: tinymodel.GeneratedModel, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "qvl_label", "batch", *args, *LABEL_ARGS,
        "--model", str(model.model), "--mmproj", str(model.mmproj),
    ]  # fmt: skip


def _ray_batch(
    model: tinymodel.GeneratedModel, source: str, out: Path, address: str, *extra: str
) -> subprocess.Popen[bytes]:
    # Small calls, so records stream back while the run goes on (what the kills need to see).
    ray_args = ["--ray-address", address, "--actors", "2", "--ray-batch-size", "2"]
    args = _cli(model, source, "-o", str(out), *ray_args, *extra)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})


def _records(out: Path) -> list[dict]:
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def _lines(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


def _distinct_photos(folder: Path, count: int) -> list[Path]:
    """Real product photos, each with a byte of its own: identical files would skip the model."""
    folder.mkdir(parents=True)
    sources = sorted(PRODUCTS.iterdir())
    made = []
    for i in range(count):
        source = sources[i % len(sources)]
        target = folder / f"p{i:02d}{source.suffix}"
        target.write_bytes(source.read_bytes() + bytes([i]))
        made.append(target)
    return made


def _wait_for_lines(proc: subprocess.Popen[bytes], out: Path, lines: int) -> None:
    deadline = time.monotonic() + 180
    while _lines(out) < lines and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run must still be going"


def _run_under_way(
    model: tinymodel.GeneratedModel, cluster: str, tmp_path: Path, count: int, lines: int, *extra: str
) -> tuple[list[Path], Path, subprocess.Popen[bytes]]:
    """A Ray run over `count` distinct photos, once its output holds `lines` records."""
    photos = _distinct_photos(tmp_path / "photos", count)
    out = tmp_path / "out.jsonl"
    proc = _ray_batch(model, str(tmp_path / "photos"), out, cluster, *extra)
    _wait_for_lines(proc, out, lines)
    return photos, out, proc


def _label_actor_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "MapBatches.LabelActor"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@needs_ray
@pytest.mark.slow
def test_ray_writes_the_records_a_local_batch_writes(
    cluster: str, tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(PRODUCTS, photos / "shop-a")
    shutil.copytree(PRODUCTS, photos / "shop-b")  # identical files in another folder: labelled once
    (photos / "shop-a" / "broken.jpg").write_bytes(b"not a photo")
    (photos / os.fsdecode(b"caf\xe9.jpg")).write_bytes((PRODUCTS / "ms04-red_main.jpg").read_bytes() + b"x")

    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    local = subprocess.run(_cli(tiny_model, str(photos), "-o", str(local_out), "--quiet"), capture_output=True)
    assert local.returncode == 1, local.stderr  # the broken file is a record, so not everything is ok
    proc = _ray_batch(tiny_model, str(photos), ray_out, cluster)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    assert b"Traceback" not in stderr and b"qvl-label batch summary" in stderr
    assert b" INFO " not in stderr and b" WARNING " not in stderr  # Ray's own notes stay quiet without --debug

    def by_path(records: list[dict]) -> dict[str, dict]:
        return {r["path"]: {k: v for k, v in r.items() if k not in RUN_DEPENDENT} for r in records}

    local_records, ray_records = _records(local_out), _records(ray_out)
    assert len(ray_records) == len(local_records) == 2 * len(list(PRODUCTS.iterdir())) + 2
    assert by_path(ray_records) == by_path(local_records)  # greedy: the same labels, statuses, identities
    duplicates = [r for r in ray_records if r.get("duplicate_of")]
    assert len(duplicates) == len(list(PRODUCTS.iterdir()))  # one of each identical pair went to the model
    for record in duplicates:
        original = next(r for r in ray_records if r["path"] == record["duplicate_of"]["path"])
        assert original["sha256"] == record["sha256"] and not original.get("duplicate_of")
    assert {r["status"] for r in ray_records} == {"ok", "not_an_image"}

    again = _ray_batch(tiny_model, str(photos), ray_out, cluster)  # resume: nothing left to do
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert len(_records(ray_out)) == len(ray_records)
    assert b"already done (skipped)" in stderr


@needs_ray
@pytest.mark.slow
def test_ray_driver_killed_then_resumed_by_ray_and_by_a_local_batch(
    cluster: str, tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    photos, out, proc = _run_under_way(tiny_model, cluster, tmp_path, 12, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _lines(out)
    assert 2 <= first < len(photos)

    resumed = _ray_batch(tiny_model, str(tmp_path / "photos"), out, cluster)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert b"resuming" in stderr
    records = _records(out)  # every line parses: the kill left no torn line, or it was repaired
    assert sorted(r["path"] for r in records) == sorted(map(str, photos))  # one record each, none twice

    local = subprocess.run(_cli(tiny_model, str(tmp_path / "photos"), "-o", str(out)), capture_output=True)
    assert local.returncode == 0, local.stderr
    assert len(_records(out)) == len(photos)  # a local batch resumes a Ray run's output as its own


@needs_ray
@pytest.mark.slow
def test_sigterm_stops_a_ray_run_as_it_stops_batch(
    cluster: str, tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    photos, out, proc = _run_under_way(tiny_model, cluster, tmp_path, 16, 1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert b"interrupted: the output is consistent" in stderr and b"Traceback" not in stderr
    written = [r["path"] for r in _records(out)]  # every line a whole record
    assert len(written) == len(set(written)) < len(photos)


@needs_ray
@pytest.mark.slow
def test_ray_actor_killed_mid_run_is_replaced_and_its_images_relabelled(
    cluster: str, tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    photos, out, proc = _run_under_way(tiny_model, cluster, tmp_path, 16, 1, "--parallel", "1")
    victims = _label_actor_pids()
    assert victims, "the label actors must be running"
    os.kill(victims[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    records = _records(out)
    assert sorted(r["path"] for r in records) == sorted(map(str, photos))
    assert all(r["status"] == "ok" for r in records)


@needs_ray
@pytest.mark.slow
def test_ray_reads_uris_through_rays_reader(cluster: str, tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    photos = _distinct_photos(tmp_path / "bucket" / "shoes", 3)
    (tmp_path / "bucket" / "notes.txt").write_text("not an image, not listed")
    uri = (tmp_path / "bucket").as_uri()  # file://: the same pyarrow path s3:// and gs:// take
    out = tmp_path / "out.jsonl"
    proc = _ray_batch(tiny_model, uri, out, cluster)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    records = _records(out)
    assert sorted(r["path"] for r in records) == sorted(p.as_uri() for p in photos)
    assert all(r["status"] == "ok" and r["file"] is None for r in records)  # no local file to stat


@needs_ray
@pytest.mark.slow
def test_ray_takes_paths_on_stdin(cluster: str, tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    photos = _distinct_photos(tmp_path / "photos", 4)
    out = tmp_path / "out.jsonl"
    args = _cli(tiny_model, "-", "-o", str(out), "--ray-address", cluster)
    listed = b"".join(os.fsencode(p) + b"\n" for p in photos[:3])  # the fourth is not asked for
    proc = subprocess.run(args, input=listed, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["path"] for r in _records(out)) == sorted(map(str, photos[:3]))


@needs_ray
def test_a_local_cluster_without_the_gpus_asked_for_is_a_usage_error(tiny_model: tinymodel.GeneratedModel) -> None:
    proc = subprocess.run(
        _cli(tiny_model, str(PRODUCTS), "-o", "-", "--ray", "--gpus-per-actor", "1"), capture_output=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    assert b"need 1 GPUs; the cluster has 0" in proc.stderr and b"Traceback" not in proc.stderr
    assert proc.stdout == b""


def test_without_the_ray_extra_the_hint_names_it(
    tiny_model: tinymodel.GeneratedModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is missing
    monkeypatch.delitem(sys.modules, "qvl_label.dist.ray_batch", raising=False)
    monkeypatch.delattr(qvl_label.dist, "ray_batch", raising=False)
    args = ["--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj)]
    result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", str(tmp_path / "o.jsonl"), "--ray", *args])
    assert result.exit_code == 2
    assert "pip install 'qvl-label[ray]'" in result.output
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_bytes() == b""


@needs_ray
def test_uris_need_ray_and_ray_options_are_checked(tiny_model: tinymodel.GeneratedModel, tmp_path: Path) -> None:
    args = ["--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj)]
    out = str(tmp_path / "o.jsonl")
    result = runner.invoke(app, ["batch", "s3://bucket/photos", "-o", out, *args])
    assert result.exit_code == 2 and "add --ray" in result.output
    checked = (("--actors", "0"), ("--cpus-per-actor", "0"), ("--gpus-per-actor", "-1"), ("--ray-batch-size", "0"))
    for option, value in (*checked, ("--threads", "2")):
        result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", out, "--ray", option, value, *args])
        assert result.exit_code == 2 and option in result.output, result.output
    result = runner.invoke(app, ["batch", str(PRODUCTS), "-o", out, "--actors", "4", *args])  # without --ray
    assert result.exit_code == 2 and "--actors only apply to Ray runs" in result.output, result.output


class _Rows:
    """What Ray Data streams to the driver, in an order a real cluster can produce but rarely does."""

    def __init__(self, batches: list[list[tuple[dict, bool]]]) -> None:
        self.batches = batches

    def iter_batches(self, **_kwargs: object) -> Iterator[dict[str, list]]:
        for rows in self.batches:
            yield {"record": [orjson.dumps(r) for r, _ in rows], "duplicate": [d for _, d in rows]}


@needs_ray
def test_the_driver_lays_duplicates_over_their_original_whenever_it_arrives(
    tiny_model: tinymodel.GeneratedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qvl_label.dist.ray_batch import RayBatch, RayOptions
    from qvl_label.settings import EngineSettings, Settings
    from qvl_label.store.cache import LabelCache

    monkeypatch.setattr(RayBatch, "connect", lambda _self: None)
    driver = RayBatch(Settings(EngineSettings(tiny_model.model, tiny_model.mmproj)), RayOptions(None), LabelCache(None))
    run = driver.run.fingerprint

    def record(path: str, sha: str, status: str = "ok") -> dict:
        return {"path": path, "sha256": sha, "status": status, "run": run, "label": {"sha": sha}}

    def overlay(path: str, sha: str, owner: str) -> dict:
        return {"path": path, "sha256": sha, "run": run, "duplicate_of": {"path": owner, "match": "identical"}}

    rows = _Rows([
        [(overlay("b/1.jpg", "s1", "a/1.jpg"), True), (record("a/2.jpg", "s2", "error"), False)],  # before its original
        [(record("a/1.jpg", "s1"), False), (overlay("b/2.jpg", "s2", "a/2.jpg"), True)],  # after a failed original
        [(overlay("c/1.jpg", "s1", "a/1.jpg"), True), (record("a/1.jpg", "s1"), False)],  # a retried block's repeat
    ])  # fmt: skip
    monkeypatch.setattr(driver, "_dataset", lambda *_a: rows)
    no_registry = type("Claims", (), {"remote": staticmethod(lambda: None)})  # the rows above are the actors' work
    monkeypatch.setattr("qvl_label.dist.ray_batch.ClaimRegistry", no_registry)
    written = list(driver.label(["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg", "c/1.jpg"]))
    records = {r["path"]: r for r in written}
    assert sorted(r["path"] for r in written) == ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg", "c/1.jpg"]  # each once
    assert records["b/1.jpg"]["label"] == {"sha": "s1"} and records["b/1.jpg"]["duplicate_of"]["path"] == "a/1.jpg"
    assert records["c/1.jpg"]["label"] == {"sha": "s1"}  # from the cache: the original was written earlier
    assert records["b/2.jpg"]["status"] == "error"  # a failed original's status, as a local batch gives it


@needs_ray
def test_a_cluster_nobody_answers_at_is_one_line_and_exit_6(
    tiny_model: tinymodel.GeneratedModel, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    proc = subprocess.run(
        _cli(tiny_model, str(PRODUCTS), "-o", str(out), "--ray-address", "127.0.0.1:1"), capture_output=True
    )
    assert proc.returncode == 6, proc.stderr
    assert b"cannot join the Ray cluster at 127.0.0.1:1" in proc.stderr and b"Traceback" not in proc.stderr


@needs_ray
@pytest.mark.slow
def test_actors_with_other_model_files_fail_the_run_with_exit_6(
    cluster: str, tiny_model: tinymodel.GeneratedModel, qwen_vocab_model: tinymodel.GeneratedModel
) -> None:
    from qvl_label.dist.ray_batch import RayBatch, RayOptions
    from qvl_label.errors import ClusterError
    from qvl_label.settings import EngineSettings, LabelSettings, Settings
    from qvl_label.store.cache import LabelCache

    settings = Settings(EngineSettings(tiny_model.model, tiny_model.mmproj), LabelSettings(languages=("en",)))
    elsewhere = (qwen_vocab_model.model, qwen_vocab_model.mmproj)  # what a node with other files would load
    driver = RayBatch(settings, RayOptions(cluster), LabelCache(None), model_files=lambda: elsewhere)
    with pytest.raises(ClusterError, match="the Ray run failed") as failure:
        list(driver.label([str(p) for p in sorted(PRODUCTS.iterdir())]))
    assert failure.value.exit_code == 6
    driver.close()
