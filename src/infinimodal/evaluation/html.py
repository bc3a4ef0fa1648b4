"""The HTML of the report and compare pages: sections of tables, notes and embedded PNG figures, one self-contained
page (no script, no network)."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Sequence


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    html: list[str] = field(default_factory=list)  # tables, notes (already escaped)
    figures: list[Figure] = field(default_factory=list)
    #: details a reader opens when needed (the configuration): the body is folded under the title
    folded: bool = False


def flatten(values: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name} / ")
        else:
            out[name] = value
    return out


def format_value(value) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def table(
    rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, bold: AbstractSet[tuple[int, int]] = frozenset()
) -> str:
    lines = ["<table>"]
    if header:
        lines.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            text = html.escape(cell)
            cells.append(f"<td><b>{text}</b></td>" if (r, c) in bold else f"<td>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def tables_side_by_side(rows: Sequence[Sequence[str]], header: Sequence[str], columns: int) -> str:
    """A long two-column table cut into `columns` tables next to each other (less scrolling)."""
    size = max(1, math.ceil(len(rows) / columns))
    parts = [table(rows[i : i + size], header) for i in range(0, len(rows), size)]
    return '<div class="tables">' + "".join(parts) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


# --- the page -----------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #2b3a4a; color: white; padding: 16px 28px; }
header h1 { margin: 0; font-size: 22px; }
nav { padding: 8px 28px; background: #eef1f4; font-size: 14px; }
nav a { margin-right: 14px; color: #2b3a4a; }
main { padding: 4px 28px 28px 28px; max-width: 1400px; }
section { background: white; border: 1px solid #e2e2e2; border-radius: 6px; margin: 16px 0; padding: 4px 18px 14px 18px; }
h2 { font-size: 18px; border-bottom: 1px solid #e2e2e2; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 12px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
figure { margin: 10px 0 18px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
p.intro { font-size: 14px; max-width: 1000px; }
p.note { font-size: 14px; color: #7a5a00; background: #fff8e1; padding: 6px 10px; border-radius: 4px; }
.tables { display: flex; flex-wrap: wrap; gap: 0 24px; align-items: flex-start; }
.side { display: grid; gap: 12px; }
.side > div { min-width: 0; }
.side img { max-width: 100%; height: auto; border: 1px solid #eee; }
footer { color: #888; font-size: 12px; padding: 0 28px 20px 28px; }
"""


def embed_png(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def figure_html(figure: Figure, base: Path) -> str:
    try:
        link = figure.path.relative_to(base).as_posix()
    except ValueError:
        link = figure.path.as_posix()
    return (
        f"<figure>{embed_png(figure.path, figure.caption)}"
        f'<figcaption>{html.escape(figure.caption)} (<a href="{html.escape(link)}">{html.escape(figure.path.name)}</a>)</figcaption></figure>'
    )


def render_page(title: str, sections: Sequence[Section], footer: str = "", base: Path | None = None) -> str:
    """One self-contained HTML page; figures are embedded, and linked as files relative to `base`."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1></header>",
        "<nav>" + "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections) + "</nav><main>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.id}"><h2>{html.escape(section.title)}</h2>')
        if section.folded:
            parts.append("<details><summary>show</summary>")
        if section.intro:
            parts.append(f'<p class="intro">{html.escape(section.intro)}</p>')
        parts.extend(section.html)
        for figure in section.figures:
            parts.append(figure_html(figure, base if base is not None else figure.path.parent.parent))
        parts.append("</details></section>" if section.folded else "</section>")
    parts.append(f"</main><footer>{html.escape(footer)}</footer></body></html>")
    return "\n".join(parts) + "\n"
