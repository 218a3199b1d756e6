"""The `eval --html` report: one self-contained file (no CDN, thumbnails inline) a person opens in a browser."""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

THUMBNAIL_PX = 160

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1d2430; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #dde2ea; }
table { border-collapse: collapse; } td, th { padding: 4px 8px; text-align: left; vertical-align: top; }
.bars td.bar { width: 320px; } .track { background: #eef1f6; height: 14px; border-radius: 3px; }
.fill { background: #3b6fd8; height: 14px; border-radius: 3px; } .ci { color: #6a7385; font-size: 12px; }
.matrix td, .matrix th { border: 1px solid #dde2ea; text-align: right; min-width: 2.5rem; }
.matrix th.row { text-align: left; } .matrix .diag { outline: 2px solid #2a9d58; outline-offset: -2px; }
.example { display: flex; gap: 1rem; margin: .75rem 0; padding: .75rem; border: 1px solid #dde2ea; border-radius: 6px; }
.example img { width: 160px; height: auto; border-radius: 4px; background: #eef1f6; }
.noimage { width: 160px; height: 120px; background: #eef1f6; display: flex; align-items: center;
  justify-content: center; color: #6a7385; }
.wrong { color: #b3261e; } .right { color: #2a9d58; } code { font-size: 12px; }
"""


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _bar(name: str, measure: str, value: float | None, interval: list[float | None] | None, n: int) -> str:
    width = 0.0 if value is None else max(0.0, min(1.0, value)) * 100
    ci = ""
    if interval and interval[0] is not None and interval[1] is not None:
        ci = f'<span class="ci">95% CI {_pct(interval[0])}–{_pct(interval[1])}</span>'
    return (
        f"<tr><td>{escape(name)}</td><td>{escape(measure)}</td>"
        f'<td class="bar"><div class="track"><div class="fill" style="width:{width:.1f}%"></div></div></td>'
        f"<td>{_pct(value)} {ci}</td><td>n={n}</td></tr>"
    )


def _bars(report: dict[str, Any]) -> str:
    rows = []
    for name, outcome in report["category"].items():
        rows.append(_bar("category", name.replace("_", " "), outcome["value"], outcome["ci95"], outcome["n"]))
    for name, scores in report["attributes"].items():
        micro = scores["micro"]
        rows.append(_bar(name, "micro F1", micro["f1"], micro["f1_ci95"], scores["n"]))
        rows.append(_bar(name, "macro F1", scores["macro"]["f1"], None, scores["n"]))
        rows.append(_bar(name, "wording unmapped (lower is better)", scores["raw_unmapped"], None, scores["n"]))
    for name in ("brand", "visible_text"):
        block = report[name]
        if block["exact"]["n"]:
            rows.append(_bar(name, "exact", block["exact"]["value"], block["exact"]["ci95"], block["exact"]["n"]))
            rows.append(_bar(name, "token F1", block["token_f1"], block["token_f1_ci95"], block["exact"]["n"]))
    copy = report["copy"]
    outcome = copy["within_length_limits"]
    rows.append(_bar("copy", "titles within the limit", outcome["value"], outcome["ci95"], outcome["n"]))
    for lang, outcome in copy["language_script"].items():
        rows.append(_bar("copy", f"{lang} in its script", outcome["value"], outcome["ci95"], outcome["n"]))
    return '<table class="bars">' + "".join(rows) + "</table>"


def _matrix(report: dict[str, Any]) -> str:
    pairs = report["top_level_confusion"]
    if not pairs:
        return "<p>No record with a gold category.</p>"
    gold_tops = sorted({g for g, _, _ in pairs})
    predicted_tops = sorted({p for _, p, _ in pairs} | set(gold_tops))
    counts = {(g, p): n for g, p, n in pairs}
    most = max(counts.values())
    head = "".join(f"<th>{escape(p)}</th>" for p in predicted_tops)
    rows = []
    for g in gold_tops:
        cells = []
        for p in predicted_tops:
            n = counts.get((g, p), 0)
            shade = f"background: rgba(59,111,216,{0.08 + 0.6 * n / most:.2f})" if n else ""
            diag = ' class="diag"' if g == p else ""
            cells.append(f'<td{diag} style="{shade}">{n or ""}</td>')
        rows.append(f'<tr><th class="row">{escape(g)}</th>{"".join(cells)}</tr>')
    return f'<table class="matrix"><tr><th>gold \\ predicted</th>{head}</tr>{"".join(rows)}</table>'


def thumbnail(path: str, base: Path) -> str | None:
    """A small JPEG of the photo as a data URI; None when the file is not there or not an image."""
    target = Path(path)
    if not target.is_absolute():
        target = base / target
    try:
        with Image.open(target) as im:
            im.draft("RGB", (THUMBNAIL_PX * 2, THUMBNAIL_PX * 2))
            small = im.convert("RGB")
            small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=80)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _line(name: str, predicted: str, gold: str, right: bool | None) -> str:
    css = "" if right is None else f' class="{"right" if right else "wrong"}"'
    return f'<div{css}>{escape(name)}: {escape(predicted or "–")} <span class="ci">gold: {escape(gold)}</span></div>'


def _example(example: dict[str, Any], base: Path) -> str:
    uri = thumbnail(str(example["path"]), base)
    picture = f'<img src="{uri}" alt="">' if uri else '<div class="noimage">no image</div>'
    lines = []
    category = example["category"]
    if category["gold"] is not None:
        predicted = " > ".join(category["predicted"] or [])
        lines.append(
            _line("category", predicted, " > ".join(category["gold"]), category["predicted"] == category["gold"])
        )
    for name, values in example["attributes"].items():
        right = values["predicted"] == values["gold"]
        lines.append(_line(name, ", ".join(values["predicted"]), ", ".join(values["gold"]), right))
    if example.get("brand"):
        lines.append(_line("brand", str(example["brand"]["predicted"] or ""), example["brand"]["gold"], None))
    return (
        f'<div class="example">{picture}<div><code>{escape(str(example["path"]))}</code>'
        f" · fields right {_pct(example['score'])}{''.join(lines)}</div></div>"
    )


def render_html(report: dict[str, Any], title: str, base: Path) -> str:
    """The report as one HTML page; every text from records or gold is escaped, images are inline."""
    statuses = ", ".join(f"{escape(k)} {_pct(v)}" for k, v in report["statuses"].items())
    speed = report["speed_ms"]
    timing = f"; {speed['p50']:.0f} ms per image (p50), {speed['p95']:.0f} (p95)" if speed["n"] else ""
    examples = "".join(_example(e, base) for e in report["worst"]) or "<p>No record with gold.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p id="summary">{report["records"]} records, {report["matched_with_gold"]} with gold. Statuses: {statuses}{timing}.</p>
<h2>Fields against gold</h2>
{_bars(report)}
<h2>Top-level category: gold against prediction</h2>
{_matrix(report)}
<h2>Worst examples</h2>
{examples}
</body></html>
"""


def render_compare_html(report: dict[str, Any], title: str, base: Path) -> str:
    """The `compare --html` page: agreement per field, the winner per field against gold, differing examples."""
    bars = "".join(
        _bar(name.replace("_", " "), "A and B agree", o["value"], o["ci95"], o["n"])
        for name, o in report["agreement"].items()
    )
    rows = "".join(
        f"<tr><td>{escape(name.replace('_', ' '))}</td><td>{_pct(w['a_right'])}</td><td>{_pct(w['b_right'])}</td>"
        f"<td>{w['a_only_right']}</td><td>{w['b_only_right']}</td><td>{w['mcnemar_p']:.3g}</td>"
        f"<td>{(w['winner'] or '').upper() or 'neither'}</td><td>{w['n']}</td></tr>"
        for name, w in report["against_gold"].items()
    )
    gold = (
        '<table class="matrix"><tr><th>field</th><th>A right</th><th>B right</th><th>only A</th><th>only B</th>'
        f"<th>McNemar p</th><th>winner (p &lt; 0.05)</th><th>n</th></tr>{rows}</table>"
        if rows
        else "<p>No gold given (or none matched).</p>"
    )
    examples = []
    for example in report["disagreements"]:
        uri = thumbnail(str(example["path"]), base)
        picture = f'<img src="{uri}" alt="">' if uri else '<div class="noimage">no image</div>'
        lines = "".join(
            f"<div>{escape(name)}: <b>A</b> {escape(str(v['a']))} · <b>B</b> {escape(str(v['b']))}</div>"
            for name, v in example["fields"].items()
        )
        examples.append(f'<div class="example">{picture}<div><code>{escape(example["path"])}</code>{lines}</div></div>')
    speed = report["ms_per_image_p50"]
    summary = (
        f"{report['both_ok']} photos ok in both runs; only in A {report['only_in_a']}, "
        f"only in B {report['only_in_b']}. "
        f"ms per image (p50): A {speed['a'] or '–'}, B {speed['b'] or '–'}."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p id="summary">{escape(summary)}</p>
<h2>Where A and B agree</h2>
<table class="bars">{bars}</table>
<h2>Against gold: which wins</h2>
{gold}
<h2>Where they differ</h2>
{"".join(examples) or "<p>They agree on every photo.</p>"}
</body></html>
"""
