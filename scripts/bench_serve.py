"""Load, memory and fault benchmark of `qvl-label serve`, against `batch` on the same images.

Starts the real `qvl-label serve` (a child process) on a generated random-weight Qwen3-VL and
prints markdown tables:

1. throughput: N concurrent clients (each request one distinct photo) -> images/s, p50/p95
   latency, HTTP errors, record statuses; and the Labeler (what `batch` runs) on the same
   number of distinct photos, in this process, load excluded;
2. memory: many requests (cached photos, empty files, text named .jpg, bad JSON) from 8 client
   threads, the server's RSS sampled as they go;
3. faults: malformed multipart, wrong content types, truncated bodies, huge headers, idle
   connections, clients that vanish mid-upload; after each, whether the server still answers.

    python scripts/bench_serve.py                                   # tiny shape, all three parts
    python scripts/bench_serve.py --shape 2b --vocab qwen --count 8 --clients 1,4,8 --no-memory --no-faults
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CACHE, _percentile, prepare_images

from qvl_label import tinymodel
from qvl_label.pipeline.labeler import Labeler
from qvl_label.settings import EngineSettings, LabelSettings, Settings
from qvl_label.store.cache import LabelCache

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests/fixtures/catalogue"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, args: argparse.Namespace, model: Path, mmproj: Path) -> None:
        command = [sys.executable, "-m", "qvl_label", "serve", "--port", "0", "--no-cache", "--lang", "zh"]
        command += ["--model", str(model), "--mmproj", str(mmproj), "--parallel", str(args.parallel)]
        command += ["--image-min-tokens", str(args.image_tokens), "--image-max-tokens", str(args.image_tokens)]
        command += ["--threads", str(args.threads), "--max-queue", "4096", "--max-images", "4"]
        command += ["--request-timeout", "3600"]
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        assert self.proc.stderr is not None
        self.url = ""
        for line in self.proc.stderr:
            match = re.search(r"serving on (http://\S+)", line)
            if match:
                self.url = match.group(1)
                break
        if not self.url:
            raise SystemExit(f"the server did not start: {self.proc.stderr.read()}")
        self.port = int(self.url.rsplit(":", 1)[1])
        threading.Thread(target=self._drain, daemon=True).start()  # its access log must not fill the pipe

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def alive(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def parallel(self) -> int:
        return int(httpx.get(self.url + "/v1/models", timeout=10).json()["data"][0]["engine"]["parallel"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(120)


def post_image(client: httpx.Client, url: str, path: Path) -> tuple[float, int, str]:
    started = time.perf_counter()
    response = client.post(url + "/v1/label", files=[("image", (path.name, path.read_bytes(), "image/jpeg"))])
    latency = time.perf_counter() - started
    status = response.json()["records"][0]["status"] if response.status_code == 200 else "-"
    return latency, response.status_code, status


def throughput(server: Server, images: list[Path], clients: int) -> dict[str, Any]:
    with httpx.Client(timeout=3600, limits=httpx.Limits(max_connections=clients)) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(lambda p: post_image(client, server.url, p), images))
        wall = time.perf_counter() - started
    latencies = [r[0] for r in results]
    return {
        "clients": clients,
        "images": len(images),
        "wall": wall,
        "rate": len(images) / wall,
        "p50": _percentile(latencies, 0.5),
        "p95": _percentile(latencies, 0.95),
        "errors": sum(1 for r in results if r[1] != 200),
        "statuses": Counter(r[2] for r in results),
    }


def batch_reference(args: argparse.Namespace, model: Path, mmproj: Path, images: list[Path]) -> dict[str, Any]:
    settings = Settings(
        engine=EngineSettings(
            model_path=model,
            mmproj_path=mmproj,
            n_parallel=args.parallel,
            threads=args.threads,
            image_min_tokens=args.image_tokens,
            image_max_tokens=args.image_tokens,
        ),
        label=LabelSettings(languages=("zh",)),
    )
    with Labeler(settings, cache=LabelCache(None)) as labeler:
        started = time.perf_counter()
        records = list(labeler.label([str(p) for p in images]))
        wall = time.perf_counter() - started
        parallel = labeler.engine.info.n_parallel
    return {"images": len(records), "wall": wall, "rate": len(records) / wall, "parallel": parallel}


def memory(server: Server, requests: int, photos: list[Path]) -> list[tuple[int, float]]:
    """(requests done, server RSS in MB) samples while requests of every kind arrive."""
    payloads: list[dict[str, Any]] = [{"files": [("image", (p.name, p.read_bytes()))]} for p in photos]
    payloads += [
        {"files": [("image", ("empty.jpg", b""))]},
        {"files": [("image", ("notes.jpg", b"plain text named like a photo"))]},
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {"images": [base64.b64encode(photos[0].read_bytes()).decode()]}},
    ]
    samples = [(0, rss_mb(server.proc.pid))]
    done = 0
    lock = threading.Lock()
    every = max(1, requests // 20)

    def one(i: int) -> None:
        nonlocal done
        client.post(server.url + "/v1/label", **payloads[i % len(payloads)])
        with lock:
            done += 1
            if done % every == 0:
                samples.append((done, rss_mb(server.proc.pid)))

    with httpx.Client(timeout=600) as client, ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(requests)))
    return samples


def _raw(port: int, data: bytes, vanish: bool = False) -> str:
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(data)
            if vanish:
                return "client vanished"
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                reply += chunk
        except (ConnectionResetError, BrokenPipeError):
            if not reply:
                return "connection dropped"
    first = reply.split(b"\r\n", 1)[0].decode("latin-1")
    return first.replace("HTTP/1.1 ", "") or "connection closed, no answer"


def faults(server: Server) -> list[tuple[str, str, bool]]:
    port = server.port
    photo = next(PHOTOS.iterdir()).read_bytes()
    head = "POST /v1/label HTTP/1.1\r\nHost: x\r\n"
    cases: list[tuple[str, Any]] = [
        (
            "malformed multipart",
            lambda: _raw(
                port,
                (
                    head
                    + "Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 18\r\n\r\n--yy\r\nnonsense!"
                ).encode(),
            ),
        ),
        (
            "wrong content type (text/plain)",
            lambda: _raw(port, (head + "Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc").encode()),
        ),
        (
            "truncated body (500 declared, 12 sent)",
            lambda: _raw(
                port, (head + 'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"images": [').encode()
            ),
        ),
        (
            "empty file",
            lambda: str(
                httpx.post(server.url + "/v1/label", files=[("image", ("e.jpg", b""))]).json()["records"][0]["status"]
            ),
        ),
        (
            "text named .jpg",
            lambda: str(
                httpx.post(server.url + "/v1/label", files=[("image", ("t.jpg", b"hello"))]).json()["records"][0][
                    "status"
                ]
            ),
        ),
        ("huge header (1 MB)", lambda: _raw(port, (head + "X-Big: " + "a" * 1_000_000 + "\r\n\r\n").encode())),
        ("not HTTP", lambda: _raw(port, b"\x16\x03\x01 hello\r\n\r\n")),
        ("1,000 idle connections", lambda: _idle(server, 1000)),
        (
            "client vanishes mid-upload (100 kB of 1 MB)",
            lambda: _raw(
                port,
                (head + "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n").encode()
                + b'--b\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n\r\n'
                + photo[:100_000],
                vanish=True,
            ),
        ),
        (
            "body over the 20 MB cap",
            lambda: str(httpx.post(server.url + "/v1/label", content=b"x" * 21_000_000).status_code),
        ),
    ]
    results = []
    for name, action in cases:
        try:
            answer = action()
        except httpx.HTTPError as exc:
            answer = f"{type(exc).__name__}"
        results.append((name, answer, server.alive()))
    return results


def _idle(server: Server, count: int) -> str:
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(count)]
    try:
        alive = server.alive()
    finally:
        for sock in sockets:
            sock.close()
    return f"{count} open; /health answered meanwhile: {alive}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", choices=sorted(tinymodel.SHAPES))
    parser.add_argument("--vocab", default="qwen", choices=["tiny", "qwen"])
    parser.add_argument("--count", type=int, default=64, help="distinct photos per concurrency level")
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--parallel", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--image-tokens", type=int, default=256)
    parser.add_argument("--memory-requests", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of batch + every level (medians)")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-faults", action="store_true")
    args = parser.parse_args()
    made = tinymodel.generate(CACHE / "models", args.shape, vocabulary=args.vocab)
    machine = f"{platform.node()}, {platform.machine()}, {os.cpu_count()} cores"
    print(f"- machine: {machine}, Python {platform.python_version()}")
    print(f"- model: random-weight Qwen3-VL, {args.shape} shape, {args.vocab} vocabulary; labels in zh")
    print(f"- image budget {args.image_tokens} tokens; --parallel {args.parallel or 'automatic'}\n")
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(args, made.model, made.mmproj)
        try:
            if not args.no_throughput:
                levels = [int(c) for c in args.clients.split(",")]
                # This shared machine drifts by tens of percent within minutes: each repetition runs
                # the Labeler (what `batch` runs) and then every level, on fresh distinct photos each
                # time, and the table gives medians, so batch and server are measured side by side.
                runs: dict[int, list[dict[str, Any]]] = {clients: [] for clients in levels}
                batch_rates: list[float] = []
                batch_parallel = 0
                for repetition in range(args.repeat):
                    folder = Path(tmp) / f"batch{repetition}"
                    folder.mkdir()
                    images = prepare_images(PHOTOS, args.count, folder)
                    for path in images:
                        path.write_bytes(path.read_bytes() + bytes([255, repetition]))
                    reference = batch_reference(args, made.model, made.mmproj, images)
                    batch_rates.append(reference["rate"])
                    batch_parallel = reference["parallel"]
                    for level, clients in enumerate(levels, start=1):
                        folder = Path(tmp) / f"r{repetition}-level{level}"
                        folder.mkdir()
                        images = prepare_images(PHOTOS, args.count, folder)
                        for path in images:  # distinct from every other run's bytes too
                            path.write_bytes(path.read_bytes() + bytes([level, repetition]))
                        runs[clients].append(throughput(server, images, clients))
                batch_rate = statistics.median(batch_rates)
                print(f"server parallel {server.parallel()}, batch parallel {batch_parallel}; ", end="")
                print(f"{args.repeat} repetitions, medians\n")
                print(
                    "| clients | images | images/s (runs) | vs batch | p50 s | p95 s | HTTP errors | record statuses |"
                )
                print("|---:|---:|---|---:|---:|---:|---:|---|")
                for clients, results in runs.items():
                    rate = statistics.median(r["rate"] for r in results)
                    statuses = Counter[str]()
                    for r in results:
                        statuses.update(r["statuses"])
                    each = ", ".join(f"{r['rate']:.2f}" for r in results)
                    print(
                        f"| {clients} | {args.count} | {rate:.3f} ({each}) | {rate / batch_rate:.2f}x "
                        f"| {statistics.median(r['p50'] for r in results):.2f} "
                        f"| {statistics.median(r['p95'] for r in results):.2f} "
                        f"| {sum(r['errors'] for r in results)} "
                        f"| {', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))} |"
                    )
                each = ", ".join(f"{rate:.2f}" for rate in batch_rates)
                print(f"| batch (Labeler) | {args.count} | {batch_rate:.3f} ({each}) | 1.00x | | | | |\n")
            if not args.no_memory:
                samples = memory(server, args.memory_requests, sorted(PHOTOS.iterdir())[:8])
                print("| requests done | server RSS MB |")
                print("|---:|---:|")
                for done, rss in samples:
                    print(f"| {done} | {rss:.0f} |")
                settled = [rss for done, rss in samples if done >= args.memory_requests // 10]
                print(f"\nRSS after the first 10 %: min {min(settled):.0f} MB, max {max(settled):.0f} MB\n")
            if not args.no_faults:
                print("| fault | answer | still serving |")
                print("|---|---|---|")
                for name, answer, alive in faults(server):
                    print(f"| {name} | {answer} | {'yes' if alive else 'NO'} |")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
