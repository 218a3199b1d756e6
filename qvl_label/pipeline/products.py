"""Products: photos grouped into products, their shared image budget, and one request and record per product."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import io
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..engine.protocol import Generation, GenerationRequest
from ..errors import UsageError
from ..labeling.prompts import product_prompt
from ..labeling.schema import product_schema
from ..settings import EngineSettings, ProductSettings
from .images import ImageLoadError, LoadedImage
from .job import LabelJob
from .records import OK, display_path, error_record, file_block, image_block, model_record, reused_record

# SKU_1.jpg, SKU-front.jpg, SKU_main.jpg: the stem up to its last "_" or "-" names the product.
DEFAULT_GROUP_PATTERN = r"^(.+)[_-][^_-]*$"
GROUP_BY = ("folder", "pattern")
# A user's --group-pattern runs on every file name: bounded so no name can make it backtrack for minutes
# (the `regex` package with its timeouts is not a dependency; these checks are enough for a file-name key).
MAX_GROUP_PATTERN = 200
MAX_GROUP_REPEATS = 3
# --product-max-*: one product is one request; past these a context is allocated that no machine holds.
MAX_PRODUCT_PHOTOS = 32
MAX_PRODUCT_TOKENS = 32768
# Tokens of the photo-role list per photo in the answer: an enum word, quotes and a comma.
ROLE_TOKENS_PER_PHOTO = 8
NO_READABLE_PHOTO = "no_readable_photo"
# the standard library's own parser of regular expressions (re._parser; sre_parse before 3.11)
_sre_parser: Any = importlib.import_module("re._parser" if sys.version_info >= (3, 11) else "sre_parse")
_NOT_SENT = "not sent: beyond --product-max-photos, or more than --product-max-tokens holds"


@dataclass(frozen=True)
class Product:
    """One product: its key and its photos, the main photo first."""

    key: str
    paths: tuple[str, ...]


def main_first(paths: list[str]) -> tuple[str, ...]:
    """A photo whose name ends in "main" leads; the others keep their order."""
    main = [p for p in paths if Path(p).stem.lower().endswith("main")]
    return tuple(main[:1] + [p for p in paths if p not in main[:1]])


def _grouped(keyed: Iterable[tuple[str, str]]) -> list[Product]:
    groups: dict[str, list[str]] = {}
    for key, path in keyed:
        groups.setdefault(key, []).append(path)
    return [Product(key, main_first(paths)) for key, paths in groups.items()]


def group_by_folder(paths: Iterable[str]) -> list[Product]:
    """Each folder is one product; the key is the folder's path."""
    return _grouped((display_path(str(Path(p).parent)), p) for p in paths)


def _repeats(parsed: Any) -> Iterable[tuple[int, Any]]:
    """(max count, body) of every repetition in a parsed pattern, outermost first."""
    for op, av in parsed:
        if str(op) in {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}:
            yield av[1], av[2]
        for child in _children(av):
            yield from _repeats(child)


def _children(av: Any) -> Iterable[Any]:
    if isinstance(av, _sre_parser.SubPattern):
        yield av
    elif isinstance(av, tuple | list):
        for item in av:
            yield from _children(item)


def _has_branch(parsed: Any) -> bool:
    return any(str(op) == "BRANCH" or any(_has_branch(c) for c in _children(av)) for op, av in parsed)


def check_pattern_cost(pattern: str) -> None:
    """Refuse the shapes that make a backtracking matcher take exponential time: a repeated group that holds
    another repetition or alternatives ((a+)+, (a|aa)*), and more than MAX_GROUP_REPEATS repetitions in a row
    (.*.*.*x is polynomial, n^k). What is left matches a file name (at most 255 bytes) in well under a millisecond."""
    parsed = _sre_parser.parse(pattern)
    repeats = [(high, body) for high, body in _repeats(parsed) if high > 1]
    for _, body in repeats:
        if any(high > 1 for high, _ in _repeats(body)) or _has_branch(body):
            raise UsageError(
                f"--group-pattern {pattern!r} repeats a group that itself repeats or has alternatives "
                "(such as (a+)+): that can take minutes to match; write the repetition once"
            )
    if len(repeats) > MAX_GROUP_REPEATS:
        raise UsageError(
            f"--group-pattern {pattern!r} has {len(repeats)} repetitions (*, +, {{m,n}}); at most {MAX_GROUP_REPEATS}"
        )


