"""Throughput benchmark: qvl-label against one llama-mtmd-cli process per image and llama-server -np N.

Same model files, same images, same image token budget, same instructions and the
same output length (every system ignores end-of-generation and writes exactly
--max-tokens tokens), measured in one run. Prints a markdown table and appends it
to docs/benchmarks.md with the machine, model and settings.

llama-mtmd-cli and llama-server are built from the llama.cpp sources vendored in
the llama-cpp-python sdist, into a cache folder outside the repository:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/sdist
    tar xzf /tmp/sdist/llama_cpp_python-0.3.36.tar.gz -C /tmp/sdist
    cmake -S /tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp -B ~/.cache/qvl-label-bench/build \\
        -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF
    cmake --build ~/.cache/qvl-label-bench/build -j --target llama-server llama-mtmd-cli

    python scripts/bench.py --shape 2b --count 8 --max-tokens 16 --image-tokens 64

The `labels` workload is the real job instead: qvl-label's labelling instructions and answer
schema for every system (llama-server and llama-mtmd-cli take the schema as `json_schema`,
turned into their own grammar), greedy, output bounded by the grammar and --max-tokens (0:
qvl-label's schema-derived default), end-of-generation honoured. It adds qvl-label without
jump-forward and a sweep of llama-server's slot counts (--server-np), with and without its
n-gram speculative decoding where the build has it (--server-spec):

    python scripts/bench.py --workload labels --vocab qwen --shape 2b --count 64 --image-tokens 256
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from qvl_label import tinymodel
from qvl_label.engine.bindings import gpu_offload_supported
from qvl_label.labeling.config import load_config
from qvl_label.labeling.prompts import Prompt, label_prompt, question_prompt
from qvl_label.labeling.schema import answer_schema, max_answer_tokens, validate
from qvl_label.pipeline.labeler import Labeler
from qvl_label.settings import EngineSettings, LabelSettings, Settings
from qvl_label.store.cache import LabelCache

_CONFIG = load_config()


def _system_text(prompt: Prompt) -> str:
    return prompt.prefix.split("<|im_start|>system\n", 1)[1].split("<|im_end|>", 1)[0]


INSTRUCTIONS = {
    # name: (system text, user text). "question": qvl-label's short free-form prompt; "label":
    # its full labelling instructions (the real workload), answered without the JSON grammar
    # so that every system writes the same fixed number of tokens.
    "question": (_system_text(question_prompt("q")), "Describe this product for a catalogue listing."),
    "label": (_system_text(label_prompt(("zh",), _CONFIG, _CONFIG.channel("generic"))), "Label this product photo."),
}
CACHE = Path.home() / ".cache" / "qvl-label-bench"
SYSTEM, QUESTION = INSTRUCTIONS["question"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def prepare_images(source: Path, count: int, folder: Path) -> list[Path]:
    """count distinct files (a trailing byte differs; decoders ignore it) so nothing is deduplicated."""
    photos = sorted(p for p in source.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        target = folder / f"img{i:03d}{photo.suffix}"
        target.write_bytes(photo.read_bytes() + i.to_bytes(2, "big"))
        out.append(target)
    return out


# -- qvl-label (in a child process, so its peak RSS is its own) --------------------------


LABEL_LANGUAGES = ("zh",)


def label_schema() -> dict[str, Any]:
    return answer_schema(LABEL_LANGUAGES, _CONFIG, _CONFIG.channel("generic"))


def run_qvl_labels_child(args: argparse.Namespace) -> None:
    """The real labelling path: instructions, schema, grammar, jump-forward, shaping, records."""
    images = [line for line in Path(args.image_list).read_text().splitlines() if line]
    settings = Settings(
        engine=EngineSettings(
            model_path=Path(args.model),
            mmproj_path=Path(args.mmproj),
            n_parallel=args.child_parallel,
            threads=args.threads,
            n_gpu_layers=args.gpu_layers,
            image_min_tokens=args.image_tokens,
            image_max_tokens=args.image_tokens,
            jump_forward=not args.child_no_jump_forward,
        ),
        label=LabelSettings(languages=LABEL_LANGUAGES, max_tokens=args.max_tokens),
    )
    summary = _run_labeler(settings, images)
    summary["valid"] = summary.pop("ok")
    print(json.dumps(summary))


def run_qvl_child(args: argparse.Namespace) -> None:
    if args.workload == "labels":
        run_qvl_labels_child(args)
        return
    images = [line for line in Path(args.image_list).read_text().splitlines() if line]
    system, question = INSTRUCTIONS[args.instructions]
    prompt = question_prompt(question)
    prompt = Prompt(prompt.prefix.replace(_system_text(prompt), system), prompt.suffix, prompt.version)
    settings = Settings(
        engine=EngineSettings(
            model_path=Path(args.model),
            mmproj_path=Path(args.mmproj),
            n_parallel=args.child_parallel,
            # sized for the benchmark's own instructions and up to 8 sequences (the automatic maximum)
            n_ctx=len(prompt.prefix.encode()) + 8 * (args.image_tokens + 64 + len(prompt.suffix) + args.max_tokens),
            threads=args.threads,
            n_gpu_layers=args.gpu_layers,
            image_min_tokens=args.image_tokens,
            image_max_tokens=args.image_tokens,
            ignore_eos=True,
        ),
        label=LabelSettings(question=question, max_tokens=args.max_tokens),
    )
    print(json.dumps(_run_labeler(settings, images, prompt)))


def _machine(tools: Path, default: dict[str, Any]) -> str:
    """The CPU, the GPU nvidia-smi names (if any), and what each llama.cpp build offloads to."""
    cpu = f"{platform.machine()}, {os.cpu_count()} CPU threads, {platform.system()}"
    gpu = ""
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        found = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
        gpu = f"; GPU: {found}" if found else ""
    cache = tools.parent / "CMakeCache.txt"
    settings = (
        dict(re.findall(r"^(GGML_CUDA|CMAKE_CUDA_ARCHITECTURES):\w+=(.*)$", cache.read_text(), re.M))
        if (cache.exists())
        else {}
    )
    tools_build = (
        f"CUDA (architectures {settings.get('CMAKE_CUDA_ARCHITECTURES', '?')})"
        if settings.get("GGML_CUDA", "").upper() in ("ON", "1", "TRUE")
        else "CPU"
    )
    qvl_build = "with GPU offload" if default.get("gpu_offload") else "for CPU (no GPU offload)"
    return f"{cpu}{gpu}; llama.cpp tools built for {tools_build}; qvl-label's llama-cpp-python built {qvl_build}"


def _run_labeler(settings: Settings, images: list[str], prompt: Prompt | None = None) -> dict[str, Any]:
    """Label the images in this process; what the parent's table needs, as JSON-ready values."""
    with Labeler(settings, cache=LabelCache(None)) as labeler:
        if prompt is not None:
            labeler.job = dataclasses.replace(
                labeler.job, prompt=prompt
            )  # the benchmark's instructions; the context sizes account for them
        parallel = labeler.engine.info.n_parallel
        start = time.perf_counter()
        records = list(labeler.label(images))
        wall = time.perf_counter() - start
        prefix_evaluations = getattr(labeler.engine, "prefix_evaluations", -1)
    ran = [r for r in records if r["tokens"]]
    inside = sum(
        r["timings_ms"]["encode_ms"] + r["timings_ms"]["prefill_ms"] + r["timings_ms"]["decode_ms"] for r in ran
    )
    return {
        "parallel": parallel,
        "images": len(records),
        "failed": sum(r["status"] != "ok" for r in records),
        "ok": sum(r["status"] == "ok" for r in records),
        "wall_s": wall,
        "latencies": [r["timings_ms"]["total_ms"] / 1000 for r in ran],
        "prompt_tokens": [r["tokens"]["prompt_evaluated"] + r["tokens"]["prefix_evaluated"] for r in ran],
        "output_tokens": sum(r["tokens"]["completion"] for r in ran),
        "forced_tokens": sum(r["tokens"]["forced"] for r in ran),
        "inside_llama_s": inside / 1000,
        "prefix_evaluations": prefix_evaluations,
        "gpu_offload": gpu_offload_supported(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_qvl(args: argparse.Namespace, image_list: Path, parallel: int, jump_forward: bool = True) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--child-qvl", "--child-parallel", str(parallel), "--image-list", str(image_list),
        "--model", str(args.model), "--mmproj", str(args.mmproj), "--threads", str(args.threads),
        "--image-tokens", str(args.image_tokens), "--max-tokens", str(args.max_tokens),
        "--instructions", args.instructions, "--workload", args.workload, "--gpu-layers", str(args.gpu_layers),
    ]  # fmt: skip
    if not jump_forward:
        cmd.append("--child-no-jump-forward")
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    result["name"] = f"qvl-label batch --parallel {result['parallel']}" + (" (default)" if parallel == 0 else "")
    if not jump_forward:
        result["name"] += " --no-jump-forward"
    result["overhead_pct"] = 100 * max(0.0, 1 - result["inside_llama_s"] / result["wall_s"])
    return result


# -- llama-mtmd-cli, one process per image ------------------------------------------------

_PROMPT_EVAL = re.compile(r"prompt eval time\s*=\s*[\d.]+ ms /\s*(\d+) tokens")


def run_cli(args: argparse.Namespace, images: list[Path], tools: Path) -> dict[str, Any]:
    latencies, prompt_tokens, peak = [], [], 0.0
    start = time.perf_counter()
    for image in images:
        cmd = [
            str(tools / "llama-mtmd-cli"), "-m", str(args.model), "--mmproj", str(args.mmproj), "--image", str(image),
            "-sys", SYSTEM, "-p", QUESTION, "-n", str(_output_limit(args)), "--temp", "0",
            "-c", "8192", "-t", str(args.threads), "--image-min-tokens", str(args.image_tokens),
            "--image-max-tokens", str(args.image_tokens), "--no-warmup", "-ngl", _tool_gpu_layers(args),
        ]  # fmt: skip
        cmd += ["--json-schema", json.dumps(label_schema())] if args.workload == "labels" else ["--ignore-eos"]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here to read this process's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        latencies.append(time.perf_counter() - t)
        peak = max(peak, usage.ru_maxrss / 1024)
        found = _PROMPT_EVAL.findall(stderr)
        if found:  # llama-mtmd-cli prints its perf counters only with some log settings
            prompt_tokens.append(sum(int(n) for n in found))
        if proc.returncode != 0:
            raise RuntimeError(f"llama-mtmd-cli failed: {stderr[-500:]}")
    wall = time.perf_counter() - start
    return {
        "name": "llama-mtmd-cli, one process per image",
        "images": len(images),
        "failed": 0,
        "wall_s": wall,
        "latencies": latencies,
        "prompt_tokens": prompt_tokens,
        # with the schema the answer length is not reported by llama-mtmd-cli
        "output_tokens": _output_limit(args) * len(images) if args.workload != "labels" else None,
        "peak_rss_mb": peak,
    }


# -- llama-server -np N with a concurrent client ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3600) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def _tool_gpu_layers(args: argparse.Namespace) -> str:
    """The same offload as qvl-label's --gpu-layers (-1: every layer; a CPU build ignores it)."""
    return "999" if args.gpu_layers < 0 else str(args.gpu_layers)


def _output_limit(args: argparse.Namespace) -> int:
    if args.workload == "labels" and not args.max_tokens:
        return max_answer_tokens(label_schema())  # qvl-label's default, given to every system
    return int(args.max_tokens)


def run_server(
    args: argparse.Namespace, images: list[Path], tools: Path, parallel: int, spec: str | None = None
) -> dict[str, Any]:
    port = _free_port()
    per_slot = len(SYSTEM.encode()) + 512 + args.image_tokens + _output_limit(args)
    cmd = [
        str(tools / "llama-server"), "-m", str(args.model), "--mmproj", str(args.mmproj), "-np", str(parallel),
        "-c", str(per_slot * parallel), "-t", str(args.threads), "--host", "127.0.0.1", "--port", str(port),
        "--image-min-tokens", str(args.image_tokens), "--image-max-tokens", str(args.image_tokens), "--no-warmup",
        "-ngl", _tool_gpu_layers(args),
    ]  # fmt: skip
    if spec:
        cmd += spec.split()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("llama-server did not become ready")

        def one(image: Path) -> tuple[float, int, int]:
            data = base64.b64encode(image.read_bytes()).decode()
            mime = "image/png" if image.suffix.lower() == ".png" else "image/jpeg"
            payload = {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}},
                        {"type": "text", "text": QUESTION},
                    ]},
                ],
                "max_tokens": _output_limit(args), "temperature": 0, "cache_prompt": True,
            }  # fmt: skip
            if args.workload == "labels":
                payload["response_format"] = {
                    "type": "json_schema", "json_schema": {"name": "label", "schema": label_schema()},
                }  # fmt: skip
            else:
                payload["ignore_eos"] = True
            t = time.perf_counter()
            response = _post(base + "/v1/chat/completions", payload)
            timings = response.get("timings", {})
            content = response["choices"][0]["message"].get("content") or ""
            return (
                time.perf_counter() - t,
                int(timings.get("prompt_n", 0)),
                int(timings.get("predicted_n", 0)),
                _valid_answer(content),
            )

        start = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            results = list(pool.map(one, images))
        wall = time.perf_counter() - start
        status = Path(f"/proc/{server.pid}/status").read_text()
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {
        "name": f"llama-server -np {parallel}, {parallel} concurrent requests" + (f", {spec}" if spec else ""),
        "images": len(images),
        "failed": 0,
        "valid": sum(r[3] for r in results),
        "wall_s": wall,
        "latencies": [r[0] for r in results],
        "prompt_tokens": [r[1] for r in results],
        "output_tokens": sum(r[2] for r in results),
        "peak_rss_mb": peak,
    }


