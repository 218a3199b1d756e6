"""Compliance rules on tables of real listing wording: claims flagged, facts left alone, strict rewrites readable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from qvl_label.labeling.compliance import check_copy
from qvl_label.labeling.config import load_config

DATA = Path(__file__).parent / "data"
CONFIG = load_config()
LANGUAGES = tuple(sorted(p.stem.split("-")[1] for p in DATA.glob("compliance-*.tsv")))


@dataclass(frozen=True)
class Case:
    lang: str
    expect: str
    text: str
    terms: tuple[str, ...]
    strict: str


def _cases(lang: str) -> list[Case]:
    cases = []
    for line in (DATA / f"compliance-{lang}.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        expect, text, terms, strict = [*line.split("\t"), "", "", ""][:4]
        cases.append(Case(lang, expect, text, tuple(t for t in terms.split(",") if t), strict))
    return cases


ALL = [case for lang in LANGUAGES for case in _cases(lang)]


def _copy(case: Case) -> dict[str, dict[str, object]]:
    return {case.lang: {"title": "", "description": case.text, "selling_points": [], "tags": []}}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_language_has_forty_claims_and_forty_facts(lang: str) -> None:
    cases = _cases(lang)
    assert sum(c.expect == "flag" for c in cases) >= 40
    assert sum(c.expect == "clean" for c in cases) >= 40


@pytest.mark.parametrize("case", [c for c in ALL if c.expect == "clean"], ids=lambda c: f"{c.lang}:{c.text}")
def test_facts_are_not_flagged(case: Case) -> None:
    flags, _ = check_copy(_copy(case), CONFIG.rules, {166}, strict=False)
    assert flags == [], [f["text"] for f in flags]


@pytest.mark.parametrize("case", [c for c in ALL if c.expect == "flag"], ids=lambda c: f"{c.lang}:{c.text}")
def test_claims_are_flagged_and_strict_rewrites_whole_words(case: Case) -> None:
    flags, _ = check_copy(_copy(case), CONFIG.rules, {166}, strict=False)
    assert sorted(f["text"].lower() for f in flags) == sorted(t.lower() for t in case.terms)
    for flag in flags:
        assert case.text[flag["span"][0] : flag["span"][1]] == flag["text"]
    copy = _copy(case)
    strict_flags, warnings = check_copy(copy, CONFIG.rules, {166}, strict=True)
    rewritten = copy[case.lang]["description"]
    if case.strict == "=":  # removing the claim would empty the field: kept, flagged, and a person is asked
        assert rewritten == case.text
        assert {f["action"] for f in strict_flags} == {"kept"} and warnings
    else:
        assert rewritten == case.strict
        assert rewritten.strip()
