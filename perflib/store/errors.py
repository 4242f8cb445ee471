"""Failures that mean the database cannot be reached, and how to describe one without secrets.

The service answers them with 503 and the command line with one line; both name the database
only through :func:`perflib.config.safe_url` and the reason only through :func:`describe_error`.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import URL

from perflib.store.versioning import SchemaBehind

# The database cannot be reached, is too busy to answer, or needs perflib init-db first.
DATABASE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError,
                 SchemaBehind)


def describe_error(exc: BaseException, url: URL) -> str:
    """A one-line reason for a failure, with the database password never in it."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
    text = f"{type(exc).__name__}: {lines[0][:300]}"
    return text.replace(str(url.password), "***") if url.password else text