def _valid_answer(content: str) -> bool:
    try:
        return validate(json.loads(content), label_schema()) == []
    except ValueError:
        return False


# -- report -----------------------------------------------------------------------------


def _rate_columns(r: dict[str, Any], reference: dict[str, Any]) -> str:
    """system, images/s, against the reference, p50 and p95 seconds per image."""
    rate = r["images"] / r["wall_s"]
    return (
        f"| {r['name']} | {rate:.3f} | {rate / (reference['images'] / reference['wall_s']):.2f}x "
        f"| {_percentile(r['latencies'], 0.5):.2f} | {_percentile(r['latencies'], 0.95):.2f} "
    )


def labels_table(rows: list[dict[str, Any]], reference: dict[str, Any]) -> str:
    head = "| system | images/s | vs qvl-label default | p50 s/image | p95 s/image | output tokens/image "
    head += "| forced/image | decode steps/image | valid answers | peak RSS MB |\n"
    head += "|---|---|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        n = max(1, r["images"])
        forced = r.get("forced_tokens", 0)
        output = r["output_tokens"]
        tokens = "not reported" if output is None else f"{output / n:.0f}"
        steps = "not reported" if output is None else f"{(output - forced) / n:.0f}"
        lines.append(
            _rate_columns(r, reference) + f"| {tokens} | {forced / n:.0f} | {steps} "
            f"| {r.get('valid', '-')}/{r['images']} | {r['peak_rss_mb']:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def table(rows: list[dict[str, Any]], reference: dict[str, Any]) -> str:
    head = "| system | images/s | vs qvl-label default | p50 s/image | p95 s/image | prompt tokens/image "
    head += "| output tok/s | peak RSS MB | wall time outside engine timers |\n"
    head += "|---|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        overhead = f"{r['overhead_pct']:.1f}%" if "overhead_pct" in r else "-"
        prompt = f"{statistics.mean(r['prompt_tokens']):.0f}" if r["prompt_tokens"] else "not reported"
        lines.append(
            _rate_columns(r, reference) + f"| {prompt} "
            f"| {r['output_tokens'] / r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {overhead} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", choices=sorted(tinymodel.SHAPES))
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--images", type=Path, default=Path("tests/fixtures/products"))
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, help="fixed: 32; labels: 0 (qvl-label's schema-derived default)")
    parser.add_argument("--image-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parallel", type=int, default=0, help="N for the default run and llama-server; 0: auto")
    parser.add_argument("--gpu-layers", type=int, default=-1, help="layers offloaded, every system (-1: all)")
    parser.add_argument("--cli-count", type=int, default=0, help="llama-mtmd-cli on the first N images only (0: all)")
    parser.add_argument("--tools", type=Path, default=CACHE / "build" / "bin")
    parser.add_argument("--systems", default="qvl1,qvl,cli,server")
    parser.add_argument("--instructions", default="question", choices=sorted(INSTRUCTIONS))
    parser.add_argument("--workload", default="fixed", choices=("fixed", "labels"))
    parser.add_argument("--vocab", default="bytes", choices=tinymodel.VOCABULARIES)
    parser.add_argument("--server-np", default="", help="labels: llama-server slot counts to sweep, e.g. 1,2,4,8")
    parser.add_argument(
        "--server-spec", default="", help="labels: llama-server speculative options to add as a second sweep"
    )
    parser.add_argument("--server-spec-only", action="store_true", help="run only the --server-spec sweep")
    parser.add_argument("--child-no-jump-forward", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--child-qvl", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-parallel", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--image-list", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_tokens is None:
        args.max_tokens = 0 if args.workload == "labels" else 32
    global SYSTEM, QUESTION
    SYSTEM, QUESTION = INSTRUCTIONS[args.instructions]
    if args.child_qvl:
        run_qvl_child(args)
        return
    if args.workload == "labels":
        SYSTEM, QUESTION = INSTRUCTIONS["label"]
    if not (args.model and args.mmproj):
        made = tinymodel.generate(CACHE / "models", args.shape, vocabulary=args.vocab)
        args.model, args.mmproj = made.model, made.mmproj
        model_name = (
            f"random-weight Qwen3-VL, real {args.shape} shape (F16), {args.vocab} vocabulary, "
            "generated by qvl_label.tinymodel"
        )
    else:
        model_name = f"{args.model.name} + {args.mmproj.name}"
    systems = args.systems.split(",")
    with tempfile.TemporaryDirectory(prefix="qvl-bench-") as tmp:
        images = prepare_images(args.images, args.count, Path(tmp))
        image_list = Path(tmp) / "images.txt"
        image_list.write_text("\n".join(map(str, images)))
        rows: list[dict[str, Any]] = []

        def add(row: dict[str, Any]) -> None:
            # one line per system as it finishes, so a run cut short still shows what it measured
            rows.append(row)
            summary = {k: v for k, v in row.items() if k not in ("latencies", "prompt_tokens")}
            print(json.dumps({**summary, "images_per_s": row["images"] / row["wall_s"]}), file=sys.stderr, flush=True)

        default = run_qvl(args, image_list, args.parallel)
        parallel = default["parallel"]
        if "qvl1" in systems:
            add(run_qvl(args, image_list, 1))
        add(default)
        if args.workload == "labels" and "qvl-nojf" in systems:
            add(run_qvl(args, image_list, args.parallel, jump_forward=False))
        if "cli" in systems and shutil.which(str(args.tools / "llama-mtmd-cli")):
            add(run_cli(args, images[: args.cli_count or None], args.tools))
        if "server" in systems and shutil.which(str(args.tools / "llama-server")):
            sweep = [int(n) for n in args.server_np.split(",") if n] or [parallel]
            specs = [] if args.server_spec_only else [None]
            for spec in [*specs, *([args.server_spec] if args.server_spec else [])]:
                for n in sweep:
                    add(run_server(args, images, args.tools, n, spec))
    machine = _machine(args.tools, default)
    if args.workload == "labels":
        header = (
            f"## {datetime.date.today()}: labels workload, {model_name}\n\n"
            f"- machine: {machine}\n"
            f"- {args.count} distinct images from {args.images}, image budget {args.image_tokens} tokens "
            f"(min = max), greedy, {args.threads} threads"
            + (f"; llama-mtmd-cli on the first {args.cli_count} of them" if args.cli_count else "")
            + "\n"
            f"- every system: qvl-label's labelling instructions and `{','.join(LABEL_LANGUAGES)}` answer schema "
            f"(llama.cpp tools: as `json_schema`), output limit {_output_limit(args)} tokens, end-of-generation "
            "honoured\n"
            f"- qvl-label prefix evaluations per run: {default['prefix_evaluations']}\n\n"
        )
        report = header + labels_table(rows, default)
        print(report)
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write(report + "\n")
        return
    header = (
        f"## {datetime.date.today()}: {model_name}\n\n"
        f"- machine: {machine}\n"
        f"- {args.count} images from {args.images}, image budget {args.image_tokens} tokens (min = max), "
        f"output fixed at {args.max_tokens} tokens (end-of-generation ignored), greedy, {args.threads} threads\n"
        f"- instructions: {args.instructions} ({len(SYSTEM.encode())} bytes of system text)\n"
        f"- qvl-label prefix evaluations per run: {default['prefix_evaluations']}\n\n"
    )
    report = header + table(rows, default)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as handle:
        handle.write(report + "\n")


if __name__ == "__main__":
    main()
