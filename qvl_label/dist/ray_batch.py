"""`batch --ray`: label on a Ray cluster's actors, each wrapping a Labeler; the driver streams the records back."""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow.fs  # Ray Data's own dependency: its readers resolve s3:// and gs:// through it
import ray
import ray.data

from ..errors import ClusterError, InternalError, UsageError
from ..pipeline.batch import IMAGE_EXTENSIONS, is_uri
from ..pipeline.images import LoadedImage
from ..pipeline.labeler import EngineFactory, Labeler, Loaded, Source, default_engine_factory, plan_job
from ..pipeline.records import OK, RunContext, display_path, duplicate_overlay
from ..settings import Settings
from ..store.cache import LabelCache

# Resolves the model files on the node an actor runs on (a preset in that node's own
# Hugging Face cache, pulled once per node); None means the paths in the settings, which
# must then be on a filesystem every node sees.
ModelFiles = Callable[[], tuple[Path, Path]]

# Rows per actor call. Each actor runs two calls at once on one engine, so its slots stay
# full across a call's end; small enough that a killed actor costs little relabelling.
DEFAULT_BATCH_SIZE = 16
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RayOptions:
    address: str | None  # None: start a local cluster; "auto": join the one running here; or host:port
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = DEFAULT_BATCH_SIZE
    max_errored_blocks: int = 0  # Ray Data's error budget: blocks that may fail after Ray's own retries
    debug: bool = False


def list_uri(uri: str) -> list[str]:
    """Image files under a URI (a prefix or one file), sorted, as URIs with the same scheme."""
    scheme = uri.split("://", 1)[0] + "://"
    try:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(root)
        if info.type == pyarrow.fs.FileType.NotFound:
            raise UsageError(f"{uri}: no such file or prefix")
        if info.type == pyarrow.fs.FileType.File:
            return [uri]
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    except (OSError, ValueError, pyarrow.lib.ArrowException) as exc:
        raise UsageError(f"cannot list {uri}: {exc}") from exc
    names = [
        e.path
        for e in entries
        if e.type == pyarrow.fs.FileType.File and os.path.splitext(e.path)[1].lower() in IMAGE_EXTENSIONS
    ]
    return [scheme + name for name in sorted(names)]


@ray.remote(num_cpus=0)
class ClaimRegistry:
    """sha256 -> the first path that claimed it: identical files anywhere in the run are labelled once.

    A block Ray retries claims again with the same paths, so its owner is still itself.
    """

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    def claim(self, sha256: str, path: str) -> str:
        return self._owners.setdefault(sha256, path)


class LabelActor:
    """One model per actor, loaded once; every call labels its rows through the same Labeler and scheduler."""

    def __init__(
        self,
        settings: Settings,
        fingerprint: str,
        claims: Any,
        near_dup_distance: int | None,
        model_files: ModelFiles | None,
        scheme: str,
        engine_factory: EngineFactory,
    ) -> None:
        assigned = ray.get_runtime_context().get_assigned_resources()
        # llama.cpp's threads are the CPUs Ray gave this actor, not the node's cores. The GPU
        # is the one Ray assigned: Ray sets CUDA_VISIBLE_DEVICES, so llama.cpp sees only it.
        engine = replace(settings.engine, threads=max(1, math.floor(assigned.get("CPU", 1))))
        if model_files is not None:
            model_path, mmproj_path = model_files()
            engine = replace(engine, model_path=model_path, mmproj_path=mmproj_path)
        self.labeler = Labeler(replace(settings, engine=engine), engine_factory, near_dup_distance=near_dup_distance)
        if self.labeler.run.fingerprint != fingerprint:
            raise ClusterError(
                f"the model files on node {ray.util.get_node_ip_address()} differ from the driver's "
                f"(run {self.labeler.run.fingerprint}, driver {fingerprint})"
            )
        self.claims = claims
        self.scheme = scheme

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        run = self.labeler.run
        sources: list[Source]
        if "bytes" in batch:  # read by Ray's reader: the path comes back without its scheme
            sources = [(self.scheme + str(p), bytes(b)) for p, b in zip(batch["path"], batch["bytes"], strict=True)]
        else:  # paths every node sees, read here
            sources = [os.fsdecode(bytes(p)) for p in batch["path"]]
        duplicates: list[bytes] = []

        def claimed(loaded: Iterable[Loaded]) -> Iterable[Loaded]:
            for name, image in loaded:
                if isinstance(image, LoadedImage):
                    owner = ray.get(self.claims.claim.remote(image.sha256, name))
                    if owner != name:  # the driver lays this over the owner's record when it has it
                        duplicates.append(orjson.dumps(duplicate_overlay(name, run, image, display_path(owner))))
                        continue
                yield name, image

        records = [orjson.dumps(r) for r in self.labeler.label_loaded(claimed(self.labeler.prefetched(sources)))]
        return {"record": records + duplicates, "duplicate": [False] * len(records) + [True] * len(duplicates)}


