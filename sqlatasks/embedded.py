"""A throwaway PostgreSQL for the demo, the tests and the benchmarks, from the `pgserver` wheel.

No server install is needed and it works as root; the data folder is temporary and removed
when the context exits.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from sqlatasks import errors, settings


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a fresh PostgreSQL in a temporary folder; yield its asyncpg URL; remove it."""
    try:
        import pgserver
    except ImportError:
        raise errors.ConfigurationError(
            "no database URL was given and the embedded PostgreSQL is not installed: "
            "pip install 'sqlatasks[embedded]', or give a database URL"
        ) from None
    folder = tempfile.mkdtemp(prefix="sqlatasks-pg-")
    # pgserver warns when XDG_RUNTIME_DIR is unset (CI, root shells); it falls back to /tmp.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        server = pgserver.get_server(folder, cleanup_mode="delete")  # type: ignore[attr-defined]
        try:
            yield settings.database_url(server.get_uri())
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
