"""An embedded PostgreSQL under ENF_DATA_DIR (the `pgserver` package).

Used when ENF_DATABASE_URL is unset, so `python run.py` works on a machine with
no database. The server process survives a crash of ours (it runs detached),
and a restart finds and reuses it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from persistence.keys import private_dir

logger = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path) -> tuple[str, Any]:
    """Start (or reuse) the embedded server; return its DSN and its handle.

    Keep the handle alive for as long as the database is needed.
    """
    import pgserver  # heavy import, only when used

    pgdata = (data_dir / "pg").resolve()
    private_dir(pgdata.parent)  # owner-only; initdb makes pgdata itself 0700
    logger.info("starting embedded postgres", extra={"pgdata": str(pgdata)})
    server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    uri: str = server.get_uri()
    return uri, server
