"""Failures the service answers with 503, and how they are described without secrets."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import URL

# The database cannot be reached, or is too busy to answer.
DATABASE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


class SpoolUnavailable(RuntimeError):
    """Neither the database nor the spool could take the records: nothing was accepted."""


def describe_error(exc: BaseException, url: URL) -> str:
    """A one-line reason for a failure, with the database password never in it."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
    text = f"{type(exc).__name__}: {lines[0][:300]}"
    return text.replace(str(url.password), "***") if url.password else text
