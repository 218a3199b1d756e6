"""Label Studio files, no SDK: a labeling config and tasks with our labels as predictions, and its export read back."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from ..errors import UsageError
from ..labeling.config import LabelConfig
from ..labeling.vocabularies import VOCABULARY_ATTRIBUTES
from .values import REVIEW_TASK_FIELDS, check_fields
from .values import as_dict as _dict

IMAGE = "image"  # the Image tag's name, and the task data key it reads
CATEGORY = "category"
VERDICT = "verdict"
BRAND = "brand"
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")  # it names TextAreas (title_zh-TW)


def _element(parent: ElementTree.Element, tag: str, **attributes: str) -> ElementTree.Element:
    return ElementTree.SubElement(parent, tag, attributes)


def labeling_config(config: LabelConfig, records: list[dict[str, Any]], languages: list[str]) -> str:
    """`config.xml`: the photo; the category taxonomy (the whole subtree of every top level in play); one
    multiple-choice block per vocabulary; the brand and title/description per language as text; accept/reject.
    Built with an XML library: record wording lands in attribute values, escaped, never in the markup."""
    for lang in languages:
        if not LANGUAGE_TAG.fullmatch(lang):
            raise UsageError(f"a record's languages hold {lang!r}, not a language tag (such as en or zh-TW)")
    taxonomy = config.taxonomy
    tops = sorted({p[0] for r in records if (p := _dict(_dict(r.get("label")).get("category")).get("path"))})
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for node in taxonomy.nodes.values():
        if node.path[0] in tops and len(node.path) > 1:
            children.setdefault(tuple(node.path[:-1]), []).append(tuple(node.path))

    def choices(parent: ElementTree.Element, path: tuple[str, ...]) -> None:
        choice = _element(parent, "Choice", value=path[-1])
        for child in sorted(children.get(path, [])):
            choices(choice, child)

    view = ElementTree.Element("View")
    _element(view, "Image", name=IMAGE, value=f"${IMAGE}", maxWidth="640px")
    _element(view, "Header", value="Category")
    tree = _element(view, "Taxonomy", name=CATEGORY, toName=IMAGE, maxUsages="1", leafsOnly="false")
    for top in tops:
        choices(tree, (top,))
    for attribute in VOCABULARY_ATTRIBUTES:
        vocabulary = config.vocabularies.get(attribute)
        if vocabulary is None or not vocabulary.values:
            continue
        _element(view, "Header", value=attribute)
        block = _element(view, "Choices", name=attribute, toName=IMAGE, choice="multiple", showInline="true")
        for value in sorted(vocabulary.values):
            _element(block, "Choice", value=value)
    _element(view, "Header", value="brand")
    _element(view, "TextArea", name=BRAND, toName=IMAGE, maxSubmissions="1", editable="true")
    for lang in languages:
        for part in ("title", "description"):
            _element(view, "Header", value=f"{part} ({lang})")
            _element(view, "TextArea", name=f"{part}_{lang}", toName=IMAGE, maxSubmissions="1", editable="true")
    verdict = _element(view, "Choices", name=VERDICT, toName=IMAGE, choice="single", showInline="true")
    for value in ("accept", "reject"):
        _element(verdict, "Choice", value=value)
    ElementTree.indent(view)
    return ElementTree.tostring(view, encoding="unicode") + "\n"


def confidence(label: dict[str, Any]) -> float:
    """What reviewers sort by, least sure first: the category match score and the share of attribute
    wordings a vocabulary value took, averaged."""
    match = _dict(label.get("category")).get("match")
    entries = [
        e for v in _dict(label.get("attributes")).values() if isinstance(v, list) for e in v if isinstance(e, dict)
    ]
    mapped = sum(1 for e in entries if e.get("value")) / len(entries) if entries else 1.0
    return round(((float(match) if isinstance(match, int | float) else 0.0) + mapped) / 2, 4)


def image_url(path: str, document_root: str | None, base_url: str | None) -> str:
    """Label Studio's local-files URL under LOCAL_FILES_DOCUMENT_ROOT, or the given base URL + the path."""
    if base_url:
        relative = os.path.relpath(path, document_root) if document_root else path
        return base_url.rstrip("/") + "/" + urllib.parse.quote(relative.replace(os.sep, "/"))
    absolute = os.path.abspath(path)  # a record's relative path is relative to where batch ran: run export there
    relative = os.path.relpath(absolute, document_root) if document_root else absolute.lstrip("/")
    if relative == ".." or relative.startswith("../"):
        raise UsageError(
            f"{path} is not under --root {document_root}: Label Studio serves local files from that folder only "
            "(run export in the folder batch ran in, with --root holding the photos)"
        )
    return "/data/local-files/?d=" + urllib.parse.quote(relative.replace(os.sep, "/"))


def _result(from_name: str, kind: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"from_name": from_name, "to_name": IMAGE, "type": kind, "value": value}


