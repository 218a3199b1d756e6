"""The docs' example outputs, each made by running the real CLI and code (scripts/gen_docs.py writes them)."""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from doc_engines import CatalogueEngine, ProductAnswerEngine, SampleAnswerEngine, engine_in_place

ROOT = Path(__file__).resolve().parent.parent
PRODUCTS = ROOT / "tests" / "fixtures" / "products"
RED_TEE = PRODUCTS / "ms04-red_main.jpg"
FIXTURES = ROOT / "tests" / "fixtures"


def compact_json(value: Any, indent: str = "") -> str:
    """Indented JSON whose short lists and objects stay on one line, as a person would write it."""
    flat = json.dumps(value, ensure_ascii=False)
    if len(indent) + len(flat) <= 100 or not isinstance(value, dict | list) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {compact_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    return "[\n" + ",\n".join(inner + compact_json(v, inner) for v in value) + "\n" + indent + "]"


def describe_record() -> str:
    """The red tee's record: conftest's sample answer through the real Labeler and shaping code."""
    from qvl_label.pipeline.labeler import Labeler
    from qvl_label.settings import EngineSettings, LabelSettings, Settings

    with tempfile.TemporaryDirectory() as folder:
        model, mmproj = Path(folder) / "model.gguf", Path(folder) / "mmproj.gguf"
        model.write_bytes(b"GGUF model stand-in")
        mmproj.write_bytes(b"GGUF mmproj stand-in")
        settings = Settings(
            engine=EngineSettings(model_path=model, mmproj_path=mmproj, n_parallel=1),
            label=LabelSettings(languages=("zh", "en")),
        )
        cwd = Path.cwd()
        os.chdir(ROOT)
        try:
            with Labeler(settings, engine_factory=lambda _s: SampleAnswerEngine(("zh", "en"))) as labeler:
                (record,) = list(labeler.label([str(RED_TEE.relative_to(ROOT))]))
        finally:
            os.chdir(cwd)
    record.pop("file", None)  # size and mtime of this checkout's copy: not the same on two clones
    record["timings_ms"] = {key: 0.0 for key in record.get("timings_ms") or {}}
    return "```json\n" + compact_json(record) + "\n```"


def batch_run() -> str:
    """`qvl-label batch` twice (a run, then its resume) through the real CLI, Labeler and writer.

    The engine is the sample-answer engine (the real llama.cpp engine on the tiny random model takes
    minutes per photo on a loaded 2-core machine and writes gibberish); the model files are the
    generated tiny model's, so the run fingerprint is computed from real GGUF files.
    """
    import functools
    import shutil

    from typer.testing import CliRunner

    from qvl_label import tinymodel
    from qvl_label.cli import app
    from qvl_label.pipeline.labeler import Labeler

    shown: list[str] = ["$ qvl-label models make-random /tmp/tiny"]
    original_init = Labeler.__init__
    Labeler.__init__ = functools.partialmethod(  # type: ignore[method-assign]
        original_init, engine_factory=lambda _s: SampleAnswerEngine(("en",))
    )
    cwd = Path.cwd()
    try:
        with tempfile.TemporaryDirectory() as folder:
            generated = tinymodel.generate(Path(folder) / "tiny")
            photos = Path(folder) / "photos"
            photos.mkdir()
            for photo in sorted(PRODUCTS.iterdir()):
                shutil.copy(photo, photos / photo.name)
            for broken in ("truncated_photo.jpg", "corrupt_header.jpg"):
                shutil.copy(ROOT / "tests" / "fixtures" / "awkward" / broken, photos / broken)
            os.chdir(folder)
            args = ["batch", "photos", "-o", "out.jsonl", "--lang", "en", "--no-cache",
                    "--model", str(generated.model), "--mmproj", str(generated.mmproj)]  # fmt: skip
            env = {"QVL_LABEL_HOME": str(Path(folder) / "state")}
            for attempt in range(2):
                if attempt:  # the resume: one more photo arrived since
                    shutil.copy(ROOT / "tests" / "fixtures" / "catalogue" / "Granny-Smith_Iconic.jpg", photos)
                    shown.append("$ cp Granny-Smith_Iconic.jpg photos/")
                result = CliRunner().invoke(app, args, env=env, prog_name="qvl-label")
                shown.append("$ qvl-label batch photos -o out.jsonl --lang en --model /tmp/tiny/qwen3vl-tiny-random-"
                             "model.gguf \\\n    --mmproj /tmp/tiny/qwen3vl-tiny-random-mmproj.gguf")  # fmt: skip
                shown += [line.rstrip() for line in result.stderr.rstrip().splitlines()]
                shown.append(f"$ echo $?\n{result.exit_code}")
            statuses = [json.loads(line)["status"] for line in Path("out.jsonl").read_text().splitlines()]
            shown.append(f"$ wc -l < out.jsonl\n{len(statuses)}")
    finally:
        os.chdir(cwd)
        Labeler.__init__ = original_init  # type: ignore[method-assign]
    return "```text\n" + "\n".join(shown) + "\n```"


def shown(args: Iterable[str]) -> str:
    """A command line as a person types it: arguments with spaces or shell characters in double quotes."""
    return " ".join(f'"{arg}"' if re.search(r"[^\w@%+=:,./-]", arg) else arg for arg in args)


def run_cli(args: list[str], env: dict[str, str] | None = None, input_text: str | None = None) -> Any:
    from typer.testing import CliRunner

    from qvl_label.cli import app

    return CliRunner().invoke(app, args, env=env, input=input_text, prog_name="qvl-label", terminal_width=100)


def taxonomy_tools() -> str:
    """`taxonomy map` and `taxonomy search`, run through the CLI."""
    lines: list[str] = []
    for args in (
        ["taxonomy", "map", "Electronics > Accessories > Phone Cases", "Apparel & Accessories > 服装 > 连衣裙"],
        ["taxonomy", "search", "power", "bank", "-n", "1"],
    ):
        result = run_cli(args)
        if result.exit_code != 0:
            raise SystemExit(f"qvl-label {shown(args)} exited {result.exit_code}: {result.output}")
        lines += [f"$ qvl-label {shown(args)}", result.stdout.rstrip("\n")]
    return "```text\n" + "\n".join(lines) + "\n```"


def lint_copy() -> str:
    """`lint-copy --fix` on a claim and a plain fact, and its exit status."""
    args = ["lint-copy", "--lang", "en", "--fix", "The best running shoe.", "Healthy dog treats."]
    result = run_cli(args)
    if result.exit_code != 1:
        raise SystemExit(f"qvl-label {shown(args)} exited {result.exit_code}, not 1: {result.output}")
    return f"```text\n$ qvl-label {shown(args)}\n{result.stdout.rstrip()}\n$ echo $?\n{result.exit_code}\n```"


def checked(args: list[str], expected_exit: int = 0, env: dict[str, str] | None = None) -> Any:
    result = run_cli(args, env=env)
    if result.exit_code != expected_exit:
        raise SystemExit(f"qvl-label {shown(args)} exited {result.exit_code}, not {expected_exit}: {result.output}")
    return result


def model_args(args: list[str]) -> str:
    """The command as shown: the stand-in model files' temporary paths left out."""
    out, skip = [], False
    for arg in args:
        out.append("…" if skip else arg)
        skip = arg in ("--model", "--mmproj")
    return shown(out).replace('"…"', "…")


def feed_round_trip(env: dict[str, str]) -> list[str]:
    """Run A exported as a Merchant Center feed, read back as gold by `gold from-feed`, scored by `eval`."""
    records = [json.loads(line) for line in Path("out.jsonl").read_text().splitlines()]
    with open("ids.csv", "w", newline="") as ids:  # the shop's own ids: here the photo's name
        writer = csv.writer(ids)
        writer.writerow(["path", "id"])
        writer.writerows([r["path"], Path(r["path"]).stem.lower()] for r in records)
    lines = ["$ head -3 ids.csv", *Path("ids.csv").read_text().splitlines()[:3]]
    url = "https://shop.example/img/"
    for args in (
        ["export", "out.jsonl", "--format", "gmc-tsv", "-o", "feed.tsv", "--lang", "en", "--ids", "ids.csv",
         "--image-base-url", url, "--root", "."],
        ["gold", "from-feed", "feed.tsv", "-o", "gold-feed.jsonl", "--map", f"{url}="],
    ):  # fmt: skip
        result = checked(args, env=env)
        lines += [f"$ qvl-label {shown(args)}", *result.stderr.rstrip().splitlines()]
    lines += ["$ head -1 gold-feed.jsonl", Path("gold-feed.jsonl").read_text().splitlines()[0]]
    args = ["eval", "out.jsonl", "--gold", "gold-feed.jsonl"]
    wanted = ("category │ exact", "colors   │ micro F1")
    result = checked(args, env=env)
    lines.append(f"$ qvl-label {shown(args)} | grep -E '{'|'.join(wanted)}'")
    lines += [line.rstrip() for line in result.stdout.splitlines() if any(w in line for w in wanted)]
    return lines


@functools.cache
def review_runs() -> dict[str, str]:
    """Two scripted runs over the ten photos gold.csv covers, scored by `eval` and set side by side by `compare`.

    Run A's engine answers each photo with its CATALOGUE_ANSWERS entry; run B's answers every photo as
    the red tee (conftest's sample answer). Everything after the answer is the real CLI and code.
    """
    blocks: dict[str, list[str]] = {"eval-run": [], "compare-run": []}  # and feed-gold-run
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        for name in ("model.gguf", "mmproj.gguf"):
            (base / name).write_bytes(b"GGUF stand-in: the scripted engine never reads it")
        shop = base / "shop"
        for sub in ("products", "catalogue"):
            shutil.copytree(FIXTURES / sub, shop / sub)
        shutil.copy(FIXTURES / "gold.csv", shop / "gold.csv")
        env = {"QVL_LABEL_HOME": str(base / "state")}
        models = ["--model", str(base / "model.gguf"), "--mmproj", str(base / "mmproj.gguf")]
        os.chdir(shop)
        try:
            red_tees = lambda _engine: SampleAnswerEngine(("zh", "en"))  # noqa: E731
            for name, out, factory in (("eval-run", "out.jsonl", CatalogueEngine),
                                       ("compare-run", "out-b.jsonl", red_tees)):  # fmt: skip
                args = ["batch", ".", "-o", out, "--lang", "zh,en", "-q", "--no-cache", *models]
                with engine_in_place(factory):
                    result = checked(args, env=env)
                blocks[name] += [f"$ qvl-label {model_args(args)}", *result.stderr.rstrip().splitlines()]
            for name, args in (("eval-run", ["eval", "out.jsonl", "--gold", "gold.csv", "--worst", "2"]),
                               ("compare-run", ["compare", "out.jsonl", "out-b.jsonl", "--gold", "gold.csv",
                                                "--examples", "3"])):  # fmt: skip
                result = checked(args, env=env)
                blocks[name] += [f"$ qvl-label {shown(args)}", *(line.rstrip() for line in result.stdout.splitlines())]
            blocks["feed-gold-run"] = feed_round_trip(env)
        finally:
            os.chdir(cwd)
    return {name: "```text\n" + "\n".join(lines) + "\n```" for name, lines in blocks.items()}


@functools.cache
def products_runs() -> dict[str, str]:
    """`qvl-label batch --group-by pattern` over the eleven Magento views: three products, one record each.

    The engine gives the sample answer (the red tee) and names the first photo of a product its main one.
    Also the product fields of one record, its first and last photo without `file` (this checkout's mtime).
    """
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        for name in ("model.gguf", "mmproj.gguf"):
            (base / name).write_bytes(b"GGUF stand-in: the scripted engine never reads it")
        shutil.copytree(FIXTURES / "views", base / "shop")
        args = ["batch", "shop/", "-o", "products.jsonl", "--group-by", "pattern", "--lang", "en", "--no-cache",
                "--model", str(base / "model.gguf"), "--mmproj", str(base / "mmproj.gguf")]  # fmt: skip
        cwd = Path.cwd()
        os.chdir(base)
        try:
            with engine_in_place(lambda _engine: ProductAnswerEngine(("en",))):
                result = checked(args, env={"QVL_LABEL_HOME": str(base / "state")})
            records = [json.loads(line) for line in Path("products.jsonl").read_text().splitlines()]
        finally:
            os.chdir(cwd)
    jq = "{product, photos: [.images[] | [.path, .role]]}"
    lines = [f"$ qvl-label {model_args(args)}", *(line.rstrip() for line in result.stderr.rstrip().splitlines())]
    lines.append(f"$ jq -c '{jq}' products.jsonl")
    lines += [
        json.dumps({"product": r["product"], "photos": [[i["path"], i["role"]] for i in r["images"]]},
                   ensure_ascii=False, separators=(",", ":"))
        for r in records
    ]  # fmt: skip
    backpack = next(r for r in records if r["product"] == "shop/wb04-blue")
    photos = [{k: v for k, v in photo.items() if k != "file"} for photo in backpack["images"]]
    excerpt = {key: backpack[key] for key in ("product", "product_sha256")} | {"images": [photos[0], photos[-1]]}
    return {"products-run": "```text\n" + "\n".join(lines) + "\n```",
            "product-record": "```json\n" + compact_json(excerpt) + "\n```"}  # fmt: skip


SERVED_PHOTO = "tests/fixtures/products/Arla-Standard-Milk_Iconic.jpg"
JQ_RECORD = (
    ".records[] | {path, status, category: .label.category.path, brand: .label.brand, title: .label.copy.en.title}"
)


def jq_record(answer: dict[str, Any]) -> list[str]:
    """What `jq -c JQ_RECORD` prints for a /v1/label answer."""
    return [
        json.dumps(
            {
                "path": r["path"],
                "status": r["status"],
                "category": r["label"]["category"]["path"],
                "brand": r["label"]["brand"],
                "title": r["label"]["copy"]["en"]["title"],
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for r in answer["records"]
    ]


def post(url: str, body: bytes, content_type: str) -> str:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:  # the error's JSON body is the example
        return str(error.read().decode())


def multipart(fields: dict[str, str], photo: Path) -> tuple[bytes, str]:
    """The body `curl -F image=@PHOTO -F name=value` sends."""
    boundary = "------------------------qvllabeldocs"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{photo.name}"\r\n'
             f"Content-Type: image/jpeg\r\n\r\n".encode() + photo.read_bytes() + b"\r\n"]  # fmt: skip
    parts += [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@functools.cache
def serve_runs() -> dict[str, str]:
    """`qvl-label serve` in a child process (the catalogue engine in place of llama.cpp), asked as curl would,
    then stopped; and the audit log it wrote."""
    import queue
    import signal
    import subprocess
    import threading

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        for name in ("model.gguf", "mmproj.gguf"):
            (base / name).write_bytes(b"GGUF stand-in: the scripted engine never reads it")
        args = ["serve", "--lang", "zh,en", "--model", str(base / "model.gguf"), "--mmproj", str(base / "mmproj.gguf"),
                "--audit-log", "audit.jsonl", "--port", "0"]  # fmt: skip
        env = os.environ | {"QVL_LABEL_HOME": str(base / "state"), "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen(
            [sys.executable, __file__, *args], cwd=base, env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(line.rstrip("\n")) for line in child.stderr or ()], daemon=True
        ).start()
        shown_lines = [f"$ qvl-label {model_args(args)} &"]

        def until(event: str) -> None:
            """The server's stderr lines, shown, up to the one saying this happened (the model load is slow)."""
            while event not in shown_lines[-1]:
                try:
                    shown_lines.append(lines.get(timeout=300))
                except queue.Empty:
                    raise SystemExit(f"serve never said {event!r}; it said: {shown_lines}") from None

        try:
            until("Application startup complete.")
            port = re.search(r"serving on http://127\.0\.0\.1:(\d+)", "\n".join(shown_lines))
            if port is None:
                raise SystemExit(f"no port in {shown_lines}")
            url = f"localhost:{port.group(1)}/v1/label"
            body, content_type = multipart({"lang": "en"}, ROOT / SERVED_PHOTO)
            answer = json.loads(post(f"http://{url}", body, content_type))
            shown_lines += [f"$ curl -s -F image=@{SERVED_PHOTO} -F lang=en {url} \\\n    | jq -c '{JQ_RECORD}'",
                            *jq_record(answer)]  # fmt: skip
            until('"POST /v1/label HTTP/1.1" 200')
            refused = post(f"http://{url}", b"x", "text/plain")
            shown_lines += [f"$ curl -s {url} -H 'content-type: text/plain' -d x", refused]
            until('"POST /v1/label HTTP/1.1" 415')
            child.send_signal(signal.SIGTERM)
            shown_lines.append("$ kill %1")
            until("stopped")
            child.wait(timeout=120)
            stdout = child.stdout.read() if child.stdout else ""
            if child.returncode != 0 or stdout:
                raise SystemExit(f"serve exited {child.returncode} with stdout {stdout!r}: {shown_lines}")
            audit = (base / "audit.jsonl").read_text().rstrip("\n")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    return {"serve-run": "```text\n" + "\n".join(shown_lines) + "\n```", "serve-audit": f"```json\n{audit}\n```"}


def serve_child(args: list[str]) -> None:
    """`python scripts/doc_examples.py serve …`: the real `qvl-label serve` with the catalogue engine."""
    from qvl_label.cli import app

    with engine_in_place(CatalogueEngine):
        app(args, prog_name="qvl-label")


if __name__ == "__main__":
    os.environ.update({"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
    sys.path.insert(0, str(ROOT))
    serve_child(sys.argv[1:])
