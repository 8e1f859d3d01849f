"""One self-contained HTML page for a report (``hardymer report DIR --html``): ``report.html``.

Plain HTML with the images inlined as base64 PNG, the style in a ``<style>`` element and a few
lines of vanilla JavaScript that sort a table by the column clicked; nothing is fetched from
the network (no CDN, no font, no framework), so the file can be opened anywhere and sent.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 84em; color: #222;
       padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; }
.provenance { background: #f4f6f8; padding: .8em 1em; border-left: 4px solid #5b8def; }
.note { color: #555; font-size: .92em; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; white-space: nowrap; }
td.num { text-align: right; }
details > summary { cursor: pointer; color: #345; margin: .4em 0; }
th { background: #eef1f5; cursor: pointer; user-select: none; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
.scroll { overflow-x: auto; }
"""

# Click a header: sort the rows by that column (numbers by their leading value, so "74.1 ± 1.0"
# and "**75.2**" sort as 74.1 and 75.2; text otherwise); a second click reverses.
SCRIPT = """
function cellKey(td) {
  const t = td.textContent.trim(); const m = t.match(/^[*\\s]*(-?\\d+(?:\\.\\d+)?(?:e-?\\d+)?)/i);
  return m ? [0, parseFloat(m[1])] : [1, t.toLowerCase()];
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      const body = table.tBodies[0]; const rows = Array.from(body.rows);
      const asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      rows.sort(function (a, b) {
        const x = cellKey(a.cells[col]), y = cellKey(b.cells[col]);
        const c = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
        return asc ? c : -c;
      });
      rows.forEach(r => body.appendChild(r));
    });
  });
});
"""


NUMBER = re.compile(r"^-?\d+(\.\d+)?(e-?\d+)?( ± \d+(\.\d+)?)?$", re.I)


@dataclass
class Section:
    """A heading with, in order: a note, a table, images, then Markdown we wrote ourselves.
    ``folded``: the table starts collapsed (long ones), a click opens it."""

    title: str
    note: str = ""
    table: pd.DataFrame | None = None
    images: list[Path] = field(default_factory=list)
    markdown: str = ""
    folded: bool = False


def table_html(df: pd.DataFrame) -> str:
    """A sortable table; cell text escaped, ``**x**`` (the best mean) shown bold."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            text = html.escape("" if pd.isna(v) else str(v))
            bold = text.startswith("**") and text.endswith("**") and len(text) > 4
            if bold:
                text = text[2:-2]
            num = ' class="num"' if NUMBER.match(text) else ""
            cells.append(f"<td{num}>{f'<b>{text}</b>' if bold else text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def image_html(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(Path(path).stem.replace("_", " "))
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def markdown_html(text: str) -> str:
    """The Markdown subset our reports write: ``#`` headings, pipe tables, paragraphs."""
    out, para, table = [], [], []

    def flush():
        if para:
            out.append(f"<p>{html.escape(' '.join(para))}</p>")
            para.clear()
        if table:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table
                     if not set(line.replace("|", "").strip()) <= set("-: ")]
            out.append(table_html(pd.DataFrame(cells[1:], columns=cells[0])))
            table.clear()
    for line in text.splitlines():
        if line.startswith("|"):
            if para:
                flush()
            table.append(line)
            continue
        if table:
            flush()
        if line.startswith("#"):
            flush()
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            para.append(line.strip())
        else:
            flush()
    flush()
    return "\n".join(out)


def render(title: str, provenance: str, sections: list[Section]) -> str:
    """The whole page: title, provenance, then each section."""
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="provenance">{html.escape(provenance)}</p>']
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.note:
            body.append(f'<p class="note">{html.escape(s.note)}</p>')
        if s.table is not None and s.folded:
            body.append(f"<details><summary>{len(s.table)} rows: show</summary>"
                        f"{table_html(s.table)}</details>")
        elif s.table is not None:
            body.append(table_html(s.table))
        body += [image_html(p) for p in s.images]
        if s.markdown:
            body.append(markdown_html(s.markdown))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
