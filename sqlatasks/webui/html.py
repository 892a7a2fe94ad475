"""HTML for the dashboard: escaped f-strings, one stylesheet and a few lines of script.

No template engine: the pages are a handful of tables and forms, and every value goes through
`esc` (html.escape), so a task name or an error message never becomes markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import urlencode

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d232a;color:#fff;padding:.6em 1em;display:flex;gap:1.2em;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header b{margin-right:1em}
main{padding:1em}h1{font-size:1.3em;margin:.2em 0 .6em}
table{border-collapse:collapse;background:#fff;margin-bottom:1em}
th,td{padding:.3em .7em;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef1f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.failed,.parked{color:#b3261e}.running{color:#0b6bcb}.queued{color:#6b4f00}
pre{background:#fff;border:1px solid #e3e6ea;padding:.6em;white-space:pre-wrap;max-width:100em}
form.inline{display:inline}.note{color:#5c6670}.flash{background:#e7f6e7;padding:.4em .8em}
figure.chart{margin:0 0 1em;background:#fff;padding:.6em;display:inline-block}
.chart rect.done{fill:#2e7d32}.chart rect.bad{fill:#b3261e}.chart line.axis{stroke:#9aa4ae}
.chart text{font-size:10px;fill:#5c6670}figcaption{color:#1d232a;margin-top:.3em}
i.key{display:inline-block;width:.8em;height:.8em;margin-right:.3em}
i.key.done{background:#2e7d32}i.key.bad{background:#b3261e;margin-left:.2em}
button{cursor:pointer}.filters{margin-bottom:.8em}.filters input,.filters select{width:10em}
"""

JS = """
// Partial refresh: every element with data-refresh="N" is re-read from the same URL every N
// seconds (the server answers X-Dashboard-Partial with the page's main fragment only).
document.querySelectorAll('[data-refresh]').forEach(function (el) {
  setInterval(async function () {
    if (document.hidden) return;
    const r = await fetch(location.href, {headers: {'X-Dashboard-Partial': '1'}});
    if (r.ok) el.innerHTML = await r.text();
  }, 1000 * Number(el.dataset.refresh));
});
// "select all" for the parked tasks' checkboxes
document.addEventListener('change', function (e) {
  if (e.target.id !== 'select-all') return;
  document.querySelectorAll('input[name=ids]').forEach(function (c) {
    c.checked = e.target.checked;
  });
});
"""


def esc(value: object) -> str:
    """Text for HTML: None as an empty cell, times in UTC to the second, all escaped."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return html.escape(str(value), quote=True)


def seconds(value: float | None) -> str:
    """An age for people: 42s, 3m 12s, 5h 02m, 2d 4h."""
    if value is None:
        return ""
    whole = max(int(value), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def first_line(error: str | None) -> str:
    return "" if not error else error.strip().splitlines()[0][:200]


def link(base: str, path: str, text: str, **query: object) -> str:
    kept = {k: v for k, v in query.items() if v not in (None, "")}
    href = base + path + (("?" + urlencode(kept)) if kept else "")
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str) -> str:
    """A table of already escaped cells; `empty` (escaped here) when there are no rows."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="note">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def number(value: object) -> str:
    return f'<span class="n">{esc(value if value is not None else 0)}</span>'


def form(base: str, action: str, csrf: str, fields: dict[str, object], button: str) -> str:
    """A POST form (with the CSRF token) that holds one button."""
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
        for k, v in {**fields, "csrf": csrf}.items()
        if v is not None
    )
    return (
        f'<form class="inline" method="post" action="{esc(base)}/actions/{esc(action)}">'
        f'{hidden}<button type="submit" name="do" value="{esc(action)}">{esc(button)}</button>'
        "</form>"
    )


def page(base: str, title: str, body: str, *, refresh: int | None, flash: str | None) -> str:
    nav = "".join(
        link(base, path, name)
        for path, name in [
            ("/", "Overview"),
            ("/tasks", "Tasks"),
            ("/tasks?state=running", "Running"),
            ("/parked", "Parked"),
            ("/periodic", "Periodic"),
            ("/workers", "Workers"),
        ]
    )
    note = f'<p class="flash" id="flash">{esc(flash)}</p>' if flash else ""
    live = f' data-refresh="{refresh}"' if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)} · sqlatasks</title>"
        f'<link rel="stylesheet" href="{esc(base)}/static/dashboard.css"></head>'
        f"<body><header><b>sqlatasks</b>{nav}</header><main>{note}<h1>{esc(title)}</h1>"
        f'<div id="live"{live}>{body}</div></main>'
        f'<script src="{esc(base)}/static/dashboard.js"></script></body></html>'
    )
