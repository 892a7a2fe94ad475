"""No tracked file holds a merge's conflict markers (a merge once committed some to CHANGELOG.md
and docs/architecture.md). `git ls-files`, text files only. A line of seven `=` alone is also a
Markdown setext heading's underline, so it counts only in a file that has a `<<<<<<< ` line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPENING, CLOSING, MIDDLE = "<" * 7 + " ", ">" * 7 + " ", "=" * 7


def conflict_lines(text: str) -> list[int]:
    """1-based numbers of the lines that are conflict markers in `text`."""
    lines = text.splitlines()
    opened = any(line.startswith(OPENING) for line in lines)
    return [
        number
        for number, line in enumerate(lines, 1)
        if line.startswith((OPENING, CLOSING)) or (opened and line == MIDDLE)
    ]


def _tracked() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name]


def test_no_tracked_file_has_conflict_markers() -> None:
    found = []
    for path in _tracked():
        if not path.is_file():  # deleted in the work tree, not yet staged
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary (an image): git's own test
            continue
        numbers = conflict_lines(data.decode("utf-8", errors="replace"))
        found += [f"{path.relative_to(ROOT)}:{n}" for n in numbers]
    assert not found, f"conflict markers left by a merge: {found}"


def test_the_check_finds_markers_and_spares_setext_headings() -> None:
    merged = f"a\n{OPENING}HEAD\nours\n{MIDDLE}\ntheirs\n{CLOSING}branch\nb\n"
    assert conflict_lines(merged) == [2, 4, 6]
    heading = f"Title\n{MIDDLE}\n\ntext\n"
    assert conflict_lines(heading) == []
    assert conflict_lines(f"{CLOSING}only a closing one\n") == [1]
