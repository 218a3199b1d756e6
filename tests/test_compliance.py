"""Compliance rules on tables of real listing wording: claims flagged, facts left alone, strict rewrites readable."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from qvl_label.labeling.compliance import check_copy, find
from qvl_label.labeling.config import Rule, load_config

DATA = Path(__file__).parent / "data"
CONFIG = load_config()
HELD_OUT = ("heldout", "sealed")  # compliance-heldout.tsv and -sealed.tsv: wording the rules were not fitted to
LANGUAGES = tuple(sorted(lang for p in DATA.glob("compliance-*.tsv") if (lang := p.stem.split("-")[1]) not in HELD_OUT))


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


def _held_out(name: str) -> list[tuple[str, str, str, str]]:
    """(lang, expect, class, text) rows of compliance-heldout.tsv or compliance-sealed.tsv."""
    rows = []
    for line in (DATA / f"compliance-{name}.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            lang, expect, kind, text = line.split("\t")
            rows.append((lang, expect, kind, text))
    return rows


def _flags(lang: str, text: str) -> list[dict[str, object]]:
    copy = {lang: {"title": "", "description": text, "selling_points": [], "tags": []}}
    return check_copy(copy, CONFIG.rules, {166}, strict=False)[0]


def test_held_out_tables_cover_both_classes_in_both_languages() -> None:
    for name in HELD_OUT:
        rows = _held_out(name)
        for lang in ("en", "zh"):
            for expect, kind in (("flag", "untriggered"), ("clean", "context-fact")):
                assert sum(r[0] == lang and r[1] == expect and r[2] == kind for r in rows) >= 3, (name, lang, kind)


@pytest.mark.parametrize("row", _held_out("heldout"), ids=lambda r: f"{r[0]}:{r[3]}")
def test_held_out_claims_without_a_trigger_word_and_facts_with_one(row: tuple[str, str, str, str]) -> None:
    """Issue #27's wording and fresh wording per class, written before the rules were changed."""
    lang, expect, _, text = row
    flags = _flags(lang, text)
    if expect == "flag":
        assert flags, text
    else:
        assert flags == [], [f["text"] for f in flags]


def test_sealed_table_stays_at_its_measured_result() -> None:
    """Never tuned on: before the change 1 of 10 claims flagged and 6 of 10 facts falsely flagged;
    after it 9 claims flagged (五天祛黄提亮，一抹就白 is missed) and no false flag."""
    rows = _held_out("sealed")
    flagged = sum(bool(_flags(lang, text)) for lang, expect, _, text in rows if expect == "flag")
    false_flags = sum(bool(_flags(lang, text)) for lang, expect, _, text in rows if expect == "clean")
    assert flagged >= 9 and false_flags == 0


def test_every_rule_names_its_legal_basis() -> None:
    for rule in CONFIG.rules:
        assert rule.basis.strip(), rule.id


ZWSP, ZWJ, SOFT_HYPHEN, WORD_JOINER = "\u200b", "\u200d", "\u00ad", "\u2060"


@pytest.mark.parametrize(
    ("lang", "text", "flagged"),
    [
        ("en", f"The be{ZWSP}st running shoe.", f"The be{ZWSP}st"),
        ("en", f"Guaran{ZWJ}teed results.", f"Guaran{ZWJ}teed"),
        ("en", f"Revolu{SOFT_HYPHEN}tionary design.", f"Revolu{SOFT_HYPHEN}tionary"),
        ("en", "The ｂｅｓｔ running shoe.", "The ｂｅｓｔ"),  # full-width letters
        # mixed: full-width letters, a zero-width space, a soft hyphen and a word joiner
        ("en", f"Ｇｕａｒ{ZWSP}ａｎ{SOFT_HYPHEN}teed{WORD_JOINER} comfort.", f"Ｇｕａｒ{ZWSP}ａｎ{SOFT_HYPHEN}teed"),
        ("en", f"Soft sole. It cu{ZWSP}res back pain.", f"cu{ZWSP}res"),  # a medical claim: its sentence goes
        ("en", "The b\u0435st running shoe.", "The b\u0435st"),  # a Cyrillic е inside a Latin word
        ("en", "GU\u0391R\u0391NTEED results.", "GU\u0391R\u0391NTEED"),  # Greek capital alphas
        ("en", "The \u0412\u0415\u0405\u0422 running shoe.", "The \u0412\u0415\u0405\u0422"),  # all Cyrillic
        ("zh", f"最{ZWSP}好的纯棉T恤。", f"最{ZWSP}好"),
        ("zh", f"温和配方。无{ZWJ}副作用。", f"无{ZWJ}副作用"),
    ],
)
def test_invisible_full_width_and_look_alike_characters_do_not_evade_the_rules(
    lang: str, text: str, flagged: str
) -> None:
    flags = _flags(lang, text)
    assert [f["text"] for f in flags] == [flagged]
    start, end = flags[0]["span"]  # type: ignore[misc]
    assert text[start:end] == flagged  # offsets are in the text as written, invisible characters included
    copy = {lang: {"title": "x", "description": text, "selling_points": [], "tags": []}}
    check_copy(copy, CONFIG.rules, {166}, strict=True)
    rewritten = str(copy[lang]["description"])
    assert flagged not in rewritten and rewritten.strip(), rewritten


@pytest.mark.parametrize(
    "text",
    ["Ｂｅｓｔ ｂｅｆｏｒｅ 2026-05.", f"Best{ZWSP} enjoyed cold.", f"Resin cu{SOFT_HYPHEN}res clear."],
)
def test_normalised_facts_stay_unflagged(text: str) -> None:
    assert _flags("en", text) == []


def test_look_alike_letters_of_real_cyrillic_text_stay_cyrillic() -> None:
    """A user's Russian rule still matches Russian words made only of letters that look Latin ("сор": litter)."""
    rule = Rule(id="ru-test", lang="ru", kind="term", terms=("сор", "лучший"), suggestion="", replacements={},
                skip_categories=())  # fmt: skip
    assert [hit.term for hit in find("Лучший корм: без сор и пыли.", [rule])] == ["лучший", "сор"]
    assert find("Лучший корм: без сор и пыли.", [replace(rule, lang="en", terms=("cop",))]) == []
