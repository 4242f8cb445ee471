"""Failures the service answers with 503, and how they are described without secrets."""
from __future__ import annotations

from perflib.store.errors import DATABASE_DOWN, describe_error

__all__ = ["DATABASE_DOWN", "SpoolUnavailable", "describe_error"]


class SpoolUnavailable(RuntimeError):
    """Neither the database nor the spool could take the records: nothing was accepted."""