def group_by_pattern(paths: Iterable[str], pattern: str | None = None) -> list[Product]:
    """The regex's first group, matched on each file's stem, names its product (within its folder).

    A stem the pattern does not match is a product of its own.
    """
    pattern = DEFAULT_GROUP_PATTERN if pattern is None else pattern
    if len(pattern) > MAX_GROUP_PATTERN:
        raise UsageError(f"--group-pattern is {len(pattern)} characters; at most {MAX_GROUP_PATTERN}")
    try:
        regex = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise UsageError(f"--group-pattern {pattern!r} is not a regular expression: {exc}") from None
    check_pattern_cost(pattern)
    if regex.groups < 1:
        raise UsageError(f"--group-pattern {pattern!r} needs a group, (...), that captures the product key")

    def key(path: str) -> str:
        stem = Path(path).stem
        match = regex.match(stem)
        name = match.group(1) if match and match.group(1) else stem
        return display_path(str(Path(path).parent / name))

    return _grouped((key(p), p) for p in paths)


def one_product(paths: list[str]) -> Product:
    """The photos given on a command line, as one product named after the first one."""
    return Product(group_by_pattern(paths[:1])[0].key, main_first(paths))


def read_groups(path: Path) -> list[Product]:
    """A CSV with columns product, path and optionally order; paths relative to the CSV's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"--groups {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--groups {path}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))  # not splitlines: U+2028, \x85 are text
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    if "product" not in columns or "path" not in columns:
        raise UsageError(f"--groups {path}: needs the columns product and path (and optionally order)")
    rows: list[tuple[str, float, int, str]] = []
    for line, row in enumerate(reader, start=2):
        key, photo = (row.get(columns["product"]) or "").strip(), (row.get(columns["path"]) or "").strip()
        if not key or not photo:
            raise UsageError(f"--groups {path}, line {line}: product and path must both be given")
        order_text = (row.get(columns["order"]) or "").strip() if "order" in columns else ""
        try:
            order = float(order_text) if order_text else float(line)
        except ValueError:
            raise UsageError(f"--groups {path}, line {line}: order {order_text!r} is not a number") from None
        full = Path(photo) if Path(photo).is_absolute() else path.parent / photo
        rows.append((key, order, line, str(full)))
    groups: dict[str, list[tuple[float, int, str]]] = {}
    for key, order, line, photo in rows:
        groups.setdefault(key, []).append((order, line, photo))
    return [Product(key, tuple(p for _, _, p in sorted(photos))) for key, photos in groups.items()]


def photos_sent(photos: int, settings: ProductSettings, min_tokens: int) -> int:
    """How many of a product's photos go to the model: at most max_photos, and no more than the budget
    holds at --image-min-tokens each (the rest are listed in the record, not sent)."""
    return min(photos, settings.max_photos, max(1, settings.max_tokens // max(1, min_tokens)))


def photo_budget(photos: int, product_tokens: int, min_tokens: int, max_tokens: int) -> int:
    """Image tokens for each of a product's photos: the product's budget shared, within the per-photo bounds."""
    return max(min_tokens, min(max_tokens, product_tokens // max(1, photos)))


def product_digest(hashes: Iterable[str]) -> str:
    """The key a product is cached and resumed by: the set of its photos' hashes."""
    return hashlib.sha256("\n".join(sorted(set(hashes))).encode()).hexdigest()


@dataclass
class LoadedProduct:
    """A product's photos after loading: those sent to the model, failed ones, and extras beyond the maximum."""

    product: Product
    sent: list[tuple[str, LoadedImage]]
    failed: list[tuple[str, ImageLoadError]]
    not_sent: list[str]

    @property
    def digest(self) -> str:
        return product_digest(image.sha256 for _, image in self.sent)


def product_job(job: LabelJob, settings: ProductSettings) -> LabelJob:
    """The single-photo job for products: its own run fingerprint, since prompt, schema and budget differ."""
    parts = [job.run.fingerprint, "product", settings.max_tokens, settings.max_photos]
    fingerprint = hashlib.sha256(orjson.dumps(parts)).hexdigest()[:16]
    return dataclasses.replace(job, run=dataclasses.replace(job.run, fingerprint=fingerprint))


