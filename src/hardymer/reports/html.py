"""One self-contained HTML page for a report (``hardymer report DIR --html``): ``report.html``.

Plain HTML with the images inlined as base64 PNG, the style in a ``<style>`` element and a few
lines of vanilla JavaScript that sort a table by the column clicked; nothing is fetched from
the network (no CDN, no font, no framework), so the file can be opened anywhere and sent.

:func:`explorer_html` is the one larger widget: a table whose rows travel as JSON in the page
(thousands of utterances stay light), filtered by one column's value and by free text, sorted
by a header click, a pinned subset shown first, and a click on a row opening its details. Data
reach the page only through ``textContent`` (never parsed as HTML).
"""
from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
.hx-controls { margin: .6em 0; display: flex; gap: 1em; align-items: center; flex-wrap: wrap; }
.hx tbody tr.hx-row { cursor: pointer; } .hx tbody tr.hx-row:hover { background: #f6f8fb; }
.hx tr.hx-detail > td { background: #fafbfc; white-space: normal; }
.hx dl { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; margin: .3em 0; }
.hx dt { color: #555; } .hx dd { margin: 0; }
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


# The explorer (see the module docstring): one closure per widget on the page.
EXPLORER_SCRIPT = """
document.querySelectorAll("div.hx").forEach(function (root) {
  const data = JSON.parse(root.querySelector("script.hx-data").textContent);
  const cols = data.columns, rows = data.rows, fi = cols.indexOf(data.filter_by),
        pi = cols.indexOf(data.first), LIMIT = 1000;
  const pick = root.querySelector("select.hx-filter"), find = root.querySelector("input.hx-find"),
        every = root.querySelector("input.hx-all"), count = root.querySelector(".hx-count"),
        head = root.querySelector("thead tr"), body = root.querySelector("tbody");
  let sortCol = -1, asc = true;
  const key = v => (typeof v === "number" ? [0, v] : [1, String(v).toLowerCase()]);
  function shown() {
    const q = find.value.trim().toLowerCase();
    const out = [];
    rows.forEach(function (r, i) {
      if (pick.value && String(r[fi]) !== pick.value) return;
      if (!every.checked && pi >= 0 && r[pi] === "") return;
      if (q && !r.some(v => String(v).toLowerCase().includes(q))) return;
      out.push(i);
    });
    if (sortCol >= 0) out.sort(function (a, b) {
      const x = key(rows[a][sortCol]), y = key(rows[b][sortCol]);
      const c = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
      return asc ? c : -c;
    });
    return out;
  }
  function cell(tag, text, cls) {
    const e = document.createElement(tag); e.textContent = text; if (cls) e.className = cls;
    return e;
  }
  function details(i) {
    const td = document.createElement("td"), dl = document.createElement("dl");
    td.colSpan = cols.length;
    data.fields.forEach(function (f, j) {
      const v = data.values[i][j];
      if (v === "") return;
      dl.appendChild(cell("dt", f)); dl.appendChild(cell("dd", String(v)));
    });
    td.appendChild(dl);
    const sub = data.sub_rows[i];
    if (sub.length) {
      td.appendChild(cell("b", data.sub_title.replace("{n}", sub.length)));
      const t = document.createElement("table"), hr = document.createElement("tr");
      data.sub_columns.forEach(c => hr.appendChild(cell("th", c)));
      t.appendChild(hr);
      sub.forEach(function (r) {
        const tr = document.createElement("tr");
        r.forEach(v => tr.appendChild(cell("td", String(v), typeof v === "number" ? "num" : "")));
        t.appendChild(tr);
      });
      td.appendChild(t);
    }
    const tr = document.createElement("tr"); tr.className = "hx-detail"; tr.appendChild(td);
    return tr;
  }
  function render() {
    const idx = shown();
    body.replaceChildren();
    idx.slice(0, LIMIT).forEach(function (i) {
      const tr = document.createElement("tr"); tr.className = "hx-row"; tr.dataset.row = i;
      rows[i].forEach(v => tr.appendChild(cell("td", String(v), typeof v === "number" ? "num" : "")));
      tr.addEventListener("click", function () {
        const next = tr.nextElementSibling;
        if (next && next.classList.contains("hx-detail")) next.remove();
        else tr.after(details(i));
      });
      body.appendChild(tr);
    });
    count.textContent = idx.length > LIMIT ? `first ${LIMIT} of ${idx.length} rows shown`
                                           : `${idx.length} of ${rows.length} rows`;
  }
  cols.forEach(function (c, j) {
    const th = cell("th", c);
    th.addEventListener("click", function () {
      asc = sortCol === j ? !asc : true; sortCol = j;
      head.querySelectorAll("th").forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      render();
    });
    head.appendChild(th);
  });
  pick.addEventListener("change", render); every.addEventListener("change", render);
  find.addEventListener("input", render);
  render();
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
    html: str = ""            # a fragment we built ourselves (e.g. :func:`explorer_html`), last


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


def _json_value(v):
    if isinstance(v, (np.integer, np.bool_)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return round(float(v), 4) if np.isfinite(v) else ""
    return "" if v is None else v if isinstance(v, (int, str)) else str(v)


def explorer_html(table: pd.DataFrame, fields: pd.DataFrame | None = None,
                  sub_rows: list[list[list]] | None = None, sub_columns: tuple[str, ...] = (),
                  sub_title: str = "{n} rows", *, filter_by: str, first: str | None = None,
                  note: str = "", label: str = "rows") -> str:
    """A filterable, sortable table whose rows open their details on a click.

    Parameters
    ----------
    table : the columns shown, one row per item, in the order shown before any sort
    fields : (same rows) values listed as "column: value" in a row's details (empty ones left
        out)
    sub_rows : per row, the rows of a small table shown in its details (``sub_columns``
        heads it, ``sub_title`` with ``{n}`` the number of rows titles it; none when empty)
    filter_by : column whose value a drop-down selects (all values by default)
    first : column that marks the rows shown first: rows where it is empty stay hidden until
        "show all" is ticked
    """
    n = len(table)
    if (fields is not None and len(fields) != n) or (sub_rows is not None and len(sub_rows) != n):
        raise ValueError(f"details for {len(fields) if fields is not None else len(sub_rows)} "
                         f"rows, table of {n}")
    rows = lambda df: [[_json_value(v) for v in r] for r in df.itertuples(index=False)]  # noqa: E731
    data = {"columns": [str(c) for c in table.columns], "filter_by": filter_by,
            "first": first or "", "rows": rows(table),
            "fields": [str(c) for c in fields.columns] if fields is not None else [],
            "values": rows(fields) if fields is not None else [[] for _ in range(n)],
            "sub_columns": list(sub_columns), "sub_title": sub_title,
            "sub_rows": [[[_json_value(v) for v in r] for r in sub] for sub in sub_rows]
            if sub_rows is not None else [[] for _ in range(n)]}
    # "<" escaped so that no value can close the script element
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    options = "".join(f'<option value="{html.escape(str(v))}">{html.escape(str(v))}</option>'
                      for v in dict.fromkeys(table[filter_by].astype(str)))
    pinned = (f'<label><input type="checkbox" class="hx-all"> show all {n} {label}'
              "</label>") if first else '<input type="checkbox" class="hx-all" checked hidden>'
    return (f'<div class="hx">{f"<p class=note>{html.escape(note)}</p>" if note else ""}'
            f'<div class="hx-controls"><label>{html.escape(filter_by)} <select class="hx-filter">'
            f'<option value="">all</option>{options}</select></label>'
            f'<label>find <input type="search" class="hx-find" placeholder="id, label, text">'
            f'</label>{pinned}<span class="hx-count note"></span></div>'
            '<div class="scroll"><table class="hx-table"><thead><tr></tr></thead><tbody></tbody>'
            f'</table></div><script type="application/json" class="hx-data">{payload}</script>'
            "</div>")


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
        if s.html:
            body.append(s.html)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}{EXPLORER_SCRIPT}</script>\n</body></html>\n")
