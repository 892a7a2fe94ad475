"""The dashboard's forms: filters, flow control's cells, the action buttons."""

from __future__ import annotations

from typing import Any

from sqlatasks import status
from sqlatasks.rows import QueueSettings
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


def flow(setting: QueueSettings | None) -> list[str]:
    """A queue's flow-control cells: paused or not, and its limits across every runner."""
    if setting is None:
        return ["", ""]
    state = '<span class="parked">paused</span>' if setting.paused else ""
    limits = [
        f"≤ {setting.max_running} running" if setting.max_running is not None else "",
        f"≤ {setting.per_second:g}/s" if setting.per_second is not None else "",
    ]
    return [state, h.esc(", ".join(x for x in limits if x))]


def flow_button(base: str, csrf: str, queue: str, setting: QueueSettings | None) -> str:
    """Pause a running queue, resume a paused one (`sqlatasks.operations`)."""
    if setting is not None and setting.paused:
        return h.form(base, "resume", csrf, {"queue": queue}, "resume")
    return h.form(base, "pause", csrf, {"queue": queue}, "pause")


def pause_any(base: str, csrf: str) -> str:
    """Pause a queue by name: one without tasks yet is not in the overview's table."""
    return (
        f'<form class="inline" id="pause-queue" method="post" action="{h.esc(base)}/actions/pause">'
        f'<input type="hidden" name="csrf" value="{h.esc(csrf)}">'
        '<label>queue <input name="queue" required></label> '
        '<button type="submit" name="do" value="pause">pause</button></form>'
    )


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