def prediction_results(label: dict[str, Any], languages: list[str]) -> list[dict[str, Any]]:
    results = []
    category = _dict(label.get("category"))
    if category.get("path"):
        results.append(_result(CATEGORY, "taxonomy", {"taxonomy": [list(category["path"])]}))
    attributes = _dict(label.get("attributes"))
    for attribute in VOCABULARY_ATTRIBUTES:
        values = sorted({e["value"] for e in attributes.get(attribute) or [] if isinstance(e, dict) and e.get("value")})
        if values:
            results.append(_result(attribute, "choices", {"choices": values}))
    if isinstance(label.get("brand"), str) and label["brand"]:
        results.append(_result(BRAND, "textarea", {"text": [label["brand"]]}))
    copy = _dict(label.get("copy"))
    for lang in languages:
        block = _dict(copy.get(lang))
        for part in ("title", "description"):
            if isinstance(block.get(part), str) and block[part]:
                results.append(_result(f"{part}_{lang}", "textarea", {"text": [block[part]]}))
    return results


def task(
    record: dict[str, Any], languages: list[str], document_root: str | None, base_url: str | None
) -> dict[str, Any]:
    label = _dict(record.get("label"))
    return {
        "data": {
            IMAGE: image_url(record["path"], document_root, base_url),
            "path": record["path"],
            "sha256": record.get("sha256"),
        },
        "predictions": [{
            "model_version": str(record.get("run")),
            "score": confidence(label),
            "result": prediction_results(label, languages),
        }],
    }  # fmt: skip


def _shown_id(value: Any) -> str:
    return str(value) if isinstance(value, int | str) and len(str(value)) <= 40 else "?"


# -- the export, read back -------------------------------------------------------------------


@dataclass
class ReviewReport:
    tasks: int = 0
    reviewed: int = 0
    rejected_unchanged: int = 0  # rejected without a correction: no gold to take from them
    without_path: int = 0  # reviewed tasks whose data.path is missing: gold no record could be matched by path
    changed: Counter[str] = field(default_factory=Counter)  # field -> tasks where the reviewer changed it
    kept: Counter[str] = field(default_factory=Counter)  # field -> tasks where the prediction stood


def _fields(results: list[Any]) -> dict[str, Any]:
    """from_name -> its value, the way the gold wants it."""
    out: dict[str, Any] = {}
    for item in results:
        item = _dict(item)
        value = _dict(item.get("value"))
        name = item.get("from_name")
        if not isinstance(name, str):
            continue
        if value.get("taxonomy"):
            out[name] = list(value["taxonomy"][0])
        elif "choices" in value:
            out[name] = sorted(value["choices"])
        elif "text" in value:
            text = value["text"]
            out[name] = (text[0] if isinstance(text, list) and text else str(text)).strip()
    return out


def _latest_annotation(entry: dict[str, Any]) -> dict[str, Any] | None:
    kept = [a for a in entry.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    return max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def review_to_gold(export: list[Any], report: ReviewReport, source: str = "the export") -> list[dict[str, Any]]:
    """Gold lines from Label Studio's JSON export: each task's latest non-cancelled annotation, with fields
    it leaves out taken from the prediction (left untouched means accepted). A field of the wrong type is a
    usage error naming the task and the field; a task without data.path is left out and counted."""
    gold = []
    for number, entry in enumerate(export, start=1):
        if not isinstance(entry, dict):
            raise UsageError(f"{source}: task {number} is not an object")
        check_fields(entry, f"{source}: task {number} (id {_shown_id(entry.get('id'))})", REVIEW_TASK_FIELDS)
        report.tasks += 1
        annotation = _latest_annotation(entry)
        if annotation is None:
            continue
        report.reviewed += 1
        # Label Studio's JSON export lists a task's predictions by id and puts the prediction an
        # annotation started from inside it; a tasks.json (or an older export) holds them whole.
        whole = [p for p in entry.get("predictions") or [] if isinstance(p, dict) and isinstance(p.get("result"), list)]
        started_from = _dict(annotation.get("prediction")).get("result")
        predicted = _fields(whole[-1]["result"] if whole else started_from if isinstance(started_from, list) else [])
        reviewed = _fields(annotation.get("result") or [])
        verdict = reviewed.pop(VERDICT, [""])
        predicted.pop(VERDICT, None)
        changed = {name for name in reviewed if reviewed[name] != predicted.get(name)}
        if verdict == ["reject"] and not changed:
            report.rejected_unchanged += 1
            continue
        for name in set(predicted) | set(reviewed):
            (report.changed if name in changed else report.kept)[name] += 1
        final = {**predicted, **reviewed}
        data = _dict(entry.get("data"))
        if not data.get("path"):
            report.without_path += 1
            continue
        label: dict[str, Any] = {}
        if CATEGORY in final:
            label["category"] = {"path": final[CATEGORY]}
        attributes = {a: final[a] for a in VOCABULARY_ATTRIBUTES if a in final}
        if attributes:
            label["attributes"] = attributes
        if BRAND in final:
            label["brand"] = final[BRAND]
        copy: dict[str, dict[str, str]] = {}
        for name, value in final.items():
            part, _, lang = name.partition("_")
            if part in {"title", "description"} and lang:
                copy.setdefault(lang, {})[part] = value
        if copy:
            label["copy"] = copy
        gold.append({"path": data.get("path"), "sha256": data.get("sha256"), "label": label})
    return gold
