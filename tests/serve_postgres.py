"""`python -m tests.serve_postgres`: a throwaway PostgreSQL (sqlatasks.embedded) whose URL is
the first line on stdout; it stops, and its data folder is deleted, when stdin closes.

For `nox -s tests-3.13` (noxfile.py): the pgserver wheel has no build for Python 3.13, so nox's
own Python serves the database and the tests on 3.13 reach it by SQLATASKS_TEST_DATABASE_URL.
"""

from __future__ import annotations

import sys

from sqlatasks import embedded


def main() -> None:
    with embedded.throwaway_postgres() as url:
        print(url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":
    main()