def product_sequence_tokens(job: LabelJob, settings: ProductSettings, engine: EngineSettings) -> int:
    """An upper bound of the tokens one product's sequence needs (its photos, text and answer)."""
    photos = settings.max_photos
    images = max(settings.max_tokens, photos * engine.image_min_tokens) + 8 * photos
    suffix = len(product_prompt(job.prompt, photos).suffix.encode())
    return images + suffix + product_max_answer_tokens(job, photos)


def product_request(job: LabelJob, key: int, loaded: LoadedProduct) -> GenerationRequest:
    images = [image.prepared for _, image in loaded.sent]
    prompt = product_prompt(job.prompt, len(images))
    schema = product_schema(job.schema, len(images)) if job.schema is not None else None
    return GenerationRequest(
        key=key,
        image=images[0],
        more_images=tuple(images[1:]),
        prefix=prompt.prefix,
        suffix=prompt.suffix,
        schema=schema,
        max_tokens=product_max_answer_tokens(job, len(images)),
    )


def product_max_answer_tokens(job: LabelJob, photos: int) -> int:
    return job.max_tokens + (ROLE_TOKENS_PER_PHOTO * photos + 16 if job.schema is not None else 0)


def _photo_entries(loaded: LoadedProduct, roles: list[Any] | None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for i, (path, image) in enumerate(loaded.sent):
        entries.append(
            {
                "path": display_path(path),
                "sha256": image.sha256,
                "file": file_block(image.identity),
                "image": image_block(image),
                "role": roles[i] if roles else None,
                "sent": True,
                "status": OK,
                "error": None,
            }
        )
    for path in loaded.not_sent:
        entries.append({"path": display_path(path), "sent": False, "status": "not_sent", "error": _NOT_SENT})
    for path, error in loaded.failed:
        entries.append(
            {
                "path": display_path(path),
                "sha256": error.sha256,
                "file": file_block(error.identity),
                "sent": False,
                "status": error.kind,
                "error": str(error),
            }
        )
    return entries


def _product_fields(record: dict[str, Any], loaded: LoadedProduct, roles: list[Any] | None) -> dict[str, Any]:
    record["product"] = loaded.product.key
    record["product_sha256"] = loaded.digest if loaded.sent else None
    record["images"] = _photo_entries(loaded, roles)
    return record


def product_error_record(job: LabelJob, loaded: LoadedProduct) -> dict[str, Any]:
    """A product none of whose photos could be read."""
    problems = "; ".join(f"{display_path(p)}: {e}" for p, e in loaded.failed[:3])
    record = error_record(loaded.product.paths[0], job.run, NO_READABLE_PHOTO, f"no readable photo ({problems})")
    return _product_fields(record, loaded, None)


class _RolesApart:
    """Takes the photo roles out of a product's answer before the label itself is shaped."""

    def __init__(self, job: LabelJob) -> None:
        self.job = job
        self.roles: list[str] | None = None

    def shape(self, answer: dict[str, Any]) -> Any:
        self.roles = [str(role) for role in answer.pop("photo_roles", [])]
        return self.job.shaper.shape(answer) if self.job.shaper is not None else answer


def product_record(job: LabelJob, loaded: LoadedProduct, generation: Generation) -> dict[str, Any]:
    """One record for the product: the label from all its photos, each photo's identity and role."""
    main_path, main = loaded.sent[0]
    if job.schema is None:  # a question: the answer is text, as for one photo
        return _product_fields(model_record(main_path, job.run, main, generation), loaded, None)
    roles = _RolesApart(job)
    run = dataclasses.replace(job.run, schema=product_schema(job.schema, len(loaded.sent)), shaper=roles)
    record = model_record(main_path, run, main, generation)
    return _product_fields(record, loaded, roles.roles)


def product_reused(job: LabelJob, loaded: LoadedProduct, source_key: str, source: dict[str, Any]) -> dict[str, Any]:
    """A product with the same photos as one labelled before: its label, this product's own key and files."""
    main_path, main = loaded.sent[0]
    role_of = {entry.get("sha256"): entry.get("role") for entry in source.get("images", []) if entry.get("sent")}
    roles = [role_of.get(image.sha256) for _, image in loaded.sent]
    record = reused_record(main_path, job.run, main, source_key, source)
    return _product_fields(record, loaded, roles if all(roles) else None)
