"""The dashboard's forms: filters, flow control's table, the action buttons."""

from __future__ import annotations

from typing import Any

from sqlatasks import status
from sqlatasks.webui import html as h

STATES = ("queued", "scheduled", "running")


def filters(base: str, path: str, q: Any, *, states: bool) -> str:
    def box(name: str, label: str) -> str:
        value = h.esc(q.get(name, ""))
        return f'<label>{label} <input name="{name}" value="{value}"></label> '

    choice = ""
    if states:
        options = "".join(
            f"<option{' selected' if q.get('state') == s else ''}>{s}</option>"
            for s in ("", *STATES)
        )
        choice = f'<label>state <select name="state">{options}</select></label> '
    return (
        f'<form class="filters" method="get" action="{h.esc(base + path)}">'
        f"{box('queue', 'queue')}{box('task', 'task')}{choice}<button>filter</button></form>"
    )


def controls(controls: list[dict[str, Any]] | None) -> str:
    """FLOW CONTROL: pause state and limits per queue, once `sqlatasks_queues` exists."""
    if controls is None:
        return ""
    headers = sorted({k for row in controls for k in row})
    rows = [[h.esc(row.get(k)) for k in headers] for row in controls]
    return "<h2>Flow control</h2>" + h.table(headers, rows, empty="No queue is limited.")


def parked_actions(base: str, csrf: str, queue: str | None, name: str | None) -> str:
    selection = (
        '<form id="selection" class="inline" method="post" '
        f'action="{h.esc(base)}/actions/selection">'
        f'<input type="hidden" name="csrf" value="{h.esc(csrf)}">'
        '<label><input type="checkbox" id="select-all"> all on this page</label> '
        '<button name="do" value="retry">retry selected</button> '
        '<button name="do" value="purge">purge selected</button></form> '
    )
    matching: dict[str, object] = {"all": "1", "queue": queue, "task": name}
    return (
        f"<p>{selection}"
        f"{h.form(base, 'retry', csrf, matching, 'retry all matching')} "
        f"{h.form(base, 'purge', csrf, matching, 'purge all matching')}</p>"
    )


def task_actions(base: str, csrf: str, info: status.TaskInfo) -> str:
    buttons = []
    if info.state == "failed":
        buttons.append(h.form(base, "retry", csrf, {"ids": info.id}, "retry"))
        buttons.append(h.form(base, "purge", csrf, {"ids": info.id}, "purge"))
    if info.state in ("queued", "scheduled", "running", "failed"):
        buttons.append(h.form(base, "cancel", csrf, {"id": info.id}, "cancel"))
    return "<p>" + " ".join(buttons) + "</p>"
