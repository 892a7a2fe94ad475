"""Loaded by every Python process whose PYTHONPATH starts with this folder (tests/test_logging.py):
a platform without /proc, simulated. Opening any path under /proc fails as if it did not exist."""

import sys


def _no_proc(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and str(args[0]).startswith("/proc"):
        raise FileNotFoundError(2, "No such file or directory (no /proc here)", str(args[0]))


sys.addaudithook(_no_proc)