class RayBatch:
    """The driver of a Ray run: what `batch` needs of a Labeler (`run`, `label`), with the model on the actors."""

    def __init__(
        self,
        settings: Settings,
        options: RayOptions,
        cache: LabelCache,
        near_dup_distance: int | None = None,
        model_files: ModelFiles | None = None,
        log: Callable[[str], None] = lambda _m: None,
        engine_factory: EngineFactory = default_engine_factory,  # scripts/bench_ray.py measures the driver with a fake
    ) -> None:
        self.settings = settings
        self.options = options
        self.cache = cache
        self.near_dup_distance = near_dup_distance
        self.model_files = model_files
        self.log = log
        self.engine_factory = engine_factory
        self.job = plan_job(settings)  # the fingerprint, for resume, without loading the model here
        self._started_cluster = False
        # Joined now, as a Labeler loads its model: a cluster that cannot be reached fails before
        # the run starts, and the run's own Ctrl-C/SIGTERM handling, set up after, is the one in force.
        self.connect()

    @property
    def run(self) -> RunContext:
        return self.job.run

    def connect(self) -> None:
        """Join the cluster (or start a local one), and check it can hold the actors asked for."""
        opts = self.options
        quiet = logging.DEBUG if opts.debug else logging.ERROR
        # Ray's own notes (token generated, progress bars off, dataset started) are not the
        # user's business in a run that works; --debug shows them all.
        logging.getLogger("ray").setLevel(quiet)
        if not ray.is_initialized():
            common: dict[str, Any] = {
                "logging_level": quiet,
                "log_to_driver": opts.debug,
                "include_dashboard": False,
            }
            try:
                if opts.address is None:
                    # this machine's CPUs, never more: the check below refuses actors they cannot hold
                    ray.init(address="local", num_cpus=os.cpu_count() or 1, **common)
                    self._started_cluster = True
                else:
                    _check_reachable(opts.address)
                    ray.init(address=opts.address, **common)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = (
                    "start a local Ray cluster" if opts.address is None else f"join the Ray cluster at {opts.address}"
                )
                raise ClusterError(
                    f"cannot {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                    hint="`ray status` on the head node shows whether it runs; a token-auth cluster needs its "
                    "token on this machine (RAY_AUTH_TOKEN, or ~/.ray/auth_token copied from the head)",
                ) from exc
        resources = ray.cluster_resources()
        for name, per_actor in (("CPU", opts.cpus_per_actor), ("GPU", opts.gpus_per_actor)):
            wanted = opts.actors * per_actor
            if wanted > resources.get(name, 0):
                message = (
                    f"{opts.actors} actors x {per_actor:g} {name} need {wanted:g} {name}s; "
                    f"the cluster has {resources.get(name, 0):g} now"
                )
                if self._started_cluster:
                    raise UsageError(message)
                self.log(message + " (waiting for the cluster to grow, as an autoscaler may)")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # `batch` draws its own, on a terminal only
        ctx.max_errored_blocks = opts.max_errored_blocks
        logging.getLogger("ray.data").setLevel(quiet)  # Ray Data configures its own logger at init

    def _dataset(self, todo: list[str], scheme: str, claims: Any) -> ray.data.Dataset:
        opts = self.options
        if scheme:
            # Ray's reader lists nothing again (the driver already did) and streams the bytes to the actors;
            # it asks for no CPU, so actors holding every CPU cannot starve the reads that feed them.
            plain = [uri[len(scheme) :] for uri in todo]
            filesystem, _ = pyarrow.fs.FileSystem.from_uri(todo[0])
            source = ray.data.read_binary_files(plain, include_paths=True, filesystem=filesystem, num_cpus=0)
        else:
            blocks = min(len(todo), max(2 * opts.actors, math.ceil(len(todo) / opts.batch_size)))
            # bytes, not str: a file name that is not UTF-8 survives Arrow as it is
            source = ray.data.from_items([{"path": os.fsencode(p)} for p in todo], override_num_blocks=blocks)
        return source.map_batches(
            LabelActor,
            fn_constructor_args=(
                self.settings,
                self.run.fingerprint,
                claims,
                self.near_dup_distance,
                self.model_files,
                scheme,
                self.engine_factory,
            ),
            batch_size=opts.batch_size,
            compute=ray.data.ActorPoolStrategy(
                size=opts.actors, max_concurrent_calls_per_actor=2, enable_true_multi_threading=True
            ),
            num_cpus=opts.cpus_per_actor,
            num_gpus=opts.gpus_per_actor or None,
        )

    def label(self, paths: Iterable[str]) -> Generator[dict[str, Any], None, None]:
        """One record per path, in the order the actors finish (resume and merge go by path, not order)."""
        todo = list(paths)
        if not todo:
            return
        schemes = {p.split("://", 1)[0] + "://" if is_uri(p) else "" for p in todo}
        if len(schemes) > 1:
            raise UsageError("--ray takes local paths or URIs of one scheme in a run, not both")
        claims = ClaimRegistry.remote()  # type: ignore[attr-defined]
        fingerprint = self.run.fingerprint
        waiting: dict[str, list[dict[str, Any]]] = {}  # owner's sha256 -> duplicates whose owner is still running
        # Owners' records that are not ok stay out of the label cache; a temporary one (on disk,
        # deleted at the end) keeps them for their duplicates, so memory stays flat however many fail.
        failed = LabelCache(None)
        seen: set[str] = set()  # a block Ray retried may repeat rows: each path is written once

        def finished(record: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
            if record["path"] in seen:
                return
            seen.add(record["path"])
            yield record
            sha256 = record.get("sha256")
            if not sha256 or record.get("duplicate_of"):
                return
            if record["status"] == OK:
                self.cache.put(sha256, fingerprint, record["path"], record, None, None)
            else:
                failed.put(sha256, fingerprint, record["path"], record, None, None)
            for overlay in waiting.pop(sha256, []):
                yield from finished({**record, **overlay})

        rows = self._dataset(todo, schemes.pop(), claims).iter_batches(batch_size=None, batch_format="numpy")
        try:
            for batch in rows:
                for raw, is_duplicate in zip(batch["record"], batch["duplicate"], strict=True):
                    record = orjson.loads(raw)
                    if not is_duplicate:
                        yield from finished(record)
                        continue
                    hit = self.cache.get(record["sha256"], fingerprint) or failed.get(record["sha256"], fingerprint)
                    if hit is None:
                        waiting.setdefault(record["sha256"], []).append(record)
                    else:
                        yield from finished({**hit.record, **record})
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"the Ray run failed: {_first_line(exc)}") from exc
        finally:
            failed.close()
        if waiting:
            lost = sum(map(len, waiting.values()))
            raise InternalError(
                f"{lost} duplicates got no record: their original's was never returned; re-run to label them"
            )

    def close(self) -> None:
        if self._started_cluster:
            ray.shutdown()

    def __enter__(self) -> RayBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_reachable(address: str) -> None:
    """A HOST:PORT nobody answers on fails in seconds; Ray itself retries it for minutes."""
    if address == "auto":  # Ray finds the local cluster's address itself, and says at once when there is none
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except ValueError:
        raise ConnectionError(f"{address} is not HOST:PORT") from None
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
