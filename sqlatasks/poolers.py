"""What changes when a connection pooler (PgBouncer) stands between sqlatasks and PostgreSQL.

Two things break behind PgBouncer, and `adapt(engine)` handles both for every engine the
runner and the command line open (docs/pgbouncer.md):

- **Startup settings.** PgBouncer refuses a connection whose startup packet sets a parameter
  it does not track ("unsupported startup parameter: synchronous_commit"), in every pool mode.
  The settings a caller marks optional are dropped then, once per engine, with one warning;
  the connection keeps the server's (or the role's) value.
- **Prepared statements.** In transaction pooling, consecutive transactions of one client run
  on different server connections, so a statement prepared in one is missing (or, named by a
  per-client counter, already taken) in the next. A URL that turns SQLAlchemy's statement
  cache off (`?prepared_statement_cache_size=0`, SQLAlchemy's documented PgBouncer setting)
  turns asyncpg's off too (`statement_cache_size=0`): every statement is then prepared
  unnamed, in the same round trip as its execution, which any pool mode accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

REFUSED = "unsupported startup parameter"
"""PgBouncer's error for a startup parameter it does not pass on."""
SQLALCHEMY_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")
"""URL query keys that SQLAlchemy's asyncpg dialect consumes; asyncpg itself would send them to
the server as settings."""

LIBPQ_ONLY = frozenset(
    [
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "load_balance_hosts",
        "options",
        "replication",
        "require_auth",
        "requirepeer",
        "requiressl",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcertmode",
        "sslcompression",
        "sslnegotiation",
        "sslsni",
        "tcp_user_timeout",
    ]
)
"""libpq's connection parameters (PostgreSQL docs, libpq "Parameter Key Words") that
`asyncpg.connect()` has no argument for, hosted URLs' `channel_binding` among them."""


def statement_cache_off(url: str | URL) -> bool:
    """Whether the URL turns SQLAlchemy's prepared-statement cache off (the PgBouncer setting)."""
    return make_url(url).query.get("prepared_statement_cache_size") == "0"


def asyncpg_options(url: str | URL) -> dict[str, Any]:
    """Keyword arguments for `asyncpg.connect` that the URL implies beyond its DSN."""
    return {"statement_cache_size": 0} if statement_cache_off(url) else {}


def adapt(engine: AsyncEngine, *, optional_settings: Iterable[str] = ()) -> AsyncEngine:
    """Make `engine` connect through a pooler: asyncpg's statement cache off when the URL
    asks for SQLAlchemy's off; `optional_settings` (startup `server_settings`) dropped, with
    one warning, from the first connection the server refuses for them on."""
    optional = frozenset(optional_settings)
    extra = asyncpg_options(engine.url)
    refused = False

    @event.listens_for(engine.sync_engine, "do_connect")
    def connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        nonlocal refused
        cparams.update(extra)
        if refused:
            _drop(cparams, optional)
            return None  # SQLAlchemy connects with the amended parameters
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            if REFUSED not in str(exc) or not _names(cparams) & optional:
                raise
        refused = True
        dropped = _drop(cparams, optional)
        log.warning(
            "the server refused the startup setting(s) %s (a pooler such as PgBouncer in "
            "front?): connecting without them; to keep them, set them for the role (ALTER "
            "ROLE … SET synchronous_commit = off) — docs/pgbouncer.md",
            ", ".join(sorted(dropped)),
        )
        return dialect.connect(*cargs, **cparams)

    return engine


def _names(cparams: dict[str, Any]) -> set[str]:
    return set(cparams.get("server_settings") or {})


def _drop(cparams: dict[str, Any], optional: frozenset[str]) -> set[str]:
    settings = dict(cparams.get("server_settings") or {})
    dropped = {name for name in settings if name in optional}
    cparams["server_settings"] = {k: v for k, v in settings.items() if k not in optional}
    return dropped
